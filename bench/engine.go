package bench

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// A worker whose operation failed at once, refused rather than timed out (a replica's disk
// below its --min-free-disk, the target unreachable), waits before its next one, or it would
// ask again as fast as the refusals come back: a wait uniform in [0, ceiling], the ceiling
// doubling from refusedWaitMin to refusedWaitMax over consecutive refusals, and reset by a
// success.
const (
	refusedWaitMin = time.Millisecond
	refusedWaitMax = 100 * time.Millisecond
)

// op is what one worker does, each func called from the worker's goroutine only.
type op struct {
	// prepare, when not nil, readies the next run (its payloads) outside the timed section:
	// the engine calls it before it takes the run's due time. (In an open loop, a prepare
	// that outlasts the wait for that time delays the run, and the delay is counted, as any
	// lateness of the generator is.)
	prepare func()
	// run performs one operation and returns the events and payload bytes it moved.
	run func(ctx context.Context) (events, bytes int64, err error)
}

// worker is one load generator. The atomics are read by the progress
// reporter; hist and errs belong to the worker's goroutine until it exits.
type worker struct {
	op   op
	hist *hdrhistogram.Histogram
	errs map[string]int64

	done      atomic.Int64 // every finished operation, warmup included
	ops       atomic.Int64 // measured successes
	events    atomic.Int64
	bytes     atomic.Int64
	conflicts atomic.Int64
	failed    atomic.Int64 // measured failures other than conflicts
	attempted int64        // measured operations sent (open loop: for Missed)
	lastEnd   time.Time    // end of the last measured operation
	// Successes that ended inside a timed run's measured phase, whenever they
	// started: its throughput.
	windowOps, windowEvents, windowBytes int64
	refusals                             int // consecutive refusals (refusedWait)
}

// refusedWait returns how long w waits after an operation that failed with err: nothing after
// a success, a conflict (an answer, not a refusal) or a timeout (which has waited already).
func (w *worker) refusedWait(err error) time.Duration {
	if err == nil {
		w.refusals = 0
		return 0
	}
	if k := Classify(err); k == KindConflict || k == KindTimeout {
		return 0
	}
	ceiling := refusedWaitMin << min(w.refusals, 30)
	if ceiling <= 0 || ceiling > refusedWaitMax {
		ceiling = refusedWaitMax
	}
	w.refusals++
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// engine drives workers over one run: the schedule (closed or open loop),
// warmup, stop condition and measurement. It has no knowledge of what an
// operation does.
type engine struct {
	run          Run
	workload     string
	start        time.Time // schedule origin, the start of warmup
	measureStart time.Time
	stopAt       time.Time // zero in count mode
	interval     float64   // open loop: nanoseconds between due times

	seq atomic.Int64 // open loop: next operation index
	// missedHist: the lower bounds of the latencies of operations workers took but did not
	// send before the end of a timed open-loop run (missed); nil until one.
	missedMu   sync.Mutex
	missedHist *hdrhistogram.Histogram
	claimed    atomic.Int64 // count mode: measured operations claimed
	workers    []*worker
	// started, when not nil, is told the measured phase before the workers start: its
	// start and its end (zero in count mode).
	started func(measureStart, stopAt time.Time)
}

func newEngine(run Run, workload string, ops []op) *engine {
	e := &engine{run: run, workload: workload}
	for _, op := range ops {
		e.workers = append(e.workers, &worker{op: op, hist: newHistogram(), errs: map[string]int64{}})
	}
	if run.Rate > 0 {
		e.interval = float64(time.Second) / run.Rate
	}
	return e
}

// execute runs the workers to the end and returns the merged figures.
func (e *engine) execute(ctx context.Context) *Result {
	e.start = time.Now()
	e.measureStart = e.start.Add(max(e.run.Warmup, 0))
	if e.run.Count == 0 {
		e.stopAt = e.measureStart.Add(e.run.Duration)
	}
	if e.started != nil {
		e.started(e.measureStart, e.stopAt)
	}
	stopProgress := startProgress(e)
	var wg sync.WaitGroup
	for _, w := range e.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.loop(ctx, w)
		}()
	}
	wg.Wait()
	stopProgress()
	return e.result(ctx)
}

// next decides when the worker's next operation is due, or that the run is
// over for this worker. measured says whether the operation counts.
func (e *engine) next(ctx context.Context, timer *time.Timer) (due time.Time, measured, ok bool) {
	if ctx.Err() != nil {
		return time.Time{}, false, false
	}
	now := time.Now()
	if e.interval > 0 {
		k := e.seq.Add(1) - 1
		due = e.dueAt(k)
		if due.Before(e.measureStart) && !now.Before(e.measureStart) {
			// A warmup operation not started by the end of the warmup: the target is behind
			// the rate. The warmup's backlog is dropped; run now, unmeasured, it would take
			// the measured phase's time and make the throughput look lower than it is.
			first := e.dueBefore(e.measureStart)
			for cur := e.seq.Load(); cur < first && !e.seq.CompareAndSwap(cur, first); cur = e.seq.Load() {
			}
			k = e.seq.Add(1) - 1
			due = e.dueAt(k)
		}
		if !e.stopAt.IsZero() && (!due.Before(e.stopAt) || !now.Before(e.stopAt)) {
			if due.Before(e.stopAt) && !due.Before(e.measureStart) {
				e.missed(k) // claimed, due in the measured phase, never sent
			}
			return time.Time{}, false, false
		}
		if wait := due.Sub(now); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return time.Time{}, false, false
			}
		}
	} else {
		due = now
		if !e.stopAt.IsZero() && !now.Before(e.stopAt) {
			return time.Time{}, false, false
		}
	}
	measured = !due.Before(e.measureStart)
	if measured && e.run.Count > 0 && e.claimed.Add(1) > e.run.Count {
		return time.Time{}, false, false
	}
	return due, measured, true
}

func (e *engine) loop(ctx context.Context, w *worker) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		if w.op.prepare != nil {
			w.op.prepare()
		}
		due, measured, ok := e.next(ctx, timer)
		if !ok {
			return
		}
		opCtx, cancel := context.WithTimeout(ctx, e.run.OpTimeout)
		events, bytes, err := w.op.run(opCtx)
		cancel()
		end := time.Now()
		w.done.Add(1)
		if wait := w.refusedWait(err); wait > 0 && ctx.Err() == nil {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		if err == nil && !e.stopAt.IsZero() && !end.Before(e.measureStart) && end.Before(e.stopAt) {
			w.windowOps++
			w.windowEvents += events
			w.windowBytes += bytes
		}
		if !measured {
			continue
		}
		if err != nil && ctx.Err() != nil {
			return // interrupted: not the target's failure
		}
		w.attempted++
		w.lastEnd = end
		switch {
		case err == nil:
			recordLatency(w.hist, end.Sub(due))
			w.ops.Add(1)
			w.events.Add(events)
			w.bytes.Add(bytes)
		case Classify(err) == KindConflict:
			w.conflicts.Add(1)
		default:
			// A failure's wait counts too: a target that stalls until operations time
			// out shows it in the latency's tail, not only in the error count.
			recordLatency(w.hist, end.Sub(due))
			w.errs[Classify(err)]++
			w.failed.Add(1)
		}
	}
}

func (e *engine) result(ctx context.Context) *Result {
	r := &Result{
		Workload:  e.workload,
		Start:     e.measureStart,
		Errors:    map[string]int64{},
		Histogram: newHistogram(),
		Machine:   ThisMachine(),
	}
	var lastEnd time.Time
	var attempted, windowOps, windowEvents, windowBytes int64
	for _, w := range e.workers {
		windowOps += w.windowOps
		windowEvents += w.windowEvents
		windowBytes += w.windowBytes
		r.Histogram.Merge(w.hist)
		r.Ops += w.ops.Load()
		r.Events += w.events.Load()
		r.Bytes += w.bytes.Load()
		r.Conflicts += w.conflicts.Load()
		r.ErrorCount += w.failed.Load()
		for k, n := range w.errs {
			r.Errors[k] += n
		}
		attempted += w.attempted
		if w.lastEnd.After(lastEnd) {
			lastEnd = w.lastEnd
		}
	}
	r.Interrupted = ctx.Err() != nil
	if !lastEnd.IsZero() {
		r.Elapsed = lastEnd.Sub(e.measureStart)
	}
	ops, events, bytes := r.Ops, r.Events, r.Bytes
	if !e.stopAt.IsZero() && !r.Interrupted {
		// A timed run: the rates are what completed inside the measured phase over its
		// length. Counting the operations started in it over the time until the last one
		// ended would charge it the drain after it (up to one latency), and the first
		// operation of each worker waits for one of the warmup's.
		r.Elapsed = e.run.Duration
		ops, events, bytes = windowOps, windowEvents, windowBytes
	}
	if r.Elapsed > 0 {
		sec := r.Elapsed.Seconds()
		r.ElapsedSeconds = sec
		r.OpsPerSec = float64(ops) / sec
		r.EventsPerSec = float64(events) / sec
		r.MBPerSec = float64(bytes) / 1e6 / sec
	}
	if e.interval > 0 {
		r.TargetRate = e.run.Rate
		if !e.stopAt.IsZero() && !r.Interrupted {
			due := e.dueBefore(e.stopAt) - e.dueBefore(e.measureStart)
			r.Missed = max(0, due-attempted)
			// The operations no worker took, due in the measured phase: each waited at
			// least until the end (the ones a worker took and then gave up are in missedHist).
			e.recordUntaken(r.Histogram, max(e.seq.Load(), e.dueBefore(e.measureStart)), e.dueBefore(e.stopAt))
			e.missedMu.Lock()
			if e.missedHist != nil {
				r.Histogram.Merge(e.missedHist)
			}
			e.missedMu.Unlock()
		}
	}
	r.Latency = Summarize(r.Histogram)
	return r
}

// dueAt is when operation k of the open-loop schedule is due.
func (e *engine) dueAt(k int64) time.Time {
	return e.start.Add(time.Duration(float64(k) * e.interval))
}

// recordUntaken records operations lo to hi-1 in h as having waited from their due times to
// the run's end, those due within the same microsecond with one call: an open loop far
// beyond its target's speed leaves most of a run's operations untaken (--rate 1e9 makes
// billions), and one call each took minutes.
func (e *engine) recordUntaken(h *hdrhistogram.Histogram, lo, hi int64) {
	span := e.stopAt.Sub(e.start)
	for k := lo; k < hi; {
		us := clampUS(e.stopAt.Sub(e.dueAt(k)))
		next := hi
		if us > histMinUS {
			// The first operation due less than us µs before the end: span-k*interval < us µs.
			next = int64(math.Floor(float64(span-time.Duration(us)*time.Microsecond)/e.interval)) + 1
			next = min(max(next, k+1), hi)
		}
		_ = h.RecordValues(us, next-k) // cannot fail: clamped to the range
		k = next
	}
}

// missed records operation k, due in the measured phase, which a worker took and did not send
// before the run's end: it waited at least until then. The schedule correction (the latency
// of an open loop counts from the due time) would otherwise miss every operation a stall held
// past the end, and a stall that lasts to the end would not show at all.
func (e *engine) missed(k int64) {
	e.missedMu.Lock()
	defer e.missedMu.Unlock()
	if e.missedHist == nil {
		e.missedHist = newHistogram()
	}
	recordLatency(e.missedHist, e.stopAt.Sub(e.dueAt(k)))
}

// dueBefore returns how many operations of the open-loop schedule are due
// before t.
func (e *engine) dueBefore(t time.Time) int64 {
	return int64(math.Ceil(float64(t.Sub(e.start)) / e.interval))
}

// totals returns the progress figures: all finished operations, measured
// successes, failures and conflicts.
func (e *engine) totals() (done, ops, failed, conflicts int64) {
	for _, w := range e.workers {
		done += w.done.Load()
		ops += w.ops.Load()
		failed += w.failed.Load()
		conflicts += w.conflicts.Load()
	}
	return
}

package node

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxSyncDuration is Config.MaxSyncDuration's default, and MinMaxSyncDuration its
// least positive value: below it, a merely slow disk would end the process.
const (
	DefaultMaxSyncDuration = 20 * time.Second
	MinMaxSyncDuration     = time.Second
)

// diskSlowThreshold is when a write or sync of the data directory is reported slow (Pebble's
// disk health checks, which report it again every few seconds while it lasts).
const diskSlowThreshold = 5 * time.Second

// ExitDiskStall is the exit status of a process ended by the default OnDiskStall (EX_IOERR),
// and of one ended by a storage failure (storageFailure).
const ExitDiskStall = 74

// storageFailure ends the process on a storage failure of the raft host: a write, commit or
// sync of the data directory failed (a full disk under load, an I/O error), so the failed
// batch is not committed and the host cannot go on (replica.Config.OnStorageFailure). The
// cluster sees a crash; a restart replays the raft log from what is durable. One log line and
// status 74, as for a disk stall, rather than a panic's status 2 and stack trace: the error
// is the disk's, not the code's. Corrupt data (isCorrupt) ends it with ExitCorrupt instead.
func storageFailure(log *slog.Logger) func(error) {
	return func(err error) {
		if isCorrupt(err) { // a read of the loop found it: a restart would find it again
			log.Error("storage failure: corrupt data in the data directory: ending the process; "+corruptAdvice,
				"err", err, "exit_status", ExitCorrupt)
			os.Exit(ExitCorrupt)
		}
		log.Error("storage failure: ending the process; a restart recovers from what is durable",
			"err", err, "exit_status", ExitDiskStall)
		os.Exit(ExitDiskStall)
	}
}

// DiskStall describes a write or sync of the data directory that has not returned within
// Config.MaxSyncDuration.
type DiskStall struct {
	Path     string        // the file
	Op       string        // the operation, e.g. "sync" or "write"
	Duration time.Duration // how long it has lasted so far
	Err      error         // the operation's last error, when it fails rather than hangs (a flush)
}

func (s DiskStall) String() string {
	if s.Err != nil {
		return fmt.Sprintf("%s of %s has not succeeded for %v: %v", s.Op, s.Path, s.Duration.Round(time.Millisecond), s.Err)
	}
	return fmt.Sprintf("%s of %s has not returned for %v", s.Op, s.Path, s.Duration.Round(time.Millisecond))
}

// diskWatch watches the data directory's writes and syncs. A node whose disk hangs keeps
// its replicas and its place in gossip while its raft loop, blocked on the disk, serves
// nothing: its leaderships move, but its replicas are never replaced and it may serve stale
// reads and topology from its frozen state. Past MaxSyncDuration the watch hands it to
// OnDiskStall, whose default ends the process, so that the cluster sees a crash: other
// leaders at once, and new replicas after DeadAfter.
type diskWatch struct {
	log     *slog.Logger
	max     time.Duration // negative: never stall
	onStall func(DiskStall)
	slow    prometheus.Counter
	// stallSeconds adds up Pebble's write stalls, each as it ends.
	stallSeconds prometheus.Counter
	stalled      atomic.Bool
	last         atomic.Pointer[slowReport] // the latest slow report
	// confirming is the operation reported past the limit once, while the watch waits for
	// the report that proves it still pending (confirmStall).
	confirming atomic.Pointer[stallCheck]
	checks     io.Closer // the health checks wrap started, nil before

	// Pebble's flushes and write stalls (openPebble's event listener), as monotonic stamps (monoNow):
	// flushFailing, when the flushes began to fail (0: the last one succeeded); writeStall,
	// when the current write stall began (0: none).
	flushFailing, writeStall atomic.Int64
	flushErr                 atomic.Pointer[error] // the last failed flush's error
	stopFlushes              chan struct{}         // closes watchFlushes' goroutine; nil before
	flushesDone              chan struct{}
}

// slowReport is a slow disk operation and when it was reported.
type slowReport struct {
	DiskStall
	at time.Time
}

// slowReportFresh is how long a slow report keeps the node unready: Pebble repeats it every 2 s
// while the operation lasts, so an older one means the operation returned.
const slowReportFresh = 5 * time.Second

// slowNow returns the operation reported slow within slowReportFresh, if any.
func (w *diskWatch) slowNow() (DiskStall, bool) {
	r := w.last.Load()
	if r == nil || time.Since(r.at) > slowReportFresh {
		return DiskStall{}, false
	}
	return r.DiskStall, true
}

func newDiskWatch(log *slog.Logger, max time.Duration, onStall func(DiskStall)) *diskWatch {
	w := &diskWatch{log: log, max: max, onStall: onStall,
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_disk_slow_total",
			Help: "Reports of a write or sync of the data directory lasting longer than 5 s (repeated every few seconds while one lasts).",
		}),
		stallSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_pebble_write_stall_seconds_total",
			Help: "Seconds the store held writes back because its memtables or level 0 were full (flushes or compactions behind), added as each stall ends; its rate is the share of the time writes waited.",
		})}
	if w.onStall == nil {
		w.onStall = func(s DiskStall) {
			log.Error("the disk stalled: ending the process so that the cluster replaces this node",
				"stall", s.String(), "max_sync_duration", max, "exit_status", ExitDiskStall)
			os.Exit(ExitDiskStall)
		}
	}
	return w
}

// wrap returns fs (nil: the operating system's) with Pebble's disk health checks reporting
// to w the operations that last longer than slowAfter, or than MaxSyncDuration if that is
// shorter. Call it once; close stops the checks.
func (w *diskWatch) wrap(fs vfs.FS, slowAfter time.Duration) vfs.FS {
	if fs == nil {
		fs = vfs.Default
	}
	if w.max > 0 {
		slowAfter = min(slowAfter, w.max)
	}
	checked, closer := vfs.WithDiskHealthChecks(fs, slowAfter, nil, w.diskSlow)
	w.checks = closer
	return checked
}

// close stops the health checks and the flush watch, after Pebble closed.
func (w *diskWatch) close() {
	if w.checks != nil {
		w.checks.Close()
	}
	if w.stopFlushes != nil {
		close(w.stopFlushes)
		<-w.flushesDone
	}
}

// A flush that fails (no space for its sstable, an I/O error) is retried by Pebble at once,
// and while flushes fail the memtables fill: then every write stalls, the raft loop with it,
// while no disk operation is in flight for the health checks to see. The node would keep its
// replicas and its place in gossip serving nothing, for good. Flushes failing for
// MaxSyncDuration are therefore a stall too.

// flushEnded records the outcome of one of Pebble's flushes.
func (w *diskWatch) flushEnded(err error) {
	if err == nil {
		w.flushFailing.Store(0)
		return
	}
	w.flushErr.Store(&err)
	w.flushFailing.CompareAndSwap(0, monoNow())
}

// writeStallBegan and writeStallEnded record Pebble's write stalls (memtables or L0 full).
func (w *diskWatch) writeStallBegan() { w.writeStall.CompareAndSwap(0, monoNow()) }
func (w *diskWatch) writeStallEnded() {
	if at := w.writeStall.Swap(0); at != 0 {
		w.stallSeconds.Add(monoSince(at).Seconds())
	}
}

// writesStalled returns how long Pebble has stalled writes, if it does.
func (w *diskWatch) writesStalled() (time.Duration, bool) {
	if at := w.writeStall.Load(); at != 0 {
		return monoSince(at), true
	}
	return 0, false
}

// flushCheckEvery is how often watchFlushes looks at the flushes.
const flushCheckEvery = 250 * time.Millisecond

// watchFlushes hands OnDiskStall the flushes of the store in dir once they have failed for
// MaxSyncDuration, the open's included. Call it once, before Pebble opens; close stops it.
func (w *diskWatch) watchFlushes(dir string) {
	if w.max < 0 {
		return
	}
	w.stopFlushes, w.flushesDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.flushesDone)
		t := time.NewTicker(flushCheckEvery)
		defer t.Stop()
		for {
			select {
			case <-w.stopFlushes:
				return
			case <-t.C:
			}
			at := w.flushFailing.Load()
			if at == 0 {
				continue
			}
			if d := monoSince(at); d >= w.max && w.stalled.CompareAndSwap(false, true) {
				var last error
				if p := w.flushErr.Load(); p != nil {
					last = *p
				}
				go w.onStall(DiskStall{Path: dir, Op: "flush (every attempt failing)", Duration: d, Err: last})
				return
			}
		}
	}()
}

// diskSlow is Pebble's report of a slow disk operation. It runs on the goroutine that
// watches the disk, so it does no I/O itself and blocks on nothing.
func (w *diskWatch) diskSlow(info vfs.DiskSlowInfo) {
	w.slow.Inc()
	stall := DiskStall{Path: info.Path, Op: info.OpType.String(), Duration: info.Duration}
	w.last.Store(&slowReport{stall, time.Now()})
	go w.log.Warn("disk operation slow", "component", "pebble", "op", stall.Op, "file", stall.Path,
		"for", stall.Duration.Round(time.Millisecond))
	if w.max < 0 || info.Duration < w.max || w.stalled.Load() {
		return
	}
	if c := w.confirming.Load(); c != nil {
		c.reported(stall)
		return
	}
	c := &stallCheck{first: stall, again: make(chan DiskStall, 1)}
	if w.confirming.CompareAndSwap(nil, c) {
		go w.confirmStall(c)
	}
}

// A disk operation reported past MaxSyncDuration is a stall only once a later report shows it
// still pending: a process that was stopped (SIGSTOP, a paused VM, a debugger) for longer finds,
// as it resumes, every operation it had in flight that old, and each file's health check,
// whose tick came due meanwhile, may report it before the operation returns a moment later.
// Ended at once, a node paused for 25 s exited with status 74 as a disk stall. Pebble reports an
// operation again at every tick (2 s) while it lasts: stallConfirmWithin waits for one tick and
// more, and the report that confirms the stall must be of the same file and operation, longer
// by most of a tick (another file's check, due in the same pause, reports at once as well).
const (
	stallConfirmWithin = 3500 * time.Millisecond
	stallConfirmLonger = time.Second
)

// stallCheck is an operation reported past the limit, awaiting its confirmation.
type stallCheck struct {
	first DiskStall
	again chan DiskStall // the confirming report
}

// reported passes on s if it confirms the check.
func (c *stallCheck) reported(s DiskStall) {
	if s.Path == c.first.Path && s.Op == c.first.Op && s.Duration >= c.first.Duration+stallConfirmLonger {
		select {
		case c.again <- s:
		default:
		}
	}
}

// confirmStall hands c's operation to OnDiskStall once a later report shows it still pending,
// or logs that it returned.
func (w *diskWatch) confirmStall(c *stallCheck) {
	t := time.NewTimer(stallConfirmWithin)
	defer t.Stop()
	select {
	case s := <-c.again:
		if w.stalled.CompareAndSwap(false, true) {
			w.onStall(s)
		}
	case <-t.C:
		w.log.Warn("a disk operation lasted past --max-sync-duration, then returned: the disk, or the whole process "+
			"(stopped, or its machine paused), was held up that long; going on", "component", "pebble",
			"op", c.first.Op, "file", c.first.Path, "for", c.first.Duration.Round(time.Millisecond),
			"max_sync_duration", w.max)
		w.confirming.Store(nil)
	}
}

// monoStart is the origin of monoNow's stamps: the process's monotonic clock, which a step of
// the wall clock does not move (a stall timed by wall-clock stamps could be declared early, or
// late, across one).
var monoStart = time.Now()

// monoNow is a monotonic stamp of now, never 0 (0 is "none" where stamps are kept).
func monoNow() int64 { return int64(time.Since(monoStart)) + 1 }

// monoSince is the time since stamp at (monoNow).
func monoSince(at int64) time.Duration { return time.Since(monoStart) - time.Duration(at-1) }

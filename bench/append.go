package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shoaldb/shoal/internal/buildinfo"
)

// RunAppend runs the append workload against target and returns its report.
// cfg's zero fields take their defaults. It returns an error only for an
// invalid config; the target's failures are counted in the Result. A
// cancelled ctx ends the run early with Result.Interrupted set.
func RunAppend(ctx context.Context, cfg AppendConfig, target Target) (*Result, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64() | 1
	}
	var d *deliveries
	if cfg.Subscribe {
		sub, ok := target.(Subscriber)
		if !ok {
			return nil, invalid("subscribe", "needs a target that can subscribe (a Subscriber)")
		}
		d = subscribe(ctx, sub)
	}
	names := streamNames(cfg.StreamPrefix, cfg.Streams)
	ops := make([]op, cfg.Concurrency)
	for w := range ops {
		a := newAppender(&cfg, w, names, target)
		ops[w] = op{prepare: a.prepare, run: a.append}
	}
	e := newEngine(cfg.Run, "append", ops)
	if d != nil {
		e.started = d.measure
	}
	r := e.execute(ctx)
	if d != nil {
		d.finish(r)
	}
	finish(ctx, r, &cfg, cfg.Seed, target)
	return r, nil
}

// deliveries measures, for every event a subscription delivers that the target stamped in the
// measured phase, how long it took from the stamp to its arrival here: a latency across two
// clocks, the target's (the leader's stamp) and this process's, so it is exact on one machine
// and off by the clocks' offset across machines. Memory is bounded: one histogram.
type deliveries struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // the subscription's, once done is closed
	mu     struct {
		sync.Mutex
		from, to time.Time // the measured phase, once known; to is zero while it has no set end
		hist     *hdrhistogram.Histogram
		measured int64 // deliveries recorded in hist
		all      int64 // every delivery, measured or not
	}
}

func subscribe(ctx context.Context, sub Subscriber) *deliveries {
	ctx, cancel := context.WithCancel(ctx)
	d := &deliveries{cancel: cancel, done: make(chan struct{})}
	d.mu.hist = newHistogram()
	go func() {
		defer close(d.done)
		d.err = sub.Subscribe(ctx, d.delivered)
	}()
	return d
}

// measure sets the measured phase: events stamped from from to to (zero: no set end, as in a
// count run, which appends nothing after its phase) are recorded.
func (d *deliveries) measure(from, to time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.from, d.mu.to = from, to
}

// delivered is the subscription's callback.
func (d *deliveries) delivered(stamped time.Time) {
	took := time.Since(stamped)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.all++
	if !d.mu.from.IsZero() && !stamped.Before(d.mu.from) && (d.mu.to.IsZero() || !stamped.After(d.mu.to)) {
		recordLatency(d.mu.hist, took)
		d.mu.measured++
	}
}

// finish lets the last events arrive (up to deliveryGrace after the last one did), stops the
// subscription and reports the deliveries of events stamped in the measured phase.
func (d *deliveries) finish(r *Result) {
	last := int64(-1)
	for deadline := time.Now().Add(deliveryGrace); time.Now().Before(deadline); time.Sleep(deliveryGrace / 10) {
		d.mu.Lock()
		n := d.mu.all
		d.mu.Unlock()
		if n == last {
			break
		}
		last = n
	}
	d.cancel()
	<-d.done
	d.mu.Lock()
	defer d.mu.Unlock()
	r.Delivery = &Delivery{Events: d.mu.measured, Latency: Summarize(d.mu.hist)}
	if d.err != nil {
		r.Delivery.Error = d.err.Error()
	}
}

// deliveryGrace bounds the wait for the last deliveries after the measured phase.
const deliveryGrace = 2 * time.Second

// finish fills the report's descriptive fields.
func finish(ctx context.Context, r *Result, cfg any, seed uint64, target Target) {
	r.Config = cfg
	r.Seed = seed
	r.ShoalVersion = buildinfo.Version
	if d, ok := target.(Describer); ok {
		r.System = d.Describe(context.WithoutCancel(ctx))
	}
	if r.System.Name == "" {
		r.System.Name = "unknown"
	}
}

func streamNames(prefix string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = prefix + strconv.Itoa(i)
	}
	return names
}

// picker returns stream indexes for one worker.
type picker struct {
	rng    *rand.Rand
	zipf   *rand.Zipf
	n      int // streams to pick from
	stride int // the worker's streams are base + stride*i, i < n
	base   int
}

// newPicker picks among all streams, or, when owned, among worker w's
// partition of them (stream i belongs to worker i mod workers).
func newPicker(rng *rand.Rand, dist string, zipfS float64, streams, w, workers int, owned bool) *picker {
	p := &picker{rng: rng, n: streams, stride: 1}
	if owned {
		p.n = (streams - w + workers - 1) / workers
		p.stride, p.base = workers, w
	}
	if dist == DistZipf && p.n > 1 {
		p.zipf = rand.NewZipf(rng, zipfS, 1, uint64(p.n-1))
	}
	return p
}

// pick returns a stream index and its local index within the partition.
func (p *picker) pick() (stream, local int) {
	if p.zipf != nil {
		local = int(p.zipf.Uint64())
	} else {
		local = p.rng.IntN(p.n)
	}
	return p.base + local*p.stride, local
}

// appender is one append worker's state: not safe for concurrent use.
type appender struct {
	target Target
	names  []string
	pick   *picker
	exact  bool
	// versions[local] is the expected version of the next append to the
	// worker's local-th stream (exact mode): the last version, ExpectNoStream,
	// or ExpectAny when unknown (the next append learns it).
	versions []int64
	events   [][]byte
	bytes    int64
	// fill makes every append's payloads fresh random bytes: repeated ones would
	// compress in Pebble's tables and lighten its flushes and compactions against
	// what real data costs (the peers do not compress).
	fill *rand.Rand
}

func newAppender(cfg *AppendConfig, w int, names []string, target Target) *appender {
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
	exact := cfg.Expected == ExpectedExact
	a := &appender{
		target: target,
		names:  names,
		pick:   newPicker(rng, cfg.Dist, cfg.ZipfS, cfg.Streams, w, cfg.Concurrency, exact),
		exact:  exact,
		bytes:  int64(cfg.Batch) * int64(cfg.EventSize),
	}
	if exact {
		a.versions = make([]int64, a.pick.n)
		for i := range a.versions {
			a.versions[i] = ExpectNoStream
		}
	}
	a.events = payloads(rng, cfg.Batch, cfg.EventSize)
	a.fill = rand.New(rand.NewPCG(cfg.Seed^0x70617966, uint64(w))) // "payf": apart from the stream picks
	return a
}

// fillRandom overwrites b with random bytes, eight at a time.
func fillRandom(rng *rand.Rand, b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, rng.Uint64())
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// payloads returns batch random payloads of size bytes, cut from one buffer.
func payloads(rng *rand.Rand, batch, size int) [][]byte {
	buf := make([]byte, batch*size)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	events := make([][]byte, batch)
	for i := range events {
		events[i] = buf[i*size : (i+1)*size : (i+1)*size]
	}
	return events
}

// prepare fills the next append's payloads with fresh random bytes: the generator's work,
// outside the append's timed section (16 MiB of them take milliseconds).
func (a *appender) prepare() {
	for _, ev := range a.events {
		fillRandom(a.fill, ev)
	}
}

func (a *appender) append(ctx context.Context) (int64, int64, error) {
	stream, local := a.pick.pick()
	expected := ExpectAny
	if a.exact {
		expected = a.versions[local]
	}
	last, err := a.target.Append(ctx, a.names[stream], expected, a.events)
	if a.exact {
		var ce *ConflictError
		switch {
		case err == nil:
			a.versions[local] = last
		case errors.As(err, &ce) && ce.Actual != ActualUnknown:
			a.versions[local] = ce.Actual
			if ce.Actual < 0 {
				a.versions[local] = ExpectNoStream
			}
		case errors.Is(err, ErrConflict):
			a.versions[local] = ExpectAny
		default:
			// Any other failure (a timeout, the cluster unavailable) may have appended:
			// the version is unknown, and expecting the old one would cost the stream a
			// spurious conflict.
			a.versions[local] = ExpectAny
		}
	}
	if err != nil {
		return 0, 0, err
	}
	return int64(len(a.events)), a.bytes, nil
}

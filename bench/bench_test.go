package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/lockedbuf"
)

func TestSummarize(t *testing.T) {
	h := newHistogram()
	for us := 1; us <= 1000; us++ {
		recordLatency(h, time.Duration(us)*time.Microsecond)
	}
	l := Summarize(h)
	near := func(name string, got, want int64) {
		t.Helper()
		if d := got - want; d < -1 || d > 1 { // 3 significant digits
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	if l.Count != 1000 {
		t.Fatalf("count = %d", l.Count)
	}
	near("min", l.Min, 1)
	near("p50", l.P50, 500)
	near("p90", l.P90, 900)
	near("p99", l.P99, 990)
	near("p99.9", l.P999, 999)
	near("max", l.Max, 1000)
	if l.Mean < 499 || l.Mean > 502 {
		t.Errorf("mean = %g, want 500.5", l.Mean)
	}
	if (Summarize(newHistogram()) != Latency{}) {
		t.Error("empty histogram must summarise to zeros")
	}
}

func TestRecordLatencyClamps(t *testing.T) {
	h := newHistogram()
	recordLatency(h, 0)
	recordLatency(h, 2*time.Hour)
	if h.Min() != histMinUS || h.ValueAtQuantile(100) < histMaxUS*999/1000 {
		t.Fatalf("min %d max %d: values outside the range must be clamped", h.Min(), h.Max())
	}
}

// TestClampedLatencyShown: a latency past the histograms' 60 s is recorded as their top, and
// the table shows it as at least 60 s, not as a measured 60,030 ms.
func TestClampedLatencyShown(t *testing.T) {
	h := newHistogram()
	recordLatency(h, time.Millisecond)
	recordLatency(h, 3*time.Minute)
	l := Summarize(h)
	if got := ms(l.Max); got != ">=60000" {
		t.Fatalf("max of a 3 min latency shown as %q, want >=60000", got)
	}
	if got := ms(l.Min); got != "1.000" {
		t.Fatalf("1 ms shown as %q", got)
	}
	// The JSON says so too: the top as the value, and the top named.
	if l.Max != histMaxUS || l.Ceiling != histMaxUS || !l.AtCeiling(l.Max) || l.AtCeiling(l.Min) {
		t.Fatalf("summary %+v: want max_us = ceiling_us = %d, the max at the ceiling and the min not", l, histMaxUS)
	}
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), fmt.Sprintf(`"max_us":%d,"ceiling_us":%[1]d`, histMaxUS)) {
		t.Fatalf("JSON %s: want max_us and ceiling_us both %d", b, histMaxUS)
	}
}

func TestMergedPercentiles(t *testing.T) {
	// Two workers: one fast (1ms x 990), one slow (100ms x 10). The merged
	// p99 is the boundary and p99.9 must be slow.
	a, b := newHistogram(), newHistogram()
	for range 990 {
		recordLatency(a, time.Millisecond)
	}
	for range 10 {
		recordLatency(b, 100*time.Millisecond)
	}
	a.Merge(b)
	l := Summarize(a)
	if l.P90 > 1001 || l.P999 < 99_900 || l.Max < 99_900 {
		t.Fatalf("merged = %+v", l)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -12345: "-12,345"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*AppendConfig)
		want string // substring of the error; "" = valid
	}{
		{"defaults", func(*AppendConfig) {}, ""},
		{"dist", func(c *AppendConfig) { c.Dist = "pareto" }, "dist"},
		{"expected", func(c *AppendConfig) { c.Expected = "none" }, "expected"},
		{"batch", func(c *AppendConfig) { c.Batch = 20000 }, "batch"},
		{"size", func(c *AppendConfig) { c.EventSize = -1 }, "event-size"},
		{"too big", func(c *AppendConfig) { c.Batch, c.EventSize = 10000, 4096 }, "16 MiB"},
		{"exact streams", func(c *AppendConfig) { c.Expected, c.Streams, c.Concurrency = ExpectedExact, 4, 8 }, "at least the concurrency"},
		{"rate", func(c *AppendConfig) { c.Rate = -1 }, "rate"},
		{"rate NaN", func(c *AppendConfig) { c.Rate = math.NaN() }, "rate"},
		{"rate infinite", func(c *AppendConfig) { c.Rate = math.Inf(1) }, "rate"},
		{"rate above one per nanosecond", func(c *AppendConfig) { c.Rate = 2 * MaxRate }, "up to 1e+09"},
		{"rate one per nanosecond", func(c *AppendConfig) { c.Rate = MaxRate }, ""},
		{"zipf NaN", func(c *AppendConfig) { c.ZipfS = math.NaN() }, "zipf-s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultAppendConfig()
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalidConfig)):
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
			var ce *ConfigError
			if err != nil && (!errors.As(err, &ce) || ce.Field == "" || !strings.HasPrefix(err.Error(), "bench: invalid config: "+ce.Field+" ")) {
				t.Fatalf("error %v is not a *ConfigError naming its field", err)
			}
		})
	}
	c := DefaultAppendConfig()
	if c.Streams != DefaultAppendStreams || c.Concurrency != DefaultConcurrency || c.Duration != DefaultDuration ||
		c.Warmup != DefaultWarmup || c.Expected != ExpectedAny || c.Dist != DistUniform {
		t.Fatalf("defaults: %+v", c)
	}
	c = AppendConfig{Run: Run{Count: 10, Warmup: -1}}
	c.EnsureDefaults()
	c.EnsureDefaults() // idempotent
	if c.Duration != 0 || c.Warmup >= 0 {
		t.Fatalf("count run: duration %s warmup %s", c.Duration, c.Warmup)
	}
}

func TestPickerPartitions(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	for _, dist := range []string{DistUniform, DistZipf} {
		const streams, workers = 103, 8
		seen := map[int]bool{}
		for w := range workers {
			p := newPicker(rand.New(rand.NewPCG(seed, uint64(w))), dist, 1.1, streams, w, workers, true)
			for range 2000 {
				s, local := p.pick()
				if s%workers != w || s >= streams || s != w+local*workers {
					t.Fatalf("%s: worker %d picked stream %d (local %d)", dist, w, s, local)
				}
				seen[s] = true
			}
		}
		if dist == DistUniform && len(seen) != streams {
			t.Fatalf("uniform: %d of %d streams picked", len(seen), streams)
		}
	}
}

func TestZipfSkew(t *testing.T) {
	p := newPicker(rand.New(rand.NewPCG(1, 2)), DistZipf, 1.1, 1000, 0, 1, false)
	counts := make([]int, 1000)
	for range 100000 {
		s, _ := p.pick()
		counts[s]++
	}
	if counts[0] < 10*counts[500] || counts[0] < 5000 {
		t.Fatalf("zipf not skewed: rank0 %d rank500 %d", counts[0], counts[500])
	}
}

func quick(c *Run) {
	c.Warmup = -1
	c.Seed = 42
}

func TestAppendExactNoConflicts(t *testing.T) {
	for _, dist := range []string{DistUniform, DistZipf} {
		m := newMemTarget()
		cfg := AppendConfig{Streams: 64, Batch: 3, EventSize: 16, Expected: ExpectedExact, Dist: dist}
		cfg.Concurrency = 8
		quick(&cfg.Run)
		cfg.Count = 3000
		r, err := RunAppend(context.Background(), cfg, m)
		if err != nil {
			t.Fatal(err)
		}
		if r.Ops != 3000 || r.Conflicts != 0 || r.ErrorCount != 0 || r.Events != 9000 || m.total() != 9000 {
			t.Fatalf("%s: ops %d events %d conflicts %d errors %v stored %d", dist, r.Ops, r.Events, r.Conflicts, r.Errors, m.total())
		}
		if r.Bytes != 9000*16 || r.OpsPerSec <= 0 || r.Latency.Count != 3000 {
			t.Fatalf("%s: bytes %d ops/s %g latency %+v", dist, r.Bytes, r.OpsPerSec, r.Latency)
		}
	}
}

func TestAppendExactResyncsAfterConflict(t *testing.T) {
	m := newMemTarget()
	m.streams["bench-0"] = 5 // left by an earlier run
	m.streams["bench-1"] = 1
	cfg := AppendConfig{Streams: 2, Expected: ExpectedExact, EventSize: 8}
	cfg.Concurrency = 1
	quick(&cfg.Run)
	cfg.Count = 200
	r, err := RunAppend(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	// Conflicts consume count: one per stream to resynchronise.
	if r.Conflicts != 2 || r.Ops != 198 || r.ErrorCount != 0 {
		t.Fatalf("conflicts %d ops %d errors %v", r.Conflicts, r.Ops, r.Errors)
	}
	if m.total() != 6+198 {
		t.Fatalf("stored %d", m.total())
	}
}

func TestAppendAnyAndErrors(t *testing.T) {
	m := newMemTarget()
	cfg := AppendConfig{Streams: 10, Batch: 10, EventSize: 32}
	cfg.Concurrency = 4
	quick(&cfg.Run)
	cfg.Count = 500
	r, err := RunAppend(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 500 || r.Events != 5000 || r.Conflicts != 0 {
		t.Fatalf("ops %d events %d conflicts %d", r.Ops, r.Events, r.Conflicts)
	}

	m.failAll = Classified(KindUnavailable, errors.New("down"))
	cfg.Count = 50
	r, err = RunAppend(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 0 || r.ErrorCount != 50 || r.Errors[KindUnavailable] != 50 {
		t.Fatalf("ops %d errors %v", r.Ops, r.Errors)
	}
}

func TestDurationAndWarmup(t *testing.T) {
	m := newMemTarget()
	m.opDelay = time.Millisecond
	cfg := AppendConfig{Streams: 10, EventSize: 8}
	cfg.Concurrency = 1
	cfg.Seed = 7
	cfg.Warmup = 200 * time.Millisecond
	cfg.Duration = 300 * time.Millisecond
	start := time.Now()
	r, err := RunAppend(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took < 500*time.Millisecond || took > 2*time.Second {
		t.Fatalf("run took %s, want about 500ms", took)
	}
	// Warmup appends are stored but not counted.
	if r.Ops == 0 || int64(m.appends) <= r.Ops {
		t.Fatalf("measured %d of %d appends", r.Ops, m.appends)
	}
	if r.ElapsedSeconds < 0.29 || r.ElapsedSeconds > 0.5 {
		t.Fatalf("elapsed %g, want about 0.3", r.ElapsedSeconds)
	}
}

func TestOpenLoopSchedule(t *testing.T) {
	m := newMemTarget()
	cfg := AppendConfig{Streams: 10, EventSize: 8}
	cfg.Concurrency = 4
	cfg.Seed = 3
	cfg.Warmup = 100 * time.Millisecond
	cfg.Duration = time.Second
	cfg.Rate = 200
	r, err := RunAppend(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	// 200/s for 1s, warmup excluded.
	if r.Ops < 190 || r.Ops > 202 || r.Missed != 0 || r.TargetRate != 200 {
		t.Fatalf("ops %d missed %d rate %g", r.Ops, r.Missed, r.TargetRate)
	}
	if m.appends < 205 {
		t.Fatalf("warmup appends missing: %d total", m.appends)
	}
	if r.OpsPerSec < 170 || r.OpsPerSec > 230 {
		t.Fatalf("ops/s %g, want about 200", r.OpsPerSec)
	}
}

// TestCoordinatedOmission stalls a target for 200ms once, driven by one
// worker. The closed loop sends nothing while stalled, so only the request in
// flight sees it and p99 stays low; the open loop keeps its schedule, the
// requests due during the stall queue up, and their latency from the
// intended send time shows in p99.
func TestCoordinatedOmission(t *testing.T) {
	const stall = 200 * time.Millisecond
	run := func(rate float64) *Result {
		m := newMemTarget()
		m.opDelay = 500 * time.Microsecond
		m.stallAt, m.stall = 50, stall
		cfg := AppendConfig{Streams: 10, EventSize: 8}
		cfg.Concurrency = 1
		cfg.Seed = 11
		cfg.Warmup = -1
		cfg.Duration = 1500 * time.Millisecond
		cfg.Rate = rate
		r, err := RunAppend(context.Background(), cfg, m)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	closed, open := run(0), run(200)
	t.Logf("closed: ops %d p99 %dus max %dus; open: ops %d p90 %dus p99 %dus max %dus",
		closed.Ops, closed.Latency.P99, closed.Latency.Max, open.Ops, open.Latency.P90, open.Latency.P99, open.Latency.Max)
	if closed.Latency.Max < 190_000 || open.Latency.Max < 190_000 {
		t.Fatalf("both loops must see the stall in max")
	}
	if closed.Latency.P99 > 50_000 {
		t.Fatalf("closed loop p99 %dus: expected the stall to be hidden", closed.Latency.P99)
	}
	if open.Latency.P99 < 150_000 || open.Latency.P90 < 10_000 {
		t.Fatalf("open loop p99 %dus p90 %dus: queued requests must carry the stall", open.Latency.P99, open.Latency.P90)
	}
}

func TestOpenLoopMissed(t *testing.T) {
	// A target far slower than the rate: the schedule is not met and the
	// shortfall is reported, with latencies growing from the intended times.
	m := newMemTarget()
	m.opDelay = 10 * time.Millisecond
	cfg := AppendConfig{Streams: 10, EventSize: 8}
	cfg.Concurrency = 1
	cfg.Seed = 5
	cfg.Warmup = -1
	cfg.Duration = 500 * time.Millisecond
	cfg.Rate = 1000
	r, err := RunAppend(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Missed < 400 || r.Ops > 60 || r.Latency.Max < 300_000 {
		t.Fatalf("ops %d missed %d max %dus", r.Ops, r.Missed, r.Latency.Max)
	}
}

// TestOutageShowsInLatency: a target that stops answering a quarter into the measured phase,
// until the end. In an open loop the operations due in the outage are never sent or time out;
// counted only as missed and as errors, they left the percentiles those of the healthy quarter
// (p99 3.4 ms). Their waits (at least until the end, or until the timeout) are latencies too.
// In a closed loop the timeouts alone show it.
func TestOutageShowsInLatency(t *testing.T) {
	for _, rate := range []float64{500, 0} {
		m := newMemTarget()
		cfg := AppendConfig{Streams: 10, EventSize: 8}
		cfg.Concurrency = 4
		cfg.Seed = 1
		cfg.Warmup = -1
		cfg.Duration = 1200 * time.Millisecond
		cfg.OpTimeout = 800 * time.Millisecond
		cfg.Rate = rate
		m.down = time.Now().Add(300 * time.Millisecond)
		r, err := RunAppend(context.Background(), cfg, m)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("rate %g: ops %d errors %v missed %d latency p50 %dus p99 %dus max %dus",
			rate, r.Ops, r.Errors, r.Missed, r.Latency.P50, r.Latency.P99, r.Latency.Max)
		switch {
		case rate > 0 && (r.Latency.P50 < 100_000 || r.Latency.P99 < 400_000):
			t.Fatalf("open loop: p50 %dus p99 %dus with the target down for 900 of the 1200 ms measured: the outage is hidden",
				r.Latency.P50, r.Latency.P99)
		case rate == 0 && r.Latency.Max < 700_000:
			t.Fatalf("closed loop: max %dus with every worker timing out after 800 ms", r.Latency.Max)
		}
	}
}

func TestCancelInterrupts(t *testing.T) {
	m := newMemTarget()
	m.opDelay = time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	cfg := AppendConfig{Streams: 10, EventSize: 8}
	cfg.Concurrency = 2
	cfg.Seed, cfg.Warmup, cfg.Duration = 1, -1, time.Minute
	r, err := RunAppend(ctx, cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Interrupted || r.ErrorCount != 0 || r.Ops == 0 {
		t.Fatalf("interrupted %v errors %v ops %d", r.Interrupted, r.Errors, r.Ops)
	}
}

// TestExactAfterUnknownOutcome: in exact mode, an append whose outcome is unknown (it timed
// out, and here it did commit) leaves its stream's version unknown: the next append expects
// any version and learns it, instead of expecting the old one and counting a spurious conflict.
func TestExactAfterUnknownOutcome(t *testing.T) {
	m := newMemTarget()
	m.loseAckAt = 5
	cfg := AppendConfig{Streams: 1, EventSize: 8, Expected: ExpectedExact}
	cfg.Concurrency = 1
	quick(&cfg.Run)
	cfg.Count = 20
	r, err := RunAppend(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Conflicts != 0 || r.ErrorCount != 1 {
		t.Fatalf("conflicts %d, errors %d (%v); want 0 and the one lost acknowledgement", r.Conflicts, r.ErrorCount, r.Errors)
	}
}

func TestRead(t *testing.T) {
	m := newMemTarget()
	cfg := ReadConfig{Streams: 20, EventsPerStream: 250, PreloadBatch: 100, EventSize: 8}
	cfg.Concurrency = 4
	quick(&cfg.Run)
	cfg.Count = 100
	r, err := RunRead(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if m.total() != 20*250 || r.Preload.Events != 20*250 || r.Preload.Skipped != 0 {
		t.Fatalf("preload: stored %d, %+v", m.total(), r.Preload)
	}
	if r.Ops != 100 || r.Events != 100*250 || r.ErrorCount != 0 || r.Workload != "read" {
		t.Fatalf("replays %d events %d errors %v", r.Ops, r.Events, r.Errors)
	}
	// A second run finds the streams loaded; a partly loaded stream is topped up.
	m.streams["bench-read-3"] = 100
	r, err = RunRead(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Preload.Skipped != 19 || r.Preload.Events != 150 || m.total() != 20*250 {
		t.Fatalf("second preload: %+v stored %d", r.Preload, m.total())
	}
	// A stream longer than asked for (left by a run with other settings) is refused: its
	// replays would time more events than the report says.
	m.streams["bench-read-5"] = 300
	if _, err := RunRead(context.Background(), cfg, m); err == nil || !strings.Contains(err.Error(), "more than the 250 per stream") {
		t.Fatalf("a stream of 300 events for 250 asked: %v", err)
	}
}

func TestResultJSONAndTable(t *testing.T) {
	m := newMemTarget()
	cfg := AppendConfig{Streams: 10, Batch: 2, EventSize: 8, Dist: DistZipf}
	cfg.Concurrency = 2
	quick(&cfg.Run)
	cfg.Count = 100
	r, err := RunAppend(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	get := func(path string) any {
		var v any = doc
		for _, k := range strings.Split(path, ".") {
			obj, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = obj[k]
		}
		return v
	}
	for _, path := range []string{
		"workload", "system.name", "system.version", "system.durability", "shoal_version", "seed", "start",
		"machine.cpus", "machine.cpu_model", "machine.go_version", "machine.os", "machine.arch",
		"config.streams", "config.dist", "config.batch", "config.event_size", "config.expected",
		"config.concurrency", "config.duration_ns", "config.count", "config.warmup_ns", "config.rate", "config.seed",
		"elapsed_seconds", "ops", "events", "bytes", "ops_per_sec", "events_per_sec", "mb_per_sec",
		"latency.p50_us", "latency.p90_us", "latency.p99_us", "latency.p99_9_us", "latency.max_us", "latency.mean_us",
		"conflicts", "error_count", "errors", "interrupted",
	} {
		if get(path) == nil {
			t.Errorf("JSON lacks %s", path)
		}
	}
	if get("system.name") != "mem" || get("config.dist") != "zipf" || get("ops").(float64) != 100 || get("events").(float64) != 200 {
		t.Errorf("JSON values: %s", buf.String())
	}
	buf.Reset()
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"appends", "latency ms", "p99.9", "conflicts", "errors", "none", "seed"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestProgressPlain(t *testing.T) {
	m := newMemTarget()
	m.opDelay = time.Millisecond
	var buf lockedbuf.Buffer
	cfg := AppendConfig{Streams: 10, EventSize: 8}
	cfg.Concurrency = 1
	cfg.Seed, cfg.Warmup, cfg.Duration = 1, -1, 350*time.Millisecond
	cfg.Progress = Progress{W: &buf, Interval: 20 * time.Millisecond}
	if _, err := RunAppend(context.Background(), cfg, m); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if n := strings.Count(out, "\n"); n < 2 || !strings.Contains(out, "ops/s") || strings.Contains(out, "\r") {
		t.Fatalf("progress output:\n%s", out)
	}
}

// nopTarget answers every call at once.
type nopTarget struct{}

func (nopTarget) Append(context.Context, string, int64, [][]byte) (int64, error) { return 0, nil }
func (nopTarget) ReadStream(context.Context, string) (int64, error)              { return 0, nil }

// TestLatencyExcludesPayloadFill: the random payloads of the next append are the load
// generator's work, done outside the timed section: a target that answers at once is not
// charged the milliseconds that 16 MiB of them take.
func TestLatencyExcludesPayloadFill(t *testing.T) {
	cfg := AppendConfig{Streams: 10, Batch: MaxBatch, EventSize: MaxBatchBytes / MaxBatch}
	cfg.Concurrency = 1
	quick(&cfg.Run)
	cfg.Count = 20
	r, err := RunAppend(context.Background(), cfg, nopTarget{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 20 || r.Latency.P50 > 500 {
		t.Fatalf("%d appends to a target that does nothing, p50 %dus p99 %dus: the payload fill is timed", r.Ops, r.Latency.P50, r.Latency.P99)
	}
}

// TestPrepareOutsideTiming: the engine calls an operation's prepare before the due time it
// measures from, once per run and from the worker's goroutine. (The prepare takes 100 ms, an
// operation nothing: a latency of half that is no scheduling delay of a loaded machine.)
func TestPrepareOutsideTiming(t *testing.T) {
	var prepared, ran int
	ops := []op{{
		prepare: func() { prepared++; time.Sleep(100 * time.Millisecond) },
		run:     func(context.Context) (int64, int64, error) { ran++; return 1, 1, nil },
	}}
	run := Run{Concurrency: 1, Count: 10, Warmup: -1}
	run.ensureDefaults(1)
	r := newEngine(run, "test", ops).execute(context.Background())
	if r.Ops != 10 || ran != 10 || prepared < ran || r.Latency.Max >= 50_000 {
		t.Fatalf("ops %d, ran %d, prepared %d, max latency %dus: want 10 runs, each prepared, none charged its 100ms prepare",
			r.Ops, ran, prepared, r.Latency.Max)
	}
}

// A report can go to a file that is not a regular one (/dev/null, /dev/stdout, a pipe): only a
// regular file is truncated before it is written.
func TestReportFileNotRegular(t *testing.T) {
	rf, err := OpenReportFile(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if err := rf.Write(&Result{}); err != nil {
		t.Fatalf("writing the report to %s: %v", os.DevNull, err)
	}
}

// TestRecordUntakenMatchesOneByOne: the untaken operations of an open loop, recorded those
// due within one microsecond together, give the histogram one call per operation gave (which
// took minutes at --rate 1e9), past its range included.
func TestRecordUntakenMatchesOneByOne(t *testing.T) {
	start := time.Unix(1000, 0)
	for _, tc := range []struct {
		interval float64 // ns
		run      time.Duration
		lo       int64
	}{
		{interval: 1e3, run: 50 * time.Millisecond},
		{interval: 333.3, run: 20 * time.Millisecond, lo: 7},
		{interval: 2500, run: 30 * time.Millisecond},
		{interval: 1e7, run: 90 * time.Second}, // waits past the histogram's 60 s
	} {
		e := &engine{start: start, stopAt: start.Add(tc.run), interval: tc.interval}
		hi := e.dueBefore(e.stopAt)
		want, got := newHistogram(), newHistogram()
		for k := tc.lo; k < hi; k++ {
			recordLatency(want, e.stopAt.Sub(e.dueAt(k)))
		}
		e.recordUntaken(got, tc.lo, hi)
		if !got.Equals(want) {
			t.Errorf("interval %v ns over %v: %d values, p50 %d, max %d µs; one by one %d, p50 %d, max %d µs", tc.interval, tc.run,
				got.TotalCount(), got.ValueAtQuantile(50), got.Max(), want.TotalCount(), want.ValueAtQuantile(50), want.Max())
		}
	}
	// One operation due every nanosecond for 2 s: two billion, recorded at once.
	e := &engine{start: start, stopAt: start.Add(2 * time.Second), interval: 1}
	h := newHistogram()
	e.recordUntaken(h, 0, e.dueBefore(e.stopAt))
	if h.TotalCount() != 2e9 || h.Max() < 1_999_000 {
		t.Errorf("2e9 operations due over 2 s: %d recorded, max %d µs", h.TotalCount(), h.Max())
	}
}

// A target that refuses every append at once (a replica's disk low) is asked a few times a
// second per worker, not as fast as the refusals come back.
func TestRefusalsAreNotHammered(t *testing.T) {
	m := newMemTarget()
	m.failAll = Classified("disk_low", errors.New("disk low"))
	cfg := AppendConfig{Streams: 10, EventSize: 8}
	cfg.Concurrency = 2
	quick(&cfg.Run)
	cfg.Duration = 500 * time.Millisecond
	r, err := RunAppend(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	// 2 workers, waits averaging up to 50 ms once the ceiling reaches 100 ms: about 40 in all.
	if r.Ops != 0 || r.Errors["disk_low"] == 0 || r.Errors["disk_low"] > 200 {
		t.Fatalf("ops %d errors %v: want a few dozen refusals in 500ms", r.Ops, r.Errors)
	}
}

func TestRefusedWait(t *testing.T) {
	var w worker
	refused := Classified(KindUnavailable, errors.New("down"))
	for range 20 {
		if d := w.refusedWait(refused); d < 0 || d > refusedWaitMax {
			t.Fatalf("wait %s after %d refusals, want at most %s", d, w.refusals, refusedWaitMax)
		}
	}
	if w.refusals != 20 {
		t.Fatalf("%d refusals counted, want 20", w.refusals)
	}
	for _, err := range []error{&ConflictError{Actual: 3}, Classified(KindTimeout, context.DeadlineExceeded)} {
		if d := w.refusedWait(err); d != 0 {
			t.Fatalf("waits %s after %v, want none", d, err)
		}
	}
	if d := w.refusedWait(nil); d != 0 || w.refusals != 0 {
		t.Fatalf("after a success: wait %s, %d refusals; want none", d, w.refusals)
	}
	// The first wait after a success is at most the minimum again.
	if d := w.refusedWait(refused); d > refusedWaitMin {
		t.Fatalf("first wait %s, want at most %s", d, refusedWaitMin)
	}
}

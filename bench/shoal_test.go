package bench

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestShoalEmbedded drives a real single-node server through ShoalTarget:
// short append runs (batch 1 and 10, exact and any) and a read run.
func TestShoalEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	ctx := context.Background()
	emb, err := StartEmbedded(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := emb.Close(); err != nil {
			t.Error(err)
		}
	}()
	target, err := DialShoal(ctx, []string{emb.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()

	for _, batch := range []int{1, 10} {
		for _, expected := range []string{ExpectedExact, ExpectedAny} {
			t.Run(fmt.Sprintf("append-batch%d-%s", batch, expected), func(t *testing.T) {
				cfg := AppendConfig{Streams: 50, Batch: batch, Expected: expected, EventSize: 100,
					StreamPrefix: fmt.Sprintf("b%d-%s-", batch, expected)}
				cfg.Concurrency = 8
				cfg.Seed = 1
				cfg.Warmup = 200 * time.Millisecond
				cfg.Duration = time.Second
				r, err := RunAppend(ctx, cfg, target)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%d appends, %.0f/s, p99 %dus, errors %v", r.Ops, r.OpsPerSec, r.Latency.P99, r.Errors)
				if r.Ops < 10 || r.ErrorCount != 0 || r.Conflicts != 0 || r.Events != r.Ops*int64(batch) {
					t.Fatalf("ops %d events %d conflicts %d errors %v", r.Ops, r.Events, r.Conflicts, r.Errors)
				}
				if r.System.Name != "shoal" || r.System.Durability == "" {
					t.Fatalf("system %+v", r.System)
				}
			})
		}
	}

	t.Run("subscribe", func(t *testing.T) {
		// Every event appended in the measured phase reaches the subscriber: with batch 1,
		// as many deliveries as appends (give or take the phase's edges).
		cfg := AppendConfig{Streams: 50, EventSize: 100, StreamPrefix: "sub-", Subscribe: true}
		cfg.Concurrency = 8
		cfg.Warmup = 300 * time.Millisecond
		cfg.Duration = time.Second
		r, err := RunAppend(ctx, cfg, target)
		if err != nil {
			t.Fatal(err)
		}
		d := r.Delivery
		if d == nil || d.Error != "" {
			t.Fatalf("delivery %+v", d)
		}
		t.Logf("%d appends, %d delivered, delivery p50 %dus p99 %dus", r.Ops, d.Events, d.Latency.P50, d.Latency.P99)
		if d.Events < r.Ops*9/10 || d.Events > r.Ops+int64(cfg.Concurrency) || d.Latency.P50 <= 0 {
			t.Fatalf("%d appends, %d delivered (latency %+v)", r.Ops, d.Events, d.Latency)
		}
	})

	t.Run("exact-conflict", func(t *testing.T) {
		// The stream exists: the first exact append (no-stream) conflicts,
		// the worker resynchronises from the reported version.
		if _, err := target.Append(ctx, "pre-0", ExpectAny, [][]byte{[]byte("x"), []byte("y")}); err != nil {
			t.Fatal(err)
		}
		last, err := target.Append(ctx, "pre-0", ExpectNoStream, [][]byte{[]byte("z")})
		var ce *ConflictError
		if !asConflict(err, &ce) || ce.Actual != 1 {
			t.Fatalf("last %d err %v: want a conflict at version 1", last, err)
		}
		cfg := AppendConfig{Streams: 1, StreamPrefix: "pre-", Expected: ExpectedExact, EventSize: 10}
		cfg.Concurrency, cfg.Count, cfg.Warmup, cfg.Seed = 1, 20, -1, 1
		r, err := RunAppend(ctx, cfg, target)
		if err != nil {
			t.Fatal(err)
		}
		if r.Conflicts != 1 || r.Ops != 19 || r.ErrorCount != 0 {
			t.Fatalf("conflicts %d ops %d errors %v", r.Conflicts, r.Ops, r.Errors)
		}
		n, err := target.ReadStream(ctx, "pre-0")
		if err != nil || n != 2+19 {
			t.Fatalf("read %d, %v", n, err)
		}
	})

	t.Run("read", func(t *testing.T) {
		cfg := ReadConfig{Streams: 20, EventsPerStream: 120, PreloadBatch: 50, EventSize: 64}
		cfg.Concurrency = 4
		cfg.Seed = 1
		cfg.Warmup = -1
		cfg.Duration = time.Second
		r, err := RunRead(ctx, cfg, target)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d replays, %.0f events/s, p99 %dus", r.Ops, r.EventsPerSec, r.Latency.P99)
		if r.Preload.Events != 20*120 || r.Ops < 5 || r.Events != r.Ops*120 || r.ErrorCount != 0 {
			t.Fatalf("preload %+v replays %d events %d errors %v", r.Preload, r.Ops, r.Events, r.Errors)
		}
	})
}

func asConflict(err error, ce **ConflictError) bool {
	c, ok := err.(*ConflictError)
	*ce = c
	return ok
}

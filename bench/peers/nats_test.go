package peers

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoaldb/shoal/bench"
)

func startTestNATS(t *testing.T) *NATS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := StartNATS(ctx, NATSConfig{Dir: t.TempDir(), Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// stored returns how many messages the stream's subject holds.
func stored(t *testing.T, n *NATS, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := n.js.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("ev."+stream))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects["ev."+stream]
}

// TestNATSBatchAppend: batches carry the expected version, and one the check refuses stores
// nothing.
func TestNATSBatchAppend(t *testing.T) {
	n := startTestNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	batch := func(k int) [][]byte {
		evs := make([][]byte, k)
		for i := range evs {
			evs[i] = []byte{byte(i)}
		}
		return evs
	}
	if last, err := n.Append(ctx, "s", bench.ExpectNoStream, batch(3)); err != nil || last != 2 {
		t.Fatalf("first batch: last %d, %v; want 2", last, err)
	}
	if last, err := n.Append(ctx, "s", 2, batch(2)); err != nil || last != 4 {
		t.Fatalf("second batch: last %d, %v; want 4", last, err)
	}
	if _, err := n.Append(ctx, "s", bench.ExpectNoStream, batch(4)); !errors.Is(err, bench.ErrConflict) {
		t.Fatalf("batch expecting no stream: %v, want a conflict", err)
	}
	if last, err := n.Append(ctx, "s", 4, batch(1)); err != nil || last != 5 {
		t.Fatalf("single event: last %d, %v; want 5", last, err)
	}
	if got := stored(t, n, "s"); got != 6 {
		t.Fatalf("stored %d messages, want 6", got)
	}
}

// TestNATSBatchAllOrNothing: a batch that fails part-way (here its second event is over the
// server's payload limit) stores none of its events: it is one atomic batch, not a publish
// per event.
func TestNATSBatchAllOrNothing(t *testing.T) {
	n := startTestNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	big := bytes.Repeat([]byte("x"), 2<<20) // over the default max_payload, 1 MB
	if _, err := n.Append(ctx, "s", bench.ExpectNoStream, [][]byte{[]byte("a"), big}); err == nil {
		t.Fatal("a batch with an event over the payload limit was appended")
	}
	if got := stored(t, n, "s"); got != 0 {
		t.Fatalf("the failed batch stored %d of its events", got)
	}
}

// TestNATSConcurrentBatches: 64 callers append atomic batches of 100 events at once, all to
// the one JetStream stream, with their expected versions, and none is refused.
func TestNATSConcurrentBatches(t *testing.T) {
	n := startTestNATS(t)
	cfg := bench.AppendConfig{Streams: 1000, Batch: 100, EventSize: 16, Expected: bench.ExpectedExact}
	cfg.Concurrency, cfg.Count, cfg.Warmup, cfg.Seed = 64, 256, -1, 1
	r, err := bench.RunAppend(context.Background(), cfg, n)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 256 || r.Conflicts != 0 || r.ErrorCount != 0 {
		t.Fatalf("%d batches appended, %d conflicts, errors %v", r.Ops, r.Conflicts, r.Errors)
	}
}

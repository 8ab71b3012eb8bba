package bench

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// subTarget is a memTarget that is also a Subscriber: every stored event is delivered to the
// subscription at once, stamped when its append arrived. flood, if > 0, is delivered first,
// stamped now, and floodHeap is then how much more heap was in use after them than before.
type subTarget struct {
	*memTarget
	flood     int
	floodHeap int64

	subMu sync.Mutex
	fn    func(time.Time)
}

func (s *subTarget) Append(ctx context.Context, stream string, expected int64, events [][]byte) (int64, error) {
	stamped := time.Now()
	last, err := s.memTarget.Append(ctx, stream, expected, events)
	s.subMu.Lock()
	fn := s.fn
	s.subMu.Unlock()
	if err == nil && fn != nil {
		for range events {
			fn(stamped)
		}
	}
	return last, err
}

func (s *subTarget) Subscribe(ctx context.Context, fn func(time.Time)) error {
	if s.flood > 0 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		now := time.Now()
		for range s.flood {
			fn(now)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		s.floodHeap = int64(after.HeapAlloc) - int64(before.HeapAlloc)
	}
	s.subMu.Lock()
	s.fn = fn
	s.subMu.Unlock()
	<-ctx.Done()
	return nil
}

// TestDeliveryMemoryBounded: a subscription's deliveries are recorded in a histogram, not
// kept one by one for the whole run.
func TestDeliveryMemoryBounded(t *testing.T) {
	s := &subTarget{memTarget: newMemTarget(), flood: 2_000_000}
	cfg := AppendConfig{Streams: 10, EventSize: 8, Subscribe: true}
	cfg.Concurrency = 1
	quick(&cfg.Run)
	cfg.Count = 10
	if _, err := RunAppend(context.Background(), cfg, s); err != nil {
		t.Fatal(err)
	}
	if s.floodHeap > 8<<20 {
		t.Fatalf("%d deliveries left %d MB more heap in use", s.flood, s.floodHeap>>20)
	}
}

// TestDeliveryMeasuredPhase: the deliveries reported are those of the events appended in the
// measured phase, warmup excluded.
func TestDeliveryMeasuredPhase(t *testing.T) {
	s := &subTarget{memTarget: newMemTarget()}
	s.opDelay = time.Millisecond
	cfg := AppendConfig{Streams: 10, EventSize: 8, Batch: 2, Subscribe: true}
	cfg.Concurrency = 1
	cfg.Seed = 5
	cfg.Warmup = 100 * time.Millisecond
	cfg.Duration = 200 * time.Millisecond
	r, err := RunAppend(context.Background(), cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	d := r.Delivery
	if d == nil || d.Error != "" || r.Events == 0 || d.Events < r.Events-2 || d.Events > r.Events+2 || s.total() <= r.Events+2 {
		t.Fatalf("%d events measured of %d stored, delivery %+v: want the measured events' deliveries", r.Events, s.total(), d)
	}
}

package query

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"

	"github.com/shoaldb/shoal/client"
)

// bytePages serves fakeSource's logs in pages that end once their events hold MaxPageBytes,
// before count events, as clientSource's do, and records every long poll (a read of a shard
// taken for caught up, outside the Concurrency limit) of a shard with events left to read.
type bytePages struct {
	*fakeSource
	polledBehind []string
}

func (b *bytePages) ReadShard(_ context.Context, shard uint32, from uint64, count int, wait time.Duration, _ func()) ([]client.RecordedEvent, uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	log := b.shards[shard]
	if wait > 0 && from < uint64(len(log)) {
		b.polledBehind = append(b.polledBehind, fmt.Sprintf("shard %d at %d of %d", shard, from, len(log)))
	}
	var evs []client.RecordedEvent
	for size := 0; from+uint64(len(evs)) < uint64(len(log)) && len(evs) < count && size < MaxPageBytes; {
		ev := log[from+uint64(len(evs))]
		evs = append(evs, ev)
		size += len(ev.Data) + len(ev.Metadata) + len(ev.Stream) + len(ev.Type) + len(ev.ContentType)
	}
	return evs, from + uint64(len(evs)), nil
}

// TestProjectionPageCutByBytesNotCaughtUp: a page that ends at MaxPageBytes, before PageSize
// events, does not mean its shard is caught up: the shard's next page is read like those of
// the other shards catching up, under the Concurrency limit, not as a long poll outside it
// (which let every shard of large events read its 16 MiB pages at once, whatever Concurrency).
func TestProjectionPageCutByBytesNotCaughtUp(t *testing.T) {
	src := &bytePages{fakeSource: newFakeSource(3, 5)}
	big := make([]byte, 4<<20) // 4 events a page, fewer than testConfig's PageSize of 7
	want := map[uint32]uint64{}
	for s := range src.shards {
		for pos := range uint64(10) {
			src.shards[s] = append(src.shards[s], client.RecordedEvent{Stream: "acct-1", Shard: uint32(s), Position: pos,
				ID: uuid.New(), Type: "Deposited", Data: big})
		}
		want[uint32(s)] = 9
	}
	cfg := testConfig(vfs.NewMem(), HandlerFunc(countingHandler))
	cfg.Concurrency = 1
	p, err := open(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	runUntil(t, p, want)
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.polledBehind) > 0 {
		t.Fatalf("shards read as caught up (long polls outside Concurrency) with events left: %v", src.polledBehind)
	}
}

// stuckSource is a fakeSource whose reads of the shards in stuck wait until their context ends
// or for hold, then fail unavailable: the client's retries of a read of a shard that lost its
// quorum, which last its whole retry budget (RetryPolicy.MaxElapsed, 30 s by default).
type stuckSource struct {
	*fakeSource
	stuck map[uint32]bool
	hold  time.Duration
}

func (s *stuckSource) ReadShard(ctx context.Context, shard uint32, from uint64, count int, wait time.Duration, arrived func()) ([]client.RecordedEvent, uint64, error) {
	if !s.stuck[shard] {
		return s.fakeSource.ReadShard(ctx, shard, from, count, wait, arrived)
	}
	t := time.NewTimer(s.hold)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, from, fmt.Errorf("fake: shard %d has no leader: %w", shard, client.ErrUnavailable)
}

// TestProjectionCatchesUpBesideStuckShards: shards whose reads wait without an answer (lost
// quorum: the client retries each read for its whole budget) do not keep the other shards from
// catching up. Two of four shards stuck, Concurrency 2: their catch-up reads held both places
// for as long as each read lasted, and the healthy shards read nothing meanwhile.
func TestProjectionCatchesUpBesideStuckShards(t *testing.T) {
	src := &stuckSource{fakeSource: newFakeSource(4, 5), stuck: map[uint32]bool{0: true, 1: true}, hold: 20 * time.Second}
	want := src.add(2000)
	cfg := testConfig(vfs.NewMem(), HandlerFunc(countingHandler))
	cfg.Concurrency = 2
	cfg.PollMax = 50 * time.Millisecond
	p, err := open(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	start := time.Now()
	for _, s := range []uint32{2, 3} {
		if err := p.WaitFor(wctx, s, want[s]); err != nil {
			cancel()
			t.Fatalf("healthy shard %d not caught up to %d after %v beside two stuck shards: %v (checkpoint %v, run: %v)",
				s, want[s], time.Since(start).Round(time.Millisecond), err, p.Checkpoint(), <-done)
		}
	}
	t.Logf("healthy shards caught up in %v", time.Since(start).Round(time.Millisecond))
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

// slowPages is a fakeSource whose first catch-up read of each shard gets its first event at once
// and the rest of the page only after slow: a page of large events over a slow link. It records
// the most catch-up reads it served at once.
type slowPages struct {
	*fakeSource
	slow          time.Duration
	reading, most atomic.Int32
}

func (s *slowPages) ReadShard(ctx context.Context, shard uint32, from uint64, count int, wait time.Duration, arrived func()) ([]client.RecordedEvent, uint64, error) {
	if wait > 0 || from > 0 {
		return s.fakeSource.ReadShard(ctx, shard, from, count, wait, arrived)
	}
	n := s.reading.Add(1)
	defer s.reading.Add(-1)
	for m := s.most.Load(); n > m && !s.most.CompareAndSwap(m, n); m = s.most.Load() {
	}
	arrived()
	select {
	case <-time.After(s.slow):
	case <-ctx.Done():
	}
	return s.fakeSource.ReadShard(ctx, shard, from, count, wait, arrived)
}

// TestSlowPagesKeepTheirPlace: a catch-up read that is receiving its page, however slowly,
// keeps its place under Concurrency: only one whose first event has not come within PollMax
// gives it up. Before, a page that took longer than PollMax to arrive gave its place up, and
// every shard went on to hold a page in memory at once.
func TestSlowPagesKeepTheirPlace(t *testing.T) {
	// Pages take five PollMaxes, with room to spare for a scheduler that is slow to run the
	// reader between its taking the place and its first event.
	src := &slowPages{fakeSource: newFakeSource(4, 9), slow: time.Second}
	want := src.add(200)
	cfg := testConfig(vfs.NewMem(), HandlerFunc(countingHandler))
	cfg.Concurrency = 1
	cfg.PollMax = 200 * time.Millisecond
	p, err := open(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	runUntil(t, p, want)
	if most := src.most.Load(); most != 1 {
		t.Fatalf("%d catch-up reads at once under Concurrency 1", most)
	}
}

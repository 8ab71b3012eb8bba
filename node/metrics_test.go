package node

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/shard"
)

// TestScrapeDuringStart: the embedder's registry (Config.Registry) may be gathered at any time,
// also while Start runs; the collectors Start registers must not race with what Start sets
// after (run with -race; a few starts, as a scrape must fall in the window).
func TestScrapeDuringStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, t.TempDir())
	cfg.Registry = reg
	cfg.DisableHTTP = true
	var stop atomic.Bool
	var scrapers sync.WaitGroup
	for range 2 {
		scrapers.Go(func() {
			for !stop.Load() {
				reg.Gather()
			}
		})
	}
	defer func() {
		stop.Store(true)
		scrapers.Wait()
	}()
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		n, err := Start(ctx, cfg)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		n.Close()
	}
}

// stuckSM is a state machine whose Applied, which the raft loop calls when it opens the group,
// blocks until release is closed: the loop stops answering meanwhile, as on a hung disk.
type stuckSM struct {
	entered chan struct{}
	release chan struct{}
}

func (s *stuckSM) Apply(*pebble.Batch, uint64, []byte) any { return nil }
func (s *stuckSM) SetApplied(*pebble.Batch, uint64)        {}
func (s *stuckSM) Applied() uint64 {
	close(s.entered)
	<-s.release
	return 0
}
func (s *stuckSM) Span() (lo, hi []byte) { return []byte{0xfe}, []byte{0xff} }
func (s *stuckSM) Reload() error         { return nil }
func (s *stuckSM) Committed()            {}

// TestScrapeWithStuckRaftLoop: a scrape while the raft loop does not answer returns within
// about scrapeStatusWait, with what the groups' atomics tell and the count of shards left
// unanswered; the scrapes after it neither wait again nor pile up goroutines; once the loop
// answers again, every series is back.
func TestScrapeWithStuckRaftLoop(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, t.TempDir())
	cfg.Registry = reg
	cfg.PlacementInterval = -1
	cfg.DisableHTTP = true
	n := startNode(t, cfg)
	gather := func() map[string]*dto.MetricFamily {
		t.Helper()
		got := make(chan []*dto.MetricFamily, 1)
		go func() {
			mfs, _ := reg.Gather()
			got <- mfs
		}()
		select {
		case mfs := <-got:
			byName := map[string]*dto.MetricFamily{}
			for _, mf := range mfs {
				byName[mf.GetName()] = mf
			}
			return byName
		case <-time.After(3 * scrapeStatusWait):
			t.Fatalf("a scrape took longer than %v", 3*scrapeStatusWait)
			return nil
		}
	}
	shards := len(n.host.Groups())
	if mfs := gather(); len(mfs["shoal_shard_voters"].GetMetric()) != shards {
		t.Fatalf("before the stall: %d shoal_shard_voters series, want %d", len(mfs["shoal_shard_voters"].GetMetric()), shards)
	}

	sm := &stuckSM{entered: make(chan struct{}), release: make(chan struct{})}
	opened := make(chan error, 1)
	go func() {
		_, err := n.host.OpenGroup(1000, sm, nil)
		opened <- err
	}()
	released := false
	release := func() {
		if !released {
			released = true
			close(sm.release)
			if err := <-opened; err != nil {
				t.Errorf("opening the stuck group: %v", err)
			}
		}
	}
	defer release()
	<-sm.entered

	start := time.Now()
	mfs := gather()
	t.Logf("scrape with the loop stuck took %v", time.Since(start))
	if v := mfs["shoal_shard_status_unanswered"].GetMetric()[0].GetGauge().GetValue(); v != float64(shards) {
		t.Errorf("shoal_shard_status_unanswered = %v, want %d", v, shards)
	}
	if len(mfs["shoal_shard_voters"].GetMetric()) != 0 {
		t.Errorf("shoal_shard_voters reported without an answer of the raft loop")
	}
	for _, m := range mfs["shoal_shard_is_leader"].GetMetric() {
		if m.GetGauge().GetValue() != 1 {
			t.Errorf("shoal_shard_is_leader %v, want 1 (read from the group)", m)
		}
	}
	if got := len(mfs["shoal_shard_is_leader"].GetMetric()); got != shards {
		t.Errorf("%d shoal_shard_is_leader series, want %d", got, shards)
	}
	goroutines := runtime.NumGoroutine()
	start = time.Now()
	for range 20 {
		gather()
	}
	if took := time.Since(start); took > scrapeStatusWait {
		t.Errorf("20 scrapes with the loop still stuck took %v: they waited for the groups asked already", took)
	}
	if more := runtime.NumGoroutine() - goroutines; more >= 20 {
		t.Errorf("%d more goroutines after 20 scrapes with the loop stuck", more)
	}

	release()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mfs := gather()
		unanswered := mfs["shoal_shard_status_unanswered"].GetMetric()[0].GetGauge().GetValue()
		if unanswered == 0 && len(mfs["shoal_shard_voters"].GetMetric()) == shards+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the loop answered again: %v unanswered, %d shoal_shard_voters series, want 0 and %d",
				unanswered, len(mfs["shoal_shard_voters"].GetMetric()), shards+1)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEventsCountedWhereWritten: an append's events count on the node whose state machine
// wrote them; a forwarded answer or a duplicate counts nothing, unless a proposal of the same
// call was taken by raft and its answer lost (its events written, counted by no node).
func TestEventsCountedWhereWritten(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  any
		lost bool
		want int
	}{
		{"written here", &shard.AppendResult{}, false, 3},
		{"duplicate", &shard.AppendResult{Duplicate: true}, false, 0},
		{"duplicate of a lost proposal", &shard.AppendResult{Duplicate: true}, true, 3},
		{"written here after a lost proposal", &shard.AppendResult{}, true, 3},
		{"forwarded", &shoalv1.AppendResponse{}, false, 0},
		{"forwarded duplicate", &shoalv1.AppendResponse{Duplicate: true}, false, 0},
		{"forwarded duplicate of a lost proposal", &shoalv1.AppendResponse{Duplicate: true}, true, 3},
		{"forwarded after a lost proposal", &shoalv1.AppendResponse{}, true, 0},
		{"refused", shard.ErrWrongExpectedVersion, true, 0},
	} {
		if got := appendedHere(tc.res, 3, tc.lost); got != tc.want {
			t.Errorf("%s: %d events counted, want %d", tc.name, got, tc.want)
		}
	}
}

// TestConcurrentScrapesShareStatus: two scrapes at once (a Prometheus pair, an embedder's
// registry and /metrics) both report every group of a healthy node; the second waits for the
// answers the first asked for instead of leaving those groups out as unanswered.
func TestConcurrentScrapesShareStatus(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, t.TempDir())
	cfg.Registry = reg
	cfg.Shards = 32
	cfg.PlacementInterval = -1
	cfg.DisableHTTP = true
	n := startNode(t, cfg)
	shards := len(n.host.Groups())
	for round := range 20 {
		var wg sync.WaitGroup
		var bad atomic.Int64
		for range 2 {
			wg.Go(func() {
				mfs, err := reg.Gather()
				if err != nil {
					t.Error(err)
					return
				}
				for _, mf := range mfs {
					switch mf.GetName() {
					case "shoal_shard_status_unanswered":
						if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 0 {
							bad.Add(1)
						}
					case "shoal_shard_voters":
						if len(mf.GetMetric()) != shards {
							bad.Add(1)
						}
					}
				}
			})
		}
		wg.Wait()
		if bad.Load() != 0 {
			t.Fatalf("round %d: a concurrent scrape of a healthy node left groups out as unanswered", round)
		}
	}
}

// TestStreamCacheBoundedNodeWide: Config.StreamCache bounds the stream metadata a node's
// shards cache, shared by the cluster's shards (a shard cached up to a million streams
// whatever the node held: gigabytes for a node holding 32 shards of many streams).
func TestStreamCacheBoundedNodeWide(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, t.TempDir()) // 4 shards
	cfg.Registry = reg
	cfg.DisableHTTP = true
	cfg.StreamCache = 4 * minShardStreamCache
	n := startNode(t, cfg)
	s := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const streams = 3000
	for i := range streams {
		id := uuid.New()
		if _, err := s.Append(ctx, &shoalv1.AppendRequest{Stream: fmt.Sprintf("cache-%d", i),
			Events: []*shoalv1.EventData{{Id: id[:], Type: "E"}}}); err != nil {
			t.Fatal(err)
		}
	}
	cached := 0.0
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "shoal_stream_cache_entries" {
			cached = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if cached == 0 || cached > float64(cfg.StreamCache) {
		t.Fatalf("shoal_stream_cache_entries %v after appends to %d streams, want 1..%d", cached, streams, cfg.StreamCache)
	}
	t.Logf("%v streams cached of %d appended to", cached, streams)
}

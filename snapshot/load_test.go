package snapshot

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
)

// readFaults fails forward Reads of one stream from version 0 after their first page: a
// transient error on which the client resumes the read after the last event it yielded,
// as after a failover.
type readFaults struct {
	mu     sync.Mutex
	stream string
	left   int // Reads still to fail
}

// arm makes the next n forward Reads of stream from version 0 fail after their first page.
func (f *readFaults) arm(stream string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stream, f.left = stream, n
}

func (f *readFaults) take(r *shoalv1.ReadRequest) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Stream != f.stream || r.Backward || r.FromEnd || r.FromVersion != 0 || f.left == 0 {
		return false
	}
	f.left--
	return true
}

func (f *readFaults) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || method != "/shoal.v1.Streams/Read" {
		return cs, err
	}
	return &faultyRead{ClientStream: cs, faults: f}, nil
}

type faultyRead struct {
	grpc.ClientStream
	faults *readFaults
	fail   bool // this Read fails its second receive
	recvs  int
}

func (r *faultyRead) SendMsg(m any) error {
	if req, ok := m.(*shoalv1.ReadRequest); ok && r.faults.take(req) {
		r.fail = true
	}
	return r.ClientStream.SendMsg(m)
}

func (r *faultyRead) RecvMsg(m any) error {
	if r.fail {
		if r.recvs++; r.recvs == 2 {
			return status.Error(codes.Unavailable, "injected: connection reset")
		}
	}
	return r.ClientStream.RecvMsg(m)
}

// tally is an aggregate whose ApplyFunc folds events into its own map, in place, as
// ApplyFunc allows ("own the old one").
type tally struct{ Counts map[string]int }

var tallyCodec = JSONCodec[tally]("tally/json/v1")

func newTally() tally { return tally{Counts: map[string]int{}} }

// churn changes a stream under the loads of it: on the first event of the stream's current
// life, while the read that yielded it still has pages to come, it deletes the stream and
// appends rewrite events ("new") to it again, times times.
type churn struct {
	t       testing.TB
	c       *client.Client
	stream  string
	rewrite int
	times   int
	start   uint64 // first version of the stream's current life
}

func (ch *churn) apply(s tally, ev client.RecordedEvent) (tally, error) {
	if ch.times > 0 && ev.Version == ch.start {
		ch.times--
		ctx := testCtx(ch.t)
		if err := ch.c.Delete(ctx, ch.stream, client.Any); err != nil {
			return s, err
		}
		if ch.rewrite > 0 {
			evs := make([]client.Event, ch.rewrite)
			for i := range evs {
				evs[i] = client.Event{Type: "Counted", Data: []byte("new")}
			}
			res, err := ch.c.Append(ctx, ch.stream, client.Any, evs...)
			if err != nil {
				return s, err
			}
			ch.start = res.FirstVersion
		}
	}
	s.Counts[string(ev.Data)]++
	return s, nil
}

// TestLoadStartsOverFromFreshInitialState: a load that starts over because the stream was
// deleted and written again under it (its resumed read skips versions), or that finds the
// stream deleted under it, never returns (nor Repository saves as a snapshot) a state the
// abandoned read already folded events into, even one an ApplyFunc changed in place.
func TestLoadStartsOverFromFreshInitialState(t *testing.T) {
	faults := &readFaults{}
	cl := testnode.Start(t, 1, testnode.Options{Shards: 4, Replication: 1})
	ctx := testCtx(t)
	c, err := client.Dial(ctx, []string{cl.Nodes[0].Addr()},
		client.WithDialOptions(grpc.WithChainStreamInterceptor(faults.intercept)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	store, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// setup writes n events and returns a churn of stream with its next forward read from
	// version 0 failing after its first page.
	setup := func(t *testing.T, stream string, n, rewrite, times int) *churn {
		t.Helper()
		evs := make([]client.Event, n)
		for i := range evs {
			evs[i] = client.Event{Type: "Counted", Data: []byte("old-" + strconv.Itoa(i%3))}
		}
		if _, err := c.Append(ctx, stream, client.NoStream, evs...); err != nil {
			t.Fatal(err)
		}
		faults.arm(stream, times)
		return &churn{t: t, c: c, stream: stream, rewrite: rewrite, times: times}
	}
	viaLoad := func(ch *churn) (Loaded[tally], error) {
		return Load(ctx, store, ch.stream, newTally(), ch.apply, tallyCodec)
	}
	viaRepository := func(ch *churn) (Loaded[tally], error) {
		repo, err := NewRepository(RepositoryConfig[tally]{Store: store, Codec: tallyCodec,
			Initial: newTally, Apply: ch.apply, Policy: Policy{Every: 1}})
		if err != nil {
			return Loaded[tally]{}, err
		}
		return repo.Load(ctx, ch.stream)
	}

	// 300 events are more than one read page: the resumed read skips versions. 10 fit in the
	// first page, which the read yields whole before it fails: the resumed read goes on at
	// the next version, where the stream's new life starts.
	for _, tc := range []struct {
		name    string
		stream  string
		load    func(*churn) (Loaded[tally], error)
		events  int            // written before the delete
		rewrite int            // events written after the delete; 0 leaves the stream deleted
		want    map[string]int // the loaded state; nil: no stream
		saves   bool           // the load saves a snapshot
	}{
		{"Load, rewritten", "tally-load-rewritten", viaLoad, 300, 1, map[string]int{"new": 1}, false},
		{"Repository, rewritten", "tally-repo-rewritten", viaRepository, 300, 1, map[string]int{"new": 1}, true},
		{"Load, deleted", "tally-load-deleted", viaLoad, 300, 0, nil, false},
		{"Repository, deleted", "tally-repo-deleted", viaRepository, 300, 0, nil, false},
		{"Load, rewritten after one page", "tally-load-page", viaLoad, 10, 1, map[string]int{"new": 1}, false},
		{"Repository, rewritten after one page", "tally-repo-page", viaRepository, 10, 1, map[string]int{"new": 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := setup(t, tc.stream, tc.events, tc.rewrite, 1)
			l, err := tc.load(ch)
			if err != nil {
				t.Fatal(err)
			}
			if ch.times != 0 {
				t.Fatal("the stream was not changed under the load")
			}
			if l.Exists != (tc.want != nil) || !maps.Equal(l.State.Counts, tc.want) {
				t.Fatalf("loaded %v (exists %v), want %v (exists %v): the state folds events of a read the load abandoned",
					l.State.Counts, l.Exists, tc.want, tc.want != nil)
			}
			if tc.want == nil {
				return
			}
			// What the Repository saved (or a fresh load) is the stream's state too.
			l2, err := viaRepository(&churn{t: t, c: c, stream: ch.stream})
			if err != nil || l2.FromSnapshot != tc.saves || !maps.Equal(l2.State.Counts, tc.want) {
				t.Fatalf("next load (from snapshot %v at %d): %v, %v; want %v",
					l2.FromSnapshot, l2.SnapshotVersion, l2.State.Counts, err, tc.want)
			}
		})
	}

	// A stream written again under every attempt fails the load with ErrVersionGap.
	t.Run("rewritten under every attempt", func(t *testing.T) {
		ch := setup(t, "tally-every", 300, 300, maxLoadAttempts)
		l, err := viaLoad(ch)
		if !errors.Is(err, ErrVersionGap) || ch.times != 0 {
			t.Fatalf("Load = %v, %v after %d of %d rewrites; want ErrVersionGap after all",
				l.State.Counts, err, maxLoadAttempts-ch.times, maxLoadAttempts)
		}
	})
}

package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// seed appends n events to stream, in batches of 7.
func seed(t *testing.T, c *Client, stream string, n int) {
	t.Helper()
	for i := 0; i < n; i += 7 {
		var evs []Event
		for j := i; j < min(i+7, n); j++ {
			evs = append(evs, Event{Type: "E", Data: []byte(fmt.Sprint(j))})
		}
		if _, err := c.Append(testCtx(t), stream, Any, evs...); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadResumeFindsStreamChanged: a read that resumes after a failure, and finds the last
// event it yielded gone or another (the stream deleted and written again meanwhile, its
// versions going on), ends with ErrStreamChanged instead of yielding the new history after
// the old one; a stale read whose replica lacks that event ends quietly, as stale reads may;
// a backward stale read goes on with the events before it, when its replica holds the one
// just before, and else ends there too, rather than skip the events between.
func TestReadResumeFindsStreamChanged(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	n := fc.nodes[0]
	ctx := testCtx(t)
	failOnce := func(change func(evs []*shoalv1.RecordedEvent) []*shoalv1.RecordedEvent) {
		// Atomic: each read's handler runs on a goroutine of its own, ordered after the one
		// before only through the socket, which the race detector does not see.
		var calls atomic.Int32
		n.setReadFault(func(page int) error {
			if page == 1 {
				calls.Add(1)
			}
			if calls.Load() == 1 && page == 2 {
				fc.mu.Lock()
				if evs := change(fc.streams["s"]); evs != nil {
					fc.streams["s"] = evs
				} else {
					delete(fc.streams, "s")
				}
				fc.mu.Unlock()
				return unavailable()
			}
			return nil
		})
	}
	read := func(opts ...ReadOption) (int, error) {
		got := 0
		for _, err := range c.Read(ctx, "s", opts...) {
			if err != nil {
				return got, err
			}
			got++
		}
		return got, nil
	}
	for _, tc := range []struct {
		name   string
		change func(evs []*shoalv1.RecordedEvent) []*shoalv1.RecordedEvent
		opts   []ReadOption
		want   error // nil: the read ends without error
		events int
	}{
		{"another event at the last version read", func(evs []*shoalv1.RecordedEvent) []*shoalv1.RecordedEvent {
			evs = slices.Clone(evs)
			other := proto.Clone(evs[19]).(*shoalv1.RecordedEvent)
			id := uuid.New()
			other.Id = id[:]
			evs[19] = other
			return evs
		}, nil, ErrStreamChanged, 20},
		{"the last version read gone", func(evs []*shoalv1.RecordedEvent) []*shoalv1.RecordedEvent { return evs[:15] },
			nil, ErrStreamChanged, 20},
		{"stale, the replica lacks the last version read", func(evs []*shoalv1.RecordedEvent) []*shoalv1.RecordedEvent { return evs[:15] },
			[]ReadOption{Stale()}, nil, 20},
		{"stale backward, the replica lacks the last version read", func(evs []*shoalv1.RecordedEvent) []*shoalv1.RecordedEvent { return evs[:20] },
			[]ReadOption{Stale(), FromEnd(), Backward()}, nil, 40},
		// A replica further behind lacks the events just before the last one read as well:
		// going on with its latest would skip them. The read ends there, as a stale read may.
		{"stale backward, the replica lags further", func(evs []*shoalv1.RecordedEvent) []*shoalv1.RecordedEvent { return evs[:15] },
			[]ReadOption{Stale(), FromEnd(), Backward()}, nil, 20},
		{"backward, the last version read gone", func(evs []*shoalv1.RecordedEvent) []*shoalv1.RecordedEvent { return evs[:20] },
			[]ReadOption{FromEnd(), Backward()}, ErrStreamChanged, 20},
		{"deleted, not written again", func(evs []*shoalv1.RecordedEvent) []*shoalv1.RecordedEvent { return nil },
			nil, ErrStreamNotFound, 20},
		{"unchanged", func(evs []*shoalv1.RecordedEvent) []*shoalv1.RecordedEvent { return evs },
			nil, nil, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc.mu.Lock()
			delete(fc.streams, "s")
			fc.mu.Unlock()
			seed(t, c, "s", 40)

			failOnce(tc.change)
			got, err := read(tc.opts...)
			n.setReadFault(nil)
			if !errors.Is(err, tc.want) || tc.want == nil && err != nil || got != tc.events {
				t.Fatalf("%d events, %v; want %d events, %v", got, err, tc.events, tc.want)
			}
			var sc *StreamChangedError
			if tc.want == ErrStreamChanged && (!errors.As(err, &sc) || sc.Stream != "s" || sc.Version != 19 && sc.Version != 20) {
				t.Fatalf("error %#v, want a *StreamChangedError for the last version read of s", err)
			}
		})
	}
}

// TestReadResumeOverlapIsNoProgress: an attempt that only read the last event again made no
// progress: it does not reset the retries' backoff and time limit. Every server stream here
// breaks after its first page, and a page holds one event (large events fill a page): the
// read ends with ErrUnavailable once the policy's time is up, instead of trying again at once
// until its context ends (3,535 attempts in 5 s).
func TestReadResumeOverlapIsNoProgress(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc, WithRetry(RetryPolicy{MaxElapsed: time.Second, InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond}))
	n := fc.nodes[0]
	seed(t, c, "s", 5)
	fc.mu.Lock()
	fc.pages = 1
	fc.mu.Unlock()
	n.setReadFault(func(page int) error {
		if page == 1 {
			return unavailable()
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(testCtx(t), time.Minute)
	defer cancel()
	got, rerr := 0, error(nil)
	for _, err := range c.Read(ctx, "s") {
		if err != nil {
			rerr = err
			break
		}
		got++
	}
	if calls := n.count("Read"); got != 1 || !errors.Is(rerr, ErrUnavailable) || calls > 300 {
		t.Fatalf("read %d events, then %v, in %d Read calls; want 1, then ErrUnavailable after the policy's second, in far fewer calls",
			got, rerr, calls)
	}
}

func readRequests(n *fakeNode) []*shoalv1.ReadRequest {
	var out []*shoalv1.ReadRequest
	for _, r := range n.requests() {
		if rr, ok := r.(*shoalv1.ReadRequest); ok {
			out = append(out, rr)
		}
	}
	return out
}

// collect ranges over seq and returns the versions, failing on an error.
func collect(t *testing.T, seq func(func(RecordedEvent, error) bool)) []uint64 {
	t.Helper()
	var vs []uint64
	for ev, err := range seq {
		if err != nil {
			t.Fatalf("after %d events: %v", len(vs), err)
		}
		if string(ev.Data) != fmt.Sprint(ev.Version) {
			t.Fatalf("event %d carries data %q", ev.Version, ev.Data)
		}
		vs = append(vs, ev.Version)
	}
	return vs
}

func wantRange(t *testing.T, got []uint64, from uint64, n int, backward bool) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d events, want %d", len(got), n)
	}
	for i, v := range got {
		want := from + uint64(i)
		if backward {
			want = from - uint64(i)
		}
		if v != want {
			t.Fatalf("event %d has version %d, want %d", i, v, want)
		}
	}
}

func TestReadPagesAndResumes(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	n := fc.nodes[0]
	seed(t, c, "s", 95)
	ctx := testCtx(t)

	// Forward, all: the first stream breaks after its 3rd page (30 events).
	fail := func(afterPage int) func(int) error {
		calls := 0
		return func(page int) error {
			if page == 1 {
				calls++
			}
			if calls == 1 && page == afterPage {
				return unavailable()
			}
			return nil
		}
	}
	n.setReadFault(fail(3))
	wantRange(t, collect(t, c.Read(ctx, "s")), 0, 95, false)
	reqs := readRequests(n)
	if len(reqs) != 2 || reqs[1].FromVersion != 29 {
		t.Fatalf("read requests = %v, want a resume from version 29 (the last read, asked again)", reqs)
	}

	// Backward from the end, 25 events, breaking after 2 pages.
	n.setReadFault(fail(2))
	wantRange(t, collect(t, c.Read(ctx, "s", FromEnd(), Backward(), Count(25))), 94, 25, true)
	reqs = readRequests(n)[2:]
	if len(reqs) != 2 || reqs[1].FromEnd || !reqs[1].Backward || reqs[1].FromVersion != 75 || reqs[1].Count != 6 {
		t.Fatalf("backward resume request = %v", reqs[1])
	}
	n.setReadFault(nil)

	// From a version, with a count that ends mid-page.
	wantRange(t, collect(t, c.Read(ctx, "s", FromVersion(40), Count(13))), 40, 13, false)
	// Backward to version 0 ends the read.
	wantRange(t, collect(t, c.Read(ctx, "s", FromVersion(4), Backward())), 4, 5, true)
	// Backward with no start given starts at the end, as with FromEnd; FromVersion(0) given
	// reads version 0 alone.
	before := len(readRequests(n))
	wantRange(t, collect(t, c.Read(ctx, "s", Backward(), Count(3))), 94, 3, true)
	if reqs := readRequests(n)[before:]; len(reqs) != 1 || !reqs[0].FromEnd {
		t.Fatalf("backward read with no start: requests %v, want one from the end", reqs)
	}
	page, err := c.ReadPage(ctx, "s", Backward())
	if err != nil || len(page) != 95 || page[0].Version != 94 || page[94].Version != 0 {
		t.Fatalf("ReadPage backward: %d events, %v; want all 95 from version 94 down", len(page), err)
	}
	wantRange(t, collect(t, c.Read(ctx, "s", FromVersion(0), Backward())), 0, 1, true)

	// Breaking out stops the read without an error.
	got := 0
	for _, err := range c.Read(ctx, "s") {
		if err != nil {
			t.Fatal(err)
		}
		if got++; got == 5 {
			break
		}
	}
	if got != 5 {
		t.Fatalf("got %d events before break", got)
	}

	// ReadPage defaults to DefaultPageSize and honours Count.
	if evs, err := c.ReadPage(ctx, "s"); err != nil || len(evs) != 95 {
		t.Fatalf("ReadPage = %d events, %v", len(evs), err)
	}
	if evs, err := c.ReadPage(ctx, "s", Count(7), FromVersion(3)); err != nil || len(evs) != 7 || evs[0].Version != 3 {
		t.Fatalf("ReadPage(Count 7) = %d events, %v", len(evs), err)
	}
	last := readRequests(n)
	if r := last[len(last)-2]; r.Count != DefaultPageSize {
		t.Fatalf("ReadPage without Count asked for %d events", r.Count)
	}
}

func TestReadErrors(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	var errs []error
	for _, err := range c.Read(ctx, "absent") {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], ErrStreamNotFound) {
		t.Fatalf("errors = %v, want one ErrStreamNotFound", errs)
	}
	if got := fc.nodes[0].count("Read"); got != 1 {
		t.Fatalf("Read calls = %d, want 1 (not found is not retried)", got)
	}
	seed(t, c, "s", 3)
	cctx, cancel := context.WithCancel(ctx)
	fc.nodes[0].setFault(func(context.Context, string, int) error { cancel(); return unavailable() })
	errs = nil
	for _, err := range c.Read(cctx, "s") {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
		t.Fatalf("errors = %v, want one context.Canceled", errs)
	}
}

// A read has nothing to lose by its answer being lost: INTERNAL, UNKNOWN and CANCELLED,
// which appends and exact deletes retry, are a read's verdict (doc.go, "What a caller can
// rely on" 2), returned at once rather than retried until MaxElapsed.
func TestReadLostAnswerCodesAreVerdicts(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	seed(t, c, "r", 3)
	for _, code := range []codes.Code{codes.Internal, codes.Unknown, codes.Canceled} {
		before := fc.nodes[0].count("Read")
		fc.nodes[0].setFault(func(_ context.Context, m string, _ int) error {
			if m == "Read" {
				return status.Error(code, "fake: corrupt event record")
			}
			return nil
		})
		_, err := c.ReadPage(testCtx(t), "r")
		if status.Code(err) != code {
			t.Errorf("%v: ReadPage = %v, want the status", code, err)
		}
		if n := fc.nodes[0].count("Read") - before; n != 1 {
			t.Errorf("%v: %d Read calls, want 1", code, n)
		}
	}
}

func TestStaleReads(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	seed(t, c, "s", 3)
	ctx := testCtx(t)
	if _, err := c.ReadPage(ctx, "s", Stale()); err != nil {
		t.Fatal(err)
	}
	stale := dial(t, fc, WithStaleReads(true))
	if _, err := stale.ReadPage(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadPage(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	var flags []bool
	for _, n := range fc.nodes {
		for _, r := range readRequests(n) {
			flags = append(flags, r.AllowStale)
		}
	}
	stales := 0
	for _, f := range flags {
		if f {
			stales++
		}
	}
	if len(flags) != 3 || stales != 2 {
		t.Fatalf("allow_stale flags = %v, want two stale reads of three", flags)
	}
	// Linearizable reads go to the leader (node 1).
	if reqs := readRequests(fc.nodes[0]); len(reqs) == 0 || reqs[len(reqs)-1].AllowStale {
		t.Fatalf("leader did not serve the linearizable read")
	}
}

func TestReadShardPagesAndResumes(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	for _, s := range []string{"a", "b", "c"} {
		seed(t, c, s, 12)
	}
	n := fc.nodes[0]
	var calls atomic.Int32 // each read's handler on a goroutine of its own (above)
	n.setReadFault(func(page int) error {
		if page == 1 {
			calls.Add(1)
		}
		if calls.Load() == 1 && page == 2 {
			return unavailable()
		}
		return nil
	})
	ctx := testCtx(t)
	var pos []uint64
	for ev, err := range c.ReadShard(ctx, 0, 3, 0) {
		if err != nil {
			t.Fatal(err)
		}
		pos = append(pos, ev.Position)
	}
	if len(pos) != 33 {
		t.Fatalf("got %d events, want 33", len(pos))
	}
	for i, p := range pos {
		if p != uint64(i+3) {
			t.Fatalf("event %d at position %d", i, p)
		}
	}
	var reqs []*shoalv1.ReadShardRequest
	for _, r := range n.requests() {
		if rr, ok := r.(*shoalv1.ReadShardRequest); ok {
			reqs = append(reqs, rr)
		}
	}
	if len(reqs) != 2 || reqs[1].FromPosition != 23 {
		t.Fatalf("requests = %v, want a resume from position 23", reqs)
	}
	// A count, and a shard the cluster does not have.
	got := 0
	for _, err := range c.ReadShard(ctx, 0, 0, 4) {
		if err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != 4 {
		t.Fatalf("count 4 read %d events", got)
	}
	for _, err := range c.ReadShard(ctx, 9, 0, 0) {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("shard 9: %v", err)
		}
	}
}

// A read waiting on a leader that hangs mid-stream (it neither sends the next page nor breaks
// the connection) moves to the new leader once the topology names one, and resumes after the
// last event it yielded: no event twice, none skipped, with no attempt timeout set.
func TestReadMovedFromHungLeader(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	seed(t, c, "s", 25)
	n1, n2 := fc.nodes[0], fc.nodes[1]
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the servers stop (cleanups run last first)
	hung := make(chan struct{})
	n1.setReadFault(func(page int) error {
		if page == 1 {
			close(hung)
			<-release // hangs after the first page
		}
		return nil
	})
	go func() {
		<-hung
		time.Sleep(2 * leaderWatchAfter)
		fc.setLeader(2)
	}()
	wantRange(t, collect(t, c.Read(testCtx(t), "s")), 0, 25, false)
	if r := readRequests(n2); len(r) != 1 || r[0].FromVersion != 9 {
		t.Fatalf("node 2 read requests = %v, want one resuming from version 9 (the last read, asked again)", r)
	}
	if s := c.Stats(); s.LeaderMoves != 1 {
		t.Fatalf("stats = %+v, want one leader move", s)
	}
}

// A caller that is slow between events does not make its read move: the watch runs only while
// the read waits for its node.
func TestSlowReaderNotMoved(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	seed(t, c, "s", 25)
	n := 0
	for _, err := range c.Read(testCtx(t), "s") {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 5 {
			fc.setLeader(2)
			time.Sleep(3 * leaderWatchAfter)
		}
	}
	if n != 25 {
		t.Fatalf("read %d events, want 25", n)
	}
	if s := c.Stats(); s.LeaderMoves != 0 {
		t.Fatalf("stats = %+v, want no leader move", s)
	}
}

// hangFirstStaleReader makes the first node that serves a Read hang after its first page,
// until the test ends, and returns that node once it hangs. The others serve normally.
func hangFirstStaleReader(t *testing.T, fc *fakeCluster) <-chan *fakeNode {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the servers stop (cleanups run last first)
	hung := make(chan *fakeNode, 1)
	var once sync.Once
	for _, n := range fc.nodes {
		n.setReadFault(func(page int) error {
			first := false
			once.Do(func() { first = true })
			if page == 1 && first {
				hung <- n
				<-release
			}
			return nil
		})
	}
	return hung
}

// A stale read whose replica hangs moves to another replica once the topology names the
// hung node dead (gossip's verdict), and resumes after its last event.
func TestStaleReadMovedFromDeadNode(t *testing.T) {
	fc := newFakeCluster(t, 3, 4)
	c := dial(t, fc)
	seed(t, c, "s", 25)
	hung := hangFirstStaleReader(t, fc)
	go func() {
		n := <-hung
		time.Sleep(2 * leaderWatchAfter)
		fc.setDead(n.id)
	}()
	wantRange(t, collect(t, c.Read(testCtx(t), "s", Stale())), 0, 25, false)
	if s := c.Stats(); s.LeaderMoves != 1 {
		t.Fatalf("stats = %+v, want one move", s)
	}
}

// A stale read stays with a replica that is slow but alive, even when the shard's leader
// moves meanwhile: any replica may serve it, and only a node declared dead moves it.
func TestStaleReadStaysWithLiveNode(t *testing.T) {
	fc := newFakeCluster(t, 3, 4)
	c := dial(t, fc)
	seed(t, c, "s", 25)
	var once sync.Once
	for _, n := range fc.nodes {
		n.setReadFault(func(page int) error {
			if page == 1 {
				once.Do(func() {
					fc.setLeader(n.id%3 + 1) // another node
					time.Sleep(4 * leaderWatchAfter)
				})
			}
			return nil
		})
	}
	wantRange(t, collect(t, c.Read(testCtx(t), "s", Stale())), 0, 25, false)
	if s := c.Stats(); s.LeaderMoves != 0 {
		t.Fatalf("stats = %+v, want no move", s)
	}
}

// MaxStaleness sends a stale read with its bound in milliseconds, rounded up; a bound out of
// range is refused before anything is sent.
func TestMaxStaleness(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	seed(t, c, "s", 3)
	wantRange(t, collect(t, c.Read(testCtx(t), "s", MaxStaleness(1500*time.Millisecond+time.Microsecond))), 0, 3, false)
	for _, err := range c.ReadShard(testCtx(t), 0, 0, 1, MaxStaleness(time.Second)) {
		if err != nil {
			t.Fatal(err)
		}
	}
	var got [][2]any
	for _, r := range fc.nodes[0].requests() {
		switch r := r.(type) {
		case *shoalv1.ReadRequest:
			got = append(got, [2]any{r.AllowStale, r.MaxStalenessMs})
		case *shoalv1.ReadShardRequest:
			got = append(got, [2]any{r.AllowStale, r.MaxStalenessMs})
		}
	}
	if want := [][2]any{{true, uint32(1501)}, {true, uint32(1000)}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read requests (allow_stale, max_staleness_ms) = %v, want %v", got, want)
	}
	sent := len(fc.nodes[0].requests())
	for _, d := range []time.Duration{0, -time.Second, MaxStalenessLimit + time.Millisecond} {
		for _, err := range c.Read(testCtx(t), "s", MaxStaleness(d)) {
			var ia *InvalidArgumentError
			if !errors.As(err, &ia) || ia.Field != "MaxStaleness" {
				t.Fatalf("MaxStaleness(%v): %v, want an invalid argument naming MaxStaleness", d, err)
			}
			break
		}
	}
	if n := len(fc.nodes[0].requests()); n != sent {
		t.Fatalf("%d requests sent for invalid bounds", n-sent)
	}
}

// TestStaleReadResumedOnLaggingReplica: a stale read that yielded events, lost its server
// stream and resumed on a replica that has not applied the stream's first events yet ends
// there, without an error: it used to end with "stream not found", after events of that
// stream. A linearizable read's "not found" stands.
func TestStaleReadResumedOnLaggingReplica(t *testing.T) {
	for _, stale := range []bool{true, false} {
		t.Run(fmt.Sprint("stale=", stale), func(t *testing.T) {
			fc := newFakeCluster(t, 1, 4)
			c := dial(t, fc, WithRetry(fastRetry()), WithStaleReads(stale))
			if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}, Event{Type: "B"}, Event{Type: "C"}); err != nil {
				t.Fatal(err)
			}
			fc.mu.Lock()
			fc.pages = 1
			fc.mu.Unlock()
			n := fc.nodes[0]
			n.setReadFault(func(page int) error {
				if page == 1 {
					return unavailable() // the stream breaks after the first event
				}
				return nil
			})
			n.setFault(func(_ context.Context, m string, k int) error {
				if m == "Read" && k == 2 { // the resumed read: a replica without the stream yet
					return statusWith(codes.NotFound, "fake: stream not found", &shoalv1.StreamNotFound{Stream: "s"})
				}
				return nil
			})
			var got int
			var err error
			for _, e := range c.Read(testCtx(t), "s") {
				if err = e; err != nil {
					break
				}
				got++
			}
			if stale && (err != nil || got != 1) {
				t.Fatalf("stale read: %d events, then %v; want the first event, then the end", got, err)
			}
			if !stale && !errors.Is(err, ErrStreamNotFound) {
				t.Fatalf("linearizable read: %d events, then %v; want ErrStreamNotFound", got, err)
			}
		})
	}
}

// TestReadResumesAfterStreamReset: a read whose HTTP/2 stream is reset on the way (by a proxy,
// or the connection: gRPC's "stream terminated by RST_STREAM", CANCELLED for CANCEL, INTERNAL
// for INTERNAL_ERROR) while its caller waits resumes after its last event, as after any
// transient failure; the node's relay of a forwarded read does the same (node.streamReset).
// It ended the read with the bare status, a subscription too, although nothing the server
// answered was in it. The same codes with another message stay verdicts
// (TestReadLostAnswerCodesAreVerdicts).
func TestReadResumesAfterStreamReset(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	n := fc.nodes[0]
	seed(t, c, "s", 35)
	ctx := testCtx(t)
	for _, reset := range []error{
		status.Error(codes.Canceled, "stream terminated by RST_STREAM with error code: CANCEL"),
		status.Error(codes.Internal, "stream terminated by RST_STREAM with error code: INTERNAL_ERROR"),
	} {
		var calls atomic.Int32
		n.setReadFault(func(page int) error {
			if page == 1 && calls.Add(1) == 1 {
				return reset
			}
			return nil
		})
		before := n.count("Read")
		got := 0
		for ev, err := range c.Read(ctx, "s") {
			if err != nil {
				t.Fatalf("%v: read ended after %d events: %v", status.Code(reset), got, err)
			}
			if ev.Version != uint64(got) {
				t.Fatalf("%v: event %d has version %d", status.Code(reset), got, ev.Version)
			}
			got++
		}
		if got != 35 || n.count("Read")-before != 2 {
			t.Fatalf("%v: %d events in %d reads, want 35 in 2", status.Code(reset), got, n.count("Read")-before)
		}
	}
	n.setReadFault(nil)
}

// TestReadRefusesShardOptions: Read and ReadPage refuse ReadShard's filters and positions,
// sending nothing: taken silently, Read(ctx, s, EventTypes("Paid")) returned every event.
func TestReadRefusesShardOptions(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc, WithRetry(fastRetry()))
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatal(err)
	}
	sent := len(fc.nodes[0].requests())
	var resume atomic.Uint64
	for field, opt := range map[string]ReadOption{
		"EventTypes": EventTypes("A"), "StreamPrefix": StreamPrefix("s"), "Wait": Wait(time.Second),
		"ResumeAt": ResumeAt(&resume), "ResumeAllAt": ResumeAllAt(make([]atomic.Uint64, 4)),
	} {
		var ia *InvalidArgumentError
		for _, err := range c.Read(testCtx(t), "s", opt) {
			if !errors.As(err, &ia) || ia.Field != field {
				t.Fatalf("Read with %s: %v, want an invalid argument naming it", field, err)
			}
			break
		}
		if _, err := c.ReadPage(testCtx(t), "s", opt); !errors.As(err, &ia) || ia.Field != field {
			t.Fatalf("ReadPage with %s: %v, want an invalid argument naming it", field, err)
		}
	}
	if n := len(fc.nodes[0].requests()); n != sent {
		t.Fatalf("%d requests sent for refused reads", n-sent)
	}
}

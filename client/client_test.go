package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// fastRetry keeps the tests quick: millisecond backoff, a 5s budget.
func fastRetry() RetryPolicy {
	return RetryPolicy{MaxElapsed: 5 * time.Second, InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial connects a client to fc's nodes (seeds in node order).
func dial(t *testing.T, fc *fakeCluster, opts ...Option) *Client {
	t.Helper()
	var seeds []string
	for _, n := range fc.nodes {
		seeds = append(seeds, n.addr)
	}
	c, err := Dial(testCtx(t), seeds, append([]Option{WithRetry(fastRetry())}, opts...)...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func failFirst(method string, k int, err error) func(context.Context, string, int) error {
	return func(_ context.Context, m string, n int) error {
		if m == method && n <= k {
			return err
		}
		return nil
	}
}

func appendIDs(n *fakeNode) [][]string {
	var out [][]string
	for _, r := range n.requests() {
		if a, ok := r.(*shoalv1.AppendRequest); ok {
			var ids []string
			for _, e := range a.Events {
				id, _ := uuid.FromBytes(e.Id)
				ids = append(ids, id.String())
			}
			out = append(out, ids)
		}
	}
	return out
}

func TestAppendRetriesReuseGeneratedIDs(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	n := fc.nodes[0]
	n.setFault(failFirst("Append", 2, unavailable()))

	mine := uuid.New()
	events := []Event{{Type: "A"}, {ID: mine, Type: "B"}, {Type: "C"}}
	res, err := c.Append(testCtx(t), "s", NoStream, events...)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if res.FirstVersion != 0 || res.LastVersion != 2 || res.Duplicate {
		t.Fatalf("result = %+v", res)
	}
	ids := appendIDs(n)
	if len(ids) != 3 {
		t.Fatalf("attempts = %d, want 3", len(ids))
	}
	for i := 1; i < len(ids); i++ {
		for j := range ids[0] {
			if ids[i][j] != ids[0][j] {
				t.Fatalf("attempt %d sent ID %s for event %d, first attempt sent %s", i+1, ids[i][j], j, ids[0][j])
			}
		}
	}
	if ids[0][1] != mine.String() {
		t.Errorf("caller's ID replaced: %s", ids[0][1])
	}
	if ids[0][0] == uuid.Nil.String() || ids[0][0] == ids[0][2] {
		t.Errorf("generated IDs not unique: %v", ids[0])
	}
	first, last := uuid.MustParse(ids[0][0]), uuid.MustParse(ids[0][2])
	if first.Version() != 7 || last.Version() != 7 {
		t.Errorf("generated ID versions = %d and %d, want 7 (time-ordered)", first.Version(), last.Version())
	}
	if bytes.Compare(first[:], last[:]) >= 0 {
		t.Errorf("generated IDs %s and %s are not in time order", first, last)
	}
	if events[0].ID != uuid.Nil {
		t.Errorf("caller's event was modified")
	}
	if s := c.Stats(); s.Retries != 2 {
		t.Errorf("stats = %+v, want 2 retries", s)
	}
}

func TestAppendRetryAfterLostAckIsDuplicate(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	fc.nodes[0].setFault(failFirst("Append", 1, errLoseAck))
	res, err := c.Append(testCtx(t), "s", NoStream, Event{Type: "A"}, Event{Type: "B"})
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if !res.Duplicate || res.FirstVersion != 0 || res.LastVersion != 1 {
		t.Fatalf("result = %+v, want the original versions as a duplicate", res)
	}
	evs, err := c.ReadPage(testCtx(t), "s")
	if err != nil || len(evs) != 2 {
		t.Fatalf("stream holds %d events (%v), want 2: the retry wrote again", len(evs), err)
	}
}

func TestRetriedCodes(t *testing.T) {
	for _, code := range []codes.Code{codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted} {
		t.Run(code.String(), func(t *testing.T) {
			fc := newFakeCluster(t, 1, 4)
			c := dial(t, fc)
			fc.nodes[0].setFault(failFirst("Append", 1, status.Error(code, "fake: transient")))
			if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
				t.Fatalf("Append: %v", err)
			}
			if got := fc.nodes[0].count("Append"); got != 2 {
				t.Fatalf("attempts = %d, want 2", got)
			}
		})
	}
}

func TestAttemptTimeoutRetries(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	p := fastRetry()
	p.AttemptTimeout = 50 * time.Millisecond
	c := dial(t, fc, WithRetry(p))
	fc.nodes[0].setFault(func(ctx context.Context, m string, k int) error {
		if m == "Append" && k == 1 {
			<-ctx.Done() // slow: outlives the attempt timeout
			return ctx.Err()
		}
		return nil
	})
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if got := fc.nodes[0].count("Append"); got != 2 {
		t.Fatalf("attempts = %d, want 2", got)
	}
}

func TestWrongExpectedVersionNotRetried(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	if _, err := c.Append(ctx, "s", NoStream, Event{Type: "A"}, Event{Type: "B"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Append(ctx, "s", Exact(7), Event{Type: "C"})
	if !errors.Is(err, ErrWrongExpectedVersion) {
		t.Fatalf("err = %v, want ErrWrongExpectedVersion", err)
	}
	var wev *WrongExpectedVersionError
	if !errors.As(err, &wev) {
		t.Fatalf("err %T is not a *WrongExpectedVersionError", err)
	}
	if v, ok := wev.Expected.Exact(); !ok || v != 7 || wev.Actual != 1 || !wev.StreamExists || wev.Stream != "s" {
		t.Fatalf("facts = %+v", wev)
	}
	want := `client: wrong expected version for stream "s": expected version 7, but the stream is at version 1`
	if err.Error() != want {
		t.Errorf("Error() = %q\nwant      %q", err, want)
	}
	if got := fc.nodes[0].count("Append"); got != 2 {
		t.Fatalf("Append calls = %d, want 2 (no retry)", got)
	}
	if _, err := c.Append(ctx, "new", StreamExists, Event{Type: "A"}); !errors.As(err, &wev) || wev.StreamExists || wev.Expected != StreamExists {
		t.Fatalf("absent stream: %v (%+v)", err, wev)
	}
}

func TestBreakerOpensAndTrafficMoves(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc, WithBreaker(BreakerSettings{Failures: 3, OpenTimeout: time.Minute}))
	n1, n2 := fc.nodes[0], fc.nodes[1]
	n1.setFault(func(context.Context, string, int) error { return unavailable() }) // node 1 (the leader) is down
	ctx := testCtx(t)
	for i := range 6 {
		if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if s := c.Stats(); s.BreakerTrips != 1 || s.OpenBreakers != 1 {
		t.Fatalf("stats = %+v, want 1 breaker trip and 1 open", s)
	}
	before := len(n1.requests())
	for range 5 {
		if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); err != nil {
			t.Fatal(err)
		}
	}
	if after := len(n1.requests()); after != before {
		t.Fatalf("node 1 got %d calls while its breaker was open", after-before)
	}
	if got := n2.count("Append"); got != 11 {
		t.Fatalf("node 2 appends = %d, want 11", got)
	}
}

// Stats.OpenBreakers counts the breakers open now: one while its node fails, none once a probe
// after OpenTimeout found the node back.
func TestOpenBreakersCounted(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc, WithBreaker(BreakerSettings{Failures: 2, OpenTimeout: 50 * time.Millisecond}))
	down := failWhileDown(fc.nodes[0])
	ctx := testCtx(t)
	for range 3 {
		if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); err != nil {
			t.Fatal(err)
		}
	}
	if s := c.Stats(); s.OpenBreakers != 1 {
		t.Fatalf("stats = %+v, want 1 breaker open while node 1 fails", s)
	}
	down.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().OpenBreakers != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stats = %+v, want no breaker open once node 1 answers again", c.Stats())
		}
		time.Sleep(20 * time.Millisecond)
		if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); err != nil {
			t.Fatal(err)
		}
	}
}

// failWhileDown makes n answer UNAVAILABLE while the returned flag is set, which it is at first.
func failWhileDown(n *fakeNode) *atomic.Bool {
	down := new(atomic.Bool)
	down.Store(true)
	n.setFault(func(context.Context, string, int) error {
		if down.Load() {
			return unavailable()
		}
		return nil
	})
	return down
}

func TestAllBreakersOpenWaitsForRecovery(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc, WithBreaker(BreakerSettings{Failures: 2, OpenTimeout: 50 * time.Millisecond}))
	down := failWhileDown(fc.nodes[0])
	time.AfterFunc(300*time.Millisecond, func() { down.Store(false) })
	start := time.Now()
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("Append returned after %s, before the node recovered", el)
	}
	if s := c.Stats(); s.BreakerTrips < 1 {
		t.Fatalf("stats = %+v, want a breaker trip", s)
	}
}

func TestContextDeadlineRespected(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	t.Run("retrying", func(t *testing.T) {
		fc.nodes[0].setFault(failFirst("Append", 1<<30, unavailable()))
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Append(ctx, "s", Any, Event{Type: "A"})
		if el := time.Since(start); el > 400*time.Millisecond {
			t.Fatalf("returned after %s", el)
		}
		if !errors.Is(err, context.DeadlineExceeded) || status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v; want DeadlineExceeded wrapping the last Unavailable", err)
		}
		if errors.Is(err, ErrUnavailable) {
			t.Fatalf("a context error must not claim ErrUnavailable: %v", err)
		}
	})
	t.Run("slow", func(t *testing.T) {
		fc.nodes[0].setFault(func(ctx context.Context, m string, k int) error {
			if m == "Append" {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Append(ctx, "s", Any, Event{Type: "A"})
		if el := time.Since(start); el > 400*time.Millisecond {
			t.Fatalf("returned after %s", el)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); err != context.Canceled {
			t.Fatalf("err = %v, want context.Canceled itself", err)
		}
	})
}

func TestRetriesGiveUpWithUnavailable(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc, WithRetry(RetryPolicy{MaxElapsed: 100 * time.Millisecond, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond}))
	fc.nodes[0].setFault(failFirst("Append", 1<<30, unavailable()))
	_, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"})
	var ue *UnavailableError
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &ue) || ue.Attempts < 2 || status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v (%+v)", err, ue)
	}

	c1 := dial(t, fc, WithRetry(RetryPolicy{MaxElapsed: -1}))
	before := fc.nodes[0].count("Append")
	if _, err := c1.Append(testCtx(t), "s", Any, Event{Type: "A"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
	if got := fc.nodes[0].count("Append") - before; got != 1 {
		t.Fatalf("attempts with retries disabled = %d, want 1", got)
	}
}

func TestDial(t *testing.T) {
	ctx := testCtx(t)
	if _, err := Dial(ctx, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("no seeds: %v", err)
	}
	if _, err := Dial(ctx, []string{"x:1"}, WithRetry(RetryPolicy{InitialInterval: time.Second, MaxInterval: time.Millisecond})); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad policy: %v", err)
	}
	// A seed gRPC would dial at port 443, or could not dial at all, is refused before any dial.
	for _, seed := range []string{"localhost", "127.0.0.1", "http://127.0.0.1:7400", "HTTPS://n1:7400", "n1:", "dns:///n1", "::1:7400"} {
		var ia *InvalidArgumentError
		if _, err := Dial(ctx, []string{"127.0.0.1:1", seed}); !errors.As(err, &ia) || ia.Field != "addrs" || !strings.Contains(ia.Reason, "host:port") {
			t.Errorf("seed %q: %v, want an invalid addrs naming host:port", seed, err)
		}
	}
	for _, seed := range []string{"127.0.0.1:7400", "[::1]:7400", "[fe80::1%eth0]:7400", "n1:7400", "dns:///n1:7400",
		"dns://8.8.8.8/n1:7400", "unix:///tmp/shoal.sock", "passthrough:///n1:7400"} {
		if err := checkSeed(seed); err != nil {
			t.Errorf("seed %q refused: %v", seed, err)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	_, err = Dial(ctx, []string{dead}, WithRetry(RetryPolicy{MaxElapsed: 200 * time.Millisecond, InitialInterval: time.Millisecond}))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("dead seed: %v", err)
	}
	// A dead seed next to a live one is fine.
	fc := newFakeCluster(t, 1, 8)
	c, err := Dial(ctx, []string{dead, fc.nodes[0].addr}, WithRetry(fastRetry()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, err := c.Shards(ctx); err != nil || n != 8 {
		t.Fatalf("Shards = %d, %v", n, err)
	}
}

func TestLocalValidation(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	check := func(name string, err error, field string) {
		t.Helper()
		var ia *InvalidArgumentError
		if !errors.As(err, &ia) || !errors.Is(err, ErrInvalidArgument) || ia.Field != field {
			t.Errorf("%s: err = %v, want invalid %q", name, err, field)
		}
	}
	_, err := c.Append(ctx, "", Any, Event{Type: "A"})
	check("empty stream", err, "stream")
	_, err = c.Append(ctx, "s", Any)
	check("no events", err, "events")
	_, err = c.Append(ctx, "s", Any, Event{Type: "A"}, Event{})
	check("empty type", err, "events[1].type")
	big := make([]byte, 9<<20)
	_, err = c.Append(ctx, "s", Any, Event{Type: "A", Data: big}, Event{Type: "A", Data: big}, Event{Type: "A", Data: big}, Event{Type: "A", Data: big})
	check("request over 32 MiB", err, "events")
	check("delete no-stream", c.Delete(ctx, "s", NoStream), "expected")
	// A duration the servers would cut to whole milliseconds.
	check("retention max age 1500us", c.SetRetention(ctx, RetentionPolicy{Prefix: "s-", MaxAge: 1500 * time.Microsecond}), "RetentionPolicy.MaxAge")
	check("retain max age 1500us", c.Retain(ctx, "s-", Retention{MaxAge: 1500 * time.Microsecond}, nil), "Retention.MaxAge")
	check("decommission", c.Decommission(ctx, ""), "name")
	_, err = c.ReadPage(ctx, "")
	check("read", err, "stream")
	// Not UTF-8: Go's protobuf could not encode it, and would fail the append pipeline's whole
	// batch, other callers' appends with it.
	_, err = c.Append(ctx, "s\xff", Any, Event{Type: "A"})
	check("stream not UTF-8", err, "stream")
	_, err = c.Append(ctx, "s", Any, Event{Type: "A"}, Event{Type: "B\xc3"})
	check("type not UTF-8", err, "events[1].type")
	_, err = c.Append(ctx, "s", Any, Event{Type: "A", ContentType: "\xff"})
	check("content type not UTF-8", err, "events[0].content_type")
	check("delete not UTF-8", c.Delete(ctx, "\xfe", Any), "stream")
	_, err = c.ReadPage(ctx, "\xfe")
	check("read not UTF-8", err, "stream")
	// All of a stream in one slice: Read's, not a page's (it read DefaultPageSize, saying nothing).
	_, err = c.ReadPage(ctx, "s", Count(0))
	check("read page of count 0", err, "Count")
	for _, err := range c.ReadShard(ctx, 0, 0, 0, StreamPrefix("\xff")) {
		check("prefix not UTF-8", err, "StreamPrefix")
		break
	}
	for _, err := range c.ReadShard(ctx, 0, 0, 0, EventTypes("A", "\xff")) {
		check("event type filter not UTF-8", err, "EventTypes")
		break
	}
	if got := fc.nodes[0].count("Append"); got != 0 {
		t.Errorf("invalid calls reached the server %d times", got)
	}
}

func TestCloseAndClusterCalls(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	fc.nodes[0].setFault(failFirst("Decommission", 1, unavailable()))
	fc.nodes[1].setFault(failFirst("Decommission", 1, unavailable()))
	if err := c.Decommission(ctx, "n2"); err != nil {
		t.Fatalf("Decommission: %v", err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.GetNodeId() == 0 {
		t.Fatalf("Status = %v, %v", st, err)
	}
	topo, err := c.Topology(ctx)
	if err != nil || len(topo.GetNodes()) != 2 || topo.GetSettings().GetShards() != 4 {
		t.Fatalf("Topology = %v, %v", topo, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if _, err := c.Status(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestPeriodicTopologyRefresh(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc, WithTopologyRefresh(20*time.Millisecond))
	fc.setLeader(2)
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().TopologyRefreshes < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no background refresh")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatal(err)
	}
	if a, b := fc.nodes[0].count("Append"), fc.nodes[1].count("Append"); a != 0 || b != 1 {
		t.Fatalf("appends: node1 %d, node2 %d; want the new leader only", a, b)
	}
}

// TestConcurrentAppendsUnderFaults runs appends from many goroutines while
// the leader randomly drops calls or loses acknowledgements; every stream
// must end up with each event exactly once.
func TestConcurrentAppendsUnderFaults(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	var mu sync.Mutex
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	fc.nodes[0].setFault(func(_ context.Context, m string, _ int) error {
		mu.Lock()
		r := rng.IntN(10)
		mu.Unlock()
		switch {
		case m != "Append":
			return nil
		case r < 2:
			return unavailable()
		case r < 4:
			return errLoseAck
		}
		return nil
	})
	const writers, perWriter = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			stream := fmt.Sprintf("w%d", w)
			for i := range perWriter {
				exp := NoStream
				if i > 0 {
					exp = Exact(uint64(i - 1))
				}
				if _, err := c.Append(testCtx(t), stream, exp, Event{Type: "E"}); err != nil {
					errs <- fmt.Errorf("%s event %d: %w", stream, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("seed %d: %v", seed, err)
	}
	for w := range writers {
		evs, err := c.ReadPage(testCtx(t), fmt.Sprintf("w%d", w))
		if err != nil || len(evs) != perWriter {
			t.Fatalf("seed %d: stream w%d holds %d events (%v), want %d", seed, w, len(evs), err, perWriter)
		}
	}
}

// TestNewBeforeCluster: New returns at once, without a node to answer (a service started
// before its cluster); calls fail within their context while no node answers, and succeed
// once one does, the topology fetched then.
func TestNewBeforeCluster(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there yet
	start := time.Now()
	c, err := New([]string{addr}, WithRetry(fastRetry()))
	if err != nil {
		t.Fatalf("New with no node up: %v", err)
	}
	defer c.Close()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("New took %v", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); err == nil {
		t.Fatal("append with no node up succeeded")
	}

	fc := newFakeCluster(t, 0, 4)
	if lis, err = net.Listen("tcp", addr); err != nil {
		t.Fatal(err)
	}
	n := &fakeNode{c: fc, id: 1, addr: addr, srv: grpc.NewServer(), calls: map[string]int{}}
	shoalv1.RegisterStreamsServer(n.srv, n)
	shoalv1.RegisterClusterServer(n.srv, n)
	fc.nodes = append(fc.nodes, n) // before it serves: the fake's answers read the list
	go n.srv.Serve(lis)
	defer n.srv.Stop()
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("append once the node is up: %v", err)
	}
	if s := c.Stats(); s.TopologyRefreshes == 0 {
		t.Fatalf("stats %+v: no topology fetched", s)
	}

	if _, err := New([]string{"http://" + addr}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("New with a URL: %v, want ErrInvalidArgument", err)
	}
}

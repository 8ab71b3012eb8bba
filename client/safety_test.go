package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// A delete expecting any version whose answer is lost after it took effect is not repeated: a
// repeat would delete what another writer appended, and had acknowledged, in between. The
// caller gets ErrOutcomeUnknown, and the other writer's events stay.
func TestDeleteAnyNotRepeatedAfterUnknownOutcome(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	a := dial(t, fc)
	b := dial(t, fc)
	ctx := testCtx(t)
	if _, err := a.Append(ctx, "s", NoStream, Event{Type: "A"}); err != nil {
		t.Fatal(err)
	}
	var acked atomic.Bool
	fc.nodes[0].setFault(func(_ context.Context, m string, k int) error {
		if m == "Delete" && k == 1 {
			fc.mu.Lock()
			delete(fc.streams, "s") // the delete commits ...
			fc.mu.Unlock()
			// ... another writer creates the stream again and is acknowledged ...
			if _, err := b.Append(ctx, "s", NoStream, Event{Type: "B"}); err == nil {
				acked.Store(true)
			}
			return unavailable() // ... and the delete's answer is lost
		}
		return nil
	})
	err := a.Delete(ctx, "s", Any)
	var oe *OutcomeUnknownError
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.As(err, &oe) || oe.Attempts != 1 {
		t.Fatalf("Delete = %v, want ErrOutcomeUnknown after one attempt", err)
	}
	if !acked.Load() {
		t.Fatal("setup: the other writer's append was not acknowledged")
	}
	if n := fc.nodes[0].count("Delete"); n != 1 {
		t.Fatalf("the delete was sent %d times", n)
	}
	if _, err := a.ReadPage(ctx, "s"); err != nil {
		t.Fatalf("the other writer's acknowledged append is gone: %v", err)
	}
}

// Deletes are still retried where that is safe: one expecting any version after an answer
// that refused it unapplied (no leader yet), and one expecting an exact version after any
// transient failure.
func TestDeleteRetriedWhenSafe(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	for _, stream := range []string{"any", "exact"} {
		if _, err := c.Append(ctx, stream, NoStream, Event{Type: "A"}); err != nil {
			t.Fatal(err)
		}
	}
	fc.nodes[0].setFault(failFirst("Delete", 1, statusWith(codes.Unavailable, "fake: election", &shoalv1.NotLeader{})))
	if err := c.Delete(ctx, "any", Any); err != nil {
		t.Fatalf("Delete(Any) after a not-leader answer: %v", err)
	}
	fc.nodes[0].setFault(failFirst("Delete", 3, unavailable())) // k counts every Delete: the third fails
	if err := c.Delete(ctx, "exact", Exact(0)); err != nil {
		t.Fatalf("Delete(Exact) after a lost connection: %v", err)
	}
	if n := fc.nodes[0].count("Delete"); n != 4 {
		t.Fatalf("deletes sent: %d, want 4 (two retried once)", n)
	}
}

// A panic in the body of a loop over Read (recovered by the caller, as net/http does for a
// handler) gives the attempt's breaker admission back: when that read was a half-open
// breaker's probe, the node would otherwise be refused for the life of the client.
func TestPanicInReadBodyReleasesBreaker(t *testing.T) {
	c := halfOpenClient(t, 3)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the loop body's panic did not reach the caller")
			}
		}()
		for range c.Read(testCtx(t), "r") {
			panic("handler bug")
		}
	}()
	actx, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if _, err := c.Append(actx, "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("Append after the read's panic: %v", err)
	}
}

// An append sent on purpose to a node that forwards it (the leader's breaker is open) is not
// abandoned as if the leader had moved when it takes longer than the leader watch's delay:
// the topology naming the leader the client could not reach is no news.
func TestForwardedAppendNotAbandoned(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc, WithBreaker(BreakerSettings{Failures: 1, OpenTimeout: time.Minute}))
	n1, n2 := fc.nodes[0], fc.nodes[1]
	n1.setFault(func(_ context.Context, m string, _ int) error {
		if m == "Append" {
			return unavailable() // the client cannot reach the leader itself
		}
		return nil
	})
	n2.setFault(func(ctx context.Context, m string, _ int) error {
		if m == "Append" { // n2 forwards to the leader; the append takes 700 ms
			select {
			case <-time.After(700 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("Append through the forwarding node: %v (its attempts %d, leader moves %d)",
			err, n2.count("Append"), c.Stats().LeaderMoves)
	}
	if moves := c.Stats().LeaderMoves; moves != 0 {
		t.Fatalf("%d attempts abandoned for a leader move, with the leader unchanged", moves)
	}
}

// TestHungForwarderAbandoned: an append that went through a forwarding node (the leader's
// breaker open) which then hangs moves to another node once the topology names the hung node
// dead, though the shard's leader stays the same.
func TestHungForwarderAbandoned(t *testing.T) {
	fc := newFakeCluster(t, 3, 4)
	c := dial(t, fc, WithBreaker(BreakerSettings{Failures: 1, OpenTimeout: time.Minute}))
	n1, n2, n3 := fc.nodes[0], fc.nodes[1], fc.nodes[2]
	n1.setFault(func(_ context.Context, m string, _ int) error {
		if m == "Append" {
			return unavailable() // the client cannot reach the leader itself
		}
		return nil
	})
	hung := make(chan struct{})
	n2.setFault(func(ctx context.Context, m string, _ int) error {
		if m == "Append" { // the forwarder accepts the append and never answers
			close(hung)
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	go func() {
		<-hung
		time.Sleep(2 * leaderWatchAfter)
		fc.setDead(2) // gossip's verdict on the hung node
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("Append through a forwarder that hangs: %v after %v (leader moves %d)", err, time.Since(start), c.Stats().LeaderMoves)
	}
	if n3.count("Append") != 1 || c.Stats().LeaderMoves != 1 {
		t.Errorf("node 3 served %d appends, stats %+v; want 1 after one move", n3.count("Append"), c.Stats())
	}
}

// mayHaveApplied tells the failures after which a delete may have been applied from those
// that prove it was not; the failure to connect is gRPC's own, from a real dial to a closed
// port.
func TestMayHaveApplied(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, refused := shoalv1.NewStreamsClient(conn).Delete(ctx, &shoalv1.DeleteRequest{Stream: "s"})
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{refused, false},
		{status.Error(codes.Unavailable, "node n2 is starting (joining its cluster, reopening its shards); try another node"), false},
		{status.Error(codes.Unavailable, "node is shutting down"), false},
		{notLeader(&fakeNode{id: 2, addr: "n2"}), false},
		{statusWith(codes.Unavailable, "election", &shoalv1.NotLeader{}), false},
		{status.Error(codes.FailedPrecondition, "wrong expected version"), false},
		{status.Error(codes.ResourceExhausted, "queue full"), false},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), true},
		{status.Error(codes.DeadlineExceeded, "deadline"), true},
		{status.Error(codes.Unknown, "the write may or may not have been applied"), true},
		{context.DeadlineExceeded, true},
	} {
		if got := mayHaveApplied(tc.err); got != tc.want {
			t.Errorf("mayHaveApplied(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// A long read that is a half-open breaker's probe gives the probe back once its first page
// arrives: a slow consumer must not keep every other call away from a healthy node.
func TestReadReleasesHalfOpenProbe(t *testing.T) {
	c := halfOpenClient(t, 30)

	release := make(chan struct{})
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range c.Read(testCtx(t), "r") {
			close(started)
			<-release // a slow consumer
			return
		}
	}()
	<-started
	defer func() { close(release); <-done }()
	actx, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if _, err := c.Append(actx, "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("Append to a healthy node while a read that was the probe runs: %v", err)
	}
}

// halfOpenClient returns a client of a one-node fake cluster holding stream "r" of events
// events, whose breaker for that node a failed append opened and whose open timeout has
// passed: the node is healthy again, and the client's next call is the half-open probe.
func halfOpenClient(t *testing.T, events int) *Client {
	c, _ := halfOpenNode(t, events)
	return c
}

// halfOpenNode is halfOpenClient, with the fake node (healthy, its fault hook passing every
// call).
func halfOpenNode(t *testing.T, events int) (*Client, *fakeNode) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc, WithBreaker(BreakerSettings{Failures: 1, OpenTimeout: 200 * time.Millisecond}))
	seed(t, c, "r", events)
	var down atomic.Bool
	down.Store(true)
	fc.nodes[0].setFault(func(_ context.Context, m string, _ int) error {
		if m == "Append" && down.Load() {
			return unavailable()
		}
		return nil
	})
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	c.Append(sctx, "s", Any, Event{Type: "A"}) // opens the breaker
	cancel()
	down.Store(false)                  // the node is healthy again
	time.Sleep(300 * time.Millisecond) // past OpenTimeout: the next call is the probe
	return c, fc.nodes[0]
}

// TestLongPollReleasesHalfOpenProbe: a long poll (Wait) admitted as a half-open breaker's one
// probe gives the probe up before waiting for its first page, which may take the whole wait:
// other calls to the node go through meanwhile.
func TestLongPollReleasesHalfOpenProbe(t *testing.T) {
	c, node := halfOpenNode(t, 0)
	polling := make(chan struct{})
	var once sync.Once
	node.setFault(func(ctx context.Context, m string, _ int) error {
		if m == "ReadShard" { // a long poll on an idle shard: nothing until the wait ends
			once.Do(func() { close(polling) })
			select {
			case <-time.After(5 * time.Second):
			case <-ctx.Done():
			}
		}
		return nil
	})

	pctx, pcancel := context.WithCancel(testCtx(t))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range c.ReadShard(pctx, 0, 0, 0, Wait(5*time.Second)) {
		}
	}()
	defer func() { pcancel(); <-done }()
	<-polling
	actx, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if _, err := c.Append(actx, "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("Append to a healthy node while a long poll that was the probe waits: %v", err)
	}
}

// TestExactDeleteRefusedAfterLostAck: a delete expecting an exact version whose first attempt
// was applied and its answer lost is repeated; the server refuses the repeat (the stream is
// gone: the first attempt's own doing), and the client says the outcome is unknown rather than
// "stream not found". A server's UNKNOWN answer is reported the same way, and a refusal with no
// doubtful attempt before it stands.
func TestExactDeleteRefusedAfterLostAck(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	seed(t, c, "d", 2)
	fc.nodes[0].setFault(failFirst("Delete", 1, errLoseAck))
	err := c.Delete(testCtx(t), "d", Exact(1))
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("repeat refused after a lost acknowledgement: %v, want ErrOutcomeUnknown wrapping ErrStreamNotFound", err)
	}
	if got := fc.nodes[0].count("Delete"); got != 2 {
		t.Fatalf("Delete reached the server %d times, want 2", got)
	}

	fc.nodes[0].setFault(func(context.Context, string, int) error { return status.Error(codes.Unknown, "fake: outcome unknown") })
	if err := c.Delete(testCtx(t), "e", Exact(0)); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("the server's UNKNOWN: %v, want ErrOutcomeUnknown", err)
	}
	fc.nodes[0].setFault(nil)
	if err := c.Delete(testCtx(t), "e", Exact(0)); !errors.Is(err, ErrStreamNotFound) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("a first attempt refused: %v, want ErrStreamNotFound alone", err)
	}
}

// TestAppendRetriedAfterLostAnswer: an append the server applied whose answer was lost on the
// way as INTERNAL or CANCELLED (what gRPC makes of an HTTP/2 stream reset) or UNKNOWN is
// repeated, and answered as a duplicate, over the unary call and the pipeline: returned, the
// error read as a definite failure of an append that was written, and a caller that let the
// client make its event IDs would write it twice by calling again.
func TestAppendRetriedAfterLostAnswer(t *testing.T) {
	for _, unary := range []bool{true, false} {
		for _, code := range []codes.Code{codes.Internal, codes.Canceled, codes.Unknown} {
			t.Run(fmt.Sprintf("unary=%v/%v", unary, code), func(t *testing.T) {
				fc := newFakeCluster(t, 1, 4)
				fc.unary = unary
				c := dial(t, fc, WithRetry(fastRetry()))
				n := fc.nodes[0]
				n.setFault(func(_ context.Context, m string, k int) error {
					if m != "Append" || k != 1 {
						return nil
					}
					reqs := n.requests()
					if _, err := n.apply(reqs[len(reqs)-1].(*shoalv1.AppendRequest)); err != nil {
						return err
					}
					return status.Error(code, "fake: the answer was lost")
				})
				res, err := c.Append(testCtx(t), "s", NoStream, Event{Type: "A"})
				if err != nil {
					t.Fatalf("Append: %v", err)
				}
				if !res.Duplicate {
					t.Fatalf("result %+v, want the first attempt's, as a duplicate", res)
				}
				if evs, err := c.ReadPage(testCtx(t), "s"); err != nil || len(evs) != 1 {
					t.Fatalf("stream holds %d events (%v), want 1", len(evs), err)
				}
			})
		}
	}
}

// A truncate whose answer is lost after it took effect is repeated, as it is idempotent: the
// repeat removes nothing more and answers the same start, which the caller gets.
func TestTruncateRetriedAfterLostAnswer(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	if _, err := c.Append(ctx, "s", NoStream, Event{Type: "A"}, Event{Type: "B"}, Event{Type: "C"}); err != nil {
		t.Fatal(err)
	}
	fc.nodes[0].setFault(failFirst("Truncate", 1, errLoseAck))
	start, err := c.Truncate(ctx, "s", 2, Exact(2))
	if err != nil || start != 2 {
		t.Fatalf("Truncate = %d, %v; want start 2", start, err)
	}
	if n := fc.nodes[0].count("Truncate"); n != 2 {
		t.Fatalf("the truncate was sent %d times, want 2 (once more after the lost answer)", n)
	}
}

// A shard not yet at the format that has truncation refuses it for good until an upgrade:
// ErrShardFormat, not retried, and it does not count against the node.
func TestTruncateShardFormatNotRetried(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	if _, err := c.Append(ctx, "s", NoStream, Event{Type: "A"}); err != nil {
		t.Fatal(err)
	}
	fc.nodes[0].setFault(failFirst("Truncate", 100, shoalv1.ShardFormatError("shard 0 is at format 3", 0)))
	_, err := c.Truncate(ctx, "s", 1, Any)
	if !errors.Is(err, ErrShardFormat) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Truncate = %v, want ErrShardFormat", err)
	}
	if n := fc.nodes[0].count("Truncate"); n != 1 {
		t.Fatalf("the truncate was sent %d times, want 1", n)
	}
}

// A node of a version without truncation answers UNIMPLEMENTED (gRPC's unknown method): the
// caller gets ErrShardFormat, which says to upgrade, after one attempt.
func TestTruncateUnimplementedIsShardFormat(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	fc.nodes[0].setFault(failFirst("Truncate", 100, status.Error(codes.Unimplemented, "unknown method Truncate for service shoal.v1.Streams")))
	_, err := c.Truncate(ctx, "s", 1, Any)
	if !errors.Is(err, ErrShardFormat) || fc.nodes[0].count("Truncate") != 1 {
		t.Fatalf("Truncate = %v after %d attempts, want ErrShardFormat after 1", err, fc.nodes[0].count("Truncate"))
	}
}

// A truncate whose answer is lost after it took effect, repeated through a node of a version
// without truncation (UNIMPLEMENTED, during a rolling upgrade), ends with ErrOutcomeUnknown, not
// ErrShardFormat ("not supported, nothing removed"): the first attempt removed the events.
func TestTruncateUnimplementedAfterLostAnswerIsUnknown(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	if _, err := c.Append(ctx, "s", NoStream, Event{Type: "A"}, Event{Type: "B"}, Event{Type: "C"}); err != nil {
		t.Fatal(err)
	}
	fc.nodes[0].setFault(func(_ context.Context, method string, k int) error {
		switch {
		case method == "Truncate" && k == 1:
			return errLoseAck
		case method == "Truncate":
			return status.Error(codes.Unimplemented, "unknown method Truncate for service shoal.v1.Streams")
		}
		return nil
	})
	_, err := c.Truncate(ctx, "s", 2, Exact(2))
	if !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrShardFormat) {
		t.Fatalf("Truncate = %v, want ErrOutcomeUnknown (the first attempt was applied)", err)
	}
}

// A truncate whose answer is lost after it took effect is repeated; when another writer
// appended in between, the repeat, expecting the version the first attempt saw, is refused.
// That refusal says nothing of the first attempt, which removed the events: the caller gets
// ErrOutcomeUnknown, not ErrWrongExpectedVersion ("refused, nothing removed").
func TestTruncateRepeatRefusedAfterLostAnswer(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	if _, err := c.Append(ctx, "s", NoStream, Event{Type: "A"}, Event{Type: "B"}, Event{Type: "C"}); err != nil {
		t.Fatal(err)
	}
	n := fc.nodes[0]
	n.setFault(func(_ context.Context, method string, k int) error {
		switch {
		case method == "Truncate" && k == 1:
			return errLoseAck
		case method == "Truncate" && k == 2:
			// Another writer appends between the applied attempt and its repeat.
			if _, err := n.apply(&shoalv1.AppendRequest{Stream: "s", Events: []*shoalv1.EventData{{Id: []byte("concurrent-write"), Type: "D"}}}); err != nil {
				t.Error(err)
			}
		}
		return nil
	})
	_, err := c.Truncate(ctx, "s", 2, Exact(2))
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Truncate = %v, want ErrOutcomeUnknown (the first attempt was applied)", err)
	}
	if n := n.count("Truncate"); n != 2 {
		t.Fatalf("the truncate was sent %d times, want 2", n)
	}
}

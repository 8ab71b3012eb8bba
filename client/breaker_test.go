package client

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// A blip under load may open a node's breaker; in a one-node cluster, the only candidate,
// that must not refuse every call for OpenTimeout (2s) although the node answers again a
// few milliseconds later.
func TestBlipDoesNotStallOneNodeCluster(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc) // default breaker: 5 failures, 2s
	start := time.Now()
	blip := 30 * time.Millisecond
	fc.nodes[0].setFault(func(_ context.Context, m string, _ int) error {
		if m == "Append" && time.Since(start) < blip {
			return unavailable()
		}
		return nil
	})
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
				t.Errorf("append: %v", err)
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("a %v blip stalled 10 concurrent appends for %v; stats %+v", blip, took, c.Stats())
	}
}

// One transport event (a connection drop) fails every call in flight on a node at once:
// the breaker counts it once, not once per call.
func TestBreakerCountsSimultaneousFailuresOnce(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc) // default breaker: 5 failures
	const inFlight = 10
	var arrived atomic.Int32
	drop := make(chan struct{})
	fc.nodes[0].setFault(func(_ context.Context, m string, k int) error {
		if m != "Append" || k > inFlight {
			return nil
		}
		if arrived.Add(1) == inFlight {
			close(drop)
		}
		<-drop
		return unavailable()
	})
	var wg sync.WaitGroup
	for range inFlight {
		wg.Go(func() {
			if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
				t.Errorf("append: %v", err)
			}
		})
	}
	wg.Wait()
	if s := c.Stats(); s.BreakerTrips != 0 {
		t.Fatalf("%d calls failed together opened the breaker: stats %+v", inFlight, s)
	}
}

// dialBrief dials fc with breakers that open after failures and stay open, and 300 ms of
// quick retries per call.
func dialBrief(t *testing.T, fc *fakeCluster, failures uint32) *Client {
	t.Helper()
	return dial(t, fc, WithBreaker(BreakerSettings{Failures: failures, OpenTimeout: time.Minute}),
		WithRetry(RetryPolicy{MaxElapsed: 300 * time.Millisecond, InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond}))
}

// failEverywhere makes every node of fc answer method with err.
func failEverywhere(fc *fakeCluster, method string, err error) {
	for _, n := range fc.nodes {
		n.setFault(func(_ context.Context, m string, _ int) error {
			if m == method {
				return err
			}
			return nil
		})
	}
}

// When every candidate's breaker is open, the call's error keeps the failure that opened them,
// not "no node address is known".
func TestAllBreakersOpenKeepsTheCause(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dialBrief(t, fc, 1)
	failEverywhere(fc, "Append", unavailable())
	_, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"})
	if err == nil || strings.Contains(err.Error(), "no node address is known") || !strings.Contains(err.Error(), "Unavailable") {
		t.Fatalf("append with every breaker open: %v; want the failure that opened them", err)
	}
}

// A node that answers that the node a call was forwarded to did not answer (a decommission of
// a node alive in gossip but unreachable) answered: its breaker does not count it. Counted, a
// decommission retried through every node opened all their breakers, and the client's other
// calls, on healthy nodes, waited.
func TestForwardTargetUnreachableNotCounted(t *testing.T) {
	fc := newFakeCluster(t, 3, 4)
	c := dialBrief(t, fc, 2)
	failEverywhere(fc, "Decommission",
		shoalv1.NodeUnreachableError(codes.Unavailable, `fake: node "n9", alive in gossip, did not answer`, "n9"))
	err := c.Decommission(testCtx(t), "n9")
	if err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("decommission of an unreachable node: %v; want the forwarding node's answer", err)
	}
	if s := c.Stats(); s.BreakerTrips != 0 {
		t.Fatalf("answers about another node opened breakers: stats %+v", s)
	}
}

// lateTimer is a caller's context whose deadline has passed but whose timer has not fired yet,
// as on a busy machine: Err is still nil.
type lateTimer struct {
	context.Context
	deadline time.Time
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.deadline, true }

// An attempt that timed out with its caller's deadline is the caller's end, not the node's
// fault, even before the caller's context says so; a timeout with time left is the node's.
func TestBreakerLeavesCallersDeadlineOut(t *testing.T) {
	c := &Client{}
	timedOut := status.Error(codes.DeadlineExceeded, "context deadline exceeded")
	late := lateTimer{context.Background(), time.Now().Add(-time.Millisecond)}
	if got := c.breakerOutcome(late, timedOut); got != errExcluded {
		t.Errorf("timeout at the caller's deadline, its timer late: %v, want errExcluded", got)
	}
	if err := callerEnded(late); err != context.DeadlineExceeded {
		t.Errorf("callerEnded with the deadline passed: %v, want context.DeadlineExceeded", err)
	}
	early := lateTimer{context.Background(), time.Now().Add(time.Hour)}
	if got := c.breakerOutcome(early, timedOut); got != errNodeFault {
		t.Errorf("timeout an hour before the caller's deadline: %v, want errNodeFault", got)
	}
	if err := callerEnded(early); err != nil {
		t.Errorf("callerEnded an hour before the deadline: %v", err)
	}
}

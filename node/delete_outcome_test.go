package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// TestExactDeleteRefusedAfterUnknownAttempt: a delete expecting an exact version is repeated
// after an attempt whose outcome is unknown (here: proposed and applied, and the proposer told
// it lost its leadership, as raft reports a leadership transfer before the commit reached the
// old leader). When the repeat is refused because the first attempt took effect (another writer
// appended since, so the version moved on), the answer is UNKNOWN, not the refusal: the caller
// would otherwise believe its delete was not applied. Without the unknown attempt the refusal
// stands.
func TestExactDeleteRefusedAfterUnknownAttempt(t *testing.T) {
	n, c, id, cmd := exactDeleteSetup(t)
	ctx := context.Background()
	calls := 0
	res, retried, err := n.write(ctx, id, true, func(g *replica.Group, pctx context.Context) (any, error) {
		calls++
		cmd.Time = time.Now().UnixNano()
		r, err := g.Propose(pctx, shard.EncodeDelete(cmd))
		if calls > 1 {
			return r, err
		}
		if _, ok := r.(*shard.DeleteResult); !ok || err != nil {
			t.Fatalf("first attempt: %v, %v", r, err)
		}
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Expected: anyVersion(), Events: events("c")}); err != nil {
			t.Fatal(err)
		}
		return nil, &replica.NotLeaderError{Shard: id}
	}, nil)
	if !retried || calls != 2 {
		t.Fatalf("write: %d attempts, retried %t; want 2, true", calls, retried)
	}
	_, verr := deleteVerdict(id, res, retried, err)
	if code := status.Code(n.toStatus(verr, "s", id)); code != codes.Unknown {
		t.Fatalf("the repeat's refusal after an applied attempt answered %v (%v), want UNKNOWN", code, verr)
	}
	// The same refusal without an earlier unknown attempt is definite.
	_, verr = deleteVerdict(id, res, false, err)
	if code := status.Code(n.toStatus(verr, "s", id)); code != codes.FailedPrecondition {
		t.Fatalf("a refusal of a first attempt answered %v (%v), want FAILED_PRECONDITION", code, verr)
	}
	// A forwarded refusal maps the same way.
	fwd := status.Error(codes.NotFound, "stream not found")
	if _, verr := deleteVerdict(id, nil, true, fwd); status.Code(n.toStatus(verr, "s", id)) != codes.Unknown {
		t.Fatalf("a forwarded refusal after an unknown attempt: %v, want UNKNOWN", verr)
	}
}

// TestExactDeleteAppliedThenNoAnswer: a delete expecting an exact version whose first attempt
// was applied, after which every attempt failed for leadership (here each proposer is told it
// lost its leadership, as during churn). The answer must not be the last attempt's not-leader
// (UNAVAILABLE naming no leader, which says "refused, not applied"): the caller would repeat
// it, and the repeat, refused as the stream is deleted already, would read as a definite
// failure of a delete that was applied. It is UNKNOWN.
func TestExactDeleteAppliedThenNoAnswer(t *testing.T) {
	n, _, id, cmd := exactDeleteSetup(t)
	ctx := context.Background()
	calls := 0
	res, retried, err := n.write(ctx, id, true, func(g *replica.Group, pctx context.Context) (any, error) {
		if calls++; calls == 1 {
			cmd.Time = time.Now().UnixNano()
			if r, err := g.Propose(pctx, shard.EncodeDelete(cmd)); err != nil {
				t.Fatalf("first attempt: %v, %v", r, err)
			}
		}
		return nil, &replica.NotLeaderError{Shard: id} // proposed, not refused: outcome unknown
	}, nil)
	if !retried || calls != 3 {
		t.Fatalf("write: %d attempts, retried %t; want 3, true", calls, retried)
	}
	_, verr := deleteVerdict(id, res, retried, err)
	if st := status.Convert(n.toStatus(verr, "s", id)); st.Code() != codes.Unknown {
		t.Fatalf("an applied delete whose later attempts found no leader answered %v %v (%q), want UNKNOWN",
			st.Code(), st.Details(), st.Message())
	}
	// The same failure without an attempt that may have been applied stands.
	_, verr = deleteVerdict(id, nil, false, err)
	if code := status.Code(n.toStatus(verr, "s", id)); code != codes.Unavailable {
		t.Fatalf("not-leader of a first attempt answered %v (%v), want UNAVAILABLE", code, verr)
	}
}

// exactDeleteSetup starts a node holding stream "s" at version 1, and returns it, a client of
// it, the stream's shard and a delete of it expecting version 1.
func exactDeleteSetup(t *testing.T) (*Node, shoalv1.StreamsClient, uint32, *shard.DeleteCommand) {
	t.Helper()
	n := startNode(t, testConfig(t, t.TempDir()))
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	if _, err := c.Append(context.Background(), &shoalv1.AppendRequest{Stream: "s", Expected: anyVersion(), Events: events("a", "b")}); err != nil {
		t.Fatal(err)
	}
	id, _ := n.shardOf("s")
	return n, c, id, &shard.DeleteCommand{Stream: "s", Expected: shard.Expected{Kind: shard.ExpectExact, Version: 1}}
}

// TestAppendAppliedThenNoAnswer: an append whose first attempt was proposed (and applied),
// after which every attempt failed for leadership, answers UNKNOWN, not the last attempt's
// not-leader (UNAVAILABLE naming no leader), which the client and the CLI take for "refused,
// nothing written". Without such an attempt the not-leader stands, and so does a verdict after
// one (a repeat of an applied append answers as a duplicate, so a refusal is its own).
func TestAppendAppliedThenNoAnswer(t *testing.T) {
	n, _, id, _ := exactDeleteSetup(t)
	ctx := context.Background()
	cmd := &shard.AppendCommand{Stream: "s", Events: []shard.Event{{ID: [16]byte{9}, Type: "c"}}}
	calls := 0
	_, retried, err := n.write(ctx, id, true, func(g *replica.Group, pctx context.Context) (any, error) {
		if calls++; calls == 1 {
			cmd.Time = time.Now().UnixNano()
			if r, err := g.Propose(pctx, shard.EncodeAppend(cmd)); err != nil {
				t.Fatalf("first attempt: %v, %v", r, err)
			}
		}
		return nil, &replica.NotLeaderError{Shard: id} // proposed, not refused: outcome unknown
	}, nil)
	if !retried || calls != 3 {
		t.Fatalf("write: %d attempts, retried %t; want 3, true", calls, retried)
	}
	if st := status.Convert(n.toStatus(appendOutcome(id, retried, err), "s", id)); st.Code() != codes.Unknown {
		t.Fatalf("an applied append whose later attempts found no leader answered %v (%q), want UNKNOWN", st.Code(), st.Message())
	}
	if code := status.Code(n.toStatus(appendOutcome(id, false, err), "s", id)); code != codes.Unavailable {
		t.Fatalf("not-leader of a first attempt answered %v, want UNAVAILABLE", code)
	}
	verdict := status.Error(codes.FailedPrecondition, "wrong expected version")
	if code := status.Code(n.toStatus(appendOutcome(id, true, verdict), "s", id)); code != codes.FailedPrecondition {
		t.Fatalf("a forwarded verdict after an unknown attempt answered %v, want FAILED_PRECONDITION", code)
	}
	if code := status.Code(n.toStatus(appendOutcome(id, true, context.DeadlineExceeded), "s", id)); code == codes.Unknown {
		t.Fatalf("the caller's deadline after an unknown attempt answered UNKNOWN")
	}
	// This node shutting down while the append was retried (ErrClosed answers "node is shutting
	// down", which the client takes for "refused, nothing ran").
	if code := status.Code(n.toStatus(appendOutcome(id, true, ErrClosed), "s", id)); code != codes.Unknown {
		t.Fatalf("shutting down after an unknown attempt answered %v, want UNKNOWN", code)
	}
	// A full proposal queue is overload (RESOURCE_EXHAUSTED: the client backs off without asking
	// for the topology again), refused before anything was proposed; after an attempt that may
	// have been applied, here or forwarded from the leader, the outcome is unknown.
	busy := fmt.Errorf("%w: limits", replica.ErrBusy)
	if code := status.Code(n.toStatus(appendOutcome(id, false, busy), "s", id)); code != codes.ResourceExhausted {
		t.Fatalf("a full proposal queue answered %v, want RESOURCE_EXHAUSTED", code)
	}
	for _, err := range []error{busy, n.toStatus(busy, "s", id)} {
		if code := status.Code(n.toStatus(appendOutcome(id, true, err), "s", id)); code != codes.Unknown {
			t.Fatalf("a full proposal queue (%v) after an unknown attempt answered %v, want UNKNOWN", err, code)
		}
	}
	// The leader's UNKNOWN, forwarded, goes back as it came, not wrapped again.
	fwd := status.Error(codes.Unknown, "shard 3: the write may or may not have been applied: x")
	if got := n.toStatus(appendOutcome(id, true, fwd), "s", id); got.Error() != fwd.Error() {
		t.Fatalf("a forwarded UNKNOWN answered %q, want %q", got, fwd)
	}
}

// TestDeleteProposedByReplicaJustElected: a delete not safe to repeat, proposed on a replica
// that did not count as the leader when write read its leadership but did when Propose checked
// it again (elected in between; route takes a replica that names itself the leader before it
// counts as one), is taken by raft. If its group then stops or this replica is removed while
// the proposal waits (ErrStopped, ErrGroupRemoved, not refused), the delete may be applied: the
// answer is UNKNOWN, where the leadership read before the call made it the plain error, the
// UNAVAILABLE naming no leader that the client takes for "not applied" and repeats. A proposal
// the replica refused (the removed replica's own answer) stays a plain error. The replica here
// is retired, which leaves it naming itself the leader without counting as one.
func TestDeleteProposedByReplicaJustElected(t *testing.T) {
	n, _, id, _ := exactDeleteSetup(t)
	g, _ := n.host.Group(id)
	if ok, err := n.host.RetireGroupIfQuiet(id, time.Now()); !ok || err != nil {
		t.Fatalf("RetireGroupIfQuiet: %t, %v", ok, err)
	}
	if g.IsLeader() || g.Leader() != n.ID() {
		t.Fatalf("retired replica: leads %t, names %d the leader; want false, %d", g.IsLeader(), g.Leader(), n.ID())
	}
	cmd := &shard.DeleteCommand{Stream: "s"} // expecting any version: not safe to repeat
	for _, tc := range []struct {
		name string
		err  error // the proposal's error, nil: Propose's own
		want codes.Code
	}{
		{"taken, then stopped", replica.ErrStopped, codes.Unknown},
		{"taken, then removed", replica.ErrGroupRemoved, codes.Unknown},
		{"refused", nil, codes.Unavailable},
	} {
		calls := 0
		res, retried, err := n.write(context.Background(), id, false, func(g *replica.Group, pctx context.Context) (any, error) {
			calls++
			if tc.err != nil {
				return nil, tc.err // as a waiter of a proposal raft took is answered
			}
			cmd.Time = time.Now().UnixNano()
			return g.Propose(pctx, shard.EncodeDelete(cmd))
		}, nil)
		if calls != 1 {
			t.Fatalf("%s: %d attempts, want 1", tc.name, calls)
		}
		_, verr := deleteVerdict(id, res, retried, err)
		if code := status.Code(n.toStatus(verr, "s", id)); code != tc.want {
			t.Errorf("%s: answered %v (%v), want %v", tc.name, code, verr, tc.want)
		}
	}
}

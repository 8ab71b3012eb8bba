package node

// The write path: a write runs on its shard's leader, proposed here or forwarded, retried
// while that is safe, and its outcome told apart from a refusal.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// write runs a write on shard id's leader: proposes locally when this node
// leads, else forwards. A forward that failed to reach the leader, or a
// proposal refused because leadership just moved, is retried a few times.
// A write whose outcome is unknown (leadership lost while its proposal
// waited, no commit in time, a forward cut off after it was sent) is retried
// only when idempotent (appends: event IDs make a retry safe; deletes
// expecting an exact version); otherwise it fails with an
// *OutcomeUnknownError. retried reports that the answer is a retry's after
// such an attempt, or that the last attempt's own outcome is unknown (an
// idempotent proposal not committed in time): a delete's refusal may then be
// its own first attempt's effect, and any other failure may follow an applied
// attempt.
func (n *Node) write(ctx context.Context, id uint32, idempotent bool,
	propose func(*replica.Group, context.Context) (any, error),
	forward func(*grpc.ClientConn, context.Context) (any, error),
) (_ any, retried bool, _ error) {
	var last error
	deadline := time.Now().Add(n.noLeaderWait())
	for attempt := 0; attempt < 3; attempt++ {
		g, tgt, err := n.route(ctx, id, staleness{}, deadline)
		if err != nil {
			return nil, retried, err
		}
		if tgt != nil {
			n.metrics.forwarded.WithLabelValues("write").Inc()
			fctx, w := n.watchForward(n.forwardContext(ctx), id, tgt)
			if idempotent {
				w.arm()
			}
			res, err := forward(tgt.conn, fctx)
			w.stop()
			if err == nil {
				return res, retried, nil
			}
			if w.moved() && ctx.Err() == nil {
				// The leader it went to was replaced while it waited (hung, or cut off):
				// route again at once, to the new leader the watch just learned.
				last = &NoLeaderError{Shard: id, Cause: errLeaderMoved}
				retried = true
				continue
			}
			if wc := otherClusterAnswered(id, tgt, err); wc != nil {
				// A stale address: nothing ran there. Learn the leader again, as for one
				// unreachable.
				n.leaders.invalidate(id)
				last = wc
				if ctx.Err() != nil {
					return nil, retried, wc
				}
				if attempt < 2 {
					pause(ctx, deadline, forwardPause)
				}
				continue
			}
			if !idempotent && mayHaveArrived(err) && ctx.Err() == nil {
				if status.Code(err) == codes.Unknown {
					return nil, retried, err // the leader's own answer: the outcome is unknown there too
				}
				return nil, retried, &OutcomeUnknownError{Shard: id, Cause: forwardFailed(id, err)}
			}
			if idempotent && !retryForward(err) && mayHaveArrived(err) && ctx.Err() == nil {
				// The call may have run there and its answer was lost (a stream reset on the
				// way: INTERNAL, CANCELLED; a failure answered UNKNOWN): an idempotent write is
				// repeated, its repeat answering as it would have, rather than this failure
				// going back as if it were a verdict.
				last = err
				retried = true
				continue
			}
			if retryForward(err) && ctx.Err() == nil {
				// The leader moved or is unreachable: learn again. An unreachable leader
				// usually means it just died: give this node's replica a moment to hear of
				// the election rather than forwarding to the dead leader again at once.
				n.leaders.invalidate(id)
				last = forwardFailed(id, err)
				retried = retried || mayHaveArrived(err)
				if unreached(err) && attempt < 2 {
					pause(ctx, deadline, forwardPause)
				}
				continue
			}
			return nil, retried, err
		}
		if err := ctx.Err(); err != nil {
			// The caller's deadline passed (or it went away) while the write was routed or
			// retried: proposed now, it would be written although its caller is answered a
			// failure.
			return nil, retried, err
		}
		pctx, cancel := proposeContext(ctx)
		res, err := propose(g, pctx)
		timedOut := pctx.Err() != nil && ctx.Err() == nil
		cancel()
		// Whether raft may have taken the proposal: the replica says so itself, marking a
		// refusal before raft saw it. The leadership read before the call does not tell: this
		// replica may have been elected while the call checked it again, and a proposal raft
		// took may then fail with the group stopped or removed, its outcome unknown.
		proposed := !errors.Is(err, replica.ErrRefused)
		switch {
		case err == nil:
			return res, retried, nil
		case timedOut && idempotent:
			return nil, true, &NoLeaderError{Shard: id, Cause: fmt.Errorf("proposal not committed within %v", proposeTimeout)}
		case timedOut:
			return nil, retried, &OutcomeUnknownError{Shard: id, Cause: fmt.Errorf("proposal not committed within %v", proposeTimeout)}
		case errors.Is(err, replica.ErrProposalDropped):
			// raft drops proposals while it transfers the leadership (a hand-off, a balancing
			// move): nothing was proposed. Wait for the transfer to end, within the routing
			// deadline and without spending an attempt, then route again: to the new leader,
			// or here again should the transfer have been given up.
			last = err
			if time.Now().Before(deadline) {
				attempt--
				pause(ctx, deadline, dropPause)
			}
			continue
		case errors.Is(err, replica.ErrNotLeader) && (idempotent || !proposed):
			last = err
			retried = retried || errors.Is(err, replica.ErrNotLeader) && proposed
			continue
		case !idempotent && proposed && ctx.Err() == nil:
			// Proposed, then the leadership was lost or the group stopped while it waited.
			return nil, retried, &OutcomeUnknownError{Shard: id, Cause: err}
		case idempotent && proposed && (errors.Is(err, replica.ErrStopped) || errors.Is(err, replica.ErrGroupRemoved)):
			// Proposed, then the group stopped or this replica was removed from it while it
			// waited: it may have been applied (a delete's verdict says so; an append's
			// repeat answers as a duplicate).
			return nil, true, err
		default:
			return nil, retried, err
		}
	}
	return nil, retried, last
}

// proposeContext bounds a proposal by the caller's deadline or
// proposeTimeout, whichever comes first.
func proposeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) < proposeTimeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, proposeTimeout)
}

// deleteVerdict is a delete's answer from write's: the state machine's refusal as the error,
// and, after an attempt that may have been applied (retried), any failure as an
// *OutcomeUnknownError. A refusal that attempt could have caused (the stream deleted already,
// or its version moved on) says nothing of it; nor does a failure of the attempts after it
// (no leader, leadership moved again, the leader unreachable), which the caller, told that
// its delete was refused, would repeat, and the repeat be refused as deleted already.
func deleteVerdict(id uint32, res any, retried bool, err error) (any, error) {
	if r, ok := res.(error); ok && err == nil {
		res, err = nil, r
	}
	switch {
	case !retried || err == nil:
	case deleteRefusal(err):
		err = &OutcomeUnknownError{Shard: id, Cause: fmt.Errorf("an attempt that may have been applied was repeated, and the repeat refused: %w", err)}
	default:
		err = &OutcomeUnknownError{Shard: id, Cause: fmt.Errorf("an attempt may have been applied, and the attempts after it failed: %w", err)}
	}
	return res, err
}

// truncateVerdict is a truncate's answer from write's: the state machine's refusal as the
// error, and, after an attempt that may have been applied (retried), a failure for want of a
// leader or an answer as an *OutcomeUnknownError (appendOutcome). A repeat of an applied
// truncate answers as it did only while nothing changed: refused after it (another writer
// appended or deleted since, so its expected version no longer holds; a new leader not yet
// at the format it was applied at), it says nothing of that attempt, and the outcome is
// unknown too.
func truncateVerdict(id uint32, res any, retried bool, err error) (any, error) {
	if r, ok := res.(error); ok && err == nil {
		res, err = nil, r
	}
	if retried && truncateRefusal(err) {
		return nil, &OutcomeUnknownError{Shard: id, Cause: fmt.Errorf("an attempt that may have been applied was repeated, and the repeat refused: %w", err)}
	}
	if err = appendOutcome(id, retried, err); err != nil {
		return nil, err
	}
	return res, nil
}

// isStatus reports whether err is a gRPC status itself (a forwarded call's answer), not an
// error that wraps one.
func isStatus(err error) bool {
	_, ok := err.(interface{ GRPCStatus() *status.Status })
	return ok
}

// truncateRefusal reports whether err refuses a truncate for the stream's version or the
// shard's format (FAILED_PRECONDITION), from the state machine, the proposer, or a forwarded
// call's status.
func truncateRefusal(err error) bool {
	return errors.Is(err, shard.ErrWrongExpectedVersion) || errors.Is(err, shard.ErrNeedsFormat) ||
		isStatus(err) && status.Code(err) == codes.FailedPrecondition
}

// appendOutcome is the failure err of an append as its caller must take it. After an attempt
// that may have been applied (retried), a failure for want of a leader or an answer (no
// leader, leadership lost, the group stopped, a forward cut off or refused by a node of
// another cluster) leaves the outcome unknown: answered as is, it would read as "refused,
// nothing written". A verdict stands (a repeat of an applied append answers as a duplicate,
// so a refusal is the append's own), as does the caller's own deadline or cancellation.
func appendOutcome(id uint32, retried bool, err error) error {
	if !retried || err == nil || !failedForWant(err) {
		return err
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unknown {
		return err // the leader's UNKNOWN, forwarded: it says so already
	}
	return &OutcomeUnknownError{Shard: id, Cause: fmt.Errorf("an attempt may have been applied, and the attempts after it failed: %w", err)}
}

// failedForWant reports whether err is a write's failure for want of a leader or of an answer,
// not a verdict: the shard has no leader, this replica lost or left it, this node is shutting
// down, or a call forwarded to the leader failed or was answered so, or was refused by a node
// of another cluster at the address this node took for the leader's (shoalv1.IsWrongCluster).
func failedForWant(err error) bool {
	var nol *NoLeaderError
	switch {
	case errors.As(err, &nol), errors.Is(err, replica.ErrNotLeader), errors.Is(err, replica.ErrStopped),
		errors.Is(err, replica.ErrGroupRemoved), errors.Is(err, replica.ErrProposalDropped), errors.Is(err, replica.ErrBusy),
		errors.Is(err, ErrClosed): // this node shut down while the write was retried
		return true
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false // the caller's: it reads no answer
	}
	if !isStatus(err) {
		return false
	}
	switch st := status.Convert(err); st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Unknown, codes.Internal, codes.Aborted, codes.ResourceExhausted:
		return true
	case codes.FailedPrecondition:
		// A node of another cluster at the address this node took for the leader's refused
		// the forwarded call: no verdict on the write.
		return shoalv1.IsWrongCluster(st)
	}
	return false
}

// deleteRefusal reports whether err is a delete's refusal that its own earlier attempt could
// have caused: the stream not found or deleted (the attempt deleted it), or at another version
// (the attempt deleted, and another writer appended since). From the state machine, or a
// forwarded call's status.
func deleteRefusal(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, shard.ErrStreamNotFound) || errors.Is(err, shard.ErrStreamDeleted) || errors.Is(err, shard.ErrWrongExpectedVersion) {
		return true
	}
	if !isStatus(err) {
		return false
	}
	switch status.Code(err) {
	case codes.NotFound, codes.FailedPrecondition:
		return true
	}
	return false
}

// mayHaveArrived reports whether a forwarded call that failed with err may have reached the
// node it was forwarded to, which may then have acted on it: every failure but a connection
// that could not be made, and answers that refuse (a not-leader answer, a verdict).
func mayHaveArrived(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return true
	}
	switch st.Code() {
	case codes.Unavailable:
		if len(st.Details()) > 0 {
			return false // that node answered: not the leader, or no leader
		}
		return !refusedUnapplied(st.Message())
	case codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal:
		return true
	}
	return false
}

// refusedUnapplied reports whether an UNAVAILABLE answer's message says the call was refused
// before anything ran: gRPC's failure to connect, a node still starting (startingErr), or one
// shutting down (ErrClosed's answer). The client's mayHaveApplied knows the same answers.
func refusedUnapplied(msg string) bool {
	return strings.Contains(msg, "while dialing") || strings.Contains(msg, startingMsg) ||
		strings.Contains(msg, shuttingDownMsg)
}

// forwardPause is how long a write waits before routing again after the leader it forwarded
// to did not answer.
const forwardPause = 50 * time.Millisecond

// dropPause is how long a write refused for a leadership transfer under way waits before it is
// routed again; a transfer takes a few milliseconds to an election timeout.
const dropPause = 10 * time.Millisecond

// unreached reports whether a forwarded call failed without an answer of the node it was
// forwarded to (UNAVAILABLE without details: the connection failed, or that node is closing).
func unreached(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable && len(st.Details()) == 0
}

// forwardFailed turns the error of a call this node forwarded into the answer for its
// caller. An answer of the node forwarded to (a verdict, a not-leader naming a leader) passes
// unchanged. A failure to reach it becomes a *NoLeaderError: a plain UNAVAILABLE would tell
// the caller that this node failed, and a client would count it against this node's circuit
// breaker and avoid it, although this node answered, and every node would forward the same
// way while the shard elects a new leader.
func forwardFailed(id uint32, err error) error {
	if !unreached(err) {
		return err
	}
	return &NoLeaderError{Shard: id, Cause: fmt.Errorf("the node it was forwarded to did not answer: %s", status.Convert(err).Message())}
}

// otherClusterAnswered returns a *NoLeaderError when err, the error of a call this node
// forwarded to tgt, is another cluster's refusal (WRONG_CLUSTER): the address this node holds
// for that node now serves a node of another cluster (its view is stale), and nothing ran
// there. Relayed as it came, it would tell the caller, who dialled this cluster, that it
// dialled another, which a client takes for good. nil for any other err.
func otherClusterAnswered(id uint32, tgt *forwardTarget, err error) error {
	st, ok := status.FromError(err)
	if !ok || !shoalv1.IsWrongCluster(st) {
		return nil
	}
	return &NoLeaderError{Shard: id, Cause: fmt.Errorf("the address this node holds for node %d, the shard's leader, "+
		"is served by a node of another cluster (a stale address)", tgt.node)}
}

// pause waits d, or less if ctx ends or deadline comes first.
func pause(ctx context.Context, deadline time.Time, d time.Duration) {
	d = min(d, time.Until(deadline))
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// retryForward reports whether a forwarded call's error means "try the
// routing again": the peer was unreachable (UNAVAILABLE without details) or
// it named another leader. A peer that says the shard has no leader already
// waited for one; its answer is final.
func retryForward(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if nl, ok := d.(*shoalv1.NotLeader); ok {
			return nl.LeaderId != 0
		}
	}
	return true
}

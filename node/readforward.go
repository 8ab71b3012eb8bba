package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoaldb/shoal/shard"
)

// forwardRead routes a read of shard id. It returns the local state machine when this node
// serves the read; otherwise it forwards the read (open starts it on a connection) and relays
// the answer to out, and returns a nil state machine and the outcome. A read is safe to repeat,
// so one that failed before anything was relayed is routed again, up to three attempts in all,
// as write routes an idempotent write again: when a forward watch abandoned it because the
// shard's leader moved (to the new leader the watch learned), when the node it went to named
// another leader or did not answer (it usually just died: after a pause for this node to hear
// of the election), or when it was cut off on the way. One that failed later fails, as
// unavailable when the node it went to stopped answering or its stream was cut on the way
// (streamReset), and the caller resumes it after the last event it received.
func forwardRead[T any](n *Node, ctx context.Context, id uint32, st staleness, firstWait time.Duration, out grpc.ServerStreamingServer[T],
	open func(context.Context, *grpc.ClientConn) (grpc.ServerStreamingClient[T], error),
) (*shard.Shard, error) {
	deadline := time.Now().Add(n.noLeaderWait())
	for attempt := 0; ; attempt++ {
		// One deadline for all attempts: a leaderless shard is answered within
		// noLeaderWait, not within one wait per attempt.
		sm, tgt, err := n.readRoute(ctx, id, st, deadline)
		if err != nil || tgt == nil {
			return sm, err
		}
		n.metrics.forwarded.WithLabelValues("read").Inc()
		sent, err := relay(n, ctx, id, tgt, firstWait, out, open)
		if err == nil {
			return nil, nil
		}
		wc := otherClusterAnswered(id, tgt, err)
		if wc != nil {
			err = wc
		}
		if sent || ctx.Err() != nil || attempt == 2 {
			if ctx.Err() == nil && streamReset(err) {
				// No answer of the leader: the caller resumes after the last event it got.
				err = &NoLeaderError{Shard: id, Cause: fmt.Errorf("the read forwarded to node %d was cut off: %s",
					tgt.node, status.Convert(err).Message())}
			}
			return nil, forwardFailed(id, err)
		}
		switch {
		case errors.Is(err, errLeaderMoved):
			// Routed again at once, to the new leader the watch just learned.
		case wc != nil:
			// A stale address (nothing ran there): learn the leader again.
			n.leaders.invalidate(id)
			pause(ctx, deadline, forwardPause)
		case retryForward(err):
			// Not the leader, or unreachable: learn again, after a moment for this node's
			// replica to hear of the election when the leader just died.
			n.leaders.invalidate(id)
			if unreached(err) {
				pause(ctx, deadline, forwardPause)
			}
		case cutBeforeAnswer(err):
			// Cut off on the way (a stream reset) before an answer came: repeated.
		default:
			return nil, forwardFailed(id, err) // the answer of the node it went to
		}
	}
}

// streamReset reports whether err, a forwarded read's error, is gRPC's status for its stream
// cut on the way (reset by the node it went to, a proxy or the connection): CANCELLED, which
// that node never answers a caller still there, or any code with the reset's message (INTERNAL
// for INTERNAL_ERROR). Unlike an INTERNAL or UNKNOWN answer of that node (a corrupt record,
// the read's verdict), it says nothing of the read.
func streamReset(err error) bool {
	st, ok := status.FromError(err)
	return ok && (st.Code() == codes.Canceled || strings.HasPrefix(st.Message(), "stream terminated by RST_STREAM"))
}

// cutBeforeAnswer tells whether a forwarded read that relayed nothing yet failed on the way,
// not by an answer of the node it went to: a stream reset (streamReset, whatever its code:
// INTERNAL for a reset with INTERNAL_ERROR), or a failure that mayHaveArrived says left the
// request unanswered. An INTERNAL or UNKNOWN answer is the read's verdict (a corrupt record),
// as the client takes it, not a reason to ask the leader again.
func cutBeforeAnswer(err error) bool {
	code := status.Code(err)
	return streamReset(err) || code != codes.Internal && code != codes.Unknown && mayHaveArrived(err)
}

// relay forwards a read to tgt and copies its answer to out, under a forward watch while it
// waits for tgt. sent reports that a message reached out, or that sending to out failed:
// either way the read cannot start over. err is the forwarded call's error as it came (or
// out's); one the watch caused is a *NoLeaderError caused by errLeaderMoved.
func relay[T any](n *Node, ctx context.Context, id uint32, tgt *forwardTarget, firstWait time.Duration, out grpc.ServerStreamingServer[T],
	open func(context.Context, *grpc.ClientConn) (grpc.ServerStreamingClient[T], error),
) (sent bool, err error) {
	fctx, w := n.watchForward(n.forwardContext(ctx), id, tgt)
	defer w.stop()
	in, err := open(fctx, tgt.conn)
	live := false // a subscription that caught up: its silence is no sign of a hung node
	for err == nil {
		var m *T
		switch {
		case !sent:
			w.armAfter(firstWait + forwardWatchAfter) // a long poll's first page may take its wait
		case !live:
			w.arm()
		}
		m, err = in.Recv()
		w.disarm()
		if err == nil {
			if cu, ok := any(m).(interface{ GetCaughtUp() bool }); ok && cu.GetCaughtUp() {
				live = true
			}
			if err := out.Send(m); err != nil {
				return true, err
			}
			sent = true
		}
	}
	switch {
	case errors.Is(err, io.EOF):
		return sent, nil
	case w.moved() && ctx.Err() == nil:
		return sent, &NoLeaderError{Shard: id, Cause: errLeaderMoved}
	}
	return sent, err
}

// longPollMargin is how long before its caller's deadline a long poll answers, at most (a
// tenth of the time left when that is less).
const longPollMargin = 100 * time.Millisecond

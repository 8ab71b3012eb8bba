package node

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// A leader can stop answering without breaking its connections: a hung or paused process, a
// frozen machine. Its shards elect new leaders within a few seconds, but a call this node
// forwarded to it would wait for an answer that does not come until gRPC's keepalive drops
// the connection (10 s idle, then 2 s for the ping's answer: grpcopt.PeerDialOptions) or its
// caller gives up, and so would a simple client pointed at this
// node, which has no routing of its own to fall back on. So a forwarded call that has waited
// forwardWatchAfter for its target watches the shard's leader as this node knows it (its own
// replica's view, else the leaders gathered from the members), every forwardWatchEvery, and is
// abandoned when another node leads the shard; the request is then routed again. Only calls
// that are safe to repeat are watched: appends, whose event IDs make a repeat of an append
// that did commit answer as a duplicate, deletes expecting an exact version, which a repeat
// cannot apply twice, and reads. A forwarded delete expecting any version or an existing
// stream still waits: abandoned, its outcome would be unknown.
const (
	forwardWatchAfter = 300 * time.Millisecond
	forwardWatchEvery = 300 * time.Millisecond
)

// errLeaderMoved is the cause of a forwarded call abandoned by its watch.
var errLeaderMoved = errors.New("the shard's leader changed while a forwarded call waited for the old one")

// forwardTarget is where route sends a request this node cannot serve: the shard's leader as
// this node knows it, or, for a stale read of a shard without one, a node holding a replica
// (leader 0), and a connection to it.
type forwardTarget struct {
	conn   *grpc.ClientConn
	leader uint64
	node   uint64 // the node the connection goes to
}

// forwardWatch watches one forwarded call while it waits for its target. Armed, it cancels the
// call's context with errLeaderMoved once this node knows of a leader of the shard other than
// the target. A nil *forwardWatch watches nothing.
type forwardWatch struct {
	n      *Node
	shard  uint32
	to     uint64
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu    sync.Mutex
	timer *time.Timer // while armed
	gen   uint64      // counts arm and disarm; a poll acts only for its own arming
}

// watchForward returns the context for a call forwarded to tgt for shard id, and its watch,
// unarmed. stop must be called when the call returns.
func (n *Node) watchForward(ctx context.Context, id uint32, tgt *forwardTarget) (context.Context, *forwardWatch) {
	fctx, cancel := context.WithCancelCause(ctx)
	return fctx, &forwardWatch{n: n, shard: id, to: tgt.leader, ctx: fctx, cancel: cancel}
}

// arm starts watching: forwardWatchAfter from now, unless disarmed first, the watch looks at
// the shard's leader.
func (w *forwardWatch) arm() { w.armAfter(forwardWatchAfter) }

// armAfter is arm for a wait that may take d before its target answers (a long poll).
func (w *forwardWatch) armAfter(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil || w.ctx.Err() != nil {
		return
	}
	w.gen++
	gen := w.gen
	w.timer = time.AfterFunc(d, func() { w.poll(gen) })
}

// disarm stops watching until the next arm.
func (w *forwardWatch) disarm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
		w.gen++
	}
}

// stop ends the watch and releases the call's context.
func (w *forwardWatch) stop() {
	w.disarm()
	w.cancel(nil)
}

// moved reports whether the watch abandoned the call.
func (w *forwardWatch) moved() bool { return errors.Is(context.Cause(w.ctx), errLeaderMoved) }

// poll looks at the shard's leader once, for the arming gen.
func (w *forwardWatch) poll(gen uint64) {
	leader := w.n.currentLeader(w.ctx, w.shard)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gen != gen || w.timer == nil {
		return // disarmed meanwhile
	}
	if leader != 0 && leader != w.to {
		w.timer = nil
		w.n.metrics.forwardsMoved.Inc()
		w.cancel(errLeaderMoved)
		return
	}
	w.timer = time.AfterFunc(forwardWatchEvery, func() { w.poll(gen) })
}

// currentLeader returns shard id's leader as this node knows it now: its own replica's view
// (not a removed one's or a learner's, which name the leader they last knew: ownLeaderView), else
// the leaders gathered from the members (at most one gathering per refreshEvery for the whole
// node). 0 means unknown.
func (n *Node) currentLeader(ctx context.Context, id uint32) uint64 {
	if g, ok := n.ownLeaderView(id); ok {
		return g.Leader()
	}
	n.refreshLeaders(ctx)
	l, _ := n.leaders.get(id)
	return l
}

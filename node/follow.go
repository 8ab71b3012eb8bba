package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// Subscriptions (ReadRequest.follow, ReadShardRequest.follow) and long polls
// (ReadShardRequest.wait_ms) are reads that wait on the local replica for its
// state machine to apply more: shard.Changed wakes them, so an event reaches a
// subscriber as soon as the replica serving it applied it, without polling.
// A subscription starts like a read of its kind (the leader serves a
// linearizable one); from then on it delivers what that replica applies, which
// is committed and never taken back, so it stays correct when the replica
// loses its leadership. It ends, and the client subscribes again elsewhere
// after its last event, when the replica leaves this node, when it stops being
// current (below), or when the node shuts down.
const (
	// followHeartbeat is how often an idle subscription sends an empty caught_up page, and
	// checks that its replica may go on serving it.
	followHeartbeat = time.Second
	// maxWaitMS bounds ReadShardRequest.wait_ms.
	maxWaitMS = 60_000
)

// followCurrentBound ends a linearizable subscription whose replica has not been current with
// its leader for this long (cut off from its group, or its group without a quorum): another
// replica may be serving what this one lacks. A bounded one uses its max_staleness_ms; an
// unbounded stale one is never ended for that (it serves what its replica holds, as a stale read
// does). noLeaderWait's 30 ticks, at least 3 s: more than a quiesced group's heartbeat, every
// 20 ticks.
func (n *Node) followCurrentBound() time.Duration { return n.noLeaderWait() }

// errFollowReplicaGone and errFollowNotCurrent end a subscription (as a *NoLeaderError, which
// clients retry after a topology refresh); errFollowReplicaGone also a plain shard read or
// listing whose replica left this node under it.
var (
	errFollowReplicaGone = errors.New("the replica serving the read left this node")
	errFollowNotCurrent  = errors.New("the replica serving the subscription is not current with its leader")
)

// follower waits on one local replica for a subscription or a long poll.
type follower struct {
	n     *Node
	ctx   context.Context
	id    uint32
	sm    *shard.Shard
	g     *replica.Group
	bound time.Duration // 0: never ended for not being current
	// checked is when check last ran: it runs at least every followHeartbeat, also while
	// entries keep coming (a replica that lags but applies is still checked).
	checked time.Time
	why     string // the reason a check or wait ended it (shoal_subscriptions_ended_total)
	// A subscription's pages: whether the last one sent was caught up, and when it was sent.
	caughtUp bool
	lastSent time.Time
}

// newFollower returns the follower of the local replica sm of shard id, served under st.
func (n *Node) newFollower(ctx context.Context, id uint32, sm *shard.Shard, st staleness) (*follower, error) {
	select {
	case <-n.done:
		return nil, ErrClosed
	default:
	}
	g, err := n.stillServes(id, sm)
	if err != nil {
		return nil, err
	}
	f := &follower{n: n, ctx: ctx, id: id, sm: sm, g: g, bound: n.followCurrentBound(), checked: time.Now()}
	if st.allowed {
		f.bound = st.max
	}
	return f, nil
}

// stillServes returns the group of shard id when sm is still its replica on this node, or a
// *NoLeaderError: the replica was removed from its group or left this node. A read that finds
// no more entries over a replica dropped under it (its keys deleted) has not reached the
// shard's end, and must say so rather than end as if it had.
func (n *Node) stillServes(id uint32, sm *shard.Shard) (*replica.Group, error) {
	cur, g, ok := n.shardSM(id)
	if !ok || cur != sm || g.Removed() {
		return nil, &NoLeaderError{Shard: id, Cause: errFollowReplicaGone}
	}
	return g, nil
}

// wait waits up to d for changed (taken from sm.Changed before the caller's last read) to
// close. It reports whether it did; it fails when the caller went away or the node is
// shutting down.
func (f *follower) wait(changed <-chan struct{}, d time.Duration) (bool, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-changed:
		return true, nil
	case <-t.C:
		return false, nil
	case <-f.ctx.Done():
		return false, f.ctx.Err()
	case <-f.n.done:
		f.why = "shutdown"
		return false, ErrClosed
	}
}

// check reports why the subscription must end, or nil: its replica was removed from its group
// or left this node (moved by placement; a removed replica is deleted seconds later) or, with
// a bound, has not been current with its leader within it.
func (f *follower) check() error {
	f.checked = time.Now()
	if _, err := f.n.stillServes(f.id, f.sm); err != nil || f.g.Removed() {
		f.why = "replica_gone"
		return &NoLeaderError{Shard: f.id, Cause: errFollowReplicaGone}
	}
	if f.bound > 0 {
		if since, ok := f.g.SinceCurrent(); !ok || since > f.bound {
			f.why = "not_current"
			return &NoLeaderError{Shard: f.id, Cause: fmt.Errorf("%w (for more than %v)", errFollowNotCurrent, f.bound)}
		}
	}
	return nil
}

// checkDue runs check when it has not run for followHeartbeat; nil for a nil follower (a
// plain read).
func (f *follower) checkDue() error {
	if f == nil || time.Since(f.checked) < followHeartbeat && !f.g.Removed() {
		return nil
	}
	return f.check()
}

// sent records a page sent to the subscriber, which ends at the replica's end (caughtUp) or not.
func (f *follower) sent(caughtUp bool) { f.caughtUp, f.lastSent = caughtUp, time.Now() }

// quiet reports whether a page with nothing for the subscriber may be left unsent: the last
// page said it was caught up and the next heartbeat, which will carry the position, is not due.
func (f *follower) quiet() bool {
	return f.caughtUp && time.Since(f.lastSent) < followHeartbeat
}

// await, for a subscription that found nothing new, reports whether to send an empty
// caught_up page now: at once when the last page sent did not say it was caught up; else it
// waits until the shard changes (changed closes) or a heartbeat is due, and then, for a
// heartbeat, checks that the subscription may go on.
func (f *follower) await(changed <-chan struct{}) (heartbeat bool, err error) {
	if !f.caughtUp {
		return true, nil
	}
	if d := followHeartbeat - time.Since(f.lastSent); d > 0 {
		woke, err := f.wait(changed, d)
		if err != nil || woke {
			return false, err
		}
	}
	return true, f.check()
}

// subscribed counts f, a subscription of kind, among the open ones until the returned func is
// called with the error that ended it.
func (f *follower) subscribed(kind string) (ended func(err error)) {
	open := f.n.metrics.subscriptions.WithLabelValues(kind)
	open.Inc()
	return func(err error) {
		open.Dec()
		why := f.why
		switch {
		case why != "":
		case f.ctx.Err() != nil || err == nil:
			why = "caller"
		case errors.Is(err, shard.ErrStreamDeleted):
			why = "deleted"
		default:
			why = "error"
		}
		f.n.metrics.subsEnded.WithLabelValues(why).Inc()
	}
}

package client

import (
	"context"
	"errors"
	"time"
)

// A node can stop answering without breaking its connections: a hung or
// paused process, a frozen machine, a cable cut somewhere between. Its shards
// elect new leaders within a few seconds, but an attempt already sent to it
// waits for an answer that does not come, until the attempt's timeout (none by
// default), the caller's deadline, or gRPC's keepalive (15 s). So an attempt
// that is still waiting after leaderWatchAfter starts watching the topology:
// it asks for a refresh, from another node first, every leaderWatchEvery, and
// gives up when the topology names a leader for its shard other than the one
// it named when the attempt started and other than the node it went to. The
// call then retries on the new leader at once. Appends carry their event IDs,
// so a retry of an append that did commit is answered as a duplicate.
const (
	leaderWatchAfter = 300 * time.Millisecond
	leaderWatchEvery = 300 * time.Millisecond
)

// errLeaderMoved is the failure of an attempt abandoned by its leader watch.
var errLeaderMoved = errors.New("client: the shard's leader changed while the attempt waited for its node")

// leaderWatch watches one attempt. A nil *leaderWatch watches nothing.
type leaderWatch struct {
	cancel context.CancelCauseFunc
	ctx    context.Context
	timer  *time.Timer
}

// watchLeader returns the attempt's context, which the watch cancels when the
// shard's leader moves, and the watch, to stop when the attempt returns.
func (c *Client) watchLeader(ctx context.Context, n *node, shard uint32) (context.Context, *leaderWatch) {
	was := c.leaderOf(shard)
	actx, cancel := context.WithCancelCause(ctx)
	w := &leaderWatch{cancel: cancel, ctx: actx}
	w.timer = time.AfterFunc(leaderWatchAfter, func() {
		for {
			next := c.nextTopology()
			if l := c.leaderOf(shard); l != "" && l != was && l != n.addr {
				cancel(errLeaderMoved)
				return
			}
			c.requestRefreshAvoiding(n.addr)
			t := time.NewTimer(leaderWatchEvery)
			select {
			case <-next:
			case <-t.C:
			case <-actx.Done():
			}
			t.Stop()
			if actx.Err() != nil {
				return
			}
		}
	})
	return actx, w
}

// stop ends the watch and reports whether it abandoned the attempt.
func (w *leaderWatch) stop() (moved bool) {
	if w == nil {
		return false
	}
	w.timer.Stop()
	moved = context.Cause(w.ctx) == errLeaderMoved
	w.cancel(nil)
	return moved
}

// leaderOf returns the address of shard's leader in the current topology, or
// "" when it names none.
func (c *Client) leaderOf(shard uint32) string {
	if t := c.topo.Load(); t != nil && shard < t.shards {
		return t.leader[shard]
	}
	return ""
}

// nextTopology returns a channel closed when the next topology is installed.
func (c *Client) nextTopology() <-chan struct{} {
	for {
		if p := c.topoNext.Load(); p != nil {
			return *p
		}
		ch := make(chan struct{})
		c.topoNext.CompareAndSwap(nil, &ch)
	}
}

// installed wakes the waiters of nextTopology; fetchTopology calls it after
// storing a topology.
func (c *Client) installed() {
	if p := c.topoNext.Swap(nil); p != nil {
		close(*p)
	}
}

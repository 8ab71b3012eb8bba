package client

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// A node can stop answering without breaking its connections: a hung or
// paused process, a frozen machine, a cable cut somewhere between. Its shards
// elect new leaders within a few seconds, but a call already sent to it
// waits for an answer that does not come, until the attempt's timeout (none by
// default), the caller's deadline, or gRPC's keepalive (15 s). So a call that
// has waited leaderWatchAfter for its node (an append for its answer, a read
// for its next page) starts watching the topology: it asks for a refresh,
// from another node first, every leaderWatchEvery, and gives up on the attempt
// when a topology fetched after the attempt started names a leader for its
// shard other than the node it went to. (An older topology proves nothing: the
// attempt may have gone to its node on a newer hint.) The call then
// retries on the new leader at once. It also gives up when such a topology
// names its node dead (gossip declares a node that stopped answering dead
// within about two and a half seconds): a node that forwards for a leader the
// client cannot reach may hang too, while the leader stays, and a stale read,
// which any replica may serve, waits for that only; the call retries on
// another node. Only idempotent calls are watched:
// appends carry their event IDs, so a retry of an append that did commit is
// answered as a duplicate, and a read resumes after the last event it yielded.
const (
	leaderWatchAfter = 300 * time.Millisecond
	leaderWatchEvery = 300 * time.Millisecond
)

// errLeaderMoved and errNodeDead are the failures of attempts abandoned by their watch.
var (
	errLeaderMoved = errors.New("client: the shard's leader changed while the attempt waited for its node")
	errNodeDead    = errors.New("client: the cluster declared the node dead while the attempt waited for it")
)

// leaderWatch watches one attempt while it waits for its node: armed, it
// cancels the attempt's context when the shard's leader moves (but for a
// stale read) or its node is declared dead. A unary attempt
// is armed from start to end; a streaming read only while it waits for the
// server (watched). A nil *leaderWatch watches nothing.
type leaderWatch struct {
	c      *Client
	n      *node
	shard  uint32
	leader string    // the node the client took for the leader when it sent the attempt (pick)
	stale  bool      // any replica may serve: only the node's death moves the attempt
	start  time.Time // when the attempt started
	ctx    context.Context
	cancel context.CancelCauseFunc
	// answered records a success on the node's breaker (see answer); released, no outcome
	// (see release).
	answered, released func()

	mu    sync.Mutex
	timer *time.Timer // while armed
	gen   uint64      // counts arm and disarm; a poll acts only for its own arming
}

// watchLeader returns the attempt's context, which the watch cancels when the
// shard's leader moves (but stale) or its node is declared dead while it is
// armed, and the watch, unarmed, to stop when the attempt returns.
func (c *Client) watchLeader(ctx context.Context, n *node, shard uint32, leader string, stale bool) (context.Context, *leaderWatch) {
	actx, cancel := context.WithCancelCause(ctx)
	return actx, &leaderWatch{c: c, n: n, shard: shard, leader: leader, stale: stale, start: time.Now(), ctx: actx, cancel: cancel}
}

// arm starts the watch: leaderWatchAfter from now, unless disarmed first, it
// polls the topology.
func (w *leaderWatch) arm() { w.armAfter(leaderWatchAfter) }

// armAfter is arm for a call that may take d before its node answers (a long poll): the
// watch polls the topology only after d.
func (w *leaderWatch) armAfter(d time.Duration) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		return
	}
	w.gen++
	gen := w.gen
	w.timer = time.AfterFunc(d, func() { w.poll(gen) })
}

// disarm ends the current arming; a poll under way returns at its next look.
func (w *leaderWatch) disarm() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
		w.gen++
	}
}

// armed reports whether the arming gen is still the current one.
func (w *leaderWatch) armed(gen uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.armedLocked(gen)
}

// armedLocked is armed with w.mu held.
func (w *leaderWatch) armedLocked(gen uint64) bool { return w.gen == gen && w.timer != nil }

// poll watches the topology for the arming gen until the leader moves (it
// cancels the attempt), the watch is disarmed or the attempt ends. It asks for
// a refresh every leaderWatchEvery and looks at every topology installed.
func (w *leaderWatch) poll(gen uint64) {
	c := w.c
	var asked time.Time
	for {
		next := c.nextTopology()
		if cause := w.moved(); cause != nil {
			w.mu.Lock()
			if w.armedLocked(gen) {
				w.cancel(cause)
			}
			w.mu.Unlock()
			return
		}
		wait := leaderWatchEvery - time.Since(asked)
		if wait <= 0 {
			if !w.stale && w.leader != "" {
				c.suspect(w.shard, w.leader)
			}
			c.requestRefreshAvoiding(w.n.addr)
			asked, wait = time.Now(), leaderWatchEvery
		}
		t := time.NewTimer(wait)
		select {
		case <-next:
		case <-t.C:
		case <-w.ctx.Done():
		}
		t.Stop()
		if w.ctx.Err() != nil || !w.armed(gen) {
			return
		}
	}
}

// moved reports why the attempt should move, if a topology fetched since it
// started says so: it names a leader for the shard other than the attempt's
// node (errLeaderMoved, but for a stale read), or it names the node dead
// (errNodeDead). Nil: stay. An attempt sent on purpose to a node other than
// the one the client took for the leader (whose breaker was open, or which
// had just failed) goes through a node that forwards it: it moves only when
// the topology names a leader other than both.
func (w *leaderWatch) moved() error {
	t := w.c.topo.Load()
	if t == nil || !t.fetched.After(w.start) || w.shard >= t.shards {
		return nil
	}
	if slices.Contains(t.dead, w.n.addr) {
		// Whatever the leader: a node that forwards for it (the attempt went there with the
		// leader's breaker open) may hang as well, and would hold the call to its deadline.
		return errNodeDead
	}
	if w.stale {
		return nil
	}
	if l := t.leader[w.shard]; l != "" && l != w.n.addr && (w.leader == w.n.addr || l != w.leader) && !w.c.hinted(w.shard, w.n.addr, t) {
		return errLeaderMoved
	}
	return nil
}

// hinted reports whether the client's leader hint for shard names addr, and t does not know
// the shard's leader better (leaderHint.outdates): t was requested before the not-leader
// answer that set the hint, or names the node that gave it at the term the client knew then or
// before, as a node that has not heard of the election yet does. Such a topology does not move
// an attempt off the leader the answer named, as it does not undo the hint.
func (c *Client) hinted(shard uint32, addr string, t *topology) bool {
	c.mu.Lock()
	h, ok := c.mu.hints[shard]
	c.mu.Unlock()
	return ok && h.addr == addr && !h.outdates(t, shard)
}

// answer tells that the attempt's node answered (a read's page arrived): its breaker records
// the success now rather than when the read ends, so that a long read, or a slow consumer,
// does not hold a half-open breaker's one probe, and every other call to the node, for as long
// as it runs.
func (w *leaderWatch) answer() {
	if w != nil && w.answered != nil {
		w.answered()
	}
}

// release gives up the attempt's say in its node's circuit breaker, recording no outcome: a
// long poll, whose first page may take its whole wait, does not hold a half-open breaker's one
// probe, and every other call to the node, for that long.
func (w *leaderWatch) release() {
	if w != nil && w.released != nil {
		w.released()
	}
}

// watched runs f, a wait for the attempt's node, with w armed.
func watched[T any](w *leaderWatch, f func() (T, error)) (T, error) {
	return watchedAfter(w, leaderWatchAfter, f)
}

// watchedAfter is watched for a call that may take d before its node answers.
func watchedAfter[T any](w *leaderWatch, d time.Duration, f func() (T, error)) (T, error) {
	w.armAfter(d)
	defer w.disarm()
	return f()
}

// stop ends the watch and returns why it abandoned the attempt
// (errLeaderMoved, errNodeDead), or nil if it did not.
func (w *leaderWatch) stop() (moved error) {
	if w == nil {
		return nil
	}
	w.disarm()
	if cause := context.Cause(w.ctx); cause == errLeaderMoved || cause == errNodeDead {
		moved = cause
	}
	w.cancel(nil)
	return moved
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

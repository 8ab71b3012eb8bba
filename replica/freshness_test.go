package replica

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// A follower whose loop was busy when its leader's last messages arrived is current as of their
// arrival, not as of when it got round to stepping them: cut off from the leader meanwhile, it
// would otherwise take itself for current while the leader commits more without it.
func TestSinceCurrentCountsFromArrival(t *testing.T) {
	const shard, stall = 2, time.Second
	c, follower, _, release := busyFollowerCutOff(t, shard)
	c.propose(shard, "c") // committed without the follower
	time.Sleep(stall)
	close(release)
	c.converged(shard, []string{"a", "b"}, follower)
	if since, ok := c.group(follower, shard).SinceCurrent(); !ok || since < stall {
		t.Fatalf("a follower cut off %v ago, whose loop then stepped what had arrived before: SinceCurrent = %v, %v; want >= %v",
			stall, since, ok, stall)
	}
}

// A leader's message that arrived before since but was stepped (and answered) after it, the
// follower's loop busy meanwhile, keeps RetireGroupIfQuiet from retiring the replica: its
// answer may reach a leader that re-added the node and takes the old log for the new member's.
func TestRetireCountsSteppingNotArrival(t *testing.T) {
	const shard = 2
	c, f, idx, release := busyFollowerCutOff(t, shard)
	time.Sleep(50 * time.Millisecond)
	since := time.Now()
	time.Sleep(50 * time.Millisecond)
	close(release)
	g := c.group(f, shard)
	eventually(t, 5*time.Second, func() error {
		var last uint64
		if err := c.nodes[f].host.call(noCancel, func() error { last = g.st.last; return nil }); err != nil {
			return err
		}
		if last < idx {
			return fmt.Errorf("follower's last index %d, want >= %d", last, idx)
		}
		return nil
	})
	retired, err := c.nodes[f].host.RetireGroupIfQuiet(shard, since)
	if err != nil {
		t.Fatal(err)
	}
	if retired {
		t.Fatal("retired a replica that stepped (and answered) a leader's append after since")
	}
}

// busyFollowerCutOff opens shard on three nodes, blocks a follower's loop (until release is
// closed), proposes "b" after "a", so that b's append (index idx) and commit index reach the
// busy follower's queue, and then cuts the follower off.
func busyFollowerCutOff(t *testing.T, shard uint32) (c *cluster, follower, idx uint64, release chan struct{}) {
	t.Helper()
	c = newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	c.propose(shard, "a")
	l := c.leader(shard)
	follower = c.others(l.h.cfg.NodeID)[0]
	c.converged(shard, []string{"a"}, follower)
	release = make(chan struct{})
	if err := c.nodes[follower].host.do(func() { <-release }); err != nil {
		t.Fatal(err)
	}
	idx = c.propose(shard, "b")
	time.Sleep(100 * time.Millisecond)
	c.net.isolate(follower, true)
	return c, follower, idx, release
}

// delayTransport delays, in order, every MsgApp to node slow by d, as a peer queue behind bulk
// data does, and hands each on saying how long it waited (ShardMessage.Waited), as the gRPC
// transport's batches do.
type delayTransport struct {
	inner Transport
	slow  uint64
	d     time.Duration
	q     chan delayedMsg // never closed: the leader's loop may send until the cluster closes
	stop  chan struct{}
}

type delayedMsg struct {
	at time.Time
	m  ShardMessage
}

func (t *delayTransport) Send(msgs []ShardMessage) {
	var now []ShardMessage
	for _, m := range msgs {
		if m.Msg.GetTo() == t.slow && m.Msg.GetType() == pb.MsgApp {
			select {
			case t.q <- delayedMsg{time.Now(), ShardMessage{Shard: m.Shard, Msg: cloneMsg(m.Msg)}}:
			default: // lost, as on a full peer queue
			}
			continue
		}
		now = append(now, m)
	}
	t.inner.Send(now)
}

func (t *delayTransport) SendSnapshot(m ShardMessage) { t.inner.SendSnapshot(m) }

func (t *delayTransport) run() {
	for {
		select {
		case <-t.stop:
			return
		case x := <-t.q:
			time.Sleep(time.Until(x.at.Add(t.d)))
			x.m.Waited = time.Since(x.at)
			t.inner.Send([]ShardMessage{x.m})
		}
	}
}

// A follower whose leader's appends wait on the leader's side before they are sent (behind
// other data to it) is current as of their sending, not their arrival: SinceCurrent never
// claims more than what the follower holds. Dated at arrival, it lacked writes acknowledged
// 0.8 s before the moment it claimed to be current as of.
func TestSinceCurrentCountsWaitOnSender(t *testing.T) {
	const shard, d = 5, 800 * time.Millisecond
	c := newCluster(t, clusterOpts{nodes: 3, noQuiesce: true})
	c.openVoters(shard)
	l := c.leader(shard)
	slow := c.others(l.h.cfg.NodeID)[0]
	dt := &delayTransport{inner: l.h.cfg.Transport, slow: slow, d: d, q: make(chan delayedMsg, 1<<16), stop: make(chan struct{})}
	go dt.run()
	defer close(dt.stop)
	if err := l.h.call(noCancel, func() error { l.h.cfg.Transport = dt; return nil }); err != nil {
		t.Fatal(err)
	}
	type ack struct {
		v  string
		at time.Time
	}
	var acks []ack
	worst := time.Duration(0)
	for i, stop := 0, time.Now().Add(3*time.Second); time.Now().Before(stop); i++ {
		v := fmt.Sprintf("w%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := l.Propose(ctx, []byte(v))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, ack{v, time.Now()})
		time.Sleep(10 * time.Millisecond)
		since, ok := c.group(slow, shard).SinceCurrent()
		if !ok {
			continue
		}
		have := c.sm(slow, shard).values(t)
		for _, a := range acks { // the oldest acknowledged write the follower lacks
			if !slices.Contains(have, a.v) {
				worst = max(worst, time.Since(a.at)-since)
				break
			}
		}
	}
	if worst > 100*time.Millisecond {
		t.Fatalf("the follower took itself for current while it lacked writes acknowledged up to %v before", worst)
	}
}

// TestNewLeaderCommitLagNotCurrent: a new leader's commit index can lag what its predecessor
// committed and acknowledged (it learns the true commit point only once it commits an entry of
// its own term). A follower that took the new leader's first appends for "current as of now"
// claimed to be current while it lacked a write acknowledged long before.
func TestNewLeaderCommitLagNotCurrent(t *testing.T) {
	const shard = 3
	c, idxA, l, fs := oneWriteApplied(t, shard)
	old := l.h.cfg.NodeID

	c.net.mu.Lock()
	c.net.drop = func(from uint64, m *pb.Message) bool {
		// The old leader never tells anyone that x committed; the followers' acks to a new
		// leader are lost, so it commits nothing of its own term.
		if from == old && m.GetCommit() > idxA {
			return true
		}
		if from != old && m.GetTo() != old && m.GetType() == pb.MsgAppResp {
			return true
		}
		return false
	}
	c.net.mu.Unlock()

	// x is committed by old with both followers' acks, applied on old and acknowledged.
	// (Propose on the old leader directly: c.propose would look for a leader again.)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.Propose(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	c.net.isolate(old, true)

	n := c.leader(shard, fs...)
	f := fs[0]
	if f == n.h.cfg.NodeID {
		f = fs[1]
	}
	time.Sleep(300 * time.Millisecond)
	g := c.group(f, shard)
	if g.IsLeader() || !n.IsLeader() {
		t.Fatalf("leadership moved again (follower leads: %v)", g.IsLeader())
	}
	ago := time.Since(acked) // before SinceCurrent: since grows meanwhile
	since, ok := g.SinceCurrent()
	hasX := slices.Contains(c.sm(f, shard).values(t), "x")
	// A message counts as of its arrival: one the old leader sent just before x committed may
	// arrive a moment after x was acknowledged (time on the wire counts as current, by design).
	// What must not happen is a claim made of the new leader's later appends.
	const wire = 150 * time.Millisecond // a loaded machine's loops; the fault reads 3-20 ms against 400
	if ok && !hasX && since+wire < ago {
		t.Fatalf("follower %d lacks x, acknowledged %v ago, yet SinceCurrent = %v (current after x was acknowledged)",
			f, ago.Round(time.Millisecond), since.Round(time.Millisecond))
	}
}

// TestHungLeaderNotCurrent: a leader whose loop hangs (a stalled disk, a long apply) is deposed
// by the others, who go on committing; it cannot learn so until its loop runs again.
// SinceCurrent, which bounds subscriptions (node.follower.check), must not keep saying it is
// current: its subscribers would hear heartbeats and nothing else while the hang lasts.
func TestHungLeaderNotCurrent(t *testing.T) {
	const shard, hang = 4, 2 * time.Second
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	c.propose(shard, "a")
	l := c.leader(shard)
	old := l.h.cfg.NodeID
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	if err := l.h.do(func() { <-release }); err != nil {
		t.Fatal(err)
	}
	hungAt := time.Now()
	time.Sleep(time.Second)
	nl := c.leader(shard, c.others(old)...) // the others elect a new leader
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := nl.Propose(ctx, []byte("b")); err != nil { // and commit without the old one
		t.Fatal(err)
	}
	time.Sleep(time.Until(hungAt.Add(hang)))
	since, ok := l.SinceCurrent()
	if ok && since < hang/2 {
		t.Fatalf("leader whose loop hung %v ago, deposed since (b committed without it): SinceCurrent = %v, %v",
			time.Since(hungAt).Round(time.Millisecond), since, ok)
	}
}

// TestMergedMarkKeepsItsTerm: a follower holds a mark of the old leader's commit index c (term
// T1), not yet applied, when the new leader's first append (term T2) carries the same commit
// index. Merged into the old mark, it took the T2 message's time under term T1: once c was
// applied the mark counted, and the follower was current as of the new leader's message though
// that leader had committed nothing of its term (TestNewLeaderCommitLagNotCurrent's case).
func TestMergedMarkKeepsItsTerm(t *testing.T) {
	const shard = 3
	c, idxA, l, fs := oneWriteApplied(t, shard)
	old := l.h.cfg.NodeID
	c.net.isolate(old, true)
	n := c.leader(shard, fs...)
	f := fs[0]
	if f == n.h.cfg.NodeID {
		f = fs[1]
	}
	g := c.group(f, shard)
	var since time.Duration
	var ok bool
	var t1, t2 uint64
	if err := c.nodes[f].host.call(noCancel, func() error {
		bs := g.rn.BasicStatus()
		t2 = bs.HardState.GetTerm()
		var err error
		if t1, err = g.st.Term(idxA); err != nil {
			return err
		}
		saved := g.st.applied
		// State just before: the old leader's mark for idxA pending (not applied yet), its
		// term verified long ago; the new leader has committed nothing of its term yet.
		g.st.applied = idxA - 1
		g.marks = []freshMark{{commit: idxA, term: t1, at: time.Now().Add(-10 * time.Second)}}
		g.ownTermCommit = t1
		g.current.Store(0)
		// The new leader's first append, commit idxA (its commit index lags).
		now := time.Now()
		g.heardFrom(&pb.Message{Type: new(pb.MsgApp), Term: new(t2), From: new(bs.Lead), To: new(f), Commit: new(idxA)}, now, now)
		g.st.applied = saved // idxA applied
		g.caughtUp()
		since, ok = g.SinceCurrent()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if t1 == t2 {
		t.Skip("no term change")
	}
	if ok && since < 5*time.Second {
		t.Fatalf("current %v ago, as of the new leader's (term %d) append whose commit index %d holds an entry of term %d", since, t2, idxA, t1)
	}
}

// oneWriteApplied starts three nodes (without quiescence) with a group for shard, writes "a"
// and waits until both followers applied it; it returns the cluster, a's index, the leader's
// replica and the followers' node IDs.
func oneWriteApplied(t *testing.T, shard uint32) (*cluster, uint64, *Group, []uint64) {
	t.Helper()
	c := newCluster(t, clusterOpts{nodes: 3, noQuiesce: true})
	c.openVoters(shard)
	idxA := c.propose(shard, "a")
	l := c.leader(shard)
	fs := c.others(l.h.cfg.NodeID)
	c.converged(shard, []string{"a"}, fs...)
	return c, idxA, l, fs
}

// A quiesced leader cut off from both followers right after they answered a quiesce heartbeat
// takes itself for the leader until its next refresh has gone unanswered for half a refresh,
// and then for an election timeout (CheckQuorum), or for two when a proposal wakes it first:
// measured at the default 50 ms tick, 1.95 s and 2.4 s after the cut, where an awake leader
// stepped down within two election timeouts (0.95 s). It must not claim meanwhile to be
// current (SinceCurrent) as of any moment after the cut, as it did until it stepped down: the
// followers may have elected another leader by then (told by the transport that its node is
// down, or on a client's suspicion once they missed a refresh), who acknowledges writes it
// lacks. Nor must a quiesced leader in touch with its followers fall ever further behind: it
// is current as of its last answered refresh.
func TestCutOffQuiescedLeaderNotCurrent(t *testing.T) {
	const shard, tick = 8, 10 * time.Millisecond
	const refresh = quiesceRefreshTicks * tick
	for _, tc := range []struct {
		name      string
		noQuiesce bool
		wakeAfter time.Duration // a proposal wakes the cut-off leader this long after the cut; 0: none
	}{
		{name: "awake", noQuiesce: true},
		{name: "quiesced"},
		{name: "quiesced, woken by a proposal", wakeAfter: refresh + refresh*2/5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, clusterOpts{nodes: 3, tick: tick, noQuiesce: tc.noQuiesce})
			c.openVoters(shard)
			c.propose(shard, "a")
			l := c.leader(shard)
			id := l.Status().ID
			var cut time.Time
			if tc.noQuiesce {
				c.converged(shard, []string{"a"}, 1, 2, 3)
				cut = c.cutOff(id, false)
			} else {
				c.quiesced(shard, 1, 2, 3)
				for range 3 {
					time.Sleep(refresh / 3)
					// A refresh and a round trip; five refreshes so that a loaded machine's
					// late ticks do not fail it, where a leader that never moved on would.
					if since, ok := l.SinceCurrent(); !ok || since > 5*refresh {
						t.Fatalf("quiesced leader in touch with its followers: SinceCurrent = %v, %v; want within %v",
							since, ok, 5*refresh)
					}
				}
				cut = c.cutOff(id, true)
			}
			var woken sync.WaitGroup
			if tc.wakeAfter > 0 {
				woken.Go(func() {
					time.Sleep(time.Until(cut.Add(tc.wakeAfter)))
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					_, _ = l.Propose(ctx, []byte("lost")) // fails once the leader steps down
				})
			}
			led, claimed := leadAfterCut(t, l, cut)
			woken.Wait()
			t.Logf("the cut-off leader led %v (%d ticks) after the cut, and claimed to be current as of %v (%d ticks) after it",
				led.Round(time.Millisecond), led/tick, claimed.Round(time.Millisecond), claimed/tick)
			if !tc.noQuiesce && claimed > 0 {
				t.Fatalf("the cut-off quiesced leader claimed to be current as of %v after the cut (it led for %v)",
					claimed.Round(time.Millisecond), led.Round(time.Millisecond))
			}
		})
	}
}

// cutOff cuts node id off from every other node, both ways, and returns when: at once, or
// (afterAck) right after both followers of id's quiesced group answered a quiesce heartbeat.
func (c *cluster) cutOff(id uint64, afterAck bool) time.Time {
	c.t.Helper()
	var (
		mu       sync.Mutex
		answered []uint64
		at       time.Time
	)
	if !afterAck {
		at = time.Now()
	}
	c.net.mu.Lock()
	c.net.drop = func(from uint64, m *pb.Message) bool {
		mu.Lock()
		defer mu.Unlock()
		if !at.IsZero() {
			return from == id || m.GetTo() == id
		}
		quiesce := bytes.Equal(m.GetContext(), quiesceCtx)
		switch {
		case from == id && m.GetType() == pb.MsgHeartbeat && quiesce:
			answered = answered[:0] // a new refresh
		case m.GetTo() == id && m.GetType() == pb.MsgHeartbeatResp && quiesce && !slices.Contains(answered, from):
			if answered = append(answered, from); len(answered) == 2 {
				at = time.Now() // this answer goes through; nothing after it
			}
		}
		return false
	}
	c.net.mu.Unlock()
	eventually(c.t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if at.IsZero() {
			return fmt.Errorf("node %d's followers have not both answered a quiesce heartbeat", id)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	return at
}

// leadAfterCut watches g, a leader cut off from its group at cut, until it steps down, and
// returns how long after the cut it was last seen leading, and the latest moment after the
// cut it claimed meanwhile to be current as of (SinceCurrent), 0 if none.
func leadAfterCut(t *testing.T, g *Group, cut time.Time) (led, claimed time.Duration) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for g.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatalf("the cut-off leader still leads %v after the cut", time.Since(cut))
		}
		ago := time.Since(cut) // before SinceCurrent: since grows meanwhile
		since, ok := g.SinceCurrent()
		if !g.IsLeader() {
			break // since may be the follower's
		}
		led = ago
		if ok {
			claimed = max(claimed, ago-since)
		}
		time.Sleep(time.Millisecond)
	}
	return led, claimed
}

// A quiesced leader is current only as of its last quiesce heartbeat a quorum answered; woken,
// it is current (0) again as soon as a quorum answered it since, as a write's commit shows. The
// only voter of its group is its own quorum, and current even while quiesced.
func TestWokenLeaderCurrentOnceAnswered(t *testing.T) {
	const shard, refresh = 8, quiesceRefreshTicks * 10 * time.Millisecond
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	c.propose(shard, "a")
	c.quiesced(shard, 1, 2, 3)
	l := c.leader(shard)
	time.Sleep(refresh / 2)
	if since, ok := l.SinceCurrent(); !ok || since == 0 || since > 5*refresh {
		t.Fatalf("quiesced leader: SinceCurrent = %v, %v; want as of its last answered quiesce heartbeat", since, ok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.Propose(ctx, []byte("b")); err != nil {
		t.Fatal(err)
	}
	if since, ok := l.SinceCurrent(); !ok || since != 0 {
		t.Fatalf("leader woken by a write that committed: SinceCurrent = %v, %v; want 0, true", since, ok)
	}

	one := newCluster(t, clusterOpts{nodes: 1})
	one.openVoters(shard)
	one.propose(shard, "a")
	one.quiesced(shard, 1)
	time.Sleep(refresh + refresh/2)
	if since, ok := one.leader(shard).SinceCurrent(); !ok || since != 0 {
		t.Fatalf("quiesced only voter: SinceCurrent = %v, %v; want 0, true", since, ok)
	}
}

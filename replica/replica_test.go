package replica

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

func TestSingleVoterProposeApply(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 1})
	g := c.open(1, 7, []uint64{1})
	c.leader(7)
	var want []string
	last := uint64(0)
	for i := range 50 {
		d := fmt.Sprintf("v%03d", i)
		idx := c.propose(7, d)
		if idx <= last {
			t.Fatalf("index %d after %d", idx, last)
		}
		last = idx
		want = append(want, d)
	}
	c.converged(7, want, 1)
	if err := g.ReadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := g.Status()
	if st.Leader != 1 || st.Applied < last || len(st.Voters) != 1 {
		t.Fatalf("status %+v", st)
	}
}

func TestThreeHostsReplicationAndFailover(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(1)
	lead := c.leader(1)
	var want []string
	for i := range 30 {
		want = append(want, fmt.Sprintf("a%d", i))
		c.propose(1, want[i])
	}
	c.converged(1, want, 1, 2, 3)

	// A follower refuses proposals and names the leader.
	var follower *Group
	for id := uint64(1); id <= 3; id++ {
		if g := c.group(id, 1); g != lead {
			follower = g
		}
	}
	_, err := follower.Propose(context.Background(), []byte("x"))
	var nle *NotLeaderError
	if !errors.As(err, &nle) || !errors.Is(err, ErrNotLeader) || nle.Leader != lead.Status().ID || !nle.Refused {
		t.Fatalf("follower propose: %v", err)
	}
	if err := follower.ReadIndex(context.Background()); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("follower read index: %v", err)
	}

	// Fail over: stop the leader's host; the other two elect and commit.
	oldID := lead.Status().ID
	c.stopNode(oldID)
	rest := c.others(oldID)
	nl := c.leader(1, rest...)
	if nl.Status().ID == oldID {
		t.Fatal("old leader still leads")
	}
	for i := range 10 {
		want = append(want, fmt.Sprintf("b%d", i))
		c.propose(1, want[len(want)-1])
	}
	c.converged(1, want, rest...)
	if _, err := lead.Propose(context.Background(), []byte("y")); !errors.Is(err, ErrStopped) && !errors.Is(err, ErrNotLeader) {
		t.Fatalf("closed host propose: %v", err)
	}
}

func TestCheckQuorumPartitionedLeader(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(2)
	old := c.leader(2)
	c.propose(2, "before")
	oldID := old.Status().ID
	c.net.isolate(oldID, true)

	// The minority leader cannot commit, and steps down by CheckQuorum.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := old.Propose(ctx, []byte("lost"))
	cancel()
	if err == nil {
		t.Fatal("isolated leader committed a proposal")
	}
	eventually(t, 5*time.Second, func() error {
		if old.IsLeader() {
			return errors.New("isolated leader still leads")
		}
		return nil
	})
	c.leader(2, c.others(oldID)...)
	for i := range 5 {
		c.propose(2, fmt.Sprintf("m%d", i))
	}
	c.net.isolate(oldID, false)
	want := []string{"before", "m0", "m1", "m2", "m3", "m4"}
	c.converged(2, want, 1, 2, 3)
}

func TestLaggingFollowerCatchesUpBySnapshot(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 3, retain: 20, snapSST: 1 << 10}) // several sstables
	c.openVoters(5)
	lead := c.leader(5)
	lagger := uint64(1)
	if lead.Status().ID == 1 {
		lagger = 2
	}
	c.net.isolate(lagger, true)
	var want []string
	for i := range 150 {
		want = append(want, fmt.Sprintf("s%d", i))
		c.propose(5, want[i])
	}
	c.net.isolate(lagger, false)
	var all []uint64
	for id := uint64(1); id <= 3; id++ {
		all = append(all, id)
	}
	c.converged(5, want, all...)
	if got := c.sm(lagger, 5); got == nil {
		t.Fatal("no sm")
	}
	lst := c.leader(5).Status()
	for id, pr := range lst.Progress {
		if pr.Match < lst.Commit-1 && id != lst.ID {
			t.Logf("progress %d: %+v", id, pr)
		}
	}
	snaps := testutilCounter(c.nodes[lagger].host.metrics.SnapshotsReceived)
	if snaps == 0 {
		t.Fatalf("lagging node %d caught up without a snapshot", lagger)
	}
	// The replicas' whole state spans end identical, and no snapshot file stays behind.
	lo, hi := c.sm(1, 5).Span()
	eventually(t, 10*time.Second, func() error {
		ref := spanKVs(t, c.nodes[1].db, lo, hi)
		for _, id := range all {
			n := c.nodes[id]
			if got := spanKVs(t, n.db, lo, hi); fmt.Sprint(got) != fmt.Sprint(ref) {
				return fmt.Errorf("node %d's span differs from node 1's (%d keys, %d)", id, len(got), len(ref))
			}
			if f := scratchFiles(t, n.fs, n.host.cfg.SnapshotDir); len(f) != 0 {
				return fmt.Errorf("node %d left snapshot files %v", id, f)
			}
		}
		return nil
	})
}

func TestReadIndexLinearizable(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(9)
	for i := range 40 {
		d := fmt.Sprintf("r%d", i)
		c.propose(9, d)
		// After an acknowledged write, a read-index barrier on the leader must see it.
		g := c.leader(9)
		if err := g.ReadIndex(context.Background()); err != nil {
			if errors.Is(err, ErrNotLeader) {
				continue
			}
			t.Fatal(err)
		}
		vals := c.sm(g.Status().ID, 9).values(t)
		if len(vals) == 0 || vals[len(vals)-1] != d {
			t.Fatalf("read after write %q saw %v", d, vals[max(0, len(vals)-3):])
		}
	}
}

func TestTransferLeadership(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(4)
	lead := c.leader(4)
	c.propose(4, "x")
	to := lead.Status().ID%3 + 1
	eventually(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		l := c.leader(4)
		if l.Status().ID == to {
			return nil
		}
		return l.TransferLeadership(ctx, to)
	})
	if got := c.leader(4).Status().ID; got != to {
		t.Fatalf("leader %d, want %d", got, to)
	}
	c.propose(4, "y")
	c.converged(4, []string{"x", "y"}, 1, 2, 3)
}

// A member removed just before the leader loses its leadership still learns of its removal.
// The commit of the removal reaches it only as an empty append, which the leader holds back
// until its next tick (holdCommitOnly); once the removal is applied raft sends the member
// nothing more. Dropping the held message with the leadership left the member unaware for
// good, keeping its replica (without the fix: 7 runs in 10 of a one-round version failed in a
// review, and 1 run in 6 of this test here; with it, none in 12 on one and two CPUs).
//
// One race is raft's own and outside this test: a new leader that has not yet applied the
// removal contacts the member first (a later term, so the old leader's message then comes too
// late), and applies the removal while its probe of the member is unanswered. A round that
// ends so, with the member in a later term, proves nothing either way and is not counted.
func TestRemovedMemberLearnsRemovalAcrossTransfer(t *testing.T) {
	const shard = 5
	counted := 0
	for round := 0; round < 30 && counted < 5; round++ {
		c := newCluster(t, clusterOpts{nodes: 4, factory: true})
		for id := uint64(1); id <= 3; id++ {
			c.open(id, shard, []uint64{1, 2, 3})
		}
		lead := c.leader(shard)
		c.propose(shard, "a")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := lead.AddLearner(ctx, 4); err != nil {
			t.Fatal(err)
		}
		c.converged(shard, []string{"a"}, 1, 2, 3, 4)
		st := lead.Status()
		to := st.ID%3 + 1
		if err := lead.RemoveMember(ctx, 4); err != nil {
			t.Fatal(err)
		}
		_ = lead.TransferLeadership(ctx, to) // a hand-off or balancing right after the removal
		cancel()
		g4 := c.group(4, shard)
		var later bool
		eventually(t, 5*time.Second, func() error {
			if g4.removed.Load() {
				return nil
			}
			s4 := g4.Status()
			if later = s4.Term > st.Term; later {
				return nil
			}
			return fmt.Errorf("round %d: node 4 has not learned its removal: term %d, commit %d, applied %d", round, s4.Term, s4.Commit, s4.Applied)
		})
		if !later {
			counted++
		}
		for id := range c.nodes {
			c.stopNode(id)
		}
	}
	if counted < 5 {
		t.Fatalf("only %d of 30 rounds kept the member in the removing leader's term", counted)
	}
}

func TestRemoveRefusesToLoseQuorum(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(8)
	lead := c.leader(8)
	c.propose(8, "x")
	lid := lead.Status().ID
	live, dead := lid%3+1, (lid+1)%3+1
	c.stopNode(dead)
	eventually(t, 5*time.Second, func() error {
		if pr := lead.Status().Progress[dead]; pr.RecentActive {
			return errors.New("dead node still recently active")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cce *ConfChangeError
	eventually(t, 10*time.Second, func() error {
		err := lead.RemoveMember(ctx, live)
		switch {
		case errors.As(err, &cce):
			return nil
		case errors.Is(err, ErrNotLeader):
			// On a loaded machine the live voter's answers can come late enough for CheckQuorum
			// to depose the leader; one of the two is elected again: ask it about the other.
			lead = c.leader(8, lid, live)
			lid = lead.Status().ID
			live = lid%3 + 1
			if live == dead {
				live = live%3 + 1
			}
			return err
		}
		t.Fatalf("removing a live voter while another is down: %v", err)
		return nil
	})
	// raft clears every follower's recent activity at each quorum check and sets it again on
	// the follower's next answer, so right after a check the live voter can briefly count as
	// inactive: the refusal is transient, and the placement loop retries it the same way.
	eventually(t, 5*time.Second, func() error {
		err := lead.RemoveMember(ctx, dead)
		if err != nil && !errors.As(err, &cce) {
			t.Fatalf("removing the dead voter: %v", err)
		}
		return err
	})
	if st := lead.Status(); len(st.Voters) != 2 {
		t.Fatalf("voters %v", st.Voters)
	}
	c.propose(8, "y")
	c.converged(8, []string{"x", "y"}, lid, live)
}

// TestLostAppendRecoveredWhileIdle loses the append that carries an entry to one follower and
// then proposes nothing more. The follower can only learn of the loss from the leader's answer
// to its heartbeat response: an empty append, of the kind the leader holds back for the next
// tick (Group.holdCommitOnly). It must still be sent, be rejected and trigger the resend.
func TestLostAppendRecoveredWhileIdle(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(9)
	lead := c.leader(9)
	c.propose(9, "a")
	c.converged(9, []string{"a"}, 1, 2, 3)
	lid := lead.Status().ID
	f := lid%3 + 1
	c.net.setLossy(lid, f, true)
	c.propose(9, "b") // committed by the leader and the other follower
	c.net.setLossy(lid, f, false)
	c.converged(9, []string{"a", "b"}, 1, 2, 3)
}

// A follower told that its leader's node is down (Host.ReportPeerDown) leaves raft's leader
// lease at once: another follower that campaigns is elected long before a whole election
// timeout since the last heartbeat has passed. Without the report the lease makes the second
// follower refuse every vote for 30 s. (So long a timeout also makes it unlikely, about 1 in
// 3,000, that a follower campaigns by itself in the middle of the report's ticks, which could
// split the vote with the campaign the test starts.)
func TestReportPeerDownEndsLease(t *testing.T) {
	const shard = 1
	c := slowElectionCluster(t, shard)
	c.stopNode(1)
	c.nodes[2].host.ReportPeerDown(1)
	c.nodes[3].host.ReportPeerDown(1)
	c.campaign(2, shard)
	c.leadsWithin(2, shard, 2*time.Second)
	c.propose(shard, "b")
	c.converged(shard, []string{"a", "b"}, 2, 3)
	if v := testutilCounter(c.nodes[3].host.metrics.LeaderDown); v != 1 {
		t.Fatalf("node 3 leader_down_total = %v, want 1", v)
	}
}

// A heartbeat with a commit index for a shard this node holds no replica of (it deleted the
// replica after its removal while the heartbeat was on its way) creates no replica: an empty
// one would take a commit index beyond its log, which raft panics on. A heartbeat without a
// commit index, as a leader sends to a replica it just added, still creates one. Nor do a
// leadership transfer (MsgTimeoutNow) or a vote or pre-vote request: an empty replica would
// grant a stale candidate its vote (a former member that missed its own removal). And when an
// append did create a replica, a heartbeat that commits past its empty log is dropped rather
// than stepped (raft would panic).
func TestStaleHeartbeatCreatesNoGroup(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 1, factory: true})
	h := c.nodes[1].host
	heartbeat := func(shard uint32, commit uint64) {
		h.HandleMessages([]ShardMessage{{Shard: shard, Msg: &pb.Message{
			Type: pb.MsgHeartbeat.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(3)), Commit: new(commit)}}})
	}
	heartbeat(7, 12)
	h.HandleMessages([]ShardMessage{{Shard: 9, Msg: &pb.Message{
		Type: pb.MsgTimeoutNow.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(3))}}})
	for shard, typ := range map[uint32]pb.MessageType{10: pb.MsgPreVote, 11: pb.MsgVote, 12: pb.MsgAppResp} {
		h.HandleMessages([]ShardMessage{{Shard: shard, Msg: &pb.Message{
			Type: typ.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(3)), LogTerm: new(uint64(2)), Index: new(uint64(17))}}})
	}
	heartbeat(8, 0)
	// An append of a leader that has not learned of this node's removal creates a replica,
	// and that leader's heartbeat then commits past the new replica's empty log (which raft
	// panics on): it is dropped.
	h.HandleMessages([]ShardMessage{{Shard: 13, Msg: &pb.Message{Type: pb.MsgApp.Enum(), From: new(uint64(2)), To: new(uint64(1)),
		Term: new(uint64(3)), LogTerm: new(uint64(3)), Index: new(uint64(20)), Commit: new(uint64(12))}}})
	heartbeat(13, 12)
	heartbeat(14, 0) // messages are stepped in order: once 14's group exists, 13's heartbeat was seen
	eventually(t, 5*time.Second, func() error {
		for _, shard := range []uint32{8, 13, 14} {
			if _, ok := h.Group(shard); !ok {
				return fmt.Errorf("no group for shard %d yet", shard)
			}
		}
		return nil
	})
	if v := testutilCounter(h.metrics.staleCommitPastLog); v != 1 {
		t.Fatalf("stale_messages_dropped_total{reason=commit_past_log} = %v, want 1", v)
	}
	if _, ok := h.Group(7); ok {
		t.Fatal("a heartbeat at commit 12 created a group for shard 7")
	}
	if _, ok := h.Group(9); ok {
		t.Fatal("a leadership transfer created a group for shard 9")
	}
	for shard, what := range map[uint32]string{10: "a pre-vote request", 11: "a vote request", 12: "an append answer"} {
		if _, ok := h.Group(shard); ok {
			t.Fatalf("%s created a group for shard %d", what, shard)
		}
	}
}

// Once this node deleted its replica of a shard, no message of a term before the deletion's
// creates the replica again, even after a restart: it comes from a leader deposed since, which
// may still count this node as a member. A message of the deletion's term or later does.
func TestDeletedReplicaIgnoresOlderTerms(t *testing.T) {
	o := clusterOpts{nodes: 1, factory: true}
	c := newCluster(t, o)
	appendAt := func(h *Host, shard uint32, term uint64) {
		h.HandleMessages([]ShardMessage{{Shard: shard, Msg: &pb.Message{Type: pb.MsgApp.Enum(), From: new(uint64(2)), To: new(uint64(1)),
			Term: new(term), LogTerm: new(term), Index: new(uint64(20))}}})
	}
	created := func(h *Host, shard uint32) {
		t.Helper()
		eventually(t, 5*time.Second, func() error {
			if _, ok := h.Group(shard); !ok {
				return fmt.Errorf("no group for shard %d yet", shard)
			}
			return nil
		})
	}
	h := c.nodes[1].host
	appendAt(h, 20, 5)
	created(h, 20)
	if err := h.DropGroup(20, 0); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		appendAt(h, 20, 4)
		barrier := uint32(30 + round) // messages are stepped in order: once its group exists, 20's was seen
		appendAt(h, barrier, 1)
		created(h, barrier)
		if _, ok := h.Group(20); ok {
			t.Fatalf("round %d: an append of term 4 created the replica deleted at term 5", round)
		}
		if v := testutilCounter(h.metrics.staleBeforeDeletion); v != 1 {
			t.Fatalf("round %d: stale_messages_dropped_total{reason=before_deletion} = %v, want 1", round, v)
		}
		if round == 0 { // the same after a restart
			fs := c.nodes[1].fs
			c.stopNode(1)
			h = c.start(1, fs, o).host
		}
	}
	appendAt(h, 20, 5)
	created(h, 20)

	// A replica cut off at term 2 and removed by its group at term 6: the deletion is recorded
	// at the term its caller learned from the leader, not at the replica's own.
	appendAt(h, 21, 2)
	created(h, 21)
	if err := h.DropGroup(21, 6); err != nil {
		t.Fatal(err)
	}
	appendAt(h, 21, 5)
	appendAt(h, 40, 1)
	created(h, 40)
	if _, ok := h.Group(21); ok {
		t.Fatal("an append of term 5 created the replica its group removed at term 6 (its own term 2)")
	}
	appendAt(h, 21, 6)
	created(h, 21)
}

// RetireGroupIfQuiet retires only a replica that heard from no leader since the given time, and
// a retired replica answers nothing: the leader's progress for it stays where it was.
func TestRetireGroupIfQuiet(t *testing.T) {
	const shard = 9
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	lead := c.leader(shard)
	c.propose(shard, "a")
	c.converged(shard, []string{"a"}, 1, 2, 3)
	f := lead.Status().ID%3 + 1
	fh := c.nodes[f].host

	// Heartbeats reach it: not quiet.
	if ok, err := fh.RetireGroupIfQuiet(shard, time.Now().Add(-time.Minute)); err != nil || ok {
		t.Fatalf("retired a replica that hears from its leader: %v, %v", ok, err)
	}
	if st := c.group(f, shard).Status(); time.Since(st.LeaderContact) > time.Second {
		t.Fatalf("last leader contact %v ago, with heartbeats every tick", time.Since(st.LeaderContact))
	}

	c.net.isolate(f, true)
	time.Sleep(200 * time.Millisecond) // what was in flight arrives or is dropped
	since := time.Now()
	time.Sleep(100 * time.Millisecond)
	if ok, err := fh.RetireGroupIfQuiet(shard, since); err != nil || !ok {
		t.Fatalf("a replica cut off from its leader was not retired: %v, %v", ok, err)
	}
	if ok, err := fh.RetireGroupIfQuiet(shard, since); err != nil || !ok {
		t.Fatalf("retiring again: %v, %v", ok, err)
	}
	c.net.isolate(f, false)
	lead = c.leader(shard)
	match := lead.Status().Progress[f].Match
	for i := range 5 {
		c.propose(shard, fmt.Sprintf("b%d", i))
	}
	time.Sleep(300 * time.Millisecond) // many heartbeats and appends to the retired replica
	g := c.group(f, shard)
	if st := g.Status(); !st.Removed || st.Applied > match {
		t.Fatalf("retired replica: removed %v, applied %d (was at %d)", st.Removed, st.Applied, match)
	}
	if g.Voter() {
		t.Fatal("a retired replica reports itself a voter")
	}
	if m := lead.Status().Progress[f].Match; m != match {
		t.Fatalf("the leader's progress for the retired replica moved from %d to %d", match, m)
	}
	if _, err := g.Propose(context.Background(), []byte("x")); !errors.Is(err, ErrGroupRemoved) {
		t.Fatalf("propose on a retired replica: %v", err)
	}
	if err := fh.DropGroup(shard, 0); err != nil {
		t.Fatal(err)
	}
}

// A transfer that succeeds returns nil, although this node loses its leadership (and its other
// waiters fail) before it learns who took it.
func TestTransferLeadershipReturnsOnceTargetLeads(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(4)
	c.propose(4, "x")
	for round := range 6 {
		lead := c.leader(4)
		to := lead.Status().ID%3 + 1
		c.converged(4, []string{"x"}, 1, 2, 3)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := lead.TransferLeadership(ctx, to)
		cancel()
		if err != nil {
			t.Fatalf("round %d: transfer %d -> %d: %v", round, lead.Status().ID, to, err)
		}
		if got := c.leader(4).Status().ID; got != to {
			t.Fatalf("round %d: leader %d after the transfer to %d", round, got, to)
		}
	}
}

// Told that the leader's node is down, the group's first remaining voter (the lowest ID but
// the leader's) campaigns at once, and the other, past its lease, elects it: with election
// timeouts of 30 s, nothing else would elect anyone within the test's 2 s.
func TestReportPeerDownFirstVoterCampaigns(t *testing.T) {
	const shard = 1
	c := slowElectionCluster(t, shard)
	c.stopNode(1)
	c.nodes[3].host.ReportPeerDown(1)
	c.nodes[2].host.ReportPeerDown(1)
	c.leadsWithin(2, shard, 2*time.Second)
	c.propose(shard, "b")
	c.converged(shard, []string{"a", "b"}, 2, 3)
}

// slowElectionCluster starts three nodes whose election timeout is 30 s (3,000 ticks of
// 10 ms), so that no election happens by itself within a test, and has node 1 campaign for
// shard and commit "a" on every node.
func slowElectionCluster(t *testing.T, shard uint32) *cluster {
	t.Helper()
	c := newCluster(t, clusterOpts{nodes: 3, election: 3000})
	c.openVoters(shard)
	// raft ignores a campaign until the bootstrap configuration (entries 1 to 3) is applied.
	eventually(t, 5*time.Second, func() error {
		if st := c.group(1, shard).Status(); st.Applied < 3 {
			return fmt.Errorf("node 1 applied %d of the 3 bootstrap entries", st.Applied)
		}
		return nil
	})
	c.campaign(1, shard)
	if g := c.leader(shard); g != c.group(1, shard) {
		t.Fatalf("leader %d, want 1", g.Leader())
	}
	c.propose(shard, "a")
	c.converged(shard, []string{"a"}, 1, 2, 3)
	return c
}

// campaign has node id's replica of shard start an election.
func (c *cluster) campaign(id uint64, shard uint32) {
	c.t.Helper()
	g := c.group(id, shard)
	if err := c.nodes[id].host.do(func() { _ = g.rn.Campaign() }); err != nil {
		c.t.Fatal(err)
	}
}

// leadsWithin waits up to d for node id to lead shard.
func (c *cluster) leadsWithin(id uint64, shard uint32, d time.Duration) {
	c.t.Helper()
	eventually(c.t, d, func() error {
		if c.group(id, shard).IsLeader() {
			return nil
		}
		msg := fmt.Sprintf("node %d does not lead", id)
		for _, o := range c.others(id) {
			if g := c.group(o, shard); g != nil {
				st := g.Status()
				msg += fmt.Sprintf("; node %d: leader %d, term %d", o, st.Leader, st.Term)
			}
		}
		return errors.New(msg)
	})
}

// SinceCurrent: the leader is current; a follower was current a moment ago, busy or
// quiesced (its leader's appends and quiesce heartbeats carry the leader's commit index, which
// it has applied); a follower cut off from its leader is no longer, and the time grows.
func TestSinceCurrent(t *testing.T) {
	const shard = 1
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	l := c.leader(shard)
	c.propose(shard, "a")
	if since, ok := l.SinceCurrent(); !ok || since != 0 {
		t.Fatalf("leader: SinceCurrent = %v, %v; want 0, true", since, ok)
	}
	follower := c.others(l.h.cfg.NodeID)[0]
	g := c.group(follower, shard)
	eventually(t, 5*time.Second, func() error {
		if since, ok := g.SinceCurrent(); !ok || since > 500*time.Millisecond {
			return fmt.Errorf("follower %d after an append: SinceCurrent = %v, %v", follower, since, ok)
		}
		return nil
	})
	// Idle, the group quiesces, and its leader's quiesce heartbeat (every 20 ticks, 200 ms at
	// the harness's 10 ms tick) keeps the follower current.
	eventually(t, 5*time.Second, func() error {
		if !g.Status().Quiesced {
			return errors.New("the idle group has not quiesced")
		}
		return nil
	})
	for range 3 {
		time.Sleep(300 * time.Millisecond)
		if since, ok := g.SinceCurrent(); !ok || since > 500*time.Millisecond {
			t.Fatalf("quiesced follower %d: SinceCurrent = %v, %v; want within half a second", follower, since, ok)
		}
		if since, ok := g.SinceContact(); !ok || since > 500*time.Millisecond {
			t.Fatalf("quiesced follower %d: SinceContact = %v, %v; want within half a second", follower, since, ok)
		}
	}
	c.net.isolate(follower, true)
	eventually(t, 10*time.Second, func() error {
		if since, _ := g.SinceCurrent(); since < 2*time.Second {
			return fmt.Errorf("cut-off follower was current %v ago", since)
		}
		return nil
	})
}

// Leaderless says how long a replica has known no leader: from its opening until it learns one,
// and, once its group has lost its quorum, from when raft forgot the leader (a follower
// campaigning, a leader stepping down by CheckQuorum) until it hears from one again.
func TestLeaderless(t *testing.T) {
	const shard = 8
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	c.leader(shard)
	c.propose(shard, "a")
	knowLeader := func(ids ...uint64) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			for _, id := range ids {
				if d, ok := c.group(id, shard).Leaderless(); ok {
					return fmt.Errorf("replica %d has known no leader for %v", id, d)
				}
			}
			return nil
		})
	}
	knowLeader(1, 2, 3)
	// Two of three cut off: no replica has a leader any longer, and the time without one grows.
	c.net.isolate(2, true)
	c.net.isolate(3, true)
	for id := uint64(1); id <= 3; id++ {
		g := c.group(id, shard)
		eventually(t, 10*time.Second, func() error {
			if d, ok := g.Leaderless(); !ok || d < 500*time.Millisecond {
				return fmt.Errorf("replica %d without quorum: Leaderless = %v, %v", id, d, ok)
			}
			return nil
		})
	}
	c.net.isolate(2, false)
	c.net.isolate(3, false)
	c.leader(shard)
	knowLeader(1, 2, 3)
}

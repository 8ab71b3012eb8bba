package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// quiesced waits until shard's group on every listed node is quiesced.
func (c *cluster) quiesced(shard uint32, ids ...uint64) {
	c.t.Helper()
	eventually(c.t, 10*time.Second, func() error {
		for _, id := range ids {
			if st := c.group(id, shard).Status(); !st.Quiesced {
				return fmt.Errorf("node %d is not quiesced (leader %d, term %d)", id, st.Leader, st.Term)
			}
		}
		return nil
	})
}

// messagesIn counts the messages the cluster's nodes send to each other during d.
func (c *cluster) messagesIn(d time.Duration) int64 {
	before := c.net.sent.Load()
	time.Sleep(d)
	return c.net.sent.Load() - before
}

// An idle group stops ticking on every replica. With the harness's 10 ms ticks, a second
// holds 5 quiesce heartbeats to each of the two followers and their answers (20 messages),
// where the awake group sends 50 heartbeats to each and gets their answers (200; TestNoQuiesce).
// A proposal wakes it; once idle again, it quiesces again.
func TestQuiesceIdleGroup(t *testing.T) {
	const shard = 4
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	c.leader(shard)
	c.propose(shard, "a")
	c.quiesced(shard, 1, 2, 3)
	if n := c.messagesIn(time.Second); n > 40 {
		t.Fatalf("%d messages in a second between quiesced replicas, want about 20", n)
	}
	for _, id := range []uint64{1, 2, 3} {
		if v := testutilGauge(c.nodes[id].host.metrics.Quiesced); v != 1 {
			t.Fatalf("node %d: shoal_replica_quiesced_groups = %v, want 1", id, v)
		}
	}

	c.propose(shard, "b")
	if c.leader(shard).Status().Quiesced {
		t.Fatal("the leader is still quiesced after a proposal")
	}
	c.converged(shard, []string{"a", "b"}, 1, 2, 3)
	c.quiesced(shard, 1, 2, 3)

	// A read barrier wakes the group too, and passes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.leader(shard).ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	c.quiesced(shard, 1, 2, 3)
}

// A group with NoQuiesce keeps heartbeating.
func TestNoQuiesce(t *testing.T) {
	const shard = 4
	c := newCluster(t, clusterOpts{nodes: 3, noQuiesce: true})
	c.openVoters(shard)
	c.leader(shard)
	c.propose(shard, "a")
	time.Sleep(500 * time.Millisecond)
	if n := c.messagesIn(time.Second); n < 100 {
		t.Fatalf("%d messages in a second, want the heartbeats (about 200)", n)
	}
	for _, id := range []uint64{1, 2, 3} {
		if c.group(id, shard).Status().Quiesced {
			t.Fatalf("node %d quiesced with NoQuiesce", id)
		}
	}
}

// The leader of a quiesced group stops without a word (no broken stream reported): the
// followers miss its quiesce heartbeats, wake up and elect one of them.
func TestQuiescedLeaderStops(t *testing.T) {
	const shard = 5
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	c.leader(shard)
	c.propose(shard, "a")
	c.quiesced(shard, 1, 2, 3)
	old := c.leader(shard).Status().ID
	c.stopNode(old)
	rest := c.others(old)
	c.leader(shard, rest...)
	c.propose(shard, "b")
	c.converged(shard, []string{"a", "b"}, rest...)
}

// A quiesced leader cut off from its followers wakes up when they stop answering its quiesce
// heartbeats, and steps down (CheckQuorum) while the others elect a leader; healed, it
// catches up.
func TestQuiescedLeaderPartitioned(t *testing.T) {
	const shard = 6
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	old := c.leader(shard)
	c.propose(shard, "a")
	c.quiesced(shard, 1, 2, 3)
	oldID := old.Status().ID
	c.net.isolate(oldID, true)
	eventually(t, 10*time.Second, func() error {
		if old.IsLeader() {
			return errors.New("the isolated leader still leads")
		}
		return nil
	})
	c.leader(shard, c.others(oldID)...)
	c.propose(shard, "b")
	c.net.isolate(oldID, false)
	c.converged(shard, []string{"a", "b"}, 1, 2, 3)
	c.quiesced(shard, 1, 2, 3)
}

// A follower restarted while its group is quiesced starts awake, finds the leader (its
// campaign, or the next quiesce heartbeat, reaches it), and gets what it missed.
func TestFollowerRestartsIntoQuiescedGroup(t *testing.T) {
	const shard = 7
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	lead := c.leader(shard)
	c.propose(shard, "a")
	c.quiesced(shard, 1, 2, 3)
	f := lead.Status().ID%3 + 1
	fs := c.nodes[f].fs
	c.stopNode(f)
	c.propose(shard, "b")
	c.start(f, fs, clusterOpts{})
	c.open(f, shard, []uint64{1, 2, 3})
	c.converged(shard, []string{"a", "b"}, 1, 2, 3)
	c.quiesced(shard, 1, 2, 3)
	if g := c.leader(shard); g != lead {
		t.Fatalf("leader changed to %d; a restarted follower should not disturb a live leader", g.Status().ID)
	}
}

// A follower that dies while its group is quiesced does not count as active when the leader
// wakes: removing the other follower, which would leave the dead one in a quorum of two, is
// refused as it is in an awake group. (A quiesced leader's raft keeps the activity marks of the
// moment it quiesced; waking renews them.)
func TestQuiescedLeaderForgetsDeadFollower(t *testing.T) {
	const shard = 8
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	lead := c.leader(shard)
	c.propose(shard, "a")
	c.quiesced(shard, 1, 2, 3)
	lid := lead.Status().ID
	alive, dead := lid%3+1, (lid+1)%3+1
	c.stopNode(dead)
	time.Sleep(300 * time.Millisecond) // well within the leader's quiesce refresh
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var ce *ConfChangeError
	if err := lead.RemoveMember(ctx, alive); !errors.As(err, &ce) {
		t.Fatalf("RemoveMember(%d) with %d dead: %v, want a ConfChangeError; voters now %v",
			alive, dead, err, lead.Status().Voters)
	}
	if v := lead.Status().Voters; len(v) != 3 {
		t.Fatalf("voters %v, want all three", v)
	}
	// Removing the dead one is refused only for a while (just woken, then raft's activity
	// marks renewed by the live follower's next answer).
	eventually(t, 5*time.Second, func() error {
		err := lead.RemoveMember(ctx, dead)
		if err != nil && !errors.As(err, &ce) {
			t.Fatalf("removing the dead voter: %v", err)
		}
		return err
	})
	c.propose(shard, "b")
	c.converged(shard, []string{"a", "b"}, lid, alive)
}

// A quiesced leader that goes silent, with no transport report (a hung process or a cut
// cable), is replaced as soon as its followers miss its quiesce heartbeats: the followers
// lapse, end their leases and the first of them campaigns at once. The election timeout is
// 3 s here, so the followers' own clocks would take 3.5 s or more (the lapse, then a
// timeout); the new leader must come within 2 s of the stop, four times what the lapse
// takes (50 ticks of 10 ms).
func TestQuiescedFollowersElectWhenTheLeaderGoesSilent(t *testing.T) {
	const shard = 8
	c := newCluster(t, clusterOpts{nodes: 3, election: 300})
	c.openVoters(shard)
	c.propose(shard, "a")
	c.quiesced(shard, 1, 2, 3)
	old := c.leader(shard).Status().ID
	rest := c.others(old)
	lapses := func() float64 { return c.quiesceLapses(rest) }
	c.stopNode(old)
	first := slices.Min(rest)
	c.leadsWithin(first, shard, 2*time.Second)
	if n := lapses(); n < 1 {
		t.Errorf("%v lapses counted, want at least 1", n)
	}
	c.propose(shard, "b")
	c.converged(shard, []string{"a", "b"}, rest...)
}

// One lost quiesce refresh does not cost a live leader its leadership: the leader wakes its
// group when the refresh goes unanswered, and its heartbeats reach the follower before the
// follower lapses (two and a half refreshes after the last one it heard). With a lapse of two
// refreshes, the follower lapsed in most rounds, racing the leader's wake-up.
func TestLostQuiesceRefreshKeepsLeader(t *testing.T) {
	const shard, rounds = 8, 8
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	c.propose(shard, "a")
	for round := range rounds {
		c.quiesced(shard, 1, 2, 3)
		lead := c.leader(shard)
		before := lead.Status()
		followers := c.others(before.ID)
		// Drop the next quiesce heartbeat to each follower.
		dropped := map[uint64]bool{}
		c.net.mu.Lock()
		c.net.drop = func(from uint64, m *pb.Message) bool {
			if from != before.ID || m.GetType() != pb.MsgHeartbeat || !bytes.Equal(m.GetContext(), quiesceCtx) || dropped[m.GetTo()] {
				return false
			}
			dropped[m.GetTo()] = true
			return true
		}
		c.net.mu.Unlock()
		eventually(t, 5*time.Second, func() error {
			c.net.mu.Lock()
			defer c.net.mu.Unlock()
			if len(dropped) < len(followers) {
				return fmt.Errorf("round %d: dropped refreshes to %v of %v", round, dropped, followers)
			}
			c.net.drop = nil
			return nil
		})
		time.Sleep(quiesceLapseTicks * 2 * 10 * time.Millisecond)
		for _, id := range followers {
			if n := testutilCounter(c.nodes[id].host.metrics.QuiesceLapses); n != 0 {
				t.Fatalf("round %d: node %d lapsed %v times after one lost refresh", round, id, n)
			}
		}
		if after := c.leader(shard).Status(); after.ID != before.ID || after.Term != before.Term {
			t.Fatalf("round %d: leader %d term %d became leader %d term %d after one lost refresh",
				round, before.ID, before.Term, after.ID, after.Term)
		}
	}
}

// A quiesced follower that lapses for a vote request does not campaign itself, even when it
// is the group's first remaining voter: its own campaign would contest the one it answers
// (two pre-candidates whose requests cross split the vote and wait out an election timeout,
// 3 s here). The other follower campaigns while the first remaining voter is a little short
// of its own lapse; the first must grant without asking for votes, and the other lead at once.
func TestLapseForVoteDoesNotCampaign(t *testing.T) {
	const shard = 8
	// The first voter's clock is moved to a quarter refresh (500 ms with 100 ms ticks) before
	// its lapse as the other's first vote request is sent to it: the request arrives then,
	// whatever the machine's load (moving the clock before the campaign left the request
	// 500 ms, which a full race-detector run did not always give it).
	c, st, rest := quiescedSlowCluster(t, shard)
	first, other := rest[0], rest[1]
	gf := c.group(first, shard)
	var (
		asked []pb.MessageType
		near  sync.Once
	)
	c.net.mu.Lock()
	c.net.drop = func(from uint64, m *pb.Message) bool {
		t := m.GetType()
		if from == first && (t == pb.MsgPreVote || t == pb.MsgVote) {
			asked = append(asked, t)
		}
		if from == other && m.GetTo() == first && (t == pb.MsgPreVote || t == pb.MsgVote) {
			// Queued on the first voter's loop before the request: its requests run
			// before the messages of the same turn.
			near.Do(func() { _ = c.nodes[first].host.do(func() { gf.quiesceTicks = quiesceVoteLapseTicks }) })
		}
		return false
	}
	c.net.mu.Unlock()
	c.stopNode(st.ID)
	g := c.group(other, shard)
	// The other voter plays the one that lapsed first and campaigns. leaderDown(_, false)
	// drops the pre-votes of a campaign its own ticks started (1 time in ElectionTicks), which
	// would leave the Campaign below unheard for an election timeout: not here.
	if err := c.nodes[other].host.do(func() {
		g.leaderDown(st.ID, false)
		g.dropPreVotes = false
		_ = g.rn.Campaign()
	}); err != nil {
		t.Fatal(err)
	}
	c.leadsWithin(other, shard, time.Second)
	c.net.mu.Lock()
	if len(asked) > 0 {
		t.Errorf("node %d, lapsing for node %d's vote request, asked for votes itself: %v", first, other, asked)
	}
	c.net.drop = nil
	c.net.mu.Unlock()
	if now := g.Status().Term; now != st.Term+1 {
		t.Errorf("node %d leads in term %d, want %d (one election)", other, now, st.Term+1)
	}
	c.propose(shard, "b")
	c.converged(shard, []string{"a", "b"}, rest...)
}

// leaderDown's ticks can start a campaign by themselves (1 time in ElectionTicks: raft's
// randomized timeout can be exactly ElectionTicks). A node that is not to campaign must not
// then ask for votes: its pre-vote requests are dropped. The test repeats leaderDown(lead,
// false) on a follower until its ticks have made it a pre-candidate three times, and checks
// that it sent no pre-vote request right after any of them.
func TestLeaderDownWithoutCampaignAsksNoVotes(t *testing.T) {
	const shard, wantHits, maxRounds = 8, 3, 100
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	c.propose(shard, "a")
	var (
		mu     sync.Mutex
		from   uint64
		asked  int
		watchd bool
	)
	c.net.mu.Lock()
	c.net.drop = func(f uint64, m *pb.Message) bool {
		mu.Lock()
		defer mu.Unlock()
		if watchd && f == from && m.GetType() == pb.MsgPreVote {
			asked++
		}
		return false
	}
	c.net.mu.Unlock()
	hits := 0
	for round := 0; round < maxRounds && hits < wantHits; round++ {
		c.quiesced(shard, 1, 2, 3)
		lead := c.leader(shard).Status().ID
		f := c.others(lead)[round%2]
		g := c.group(f, shard)
		mu.Lock()
		from, asked, watchd = f, 0, true
		mu.Unlock()
		var st raft.StateType
		if err := c.nodes[f].host.call(context.Background(), func() error {
			g.leaderDown(lead, false)
			st = g.rn.BasicStatus().RaftState
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// The Ready with any pre-vote request goes out in the same loop iteration; raft's
		// next campaign comes ElectionTicks (100 ms) later at the earliest.
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		n := asked
		watchd = false
		mu.Unlock()
		if st == raft.StatePreCandidate {
			hits++
			if n > 0 {
				t.Fatalf("round %d: node %d, made a pre-candidate by leaderDown(_, false), sent %d pre-vote requests", round, f, n)
			}
		}
	}
	if hits < wantHits {
		t.Fatalf("leaderDown's ticks made a follower a pre-candidate %d times in %d rounds, want %d", hits, maxRounds, wantHits)
	}
}

// Removing a live voter from an idle, quiesced group: the first attempt wakes the group and
// is refused (the leader's activity marks predate its quiescence), and a retry a little
// later, as placement makes, succeeds. Without traffic the group used to quiesce again just
// as the refusal's election timeout ended, so that every retry woke it anew and was refused
// again: a fourth node's extra voter was never removed from an idle shard.
func TestRemoveVoterFromQuiescedGroup(t *testing.T) {
	const shard = 6
	c := newCluster(t, clusterOpts{nodes: 4})
	c.openVoters(shard)
	lead := c.leader(shard)
	c.propose(shard, "a")
	c.quiesced(shard, 1, 2, 3, 4)
	lid := lead.Status().ID
	victim := lid%4 + 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ce *ConfChangeError
	err := lead.RemoveMember(ctx, victim)
	if !errors.As(err, &ce) {
		t.Fatalf("first RemoveMember(%d) of a quiesced group: %v, want a refusal until the leader is awake", victim, err)
	}
	// Retries a few election timeouts apart (100 ms here; placement retries every second
	// with 1 s timeouts), with the group idle in between.
	for attempt := 1; ; attempt++ {
		time.Sleep(250 * time.Millisecond)
		err := lead.RemoveMember(ctx, victim)
		if err == nil {
			t.Logf("removed on retry %d", attempt)
			break
		}
		if !errors.As(err, &ce) || attempt == 8 {
			t.Fatalf("retry %d of RemoveMember(%d): %v (quiesced %v)", attempt, victim, err, lead.Status().Quiesced)
		}
	}
	if v := lead.Status().Voters; len(v) != 3 || slices.Contains(v, victim) {
		t.Fatalf("voters %v after removing %d", v, victim)
	}
}

// A client's suspicion (SuspectLeader) makes the quiesced followers of a silent leader elect a
// new one once they have missed a single quiesce heartbeat, instead of after two and a half
// refreshes; a suspicion of a leader whose heartbeats arrive changes nothing. 100 ms ticks: a
// refresh every 2 s, a lapse after 5 s, a suspicion heeded after 2.5 s.
func TestSuspectedQuiescedLeader(t *testing.T) {
	const shard = 8
	c, st, rest := quiescedSlowCluster(t, shard)
	lapses := func() float64 { return c.quiesceLapses(rest) }
	ticks := func(id uint64) (n int) {
		g := c.group(id, shard)
		if err := c.nodes[id].host.call(context.Background(), func() error { n = g.quiesceTicks; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// A live leader: its followers heard its last refresh less than a refresh ago.
	for _, id := range rest {
		c.group(id, shard).SuspectLeader(st.ID)
	}
	time.Sleep(500 * time.Millisecond)
	if n := lapses(); n != 0 {
		t.Fatalf("%v lapses on suspicion of a leader whose quiesce heartbeats arrive", n)
	}
	if now := c.leader(shard).Status(); now.ID != st.ID || now.Term != st.Term {
		t.Fatalf("leader %d term %d became leader %d term %d on a suspicion", st.ID, st.Term, now.ID, now.Term)
	}

	// A silent leader: once both followers missed a refresh, the suspicion elects another.
	c.stopNode(st.ID)
	eventually(t, 5*time.Second, func() error {
		for _, id := range rest {
			if n := ticks(id); n < quiesceSuspectTicks {
				return fmt.Errorf("node %d heard its leader %d ticks ago", id, n)
			}
		}
		return nil
	})
	suspected := time.Now()
	left := quiesceLapseTicks - max(ticks(rest[0]), ticks(rest[1]))
	for _, id := range rest {
		c.group(id, shard).SuspectLeader(st.ID)
	}
	first := slices.Min(rest)
	c.leadsWithin(first, shard, time.Duration(left)*100*time.Millisecond-500*time.Millisecond)
	t.Logf("node %d leads %v after the suspicion (the lapse was %d ticks away)", first,
		time.Since(suspected).Round(time.Millisecond), left)
	if now := c.group(first, shard).Status().Term; now != st.Term+1 {
		t.Errorf("node %d leads in term %d, want %d (one election)", first, now, st.Term+1)
	}
	c.propose(shard, "b")
	c.converged(shard, []string{"a", "b"}, rest...)
}

// quiescedSlowCluster starts three nodes with 100 ms ticks and a 3 s election timeout, with
// shard's group holding one entry and quiesced; it returns the leader's status and the other
// two nodes.
func quiescedSlowCluster(t *testing.T, shard uint32) (*cluster, Status, []uint64) {
	t.Helper()
	c := newCluster(t, clusterOpts{nodes: 3, election: 30, tick: 100 * time.Millisecond})
	c.openVoters(shard)
	c.propose(shard, "a")
	c.quiesced(shard, 1, 2, 3)
	st := c.leader(shard).Status()
	return c, st, c.others(st.ID)
}

// quiesceLapses sums the quiesce lapses the nodes ids counted.
func (c *cluster) quiesceLapses(ids []uint64) (n float64) {
	for _, id := range ids {
		n += testutilCounter(c.nodes[id].host.metrics.QuiesceLapses)
	}
	return n
}

// A learner that dies while its group is quiesced is not promoted on the activity marks the
// leader's raft kept from the moment it quiesced: the promotion that wakes the group is
// refused for now (ConfChangeError.Later), and once the marks are renewed, refused for the
// learner being inactive. Promoted, the dead learner would be a voter the shard's quorum
// counts (three of four). A live learner is promoted on a retry.
func TestQuiescedLeaderDoesNotPromoteDeadLearner(t *testing.T) {
	const shard = 7
	for _, dies := range []bool{true, false} {
		t.Run(fmt.Sprintf("dies=%v", dies), func(t *testing.T) {
			c := newCluster(t, clusterOpts{nodes: 4, factory: true})
			for id := uint64(1); id <= 3; id++ {
				c.open(id, shard, []uint64{1, 2, 3})
			}
			lead := c.leader(shard)
			c.propose(shard, "a")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := lead.AddLearner(ctx, 4); err != nil {
				t.Fatal(err)
			}
			c.converged(shard, []string{"a"}, 1, 2, 3, 4)
			c.quiesced(shard, 1, 2, 3, 4)
			if dies {
				c.stopNode(4)
				time.Sleep(100 * time.Millisecond) // within the leader's quiesce refresh (200 ms)
			}
			var ce *ConfChangeError
			if err := lead.PromoteLearner(ctx, 4); !errors.As(err, &ce) || !ce.Later {
				t.Fatalf("promoting the learner of a quiesced group: %v, want a refusal for now (Later)", err)
			}
			for attempt := 1; attempt <= 8; attempt++ {
				time.Sleep(250 * time.Millisecond)
				err := lead.PromoteLearner(ctx, 4)
				if !dies && err == nil {
					return
				}
				if err == nil {
					t.Fatalf("retry %d promoted the dead learner: voters %v", attempt, lead.Status().Voters)
				}
				if !errors.As(err, &ce) {
					t.Fatalf("retry %d: %v, want a ConfChangeError", attempt, err)
				}
			}
			if !dies {
				t.Fatalf("the live learner was not promoted: %v", lead.PromoteLearner(ctx, 4))
			}
			if err := lead.PromoteLearner(ctx, 4); !errors.As(err, &ce) || ce.Later {
				t.Fatalf("promoting the dead learner, long awake: %v, want a lasting refusal", err)
			}
		})
	}
}

// A partial partition of a quiesced group: only the link between the leader and one follower
// is cut, and the other follower still hears the leader. The follower cut off is told at once
// that the leader's node is down (its stream broke and a dial timed out: ReportPeerDown), or
// only that a message to it was lost (ReportUnreachable), and campaigns. The other follower,
// quiesced, refuses its pre-votes on its lease and must not be woken by them: woken, its
// clock ran past the lease before the quiesced leader's next refresh, and it granted the next
// request or campaigned itself, electing a new leader while the old one reached a majority
// (in 5 of 5 rounds, and 3 of 5 for the lost message, before).
func TestPartialPartitionOfQuiescedGroup(t *testing.T) {
	const shard = 8
	for _, report := range []string{"peer down", "unreachable"} {
		t.Run(report, func(t *testing.T) {
			for round := range 3 {
				c := newCluster(t, clusterOpts{nodes: 3})
				c.openVoters(shard)
				c.propose(shard, "a")
				c.quiesced(shard, 1, 2, 3)
				st := c.leader(shard).Status()
				cut := c.others(st.ID)[0]
				c.net.cutLink(st.ID, cut, true)
				if report == "peer down" {
					c.nodes[cut].host.ReportPeerDown(st.ID)
				} else {
					c.nodes[cut].host.ReportUnreachable(shard, st.ID)
				}
				time.Sleep(1500 * time.Millisecond) // 7 quiesce refreshes, 15 election timeouts
				if now := c.leader(shard).Status(); now.ID != st.ID || now.Term != st.Term {
					t.Fatalf("round %d: leader %d (term %d) replaced by %d (term %d) while it reached a majority",
						round, st.ID, st.Term, now.ID, now.Term)
				}
				c.net.cutLink(st.ID, cut, false)
				c.propose(shard, "b")
				c.converged(shard, []string{"a", "b"}, 1, 2, 3)
			}
		})
	}
}

// A quiesced leader cut off from both followers steps down soon after they elect another
// (told it is down: ReportPeerDown): it wakes when a quiesce heartbeat goes unanswered for half
// a refresh and runs raft's first CheckQuorum at once (it passes on the activity marks of the
// moment the group quiesced), so that the one that finds no quorum comes an election timeout
// later. From the cut, that is at most a refresh (20 ticks), the half (10) and an election
// timeout (10): 40 ticks. Before, it woke at the refresh after the unanswered one and ran both
// CheckQuorums an election timeout apart, about 60 ticks after a cut made right after the
// group quiesced, as here, while the new leader led (measured: 2.94 s at 50 ms ticks, 1.18 s
// at 20 ms). The median of three rounds must be under 50 ticks.
func TestCutOffQuiescedLeaderStepsDown(t *testing.T) {
	const shard, tick = 8, 20 * time.Millisecond
	var took []time.Duration
	for round := range 3 {
		c := newCluster(t, clusterOpts{nodes: 3, tick: tick})
		c.openVoters(shard)
		c.propose(shard, "a")
		c.quiesced(shard, 1, 2, 3)
		old := c.leader(shard)
		id := old.Status().ID
		c.net.isolate(id, true)
		start := time.Now()
		for _, f := range c.others(id) {
			c.nodes[f].host.ReportPeerDown(id)
		}
		eventually(t, 10*time.Second, func() error {
			if old.IsLeader() {
				return fmt.Errorf("round %d: the cut-off leader %d still leads", round, id)
			}
			return nil
		})
		took = append(took, time.Since(start))
		if c.leading(shard, c.others(id)...) == nil {
			t.Fatalf("round %d: no new leader among the others", round)
		}
	}
	slices.Sort(took)
	t.Logf("the cut-off leader stepped down after %v (ticks of %v)", took, tick)
	if took[1] >= 50*tick {
		t.Fatalf("median step-down %v after the cut, want under 50 ticks (%v)", took[1], 50*tick)
	}
}

// A quiesce heartbeat of an earlier term, from a node that leads again in a later one (a
// message late on the wire, across a leadership that went away and came back), leaves an
// awake follower awake: it is the node's, not the current leadership's, and the follower,
// quiesced on it, would stop its election clock under a leader that does not hold it quiesced.
func TestStaleQuiesceHeartbeatLeavesFollowerAwake(t *testing.T) {
	const shard = 9
	c := newCluster(t, clusterOpts{nodes: 3, election: 30, tick: 100 * time.Millisecond})
	c.openVoters(shard)
	c.propose(shard, "a")
	lead := c.leader(shard).Status()
	away := c.others(lead.ID)[0]
	follower := c.others(lead.ID)[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.group(lead.ID, shard).TransferLeadership(ctx, away); err != nil {
		t.Fatal(err)
	}
	if err := c.group(away, shard).TransferLeadership(ctx, lead.ID); err != nil {
		t.Fatal(err)
	}
	c.propose(shard, "b") // the group stays awake for an election timeout (3 s) from here
	g := c.group(follower, shard)
	// The follower hears of the new term's leader with its first append, which the proposal's
	// commit (by the other two) need not wait for.
	eventually(t, time.Second, func() error {
		if st := g.Status(); st.Quiesced || st.Leader != lead.ID || st.Term <= lead.Term {
			return fmt.Errorf("node %d: quiesced %v, leader %d in term %d; want awake under %d past term %d",
				follower, st.Quiesced, st.Leader, st.Term, lead.ID, lead.Term)
		}
		return nil
	})
	c.nodes[follower].host.HandleMessages([]ShardMessage{{Shard: shard, Msg: &pb.Message{
		Type: pb.MsgHeartbeat.Enum(), From: new(lead.ID), To: new(follower), Term: new(lead.Term),
		Context: quiesceCtx,
	}}})
	// Two calls: the first may run in the iteration that steps the message, before it.
	for range 2 {
		if err := c.nodes[follower].host.call(ctx, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if st := g.Status(); st.Quiesced {
		t.Errorf("node %d quiesced on node %d's quiesce heartbeat of term %d, in term %d", follower, lead.ID, lead.Term, st.Term)
	}
}

// A leader woken from quiescence runs raft's CheckQuorum at once, on the activity marks of the
// moment it quiesced, and the check that counts comes a whole election timeout later. raft
// counts its ticks to a check from where it stood when the group quiesced: ticking a whole
// election timeout on waking, as before, left the next check election-timeout-minus-that ticks
// away (4 here), before the followers' answers to the heartbeats sent on waking could arrive
// over a slow link, and leaders of idle shards stepped down over links of 50 ms and 5% loss.
func TestWakeTicksThroughOneCheckQuorum(t *testing.T) {
	const election = 10
	st := raft.NewMemoryStorage()
	if err := st.ApplySnapshot(&pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(1)), Term: new(uint64(1)),
		ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}}}}); err != nil {
		t.Fatal(err)
	}
	rn, err := raft.NewRawNode(&raft.Config{ID: 1, ElectionTick: election, HeartbeatTick: 2, Storage: st,
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 16, CheckQuorum: true})
	if err != nil {
		t.Fatal(err)
	}
	ready := func() { // persist and advance, which steps the node's own vote
		for rn.HasReady() {
			rd := rn.Ready()
			if err := st.Append(rd.Entries); err != nil {
				t.Fatal(err)
			}
			if !raft.IsEmptyHardState(rd.HardState) {
				if err := st.SetHardState(rd.HardState); err != nil {
					t.Fatal(err)
				}
			}
			rn.Advance(rd)
		}
	}
	if err := rn.Campaign(); err != nil {
		t.Fatal(err)
	}
	ready()
	term := rn.BasicStatus().HardState.GetTerm()
	step := func(from uint64, typ pb.MessageType) {
		t.Helper()
		if err := rn.Step(&pb.Message{From: new(from), To: new(uint64(1)), Term: new(term), Type: typ.Enum()}); err != nil {
			t.Fatal(err)
		}
	}
	step(2, pb.MsgVoteResp)
	ready()
	if rn.BasicStatus().RaftState != raft.StateLeader {
		t.Fatalf("node 1 is %v after a vote from 2 of 3", rn.BasicStatus().RaftState)
	}
	// Six ticks into the election timeout, both followers answered: the group quiesces here.
	for range 6 {
		rn.Tick()
	}
	step(2, pb.MsgHeartbeatResp)
	step(3, pb.MsgHeartbeatResp)

	tickThroughCheckQuorum(rn, 1, election) // the wake
	if rn.BasicStatus().RaftState != raft.StateLeader {
		t.Fatal("the wake's CheckQuorum, on marks of both followers, ended the leadership")
	}
	// No answer yet: the next check, which finds none, comes a whole election timeout after the
	// wake's, not before.
	for i := range election - 1 {
		rn.Tick()
		if rn.BasicStatus().RaftState != raft.StateLeader {
			t.Fatalf("the leader stepped down %d ticks after the wake's CheckQuorum, want %d", i+1, election)
		}
	}
	rn.Tick()
	if rn.BasicStatus().RaftState == raft.StateLeader {
		t.Fatalf("no CheckQuorum %d ticks after the wake's, with no follower heard", election)
	}
}

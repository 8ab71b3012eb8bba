package replica

import (
	"bytes"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Quiescence: a group with nothing to do stops ticking, so that an idle node does not send
// and answer ten heartbeats a second for each of its groups (see doc.go, "Quiescence").

// quiesceCtx marks a quiesce heartbeat: a MsgHeartbeat that a leader sends itself, outside
// raft, when it quiesces and then every quiesceRefreshTicks. A follower's raft takes it for a
// plain heartbeat and echoes the context in its answer; the leader takes those answers out
// before raft sees them (raft reads a heartbeat answer's context as a read-index position).
// A node that does not know the marker therefore treats it as a plain heartbeat.
var quiesceCtx = []byte("shoal-quiesce")

const (
	// quiesceRefreshTicks: a quiesced leader repeats its quiesce heartbeat every 20 ticks
	// (1 s at the default tick), and wakes up if a follower did not answer the previous one.
	quiesceRefreshTicks = 20
	// quiesceAckTicks: a quiesced leader whose followers did not all answer a quiesce
	// heartbeat within this many ticks (half a refresh) wakes. Not much less: an answer
	// late under load wakes the group for nothing.
	quiesceAckTicks = quiesceRefreshTicks / 2
	// quiesceLapseTicks: a quiesced follower that heard no quiesce heartbeat for this long
	// (two and a half refreshes) takes its leader for gone (lapse). A live leader sends one
	// every quiesceRefreshTicks and wakes its group when one goes unanswered, so a follower
	// that missed one refresh hears the next about two refreshes after the last it heard;
	// the extra half refresh keeps the two clocks' drift and a message's delay from turning
	// one lost refresh into a needless election.
	quiesceLapseTicks = 2*quiesceRefreshTicks + quiesceRefreshTicks/2
	// quiesceVoteLapseTicks: a quiesced follower this close to its lapse lapses early for a
	// vote request (lapseForVote); a follower that missed a single refresh is short of it.
	quiesceVoteLapseTicks = quiesceLapseTicks - quiesceRefreshTicks/4
	// quiesceSuspectTicks: a quiesced follower told that a client waits on its leader in vain
	// (SuspectLeader) lapses once it has missed one refresh, with a quarter refresh of slack.
	quiesceSuspectTicks = quiesceRefreshTicks + quiesceRefreshTicks/4
	// suspectCampaignTicks: the first remaining voter of a group that lapsed on a suspicion
	// campaigns this many ticks later, not at once: the other voters hear of the suspicion a
	// moment later (the node asked passes it on to its peers), and refuse a vote until then.
	suspectCampaignTicks = 2
)

// onTickQuiescence runs for every group on a tick, before raft's own tick. It reports
// whether the group is quiesced, in which case raft is not ticked. Loop goroutine.
func (g *Group) onTickQuiescence() bool {
	if g.h.cfg.NoQuiesce {
		return false
	}
	if !g.quiesced {
		g.idleTicks++
		if g.awakeTicks <= g.h.cfg.ElectionTicks {
			g.awakeTicks++
		}
		if g.stayAwake > 0 {
			g.stayAwake--
		}
		if g.state == raft.StateLeader && g.mayQuiesce() {
			g.quiesce()
			return true
		}
		return false
	}
	g.quiesceTicks++
	switch {
	case g.state == raft.StateLeader && g.quiesceTicks%quiesceRefreshTicks == quiesceAckTicks && !g.allAcked():
		// A follower went silent: let raft's heartbeats and CheckQuorum see to it. raft's
		// first CheckQuorum after waking passes on the activity marks of the moment the group
		// quiesced (wake); the ticks run it now, so that the one that counts comes an
		// election timeout from now, and a leader cut off from its followers, who elect
		// another as soon as they miss its refresh, steps down an election timeout after
		// them rather than two.
		g.wake()
		tickThroughCheckQuorum(g.rn, g.h.cfg.NodeID, g.h.cfg.ElectionTicks)
		return false
	case g.state == raft.StateLeader && g.quiesceTicks%quiesceRefreshTicks == 0:
		g.sendQuiesce()
	case g.state != raft.StateLeader && g.quiesceTicks >= quiesceLapseTicks:
		g.lapse(true)
		return false
	}
	return true
}

// tickThroughCheckQuorum ticks rn, a leader that just woke, until raft's CheckQuorum has run,
// at most ticks (an election timeout) times: the check clears every follower's activity mark,
// or ends the leadership. raft counts the ticks to its next check from where it stood when
// the group quiesced, so ticking a whole election timeout left the next check, the one that
// counts, as little as a tick away, before the followers' answers to the heartbeats sent on
// waking could arrive over a slow link: over links of 50 ms and 5% loss, leaders of idle
// shards that a follower's lost answer woke stepped down 8 to 11 times a minute ("quorum is
// not active"). Loop goroutine.
func tickThroughCheckQuorum(rn *raft.RawNode, self uint64, ticks int) {
	for range ticks {
		rn.Tick()
		if rn.BasicStatus().RaftState != raft.StateLeader {
			return
		}
		active := false
		rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
			active = active || id != self && pr.RecentActive
		})
		if !active {
			return
		}
	}
}

// lapse is a quiesced follower's answer to its leader's silence: the leader's node stopped,
// hangs or is cut off, and no broken connection said so (a crash that breaks connections is
// reported by the transport: Host.ReportPeerDown). The follower does what that report does:
// it wakes, ends its leader lease at once, and the first remaining voter campaigns (unless
// campaign is false: lapseForVote). Waiting instead for an election timeout after waking, as
// an awake follower would have, put a failover of an idle shard at about three election
// timeouts after its last quiesce heartbeat. Loop goroutine.
func (g *Group) lapse(campaign bool) {
	g.leaderDown(g.rn.BasicStatus().Lead, campaign)
	g.h.metrics.QuiesceLapses.Inc()
}

// lapseForVote lapses a quiesced follower early for a vote request m when its own lapse is
// less than a quarter refresh away (quiesceVoteLapseTicks): the voter that lapsed first, its
// ticks a little ahead, campaigns at once, and a follower that held on to its lease for the
// few ticks until its own lapse would refuse it, costing the group an election timeout. A
// live leader's quiesce heartbeats keep its followers short of this even when one refresh is
// lost. A follower lapsing for a vote does not campaign itself, even if it is the first
// remaining voter: it would take its own vote from the campaign it is about to answer and
// split the vote. Loop goroutine.
func (g *Group) lapseForVote(m *pb.Message) {
	t := m.GetType()
	if !g.quiesced || g.state == raft.StateLeader || (t != pb.MsgPreVote && t != pb.MsgVote) {
		return
	}
	if g.quiesceTicks >= quiesceVoteLapseTicks {
		g.lapse(false)
	}
}

// SuspectLeader tells the group that a client waited in vain for node id as the group's
// leader (a topology request's suspects). A quiesced follower of id that has missed one of its
// quiesce heartbeats (quiesceSuspectTicks) takes it for gone at once, rather than after
// missing two (quiesceLapseTicks): it lapses, and if it is the first remaining voter it
// campaigns suspectCampaignTicks later. Anything else ignores the suspicion: an awake
// follower's election timeout is short already, and a leader whose quiesce heartbeats arrive
// is not gone, whatever a client thinks, as long as they arrive on time (within a quarter
// refresh). It returns at once; the check runs on the loop.
func (g *Group) SuspectLeader(id uint64) {
	_ = g.h.do(func() {
		if g.h.cfg.NoQuiesce || g.retired.Load() || !g.quiesced || g.state == raft.StateLeader ||
			g.rn.BasicStatus().Lead != id || g.quiesceTicks < quiesceSuspectTicks {
			return
		}
		g.h.log.Info("quiesced follower lapses: a client waited in vain for its leader, which missed a quiesce heartbeat",
			"shard", g.shard, "leader", id)
		term := g.rn.BasicStatus().HardState.GetTerm()
		g.lapse(false)
		if g.firstVoterWithout(id) == g.h.cfg.NodeID {
			g.suspectCampaign, g.suspected, g.suspectTerm = suspectCampaignTicks, id, term
		} else {
			g.suspectHold = suspectCampaignTicks + 1
		}
	})
}

// tickSuspicion keeps a voter that lapsed on a suspicion, and is not the first remaining one,
// from asking for votes for a few ticks (suspectHold). It counts down a campaign SuspectLeader
// scheduled, and starts it if the group is
// still in the suspected leader's term, following it (or a pre-candidate whose own timer fired
// during the lapse's ticks, whose pre-votes leaderDown dropped). Loop goroutine, on each tick
// of an awake group.
func (g *Group) tickSuspicion() {
	if g.suspectHold > 0 {
		g.suspectHold--
		if g.rn.BasicStatus().RaftState == raft.StatePreCandidate {
			g.dropPreVotes = true // its timer fired: leave the campaign to the first voter
		}
	}
	if g.suspectCampaign == 0 {
		return
	}
	if g.suspectCampaign--; g.suspectCampaign > 0 {
		return
	}
	bs := g.rn.BasicStatus()
	switch {
	case bs.HardState.GetTerm() != g.suspectTerm:
	case bs.RaftState == raft.StateFollower && bs.Lead == g.suspected, bs.RaftState == raft.StatePreCandidate:
		_ = g.rn.Campaign()
		g.stir()
	}
}

// mayQuiesce reports whether this leader can quiesce: idle for ElectionTicks, not kept
// awake (stayAwake), nothing waiting, every entry committed and applied here, every follower caught up, active and
// replicated to normally, and no configuration change or leadership transfer under way.
func (g *Group) mayQuiesce() bool {
	if g.idleTicks < g.h.cfg.ElectionTicks || g.stayAwake > 0 || len(g.waiters) > 0 || len(g.reads) > 0 ||
		len(g.transfers) > 0 || g.confPending != 0 || len(g.heldCommit) > 0 || g.removed.Load() {
		return false
	}
	if cs := g.st.cs; cs == nil || len(cs.VotersOutgoing) > 0 || len(cs.LearnersNext) > 0 {
		return false
	}
	bs := g.rn.BasicStatus()
	last := g.st.last
	if bs.LeadTransferee != 0 || bs.HardState.GetCommit() != last || g.st.applied < last {
		return false
	}
	ok := true
	g.eachFollower(func(_ uint64, pr tracker.Progress) {
		if pr.Match != last || pr.State != tracker.StateReplicate || !pr.RecentActive || pr.IsPaused() {
			ok = false
		}
	})
	return ok
}

// eachFollower calls f with every other member's progress (voters and learners). A leader's
// raft only.
func (g *Group) eachFollower(f func(id uint64, pr tracker.Progress)) {
	self := g.h.cfg.NodeID
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if id != self {
			f(id, pr)
		}
	})
}

// quiesce stops ticking this leader's group and tells its followers to do the same. Until
// then raft's CheckQuorum vouched for the leadership; from now on its quiesce heartbeats do
// (leadSure), unless it is the group's only voter. A leader that quiesces again before a
// quorum answered it after it woke keeps its earlier leadSure.
func (g *Group) quiesce() {
	g.enterQuiescence()
	g.sendQuiesce()
	if g.leadSure.Load() == 0 && !g.quorumAnswered() {
		g.leadSure.Store(monoStamp(g.quiesceSent))
	}
}

// enterQuiescence marks the group quiesced (it stops ticking) and restarts the count of its
// quiesced ticks. Loop goroutine.
func (g *Group) enterQuiescence() {
	if !g.quiesced {
		g.quiesced = true
		g.h.metrics.Quiesced.Inc()
	}
	g.quiesceTicks = 0
	g.suspectCampaign, g.suspectHold = 0, 0
}

// sendQuiesce sends every follower a quiesce heartbeat, as raft would send a heartbeat: the
// leader's term, and the commit index up to what the follower is known to hold.
func (g *Group) sendQuiesce() {
	g.quiesceAcks, g.quiesceSent = g.quiesceAcks[:0], time.Now()
	bs := g.rn.BasicStatus()
	self, term, commit := g.h.cfg.NodeID, bs.HardState.GetTerm(), bs.HardState.GetCommit()
	var out []ShardMessage
	g.eachFollower(func(id uint64, pr tracker.Progress) {
		out = append(out, ShardMessage{Shard: g.shard, Msg: &pb.Message{
			Type: pb.MsgHeartbeat.Enum(), To: new(id), From: new(self), Term: new(term),
			Commit: new(min(pr.Match, commit)), Context: quiesceCtx,
		}})
	})
	if len(out) > 0 {
		g.h.cfg.Transport.Send(out)
	}
}

// allAcked reports whether every follower answered the last quiesce heartbeat.
func (g *Group) allAcked() bool {
	ok := true
	g.eachFollower(func(id uint64, _ tracker.Progress) {
		if !containsID(g.quiesceAcks, id) {
			ok = false
		}
	})
	return ok
}

// wake makes a quiesced group tick again, and counts its idleness from now. Loop goroutine.
//
// raft marks a follower recently active when it hears from it, and clears the marks at each
// CheckQuorum, which a tick runs every election timeout. A quiesced leader did not tick: until
// its first CheckQuorum after waking, its marks are those of the moment it quiesced, and a
// follower that died since still counts as active. That CheckQuorum passes on them, as it
// would have then (a cut-off leader steps down one election timeout later); vetConfChange
// must not trust them, so a removal waits until the leader has been awake for more than an
// election timeout (justWoke).
func (g *Group) wake() {
	g.idleTicks = 0
	if g.quiesced {
		g.quiesced = false
		g.h.metrics.Quiesced.Dec()
		g.awakeTicks = 0
		g.quiesceAcks = g.quiesceAcks[:0] // a leader counts the answers since (noteAnswer)
	}
}

// justWoke reports whether this group left quiescence less than an election timeout ago, so
// that raft's follower activity marks may still predate it (wake).
func (g *Group) justWoke() bool { return g.awakeTicks <= g.h.cfg.ElectionTicks }

// quiesceAnswer reports whether m answers a quiesce heartbeat, which is then not stepped into
// raft: a quiesced leader notes who answered.
func (g *Group) quiesceAnswer(m *pb.Message) bool {
	if m.GetType() != pb.MsgHeartbeatResp || !bytes.Equal(m.Context, quiesceCtx) {
		return false
	}
	if g.quiesced && m.GetTerm() == g.rn.BasicStatus().HardState.GetTerm() {
		g.noteAnswer(m.GetFrom())
	}
	return true
}

// noteAnswer records that follower id answered this leader in its term: its last quiesce
// heartbeat while quiesced, anything once woken. A leader whose quiesce heartbeat a quorum of
// its voters (itself included) answered was still the leader when it sent it: another one
// needs the votes of a quorum, one of whom answered it, in its term, after that; leadSure
// moves to then. A woken leader that a quorum answered since it woke is from then on deposed
// by raft's CheckQuorum within two election timeouts of a cut, as if it had never quiesced
// (the stale activity marks of its quiescence serve at most its first CheckQuorum after
// waking): leadSure ends. Loop goroutine.
func (g *Group) noteAnswer(id uint64) {
	if !containsID(g.quiesceAcks, id) {
		g.quiesceAcks = append(g.quiesceAcks, id)
	}
	sure := g.leadSure.Load()
	switch {
	case sure == 0 || !g.quorumAnswered():
	case !g.quiesced:
		g.leadSure.Store(0)
	case monoStamp(g.quiesceSent) > sure:
		g.leadSure.Store(monoStamp(g.quiesceSent))
	}
}

// quorumAnswered reports whether this node and the followers in quiesceAcks make a quorum of
// the group's voters (of both halves of a joint configuration). Loop goroutine.
func (g *Group) quorumAnswered() bool {
	cs := g.st.cs
	if cs == nil {
		return false
	}
	majority := func(voters []uint64) bool {
		n := 0
		for _, v := range voters {
			if v == g.h.cfg.NodeID || containsID(g.quiesceAcks, v) {
				n++
			}
		}
		return 2*n > len(voters)
	}
	return majority(cs.Voters) && (len(cs.VotersOutgoing) == 0 || majority(cs.VotersOutgoing))
}

// stepped does the quiescence bookkeeping for a peer's message m, just stepped into raft.
// A quiesce heartbeat from the leader in its term quiesces a follower (or keeps it
// quiesced). Heartbeat answers leave a group as it is (the ones to a leader's last plain
// heartbeats may arrive after it quiesced); any other message wakes it. A follower's answer
// to a woken leader that a quorum has not answered yet is noted (noteAnswer).
func (g *Group) stepped(m *pb.Message) {
	if g.h.cfg.NoQuiesce {
		return
	}
	if t := m.GetType(); (t == pb.MsgAppResp || t == pb.MsgHeartbeatResp) && !g.quiesced && g.leadSure.Load() != 0 &&
		m.GetTerm() == g.rn.BasicStatus().HardState.GetTerm() {
		g.noteAnswer(m.GetFrom()) // a woken leader that a quorum has not answered yet
	}
	switch m.GetType() {
	case pb.MsgHeartbeat:
		if !bytes.Equal(m.Context, quiesceCtx) {
			g.wake()
			return
		}
		// The leader's, in its term: a node that leads again in a later term may have a
		// quiesce heartbeat of the earlier one late on the wire, which raft ignores.
		if bs := g.rn.BasicStatus(); bs.RaftState == raft.StateFollower && bs.Lead == m.GetFrom() &&
			bs.HardState.GetTerm() == m.GetTerm() {
			g.enterQuiescence()
		}
	case pb.MsgHeartbeatResp:
	case pb.MsgPreVote, pb.MsgVote:
		// A quiesced follower that still follows its leader refused the request (raft's
		// leader lease: its election clock stood still since the last quiesce heartbeat).
		// Woken, its clock would run past the lease before the quiesced leader's next
		// refresh, and it would grant the next request: a follower cut off from a live
		// leader (a partial partition) would take the leadership from it, the third
		// replica's vote granted on nothing but silence. It wakes when the leader goes
		// quiet (lapse, lapseForVote) or another leader's message or term reaches it.
		if bs := g.rn.BasicStatus(); g.quiesced && bs.RaftState == raft.StateFollower && bs.Lead != 0 {
			return
		}
		g.wake()
	default:
		g.wake()
	}
}

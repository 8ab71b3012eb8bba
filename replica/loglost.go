package replica

import (
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// A replica's log can end before what it acknowledged: its disk lost writes it had reported
// synced (a write cache that lies, a write-ahead log cut short), or the replica was deleted
// and created again since its leader last heard of it. raft assumes neither. The leader keeps
// the follower's match index, which never goes down: it sends heartbeats committing past the
// follower's log, which the follower drops (heartbeatPastLog: raft would take them for a lost
// log and panic), and never sends the missing entries again, so the follower stays behind for
// good, answering stale reads from what it still has.
//
// So the follower answers each such heartbeat with a MsgHeartbeatResp that rejects, its
// RejectHint where its log ends (raft's own heartbeat responses never reject), and logs why.
// Its leader, seeing that the follower's log ends before the match index it holds, hands its
// leadership to the most caught-up other voter that is active: a new leader tracks every
// follower from scratch, probes this one and sends it what it lacks. A leader of an earlier
// version steps the answer as a plain heartbeat response.

// logLostReportEvery bounds how often one group logs a lost log, on either side.
const logLostReportEvery = 30 * time.Second

// answerLogLost answers m, a heartbeat committing past this replica's log (heartbeatPastLog),
// with a rejecting heartbeat response that says where the log ends. Loop goroutine.
func (g *Group) answerLogLost(m *pb.Message) {
	last, _ := g.st.LastIndex()
	if now := time.Now(); now.Sub(g.logLostLogged) >= logLostReportEvery {
		g.logLostLogged = now
		g.h.log.Error("this replica's log ends before what it acknowledged: its leader holds that it has entries "+
			"up to the commit index, past its last index. The disk lost writes it had reported synced, or the replica "+
			"was deleted and created again since that leader heard of it; asking the leader to hand off its "+
			"leadership, so that the next one brings the replica up from where its log ends",
			"shard", g.shard, "leader", m.GetFrom(), "term", m.GetTerm(), "commit", m.GetCommit(), "last_index", last)
	}
	g.h.cfg.Transport.Send([]ShardMessage{{Shard: g.shard, Msg: &pb.Message{
		Type: pb.MsgHeartbeatResp.Enum(), To: new(m.GetFrom()), From: new(g.h.cfg.NodeID),
		Term: new(m.GetTerm()), Reject: new(true), RejectHint: new(last),
	}}})
}

// logLostAnswer reports whether m is a follower's answer that its log ends before what it
// acknowledged (answerLogLost), which is not stepped into raft. On the leader of m's term,
// when the follower's log does end before the match index raft tracks for it, it starts a
// leadership transfer to the most caught-up other active voter, unless one is under way.
// Loop goroutine.
func (g *Group) logLostAnswer(m *pb.Message) bool {
	if m.GetType() != pb.MsgHeartbeatResp || !m.GetReject() {
		return false
	}
	st := g.rn.Status()
	if st.RaftState != raft.StateLeader || st.HardState.GetTerm() != m.GetTerm() {
		return true
	}
	from := m.GetFrom()
	pr, ok := st.Progress[from]
	if !ok || pr.Match <= m.GetRejectHint() || st.LeadTransferee != 0 {
		return true
	}
	var to, match uint64
	for id, p := range st.Progress {
		if id == g.h.cfg.NodeID || id == from || p.IsLearner || !p.RecentActive {
			continue
		}
		if to == 0 || p.Match > match {
			to, match = id, p.Match
		}
	}
	if now := time.Now(); now.Sub(g.logLostLogged) >= logLostReportEvery {
		g.logLostLogged = now
		msg := "a follower's log ends before what it acknowledged (its disk lost synced writes, or its replica was " +
			"created again): handing off the leadership, so that the next leader brings it up from where its log ends"
		if to == 0 {
			msg = "a follower's log ends before what it acknowledged (its disk lost synced writes, or its replica was " +
				"created again), and no other active voter can take the leadership to bring it up again: it stays behind"
		}
		g.h.log.Error(msg, "shard", g.shard, "follower", from, "match", pr.Match, "last_index", m.GetRejectHint(), "to", to)
	}
	if to != 0 {
		g.h.metrics.LogLost.Inc()
		g.wake()
		g.rn.TransferLeader(to)
		g.stir()
	}
	return true
}

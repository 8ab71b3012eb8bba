package replica

import (
	"bytes"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// A follower's data is current as of a moment when it had applied everything its leader had
// committed then. Two messages from the leader (in its term) say what that was: an append
// carries the leader's commit index, and so does a quiesce heartbeat (a leader quiesces only
// once every follower holds its whole log, all of it committed, and commits nothing more
// until it wakes). A plain heartbeat carries the least of the leader's commit index and what
// the follower is known to hold, which says nothing about being behind, and a snapshot is
// followed by appends: neither counts. The follower keeps the commit indexes it has not yet
// applied, with the time it stepped them (marks); once its applied index reaches one, it was
// current as of that time. So a follower that is catching up (after a restart, a partition,
// by snapshot, or applying slowly) is not current however often it hears from its leader,
// and a caught-up one is current as of the leader's last append or quiesce heartbeat, once
// the leader has committed an entry of its term (until then a new leader's commit index may lag
// what its predecessor committed and acknowledged). Bounded
// stale reads rest on it (SinceCurrent). A leader cut off from the rest of its group still
// takes itself for the leader until CheckQuorum makes it step down, and its followers for
// their leader: up to two election timeouts in an awake group. A quiesced leader learns of a
// cut only when its next quiesce heartbeat goes unanswered, and steps down up to a refresh and
// a half and an election timeout after the cut, or two election timeouts after a write woke
// it (2 s and 2.5 s at the defaults). It claims meanwhile to be current only as of the last
// quiesce heartbeat a quorum answered (leadSure), but its followers in the same minority are
// current as of its messages until it steps down.

// monoEpoch anchors monoStamp: stamps are offsets on the monotonic clock, unaffected by the
// wall clock being set.
var monoEpoch = time.Now()

// monoStamp returns t as a stamp for Group.contact and Group.current (never 0).
func monoStamp(t time.Time) int64 { return int64(t.Sub(monoEpoch)) + 1 }

// sinceStamp returns the time elapsed since stamp, and false for 0 (never).
func sinceStamp(stamp int64) (time.Duration, bool) {
	if stamp == 0 {
		return 0, false
	}
	return time.Since(monoEpoch) - time.Duration(stamp-1), true
}

// freshMark is a commit index a leader's message carried, the leader's term, and when it was
// stepped.
type freshMark struct {
	commit, term uint64
	at           time.Time
}

// maxFreshMarks bounds Group.marks; the oldest go first, which only makes a replica current
// later than it was.
const maxFreshMarks = 64

// SinceCurrent returns how long ago this replica was last current: when it had applied
// everything its group's leader had committed as of a message it stepped from it; false if it
// has not been since it was opened. The leader's own replica is current (0, true) while its
// loop runs; a loop that has not run for longer than leaderLoopLag (stuck on a disk, say) may
// have missed its deposition meanwhile, and the leader is current as of its last iteration.
// A quiesced leader is current as of when it sent the last quiesce heartbeat a quorum of its
// voters answered, and stays so once woken until a quorum answers it (leadSure): it runs no
// CheckQuorum while quiesced, and the first it runs once woken passes on the activity marks
// of the moment it quiesced.
// A follower's data then misses at most what was acknowledged since, plus (when the leader was
// cut off from the rest of its group without knowing it yet) what a new leader acknowledged
// before the old one stepped down (see above).
func (g *Group) SinceCurrent() (time.Duration, bool) {
	if g.isLeader.Load() {
		return g.sinceSure()
	}
	return sinceStamp(g.current.Load())
}

// SinceContact returns how long ago this replica last stepped a message from its group's
// leader (in the leader's term), and false if it has not since it was opened; the leader's
// own replica as SinceCurrent.
func (g *Group) SinceContact() (time.Duration, bool) {
	if g.isLeader.Load() {
		return g.sinceSure()
	}
	return sinceStamp(g.contact.Load())
}

// sinceSure is a leader's SinceCurrent: the time since its loop last iterated (sinceIterated)
// or, if longer, since it last knew itself the leader (leadSure).
func (g *Group) sinceSure() (time.Duration, bool) {
	since, ok := g.h.sinceIterated()
	if sure, set := sinceStamp(g.leadSure.Load()); set {
		since = max(since, sure)
	}
	return since, ok
}

// leaderLoopLag is how long a leader's loop may go without an iteration and its replica still
// count as current (0): the loop iterates at least once a tick.
func (h *Host) leaderLoopLag() time.Duration { return 2 * h.cfg.TickInterval }

// sinceIterated is a leader's SinceCurrent: 0 while its loop runs, else the time since the
// loop last started an iteration.
func (h *Host) sinceIterated() (time.Duration, bool) {
	since, ok := sinceStamp(h.iterated.Load())
	if !ok || since <= h.leaderLoopLag() {
		return 0, true // !ok: the loop has not run yet; isLeader is set only by it
	}
	return since, true
}

// heardFrom records m, a message only a leader sends (fromLeader), which arrived at now and was
// just stepped at stepped: in leaderContact, whatever its term, as of its stepping (this replica
// answered it then: RetireGroupIfQuiet); and when it came from the group's leader in its term,
// in contact and, for an append or a quiesce heartbeat, as a mark of the commit index it
// carries, both as of its arrival less the time it waited on the leader before it was sent
// (ShardMessage.Waited): a message that waited in a queue, the leader's to this peer or this
// loop's (busy, or holding appends while fsyncs are in flight), says what the leader knew as of
// then at the latest. Only its time on the wire counts as current.
// Loop goroutine.
func (g *Group) heardFrom(m *pb.Message, now, stepped time.Time) {
	g.leaderContact = stepped
	bs := g.rn.BasicStatus()
	if m.GetTerm() != bs.HardState.GetTerm() || m.GetFrom() != bs.Lead {
		return // a deposed leader's late message says nothing of the current one
	}
	g.suspectCampaign, g.suspectHold = 0, 0 // the leader is heard: the suspicion is moot
	if stamp := monoStamp(now); stamp > g.contact.Load() {
		g.contact.Store(stamp) // a message held in the queue may be stepped after a later one
	}
	switch m.GetType() {
	case pb.MsgApp:
		g.noteTruncation(m)
	case pb.MsgHeartbeat:
		if !bytes.Equal(m.Context, quiesceCtx) {
			return
		}
	default:
		return
	}
	commit := m.GetCommit()
	at := now
	if m.GetType() == pb.MsgApp && len(m.GetEntries()) == 0 {
		// An append that only moves the commit index may have waited up to a tick on the
		// leader (Group.holdCommitOnly) after it took that index: count it as of then.
		if at = now.Add(-g.h.cfg.TickInterval); at.Before(monoEpoch) {
			at = monoEpoch
		}
	}
	switch last := len(g.marks) - 1; {
	case last >= 0 && g.marks[last].commit == commit && g.marks[last].term == m.GetTerm():
		if at.After(g.marks[last].at) {
			g.marks[last].at = at // current as of the later message once it is applied
		}
	case last >= 0 && g.marks[last].commit > commit:
		// Commit indexes do not go back; an older message says nothing new.
	default:
		if len(g.marks) == maxFreshMarks {
			g.marks = append(g.marks[:0], g.marks[1:]...)
		}
		g.marks = append(g.marks, freshMark{commit: commit, term: m.GetTerm(), at: at})
	}
	g.caughtUp()
}

// caughtUp records as current the time of the latest mark the applied index reached, and
// drops the marks reached. A mark counts only if its commit index holds an entry of its
// leader's term: a new leader learns what its predecessor committed (and acknowledged) only
// once it commits an entry of its own term, and before that the commit index it sends may lag
// it. Loop goroutine: after stepping a leader's message and after applying.
func (g *Group) caughtUp() {
	i, reached := 0, -1
	for i < len(g.marks) && g.marks[i].commit <= g.st.applied {
		if mk := g.marks[i]; mk.term == g.ownTermCommit {
			reached = i
		} else if t, err := g.st.Term(mk.commit); err == nil && t == mk.term {
			g.ownTermCommit, reached = mk.term, i // and the later marks of that term
		}
		i++
	}
	if i == 0 {
		return
	}
	// A later mark may carry an earlier time (an append with only a commit index counts as of
	// a tick before it arrived): current never goes back.
	if reached >= 0 {
		if at := monoStamp(g.marks[reached].at); at > g.current.Load() {
			g.current.Store(at)
		}
	}
	g.marks = append(g.marks[:0], g.marks[i:]...)
}

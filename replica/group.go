package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"
)

// promoteMaxLag is how far (in entries) a learner's match index may trail the leader's commit
// index for PromoteLearner to accept it.
const promoteMaxLag = 1000

// headerLen is the proposal header in front of every proposed entry's data (and in the
// Context of conf changes): proposer node ID (8 BE) | proposal ID (8 BE).
const headerLen = 16

// Progress is the leader's view of one replica.
type Progress struct {
	Match, Next  uint64
	RecentActive bool
	Learner      bool
	Snapshotting bool
}

// Status is a snapshot of a group's raft state.
type Status struct {
	Shard                             uint32
	ID, Leader, Term, Commit, Applied uint64
	Voters, Learners                  []uint64
	Progress                          map[uint64]Progress // only on the leader
	Removed                           bool                // this replica was removed from the group
	// LeaderContact is when this replica last heard from a leader (an append, a heartbeat, a
	// snapshot), or was opened if it has not since. Zero when the status could not be read.
	LeaderContact time.Time
	// Quiesced: the group is idle and does not tick (doc.go, "Quiescence").
	Quiesced bool
}

// Group is one shard's raft group on this host. Its methods are safe for concurrent use; all
// raft work happens on the host's loop goroutine.
type Group struct {
	h     *Host
	shard uint32
	sm    StateMachine

	leader   atomic.Uint64 // known leader, 0 = unknown
	isLeader atomic.Bool
	removed  atomic.Bool
	// voter: this replica is a voter of its group's configuration as last applied (or
	// bootstrapped); a learner, a replica awaiting its first snapshot and a removed one are not.
	voter atomic.Bool
	// voters: the voters of that configuration, both halves of a joint one (Voters).
	voters atomic.Pointer[[]uint64]
	// leaderless: monotonic stamp (monoStamp) of when this replica last lost sight of a leader
	// (it was opened, or raft forgot the leader); 0 while it knows one.
	leaderless atomic.Int64
	// contact and current: monotonic stamps (monoStamp) of the last message stepped from the
	// group's leader in its term, and of the last such message whose commit index this replica
	// had applied (freshness.go); 0: none since the replica was opened.
	contact atomic.Int64
	current atomic.Int64
	// leadSure: for a leader whose group quiesced in its term, a monotonic stamp (monoStamp)
	// of when it last knew itself the leader (noteAnswer), kept from its quiescing until
	// a quorum of its voters has answered it after it woke; 0 otherwise, raft's CheckQuorum
	// vouching for an awake leader (freshness.go).
	leadSure atomic.Int64

	// Loop goroutine only.
	rn             *raft.RawNode
	st             *storage
	state          raft.StateType
	term           uint64 // term in which this node became leader
	readFloor      uint64 // the log's last index when this node began leading in term (settleReads)
	seenTerm       uint64 // the highest term observed (logging of term changes)
	lostLeadership bool   // set by observe, handled after the iteration's apply
	ownTermCommit  uint64 // a term whose leader's commit index held an entry of it (caughtUp)
	// campaignPending: a group bootstrapped with this node as its only voter
	// campaigns once its bootstrap configuration is applied (raft refuses to
	// campaign while configuration changes are pending).
	campaignPending bool
	waiters         map[uint64]*waiter
	reads           []*readReq
	confPending     uint64 // proposal ID of the unapplied conf change proposed here
	guarded         uint64 // proposal ID of the unapplied ProposeGuarded entry proposed here
	confBarrier     uint64 // conf changes wait until applied >= this (raft's pendingConfIndex)
	transfers       []*transferReq
	logLostLogged   time.Time // when this group last logged a lost log (loglost.go)
	// installing: a snapshot's tables are being ingested into the group's span, off the loop
	// (ReceiveSnapshot); processReady passes the group by until they are in.
	installing bool
	// heldCommit: per follower, the last empty MsgApp held back by holdCommitOnly.
	heldCommit map[uint64]*pb.Message
	// truncCtx: a leader's announced log truncation point (truncAnnounced), encoded for its
	// appends' Context; leaderTrunc: the last one this follower stepped from its leader, in
	// term leaderTruncTerm (logtrim.go).
	truncCtx        []byte
	truncAnnounced  uint64
	leaderTrunc     uint64
	leaderTruncTerm uint64
	// snapIn: per follower, the index of the snapshot this leader sent it that the transport
	// reported in and the follower has not answered yet (noteSnapshotIn, logtrim.go).
	snapIn map[uint64]uint64
	// dropPreVotes: leaderDown's last tick started a campaign that this node must not
	// run; the pre-vote requests of its next Ready are dropped (see leaderDown).
	dropPreVotes bool
	// suspectCampaign: ticks until this node, the first remaining voter of a group that lapsed
	// on a suspicion (SuspectLeader), campaigns; suspected is the leader it suspected, in
	// term suspectTerm. Cleared when the group quiesces again or hears from a leader.
	suspectCampaign int
	suspected       uint64
	suspectTerm     uint64
	// suspectHold: ticks during which this node, a voter that lapsed on a suspicion but is not
	// the first remaining one, drops its own pre-vote requests, so that its timer does not
	// race the first voter's campaign and split the vote.
	suspectHold int
	// leaderContact: when this replica last stepped a message only a leader sends (an append,
	// a heartbeat, a snapshot, a timeout-now), or when it was opened.
	leaderContact time.Time
	// marks: the commit indexes of the leader's recent messages, not yet applied (freshness.go).
	marks []freshMark
	// retired: RetireGroupIfQuiet took this replica out of its group; from then on it steps
	// no message (peers' or its storage's), does not tick, handles no Ready and sends nothing,
	// until DropGroup deletes it. A retired replica is also removed, and stays so (the reports
	// that skip removed replicas skip it too). Set on the loop goroutine; read by the syncer.
	retired atomic.Bool
	// failer is sm as an ApplyFailer, or nil (asserted once, when the group is opened).
	failer ApplyFailer
	// stirred: the group is in its host's stirred list (stir). Loop goroutine only.
	stirred bool
	// Quiescence (quiesce.go). Loop goroutine only.
	quiesced     bool     // raft is not ticked
	idleTicks    int      // ticks since the group was woken or last appended or applied an entry
	quiesceTicks int      // ticks since it quiesced, or (a follower) since the last quiesce heartbeat
	quiesceAcks  []uint64 // followers that answered the last quiesce heartbeat (a quiesced leader), or since it woke
	awakeTicks   int      // ticks since it last left quiescence, counted up to ElectionTicks+1 (justWoke)
	stayAwake    int      // ticks the group may not quiesce for (a removal refused by justWoke waits for them)
	// quiesceSent: when a quiesced leader last sent its quiesce heartbeat.
	quiesceSent time.Time
}

// stir records that the group's raft was stepped, ticked or asked something, so that the
// next processReady asks it for a Ready. Every call into g.rn that can produce one is followed
// by a stir. The tick stirs every awake group, so one forgotten would delay an awake group by
// a tick; a quiesced group is not ticked, and would wait for its next message. Loop goroutine.
func (g *Group) stir() {
	if !g.stirred {
		g.stirred = true
		g.h.stirred = append(g.h.stirred, g)
	}
}

type result struct {
	v   any
	err error
}

type waiter struct{ ch chan result }

func newWaiter() *waiter { return &waiter{ch: make(chan result, 1)} }

func (w *waiter) finish(v any, err error) {
	select {
	case w.ch <- result{v, err}:
	default:
	}
}

func (w *waiter) wait(ctx context.Context, done <-chan struct{}) (any, error) {
	select {
	case r := <-w.ch:
		return r.v, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-done:
		select {
		case r := <-w.ch:
			return r.v, r.err
		default:
			return nil, ErrStopped
		}
	}
}

type proposal struct {
	g    *Group
	ctx  context.Context // the caller's: a proposal it gave up on is not stepped
	id   uint64
	data []byte
	w    *waiter
}

type readReq struct {
	rctx  []byte
	index uint64 // 0 until the ReadState arrived
	w     *waiter
}

type transferReq struct {
	to uint64
	w  *waiter
}

// Shard returns the group's shard.
func (g *Group) Shard() uint32 { return g.shard }

// IsLeader reports whether this replica led the group at the end of the last loop iteration.
func (g *Group) IsLeader() bool { return g.isLeader.Load() }

// Removed reports whether this replica has applied its removal from the group (it stays on
// its node until placement deletes it).
func (g *Group) Removed() bool { return g.removed.Load() }

// Voter reports whether this replica votes in its group, by the configuration it last applied;
// false once it is removed or retired (Removed).
// A replica that does not (a learner, one awaiting its first snapshot) never campaigns, so it
// keeps naming the leader it last heard from after that leader is gone with the group's
// quorum: its Leader says nothing of whether the shard is led.
func (g *Group) Voter() bool { return g.voter.Load() }

// Leader returns the known leader's ID (0 = unknown).
func (g *Group) Leader() uint64 { return g.leader.Load() }

// Leaderless returns how long this replica has known no leader of its group (since it was
// opened, or since raft last forgot the leader), and false while it knows one. A follower forgets
// its leader when its election timeout expires and it campaigns, a leader when CheckQuorum
// makes it step down. A quiesced follower keeps its leader until it lapses (doc.go,
// "Quiescence"), and a learner, which never campaigns, until another leader reaches it.
func (g *Group) Leaderless() (time.Duration, bool) {
	return sinceStamp(g.leaderless.Load())
}

func (g *Group) notLeader() error {
	return &NotLeaderError{Shard: g.shard, Leader: g.leader.Load(), Refused: true}
}

func (g *Group) header(id uint64) []byte {
	b := make([]byte, headerLen, headerLen+64)
	binary.BigEndian.PutUint64(b, g.h.cfg.NodeID)
	binary.BigEndian.PutUint64(b[8:], id)
	return b
}

// Propose replicates data and returns StateMachine.Apply's result once the entry is applied
// locally, after a quorum of voters fsynced it. A non-leader returns *NotLeaderError (Refused)
// without proposing; every error of a proposal refused before raft saw it matches ErrRefused.
// If ctx ends first, Propose returns ctx.Err() but the entry may still commit and apply; if
// leadership is lost, the host closed or the replica removed while waiting, the outcome is
// likewise unknown (*NotLeaderError not Refused, ErrStopped, ErrGroupRemoved, not ErrRefused).
// The leadership the caller read before the call (IsLeader) does not tell: it may have been
// gained since.
func (g *Group) Propose(ctx context.Context, data []byte) (any, error) {
	if g.removed.Load() {
		return nil, refused(ErrGroupRemoved)
	}
	if !g.isLeader.Load() {
		g.h.metrics.ProposalErrors.Inc()
		return nil, g.notLeader()
	}
	p := &proposal{g: g, ctx: ctx, id: g.h.nextID.Add(1), data: data, w: newWaiter()}
	h := g.h
	h.mu.Lock()
	if h.mu.closed {
		h.mu.Unlock()
		return nil, refused(ErrStopped)
	}
	if n, b := len(h.mu.props), h.mu.propBytes; n >= h.cfg.MaxQueuedProposals || n > 0 && b+len(data) > h.cfg.MaxQueuedProposalBytes {
		h.mu.Unlock()
		g.h.metrics.ProposalErrors.Inc()
		return nil, refused(fmt.Errorf("%w: %d proposals of %d bytes wait for the loop (limits %d proposals, %d bytes)",
			ErrBusy, n, b, h.cfg.MaxQueuedProposals, h.cfg.MaxQueuedProposalBytes))
	}
	h.mu.props = append(h.mu.props, p)
	h.mu.propBytes += len(data)
	h.mu.Unlock()
	h.notify()
	v, err := p.w.wait(ctx, h.done)
	if err != nil {
		h.metrics.ProposalErrors.Inc()
	}
	return v, err
}

// ReadIndex is a linearizable read barrier: it returns once this replica (which must be the
// leader) confirmed its leadership with a quorum and applied everything committed before the
// call. Reads of the state machine after it see every write acknowledged before it.
func (g *Group) ReadIndex(ctx context.Context) error {
	w := newWaiter()
	err := g.h.call(ctx, func() error {
		if err := g.check(); err != nil {
			return err
		}
		g.startRead(w)
		return nil
	})
	if err != nil {
		return err
	}
	_, err = w.wait(ctx, g.h.done)
	return err
}

// startRead asks raft for a read index; settleReads finishes w once it is applied. Loop
// goroutine.
func (g *Group) startRead(w *waiter) {
	r := &readReq{rctx: g.header(g.h.nextID.Add(1)), w: w}
	g.reads = append(g.reads, r)
	g.wake()
	g.rn.ReadIndex(r.rctx)
	g.stir()
}

// leaderDown tells this follower that its leader, id, is gone: it wakes the group, advances
// the election clock past the leader lease (so that it grants votes), and, if campaign is
// set and it is the first remaining voter, campaigns at once; the others elect it within a
// round trip. If its log is behind they refuse, and their own clocks, already past the
// lease, elect another. Loop goroutine.
//
// The ticks can start a campaign by themselves: raft's randomized election timeout is
// ElectionTicks to twice that, and a follower that just heard from its leader (a quiesce
// heartbeat) reaches ElectionTicks on the last tick. A node that is not to campaign (not
// the first remaining voter, or lapsing for another's vote request) would then contest the
// first voter's campaign, and two pre-candidates that grant each other's pre-votes split the
// vote. So its pre-vote requests are dropped, as a lossy network might: it stays a
// pre-candidate without votes, grants the others' requests, and follows the winner.
func (g *Group) leaderDown(id uint64, campaign bool) {
	g.wake()
	for range g.h.cfg.ElectionTicks {
		g.rn.Tick()
	}
	first := campaign && g.firstVoterWithout(id) == g.h.cfg.NodeID
	switch st := g.rn.BasicStatus().RaftState; {
	case first && st == raft.StateFollower:
		_ = g.rn.Campaign()
	case !first && st == raft.StatePreCandidate:
		g.dropPreVotes = true
	}
	g.stir()
}

// firstVoterWithout returns the lowest voter ID other than id, or 0 when there is none or the
// configuration is joint. Loop goroutine.
func (g *Group) firstVoterWithout(id uint64) uint64 {
	cs := g.st.cs
	if cs == nil || len(cs.VotersOutgoing) > 0 {
		return 0
	}
	var first uint64
	for _, v := range cs.Voters {
		if v != id && (first == 0 || v < first) {
			first = v
		}
	}
	return first
}

// check returns the error for calls that need the leader. Loop goroutine.
func (g *Group) check() error {
	if g.removed.Load() {
		return ErrGroupRemoved
	}
	// raft's own state too: a message stepped earlier in this iteration (a later term's)
	// may have ended the leadership before observe records it; a conf change proposed then
	// would be forwarded to the new leader unvetted.
	if g.state != raft.StateLeader {
		return g.notLeader()
	}
	if bs := g.rn.BasicStatus(); bs.RaftState != raft.StateLeader {
		return &NotLeaderError{Shard: g.shard, Leader: bs.Lead, Refused: true}
	}
	return nil
}

// Status returns the group's raft state.
func (g *Group) Status() Status {
	var s Status
	if err := g.h.call(context.Background(), func() error { s = g.status(); return nil }); err != nil {
		return Status{Shard: g.shard, ID: g.h.cfg.NodeID, Leader: g.leader.Load(), Removed: g.removed.Load()}
	}
	return s
}

// status is Status. Loop goroutine.
func (g *Group) status() Status {
	rs := g.rn.Status()
	s := Status{Shard: g.shard, ID: rs.ID, Leader: rs.Lead, Term: rs.HardState.GetTerm(),
		Commit: rs.HardState.GetCommit(), Applied: g.st.applied, Removed: g.removed.Load(),
		LeaderContact: g.leaderContact, Quiesced: g.quiesced}
	s.Voters = rs.Config.Voters[0].Slice()
	for id := range rs.Config.Learners {
		s.Learners = append(s.Learners, id)
	}
	slices.Sort(s.Learners)
	if len(rs.Progress) > 0 {
		s.Progress = make(map[uint64]Progress, len(rs.Progress))
		for id, pr := range rs.Progress {
			s.Progress[id] = Progress{Match: pr.Match, Next: pr.Next, RecentActive: pr.RecentActive,
				Learner: pr.IsLearner, Snapshotting: pr.State == tracker.StateSnapshot}
		}
	}
	return s
}

// AddLearner adds id as a non-voting learner; it catches up by log or snapshot.
func (g *Group) AddLearner(ctx context.Context, id uint64) error {
	return g.confChange(ctx, pb.ConfChangeAddLearnerNode, id, nil)
}

// Guard decides, on the host's loop just before a guarded change is proposed, whether it may
// be: the leader has then applied every entry of earlier leaderships, and no configuration
// change or guarded proposal of its own is pending (else the change fails with ErrUnsettled
// without calling the guard). So members (the voters and learners) is the configuration the
// change follows in the log, and the state machine has applied every guarded entry before it.
// A non-nil error refuses the change and is returned. A guard must not block.
type Guard func(members []uint64) error

// AddLearnerGuarded is AddLearner, made only if guard allows it (see Guard): for a learner
// that may join only while the state machine is in some state, checked atomically with the
// proposal.
func (g *Group) AddLearnerGuarded(ctx context.Context, id uint64, guard Guard) error {
	return g.confChange(ctx, pb.ConfChangeAddLearnerNode, id, guard)
}

// ProposeGuarded is Propose, made only if guard allows it (see Guard): for an entry that may
// be proposed only while the configuration is what the guard checks. Until the entry is
// applied, or this replica's leadership ends, further guarded changes fail with ErrUnsettled.
func (g *Group) ProposeGuarded(ctx context.Context, data []byte, guard Guard) (any, error) {
	p := &proposal{g: g, ctx: ctx, id: g.h.nextID.Add(1), data: data, w: newWaiter()}
	err := g.h.call(ctx, func() error {
		if err := g.check(); err != nil {
			return err
		}
		members, err := g.settledMembers()
		if err != nil {
			return err
		}
		if err := guard(members); err != nil {
			return err
		}
		if err := g.step([]*proposal{p}); err != nil {
			return err
		}
		g.guarded = p.id
		return nil
	})
	if err != nil {
		return nil, err // refused before it was proposed: not a proposal error
	}
	v, err := p.w.wait(ctx, g.h.done)
	if err != nil {
		g.h.metrics.ProposalErrors.Inc()
	}
	return v, err
}

// settledMembers returns the group's voters and learners if nothing a guard must see is
// pending (see Guard), else ErrUnsettled. Loop goroutine, leader only.
func (g *Group) settledMembers() ([]uint64, error) {
	if g.confPending != 0 || g.guarded != 0 || g.st.applied < g.confBarrier {
		return nil, fmt.Errorf("%w: shard %d (applied %d, barrier %d)", ErrUnsettled, g.shard, g.st.applied, g.confBarrier)
	}
	cfg := g.rn.Status().Config
	members := cfg.Voters[0].Slice()
	for id := range cfg.Learners {
		members = append(members, id)
	}
	slices.Sort(members)
	return members, nil
}

// PromoteLearner turns a caught-up learner into a voter.
func (g *Group) PromoteLearner(ctx context.Context, id uint64) error {
	return g.confChange(ctx, pb.ConfChangeAddNode, id, nil)
}

// RemoveMember removes a voter or learner. The leader cannot remove itself (transfer
// leadership first), the last voter cannot be removed, and neither can a voter whose removal
// would leave fewer recently active voters than a quorum of the remaining configuration.
func (g *Group) RemoveMember(ctx context.Context, id uint64) error {
	return g.confChange(ctx, pb.ConfChangeRemoveNode, id, nil)
}

func (g *Group) confChange(ctx context.Context, typ pb.ConfChangeType, id uint64, guard Guard) error {
	if id == 0 {
		return &ConfChangeError{Shard: g.shard, Node: id, Reason: "node ID 0"}
	}
	w := newWaiter()
	err := g.h.call(ctx, func() error {
		if err := g.check(); err != nil {
			return err
		}
		// Before vetConfChange, which refuses a removal just after a wake (Group.wake).
		g.wake()
		if g.confPending != 0 || g.st.applied < g.confBarrier {
			return fmt.Errorf("%w: shard %d", ErrConfChangePending, g.shard)
		}
		if guard != nil {
			members, err := g.settledMembers()
			if err != nil {
				return err
			}
			if err := guard(members); err != nil {
				return err
			}
		}
		if err := g.vetConfChange(typ, id); err != nil {
			return err
		}
		pid := g.h.nextID.Add(1)
		cc := &pb.ConfChangeV2{Changes: []*pb.ConfChangeSingle{{Type: typ.Enum(), NodeId: new(id)}},
			Context: g.header(pid)}
		err := g.rn.ProposeConfChange(cc)
		g.stir()
		if err != nil {
			if errors.Is(err, raft.ErrProposalDropped) {
				return ErrProposalDropped
			}
			return err
		}
		g.confPending = pid
		g.waiters[pid] = w
		return nil
	})
	if err != nil {
		return err
	}
	_, err = w.wait(ctx, g.h.done)
	return err
}

// removalRetryWindow is how long a group stays awake after a voter removal or a promotion was refused
// because it had just left quiescence (vetConfChange): a retry within it is vetted on renewed
// activity marks.
const removalRetryWindow = 5 * time.Second

// vetConfChange refuses unsafe or pointless changes. Loop goroutine, leader only.
func (g *Group) vetConfChange(typ pb.ConfChangeType, id uint64) error {
	rs := g.rn.Status()
	voters := rs.Config.Voters[0].Slice()
	_, isLearner := rs.Config.Learners[id]
	isVoter := slices.Contains(voters, id)
	refuse := func(reason string) error { return &ConfChangeError{Shard: g.shard, Node: id, Reason: reason} }
	switch typ {
	case pb.ConfChangeAddLearnerNode:
		if isVoter {
			return refuse("already a voter")
		}
		if isLearner {
			return nil // idempotent
		}
	case pb.ConfChangeAddNode:
		if isVoter {
			return nil
		}
		if !isLearner {
			return refuse("not a learner; add it as a learner first")
		}
		pr := rs.Progress[id]
		// raft marks a member active when it is added, before it ever answered: a learner
		// on a node that is down, promoted at once, would be a voter the quorum must count.
		// Replicate state says it acknowledged an append of this leader.
		if pr.State != tracker.StateReplicate || pr.Match == 0 {
			return refuse(fmt.Sprintf("learner has not caught up with this leader yet (%s, match %d)", pr.State, pr.Match))
		}
		if pr.Match+promoteMaxLag < rs.HardState.GetCommit() {
			return refuse(fmt.Sprintf("learner is behind (match %d, commit %d)", pr.Match, rs.HardState.GetCommit()))
		}
		// A learner that went down while the group was quiesced still counts as active until
		// the leader's first CheckQuorum after waking; promoted then, it would be a dead voter
		// that the shard's quorum must count.
		if g.justWoke() {
			return g.refuseJustWoke(refuse)
		}
		if !rs.Progress[id].RecentActive {
			return refuse("learner is not active")
		}
	case pb.ConfChangeRemoveNode:
		if id == g.h.cfg.NodeID {
			return refuse("the leader cannot remove itself; transfer leadership first")
		}
		if isLearner || !isVoter {
			return nil
		}
		remaining := len(voters) - 1
		if remaining < 1 {
			return refuse("would leave no voter")
		}
		if g.justWoke() {
			return g.refuseJustWoke(refuse)
		}
		active := 0
		for _, v := range voters {
			if v != id && (v == g.h.cfg.NodeID || rs.Progress[v].RecentActive) {
				active++
			}
		}
		if active < remaining/2+1 {
			return refuse(fmt.Sprintf("only %d of the %d remaining voters are active", active, remaining))
		}
	}
	return nil
}

// refuseJustWoke refuses a membership change that must know which members are active while
// raft's activity marks may still predate the group's quiescence (wake). It keeps the group
// awake long enough for a retry to find the marks renewed: an idle group would otherwise
// quiesce again as justWoke ends (mayQuiesce), and every retry would wake it anew and be
// refused again. At least three election timeouts and removalRetryWindow, so that a caller
// retrying every few seconds (node's placement loop: every second) lands while the group is
// awake. Loop goroutine.
func (g *Group) refuseJustWoke(refuse func(string) error) error {
	g.stayAwake = max(3*g.h.cfg.ElectionTicks, int(removalRetryWindow/g.h.cfg.TickInterval))
	err := refuse("the leader has just left quiescence and does not know yet which members are active; retry after an election timeout")
	err.(*ConfChangeError).Later = true
	return err
}

// TransferLeadership hands leadership to voter to and waits until it leads. It returns nil once
// this node sees to lead, a *NotLeaderError when another member took the leadership or this
// node was not the leader, and an error when raft gave the transfer up.
func (g *Group) TransferLeadership(ctx context.Context, to uint64) error {
	w := newWaiter()
	err := g.h.call(ctx, func() error {
		if err := g.check(); err != nil {
			return err
		}
		if to == g.h.cfg.NodeID {
			w.finish(nil, nil)
			return nil
		}
		g.wake()
		g.rn.TransferLeader(to)
		g.stir()
		g.transfers = append(g.transfers, &transferReq{to: to, w: w})
		return nil
	})
	if err != nil {
		return err
	}
	_, err = w.wait(ctx, g.h.done)
	return err
}

// holdCommitOnly decides whether the leader's message m is held back rather than sent now. It
// holds an empty MsgApp to a follower in replicate state: such a message only tells the
// follower a new commit index, which raft broadcasts every time its commit index moves (about
// half of all appends under load, each costing a send, a Ready and an answer on the follower
// and a step here). The next MsgApp to that follower, which carries the entries and the
// commit index of its time, supersedes it; without one, it is sent on the next tick
// (flushHeld), like the commit index raft puts in every heartbeat. A follower thus applies
// entries at most one tick after it could have; proposers are answered by the leader's own
// apply, so no append waits for this. Any other MsgApp or a snapshot to the follower drops
// the held message. Loop goroutine.
func (g *Group) holdCommitOnly(m *pb.Message) bool {
	to := m.GetTo()
	switch m.GetType() {
	case pb.MsgApp:
		if len(m.Entries) == 0 && g.replicating(to) {
			if g.heldCommit == nil {
				g.heldCommit = make(map[uint64]*pb.Message, 2)
			}
			if _, ok := g.heldCommit[to]; ok {
				g.h.metrics.commitOnlySuperseded.Inc()
			}
			g.heldCommit[to] = m
			return true
		}
		fallthrough
	case pb.MsgSnap:
		if _, ok := g.heldCommit[to]; ok {
			delete(g.heldCommit, to)
			g.h.metrics.commitOnlySuperseded.Inc()
		}
	}
	return false
}

// replicating reports whether this leader replicates to the follower in raft's replicate
// state (not probing it, nor sending it a snapshot). An empty append in that state may also
// be raft asking a follower whose in-flight window is full what it lost; held, it goes out at
// the next tick, as no append with entries is sent to supersede it. (WithProgress hides the
// window, and Status copies it.) Loop goroutine.
func (g *Group) replicating(to uint64) bool {
	ok := false
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if id == to {
			ok = pr.State == tracker.StateReplicate
		}
	})
	return ok
}

// flushHeld appends the held messages to out and forgets them. Loop goroutine, on ticks and
// when the leadership is lost.
//
// They go out even when this replica no longer leads in their term: such a message is a late
// one, which raft handles as any message the network delayed (a follower still in that term
// takes the commit index, which stays committed; one in a later term refuses it). Dropping it
// instead can leave a follower without the only news of a commit: when the entry committed
// removes that follower from the group, raft stops sending to it, and a follower that never
// learns of its removal keeps its replica (placement deletes a replica once it sees itself
// removed) and goes on campaigning.
func (g *Group) flushHeld(out []ShardMessage) []ShardMessage {
	if len(g.heldCommit) == 0 {
		return out
	}
	for _, m := range g.heldCommit {
		out = append(out, ShardMessage{Shard: g.shard, Msg: m})
	}
	g.h.metrics.commitOnlySent.Add(float64(len(g.heldCommit)))
	clear(g.heldCommit)
	return out
}

// markRemoved marks the replica removed from its group: every waiter fails with
// ErrGroupRemoved and it no longer counts as a leader or a voter (a retired one's last
// applied configuration may still name it a voter). Loop goroutine.
func (g *Group) markRemoved() {
	g.removed.Store(true)
	g.voter.Store(false)
	g.wake() // out of the quiesced count
	g.failAll(ErrGroupRemoved)
	if g.isLeader.Swap(false) {
		g.h.metrics.Leaders.Dec()
	}
}

// failAll fails every waiter of the group. Loop goroutine.
func (g *Group) failAll(err error) {
	g.failProposals(err)
	for _, t := range g.transfers {
		t.w.finish(nil, err)
	}
	g.transfers = nil
}

// failProposals fails the waiters of proposals, conf changes and reads, and leaves the
// leadership transfers: a leader loses its leadership before it learns who took it, so a
// transfer is settled once a leader is known (see observe). Loop goroutine.
func (g *Group) failProposals(err error) {
	for id, w := range g.waiters {
		w.finish(nil, err)
		delete(g.waiters, id)
	}
	for _, r := range g.reads {
		r.w.finish(nil, err)
	}
	g.reads = nil
	g.confPending, g.guarded = 0, 0
}

// decodeConfChange parses a conf change entry.
func decodeConfChange(e *pb.Entry) (pb.ConfChangeI, []byte, error) {
	switch e.GetType() {
	case pb.EntryConfChange:
		var cc pb.ConfChange
		if err := proto.Unmarshal(e.Data, &cc); err != nil {
			return nil, nil, err
		}
		return &cc, cc.Context, nil
	default:
		var cc pb.ConfChangeV2
		if err := proto.Unmarshal(e.Data, &cc); err != nil {
			return nil, nil, err
		}
		return &cc, cc.Context, nil
	}
}

// heartbeatPastLog reports whether m is a heartbeat whose commit index lies beyond this
// replica's log. A leader tells a follower the commit index only up to what the follower
// acknowledged holding, and a follower acknowledges entries only once they are synced, so
// such a heartbeat was meant for an earlier replica of this node (one deleted after its
// removal from the group, whose successor was created, empty, by an append of a leader that
// has not learned of the removal: a leader paused since before it, deposed meanwhile), or
// this node's disk lost writes it had synced. raft would take the commit index for a lost log
// and panic; the heartbeat is dropped instead, and answered (answerLogLost). A heartbeat of an
// earlier term than the replica's is left to raft, which answers it (telling that leader of
// the later term) without reading its commit index.
func (g *Group) heartbeatPastLog(m *pb.Message) bool {
	if m.GetType() != pb.MsgHeartbeat {
		return false
	}
	if last, _ := g.st.LastIndex(); m.GetCommit() <= last {
		return false
	}
	st := g.rn.BasicStatus()
	return m.GetTerm() >= st.HardState.GetTerm()
}

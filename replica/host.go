package replica

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// StateMachine is one shard's deterministic state over its own keyspace (Span). The host calls
// every method except Span from its single loop goroutine, in log order.
type StateMachine interface {
	// Apply applies one committed entry's data at index into b (an indexed batch that may hold
	// earlier, not yet committed entries of this and other groups) and records index as applied
	// in b. The result is handed to the proposer.
	Apply(b *pebble.Batch, index uint64, data []byte) any
	// SetApplied records index as applied in b for entries without a command.
	SetApplied(b *pebble.Batch, index uint64)
	// Applied is the last applied index as of the last committed batch.
	Applied() uint64
	// Span is the state's keyspace [lo, hi); constant, callable from any goroutine.
	Span() (lo, hi []byte)
	// Reload re-reads caches after the span was replaced by a snapshot.
	Reload() error
	// Committed tells the state machine that the batch given to Apply/SetApplied committed.
	Committed()
}

// BatchStateMachine is optionally implemented by a StateMachine that writes its per-batch
// bookkeeping (e.g. its applied index) once per apply batch rather than once per entry. The host
// calls BeginBatch(b) before the group's first Apply/SetApplied into b and FinishBatch(b) after
// its last, before b commits; an error from FinishBatch is a storage failure.
type BatchStateMachine interface {
	StateMachine
	BeginBatch(b *pebble.Batch)
	FinishBatch(b *pebble.Batch) error
}

// ApplyFailer is optionally implemented by a StateMachine whose Apply can fail on storage (a
// Pebble read or write error). The host passes every Apply result to ApplyFailure: a non-nil
// error means the result is not a verdict for the proposer but a failure that may have left
// partial writes in the batch, and the host stops as it does on its own storage failures (it
// panics before the batch commits; a restart replays the log from what is durable). Without
// it, such an entry would count as applied on this replica only, and the replicas would diverge.
type ApplyFailer interface {
	ApplyFailure(result any) error
}

// ShardMessage is a raft message of one group. Msg is a pointer: raftpb messages are
// google.golang.org/protobuf messages and must not be copied by value.
type ShardMessage struct {
	Shard uint32
	Msg   *pb.Message
	// Waited is how long the message waited on its sender before it was sent (its
	// transport's queue to this peer, behind other messages), as the receiving transport
	// learned it; 0 when unknown.
	Waited time.Duration
	// arrived: when HandleMessages queued it, less Waited. A message that waits in the queue
	// (a busy loop, appends held while fsyncs are in flight), or waited on its sender, says
	// what its sender knew as of then at the latest, not as of its stepping (heardFrom).
	arrived time.Time
}

// Transport carries raft messages between hosts. Implemented by replica/transport.
type Transport interface {
	// Send never blocks; it drops messages when a peer's queue is full (raft retries).
	Send(msgs []ShardMessage)
	// SendSnapshot is asynchronous: it obtains the data via Host.WriteSnapshot on this node,
	// hands it to Host.ReceiveSnapshot on the peer and reports m's outcome via
	// Host.ReportSnapshot.
	SendSnapshot(m ShardMessage)
}

// syncQueueLen bounds the persisted batches whose fsync the syncer has yet to see; the loop
// blocks beyond it.
const syncQueueLen = 256

// maxSyncsInFlight is how many synced batches may await their fsync before the loop holds new
// proposals and appends back (see iterate).
const maxSyncsInFlight = 2

// Host drives every raft group of one node from a single event-loop goroutine. Its methods are
// safe for concurrent use.
//
// Lock order: Host.mu only; it is never held while calling into raft, Pebble, the Transport or
// a StateMachine.
type Host struct {
	cfg     Config
	db      *pebble.DB
	log     *slog.Logger
	metrics *Metrics
	nextID  atomic.Uint64 // proposal and read-index IDs, snapshot file names

	snaps          sync.WaitGroup // snapshot sends, install flushes and ingests using the DB; Close waits for them
	snapTableBytes uint64         // sstable size of received snapshots (snapTableBytes)
	snapBytes      atomic.Uint64  // bytes the snapshots being received hold (Config.MaxSnapshotBytes)
	snapTablesOpen atomic.Int64   // scratch tables being written by receives (snapshotRoom)
	// snapReserve guards the check and reservation of SnapshotFits, and snapReserved holds,
	// per MsgSnap about to be received, the size it reserved in snapBytes (ReceiveSnapshot
	// counts its records past that).
	snapReserve  sync.Mutex
	snapReserved map[*pb.Message]uint64

	syncQ    chan syncItem // persisted batches awaiting their fsync, in order (syncLoop)
	syncDone chan struct{} // closed when syncLoop exited
	// syncsInFlight counts persisted batches whose fsync syncLoop has not seen complete.
	syncsInFlight atomic.Int32
	// iterated: monotonic stamp (monoStamp) of the start of the loop's latest iteration. A
	// leader's claim to be current is as old as that (Group.SinceCurrent).
	iterated atomic.Int64

	// Scratch of the loop goroutine, reused from one iteration to the next.
	readyBuf []readyGroup
	propBuf  map[*Group][]*proposal
	// stirred lists the groups whose raft was stepped, ticked or asked something since the
	// last processReady (Group.stir): only they can have a Ready, so that an iteration woken by
	// one shard's message does not ask every group of the node. stirredSpare is the other
	// buffer, swapped in by processReady. Loop goroutine only.
	stirred, stirredSpare []*Group
	// installing holds the shards whose snapshot ReceiveSnapshot is ingesting, off the loop:
	// one at a time per shard. Loop goroutine only.
	installing map[uint32]bool
	// deletedAt caches the 'D' keys read by groupFor and written by DropGroup: the term at
	// which this node deleted its replica of a shard, 0 for none. Loop goroutine only.
	deletedAt map[uint32]uint64

	wake chan struct{} // cap 1: work was queued
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the loop exited

	mu struct {
		sync.Mutex
		groups  map[uint32]*Group // written only by the loop goroutine (under mu)
		factory func(shard uint32) (StateMachine, error)
		msgs    []ShardMessage
		// msgBytes is the entries' bytes of the appends in msgs, bounded by
		// Config.MaxQueuedMsgBytes.
		msgBytes int
		local    []groupMsg // storage responses for this node's own groups, never dropped
		props    []*proposal
		// propBytes is the data of props, bounded by Config.MaxQueuedProposalBytes.
		propBytes int
		reqs      []func()
		closed    bool
		// drops counts DropGroup's deletions per shard: a snapshot received across one is
		// not installed (ReceiveSnapshot).
		drops map[uint32]uint64
	}
}

// NewHost validates cfg and starts the host's loop.
func NewHost(cfg Config) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.FS.MkdirAll(cfg.SnapshotDir, 0o755); err != nil {
		return nil, fmt.Errorf("replica: creating snapshot directory %s: %w", cfg.SnapshotDir, err)
	}
	h := &Host{
		cfg: cfg, db: cfg.DB, log: cfg.Logger.With("node_id", cfg.NodeID),
		metrics: newMetrics(cfg.Registerer),
		wake:    make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		syncQ: make(chan syncItem, syncQueueLen), syncDone: make(chan struct{}),
		propBuf:        make(map[*Group][]*proposal),
		deletedAt:      make(map[uint32]uint64),
		installing:     make(map[uint32]bool),
		snapTableBytes: snapTableBytes,
		snapReserved:   make(map[*pb.Message]uint64),
	}
	h.mu.groups = make(map[uint32]*Group)
	h.mu.drops = make(map[uint32]uint64)
	// Proposal IDs start at random: IDs of this run must not be those of entries this node
	// proposed before a restart (ownWaiter would answer a new proposal with an old entry's
	// result), which a start count from the wall clock allowed after the clock stepped back.
	h.nextID.Store(rand.Uint64() >> 1)
	go h.syncLoop()
	go h.run()
	return h, nil
}

// Metrics returns the host's instruments.
func (h *Host) Metrics() *Metrics { return h.metrics }

// ElectionTimeout returns raft's election timeout, Config.ElectionTicks ticks of
// Config.TickInterval. raft draws each follower's actual timeout between one and two of it.
func (h *Host) ElectionTimeout() time.Duration {
	return time.Duration(h.cfg.ElectionTicks) * h.cfg.TickInterval
}

// Close stops the loop; pending proposals, reads and membership calls fail with ErrStopped.
// It waits for snapshot sends (WriteSnapshot, which abort promptly) and for the flushes and
// ingests of snapshot installs in flight. The DB stays open.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.mu.closed {
		h.mu.Unlock()
		<-h.done
		h.snaps.Wait() // the first Close's users; none is added once closed
		return nil
	}
	h.mu.closed = true
	h.mu.Unlock()
	close(h.stop)
	<-h.done
	h.snaps.Wait()
	return nil
}

func (h *Host) notify() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// do queues fn to run on the loop goroutine.
func (h *Host) do(fn func()) error {
	h.mu.Lock()
	if h.mu.closed {
		h.mu.Unlock()
		return ErrStopped
	}
	h.mu.reqs = append(h.mu.reqs, fn)
	h.mu.Unlock()
	h.notify()
	return nil
}

// call runs fn on the loop goroutine and waits for its result.
func (h *Host) call(ctx context.Context, fn func() error) error {
	ch := make(chan error, 1)
	if err := h.do(func() { ch <- fn() }); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-h.done:
		select {
		case err := <-ch:
			return err
		default:
			return ErrStopped
		}
	}
}

// OpenGroup opens the shard's group, creating it if new. bootstrap lists the initial voters of
// a brand-new group (e.g. []uint64{self} on the cluster's first node); nil for a replica being
// added by a leader. Groups with existing state ignore bootstrap.
func (h *Host) OpenGroup(shard uint32, sm StateMachine, bootstrap []uint64) (*Group, error) {
	var g *Group
	err := h.call(context.Background(), func() error {
		if _, ok := h.mu.groups[shard]; ok {
			return fmt.Errorf("%w: shard %d", ErrGroupExists, shard)
		}
		if h.installing[shard] {
			return errInstalling(shard)
		}
		var err error
		g, err = h.newGroup(shard, sm, bootstrap)
		return err
	})
	return g, err
}

// Group returns the shard's open group.
func (h *Host) Group(shard uint32) (*Group, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g, ok := h.mu.groups[shard]
	return g, ok
}

// Groups returns the open groups ordered by shard.
func (h *Host) Groups() []*Group {
	h.mu.Lock()
	gs := make([]*Group, 0, len(h.mu.groups))
	for _, g := range h.mu.groups {
		gs = append(gs, g)
	}
	h.mu.Unlock()
	slices.SortFunc(gs, func(a, b *Group) int { return int(a.shard) - int(b.shard) })
	return gs
}

// Statuses returns the Status of every group, by shard, in one call on the loop, waiting for it
// no longer than ctx allows (a loop stuck behind a stalled disk answers nothing).
func (h *Host) Statuses(ctx context.Context) ([]Status, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // nothing queued for a loop that may be stuck
	}
	var out []Status
	err := h.call(ctx, func() error {
		for _, g := range h.Groups() {
			out = append(out, g.status())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetGroupFactory lets HandleMessages and ReceiveSnapshot create groups for unknown shards as
// joining (non-bootstrapped) replicas. f runs on the loop goroutine and must not call back
// into the Host.
func (h *Host) SetGroupFactory(f func(shard uint32) (StateMachine, error)) {
	h.mu.Lock()
	h.mu.factory = f
	h.mu.Unlock()
}

// maxWaited bounds a message's ShardMessage.Waited as HandleMessages takes it.
const maxWaited = time.Minute

// HandleMessages queues messages received from peers for their groups. It never blocks; when
// the queue is full (MaxQueuedMsgs appends, twice that for other messages) the excess is
// dropped (raft retries) and counted, as are appends beyond MaxQueuedMsgBytes of entries.
// MsgSnap must arrive through
// ReceiveSnapshot and is dropped here.
func (h *Host) HandleMessages(msgs []ShardMessage) {
	h.mu.Lock()
	if h.mu.closed {
		h.mu.Unlock()
		return
	}
	now := time.Now()
	dropped := 0
	for _, m := range msgs {
		if m.Msg == nil || m.Msg.GetType() == pb.MsgSnap {
			continue
		}
		// Appends take at most MaxQueuedMsgs places: the loop holds them back while fsyncs are
		// behind (a slow disk), and they must not crowd out the heartbeats, votes and answers
		// that keep leaderships and elections going, which have twice that.
		// They also take at most MaxQueuedMsgBytes of entries, or one append of any size.
		n, app, size := len(h.mu.msgs), m.Msg.GetType() == pb.MsgApp, 0
		if app {
			size = entriesSize(m.Msg)
		}
		if n >= 2*h.cfg.MaxQueuedMsgs || app && (n >= h.cfg.MaxQueuedMsgs || size > 0 && h.mu.msgBytes > 0 && h.mu.msgBytes+size > h.cfg.MaxQueuedMsgBytes) {
			dropped++
			continue
		}
		m.arrived = now.Add(-min(max(m.Waited, 0), maxWaited))
		h.mu.msgs = append(h.mu.msgs, m)
		h.mu.msgBytes += size
	}
	h.mu.Unlock()
	if dropped > 0 {
		h.metrics.InboundDropped.Add(float64(dropped))
	}
	h.notify()
}

// entriesSize returns the bytes of m's entries.
func entriesSize(m *pb.Message) int {
	n := 0
	for _, e := range m.GetEntries() {
		n += len(e.GetData())
	}
	return n
}

// ReportUnreachable tells the shard's raft that a peer could not be reached.
func (h *Host) ReportUnreachable(shard uint32, to uint64) {
	_ = h.do(func() {
		if g := h.mu.groups[shard]; g != nil && !g.removed.Load() {
			if g.state == raft.StateLeader {
				g.wake() // it probes the follower; a follower's raft ignores the report
			}
			g.rn.ReportUnreachable(to)
			g.stir()
		}
	})
}

// ReportPeerDown tells the host that node id looks down (the transport's stream to it broke
// and its address refused a connection). Every group that follows id's leadership advances
// its election clock past raft's leader lease (ElectionTicks ticks): the group then elects a
// new leader within at most another election timeout, randomized as usual, instead of first
// waiting out a whole one since the last heartbeat, and grants its vote to another replica
// that did the same. A leader that is in fact alive resets the clock with its next heartbeat,
// so a wrong report at one follower costs nothing. A wrong report at a majority of followers
// at once can cost one needless election (a review saw 4 in 30 three-node groups elect anew
// when both followers were told a live leader was down); in a quiesced group, whose leader
// sends its next (quiesce) heartbeat up to quiesceRefreshTicks later, nearly always (12 in
// 12). raft's safety never depends on these clocks. The report wakes the quiesced followers
// it concerns.
//
// Every follower told would otherwise campaign after the randomized rest of its timeout (0 to
// ElectionTicks-1 ticks), and two that start in the same tick split the vote and wait out
// another timeout (about one failover in five took 1.1–1.4 s instead of 0.2–0.5). So the
// first voter of the group (the lowest ID but the dead leader's) campaigns at once: the others
// are past the lease and grant it their votes within a round trip. If its log is behind,
// they refuse, and campaign themselves when their clocks run out, as before.
func (h *Host) ReportPeerDown(id uint64) {
	_ = h.do(func() {
		n := 0
		for _, g := range h.mu.groups {
			if g.removed.Load() {
				continue
			}
			if st := g.rn.BasicStatus(); st.Lead != id || st.RaftState != raft.StateFollower {
				continue
			}
			g.leaderDown(id, true)
			n++
		}
		if n > 0 {
			h.metrics.LeaderDown.Add(float64(n))
			h.log.Info("leader's node is down; election clocks advanced", "peer", id, "groups", n)
		}
	})
}

// ReportSnapshot tells the shard's raft how sending m, a MsgSnap of this node, ended, if raft
// still waits for that snapshot (awaitsSnapshot); a stale report is dropped. A send can take
// long, and meanwhile the group may have lost and regained its leadership, or sent the peer a
// newer snapshot: raft's MsgSnapStatus names only the peer, so the old send's report would end
// the snapshot raft waits for now. A success would have raft probe the peer from past a
// snapshot it never got (and noteSnapshotIn keep the entries after the wrong index), a failure
// abandon a send still under way.
func (h *Host) ReportSnapshot(m ShardMessage, ok bool) {
	st := raft.SnapshotFinish
	if !ok {
		st = raft.SnapshotFailure
	}
	to := m.Msg.GetTo()
	_ = h.do(func() {
		g := h.mu.groups[m.Shard]
		if g == nil || g.removed.Load() {
			return
		}
		if !g.awaitsSnapshot(m.Msg) {
			h.log.Debug("stale snapshot report dropped", "shard", m.Shard, "to", to, "ok", ok,
				"term", m.Msg.GetTerm(), "index", m.Msg.GetSnapshot().GetMetadata().GetIndex())
			return
		}
		g.wake()
		if ok {
			g.noteSnapshotIn(to)
		}
		g.rn.ReportSnapshot(to, st)
		g.stir()
	})
}

// awaitsSnapshot reports whether raft waits for the outcome of sending m, a MsgSnap: the group
// still leads in m's term, and its progress of m's recipient is in StateSnapshot at m's
// snapshot index. A leader sends a follower a snapshot only once it stopped waiting for the
// previous one, and a snapshot at the same index of the same term is the same snapshot. Loop
// goroutine.
func (g *Group) awaitsSnapshot(m *pb.Message) bool {
	if m.GetType() != pb.MsgSnap {
		return false
	}
	if st := g.rn.BasicStatus(); st.RaftState != raft.StateLeader || st.HardState.GetTerm() != m.GetTerm() {
		return false
	}
	to, index := m.GetTo(), m.GetSnapshot().GetMetadata().GetIndex()
	awaited := false
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if id == to {
			awaited = pr.State == tracker.StateSnapshot && pr.PendingSnapshot == index
		}
	})
	return awaited
}

// groupFor returns the shard's group, creating a joining replica with the factory if needed
// and m (the message that arrived for it) may create one. Loop goroutine only.
func (h *Host) groupFor(shard uint32, m *pb.Message) (*Group, error) {
	if g := h.mu.groups[shard]; g != nil {
		return g, nil
	}
	if h.installing[shard] {
		// A replica dropped while its snapshot is ingested: the ingest would land in the span
		// of one created now. raft sends again.
		return nil, errInstalling(shard)
	}
	switch {
	case m.GetType() != pb.MsgApp && m.GetType() != pb.MsgSnap && m.GetType() != pb.MsgHeartbeat:
		// Only a leader adding this node creates a replica here, and it sends an append, a
		// snapshot or a heartbeat without a commit index first. Above all, a vote or pre-vote
		// request must not: raft lets any node vote, and an empty replica finds every
		// candidate's log up to date. This node may have deleted its replica after its
		// removal; a former member that missed its own removal (it was down) and campaigns
		// with its old configuration would then win with the vote of the replica recreated
		// for its request, and lead a stale copy of the shard beside the real group.
		return nil, fmt.Errorf("replica: unknown shard %d: not created for %s", shard, m.GetType())
	case m.GetType() == pb.MsgHeartbeat && m.GetCommit() > 0:
		// A heartbeat tells a follower the commit index up to what the leader knows it holds.
		// One with a commit index was meant for a replica that held entries, which this node
		// no longer has (it deleted the replica after its removal, and the heartbeat was on its
		// way): an empty replica created for it would take a commit index beyond its log, which
		// raft treats as a lost log and panics on. A leader that really adds this node sends
		// an append or a snapshot, and heartbeats without a commit index, first.
		return nil, fmt.Errorf("replica: unknown shard %d: not created for a heartbeat at commit %d", shard, m.GetCommit())
	}
	// Nor does a message of a term before the one at which this node deleted its replica: it
	// comes from a leader deposed since (a leader that was paused, for one) and may still count
	// this node as a member. An empty replica created for it would answer as that member: it
	// could take the deposed leader's snapshot of the old configuration, vote in it, and help
	// a stale copy of the shard to a quorum. A leader that adds this node again was elected
	// after the removal, so at the deletion's term or later.
	if at, err := h.deletedTerm(shard); err != nil {
		return nil, err
	} else if m.GetTerm() < at {
		h.metrics.staleBeforeDeletion.Inc()
		return nil, fmt.Errorf("replica: unknown shard %d: not created for a %s of term %d, before this node deleted its replica at term %d",
			shard, m.GetType(), m.GetTerm(), at)
	}
	h.mu.Lock()
	f := h.mu.factory
	h.mu.Unlock()
	if f == nil {
		return nil, fmt.Errorf("replica: unknown shard %d", shard)
	}
	sm, err := f(shard)
	if err != nil {
		return nil, fmt.Errorf("replica: group factory for shard %d: %w", shard, err)
	}
	return h.newGroup(shard, sm, nil)
}

// newGroup builds a group's raft node over its stored state. Loop goroutine only.
func (h *Host) newGroup(shard uint32, sm StateMachine, bootstrap []uint64) (*Group, error) {
	st, err := openStorage(h.db, shard)
	if err != nil {
		return nil, err
	}
	smApplied := sm.Applied()
	if smApplied < st.truncIdx {
		return nil, fmt.Errorf("replica: shard %d: state machine applied %d is behind the compacted log (%d)",
			shard, smApplied, st.truncIdx)
	}
	// raft restarts after the raft-level applied index stored with the conf state (A, with C),
	// so that conf changes after it are applied again. The state machine may be ahead of it (a
	// snapshot installed just before a crash): those entries are skipped by the apply step. No
	// A means no conf state either, and raft replays the log from its start: restarted at the
	// state machine's index instead (a snapshot ingested before its raft keys were written),
	// it would never apply the conf changes before it, and run with an empty configuration.
	applied := min(smApplied, st.durableApplied)
	applied = max(min(applied, st.hs.GetCommit()), st.truncIdx)
	st.applied = applied
	rn, err := raft.NewRawNode(&raft.Config{
		ID: h.cfg.NodeID, ElectionTick: h.cfg.ElectionTicks, HeartbeatTick: h.cfg.HeartbeatTicks,
		Storage: st, Applied: applied, MaxSizePerMsg: h.cfg.MaxSizePerMsg,
		MaxInflightMsgs: h.cfg.MaxInflightMsgs, MaxInflightBytes: h.cfg.MaxInflightBytes, CheckQuorum: true, PreVote: true,
		ReadOnlyOption: raft.ReadOnlySafe, StepDownOnRemoval: true, Logger: &raftLogger{l: h.log, shard: shard},
		AsyncStorageWrites: true,
	})
	if err != nil {
		return nil, fmt.Errorf("replica: shard %d: %w", shard, err)
	}
	g := &Group{h: h, shard: shard, sm: sm, rn: rn, st: st, waiters: make(map[uint64]*waiter),
		leaderContact: time.Now(), awakeTicks: h.cfg.ElectionTicks + 1}
	g.failer, _ = sm.(ApplyFailer)
	g.leaderless.Store(monoStamp(time.Now()))
	if st.isEmpty() && len(bootstrap) > 0 {
		peers := make([]raft.Peer, len(bootstrap))
		for i, id := range bootstrap {
			peers[i] = raft.Peer{ID: id}
		}
		if err := rn.Bootstrap(peers); err != nil {
			return nil, fmt.Errorf("replica: shard %d: bootstrap: %w", shard, err)
		}
		g.campaignPending = len(bootstrap) == 1 && bootstrap[0] == h.cfg.NodeID
		g.voter.Store(containsID(bootstrap, h.cfg.NodeID))
		g.setVoters(&pb.ConfState{Voters: bootstrap})
	} else if cs := st.cs; len(cs.Voters)+len(cs.Learners) > 0 {
		g.voter.Store(confVotes(cs, h.cfg.NodeID))
		g.setVoters(cs)
		if !confHas(cs, h.cfg.NodeID) {
			g.removed.Store(true)
		} else if len(cs.Voters) == 1 && cs.Voters[0] == h.cfg.NodeID && len(cs.VotersOutgoing) == 0 {
			_ = rn.Campaign()
		}
	}
	h.mu.Lock()
	h.mu.groups[shard] = g
	h.mu.Unlock()
	h.metrics.Groups.Inc()
	g.stir()
	return g, nil
}

func containsID(ids []uint64, id uint64) bool { return slices.Contains(ids, id) }

// run is the event loop.
func (h *Host) run() {
	defer close(h.done)
	t := time.NewTicker(h.cfg.TickInterval)
	defer t.Stop()
	for {
		tick := false
		select {
		case <-h.stop:
			close(h.syncQ)
			<-h.syncDone
			h.shutdown()
			return
		case <-t.C:
			tick = true
		case <-h.wake:
		}
		h.iterate(tick)
	}
}

// shutdown fails everything still pending with ErrStopped, the proposals the loop had not
// taken yet as refused (ErrRefused). Loop goroutine.
func (h *Host) shutdown() {
	h.mu.Lock()
	props, reqs := h.mu.props, h.mu.reqs
	h.mu.props, h.mu.reqs, h.mu.msgs, h.mu.local = nil, nil, nil, nil
	h.mu.propBytes, h.mu.msgBytes = 0, 0
	groups := h.mu.groups
	h.mu.Unlock()
	for _, p := range props {
		p.w.finish(nil, refused(ErrStopped))
	}
	_ = reqs // callers of do() see h.done and return ErrStopped
	for _, g := range groups {
		g.failAll(ErrStopped)
	}
}

// RetireGroupIfQuiet takes the shard's replica out of its group if it has stepped no message
// from a leader since since: from then on it steps no message and does not tick, its pending
// calls fail with ErrGroupRemoved, and Status reports it removed. It reports whether the
// replica is retired (true again for one already retired).
//
// It is for a replica that never learned of its removal (its node was down when the removal
// committed, or the one message carrying it was lost): the caller saw, after since, that the
// group's configuration leaves this node out, and then drops the replica with DropGroup.
// Retiring first makes that safe. A leader that added the node back after the caller looked
// gets no answer from the old replica, so it cannot take the old log's progress for the new
// member's and promote a replica that DropGroup is about to empty; the check and the
// retirement are one step of the loop, so no message is stepped in between.
func (h *Host) RetireGroupIfQuiet(shard uint32, since time.Time) (bool, error) {
	retired := false
	err := h.call(noCancel, func() error {
		g := h.mu.groups[shard]
		if g == nil {
			return fmt.Errorf("replica: unknown shard %d", shard)
		}
		if !g.retired.Load() {
			if g.leaderContact.After(since) {
				return nil
			}
			g.retired.Store(true)
			g.markRemoved()
		}
		retired = true
		return nil
	})
	return retired, err
}

// DropGroup stops the shard's group and deletes its raft state (R|shard) and its state
// machine's span in one synced batch; pending calls fail with ErrGroupRemoved and the
// StateMachine must be discarded. Use it once this node's replica was removed from the group
// (Status().Removed), so that the shard can later be added back as a fresh replica, and retire
// it first (RetireGroupIfQuiet): a leader may have added the node back since Removed was read,
// and an answer of the old log would make it count that log as the new member's, which raft
// panics on once the log is gone. The group answers nothing from here on, not even for appends
// persisted before.
//
// term is the shard's term as the caller knows it from the group's leader (0: unknown). The
// deletion is recorded at the later of it and the replica's own term, which may be far behind:
// a replica that never learned of its removal stopped hearing its group before it, and a
// message of a term between the two comes from a leader deposed since as well (see groupFor).
func (h *Host) DropGroup(shard uint32, term uint64) error {
	return h.call(noCancel, func() error {
		g := h.mu.groups[shard]
		if g == nil {
			return fmt.Errorf("replica: unknown shard %d", shard)
		}
		g.retired.Store(true)
		g.markRemoved()
		b := h.db.NewBatch()
		defer b.Close()
		if err := b.DeleteRange(raftPrefix(shard), append(raftPrefix(shard), 0xff), nil); err != nil {
			return err
		}
		lo, hi := g.sm.Span()
		if err := b.DeleteRange(lo, hi, nil); err != nil {
			return err
		}
		// After the range deletion, so that it survives it (see groupFor).
		st := g.rn.BasicStatus()
		term := max(term, st.HardState.GetTerm(), h.deletedAt[shard])
		if err := b.Set(raftKey(shard, keyDeleted), binary.BigEndian.AppendUint64(nil, term), nil); err != nil {
			return err
		}
		// A failed synced commit may have applied the deletion without making it durable:
		// like any storage failure of the loop, it stops the node.
		h.must(b.Commit(pebble.Sync))
		h.deletedAt[shard] = term
		h.mu.Lock()
		delete(h.mu.groups, shard)
		h.mu.drops[shard]++
		h.mu.Unlock()
		h.metrics.Groups.Dec()
		return nil
	})
}

// deletedTerm returns the term at which this node deleted its replica of shard, 0 if it never
// did. Loop goroutine only.
func (h *Host) deletedTerm(shard uint32) (uint64, error) {
	if at, ok := h.deletedAt[shard]; ok {
		return at, nil
	}
	v, err := readKey(h.db, raftKey(shard, keyDeleted))
	if err != nil {
		return 0, err
	}
	var at uint64
	switch len(v) {
	case 0: // never deleted here
	case 8:
		at = binary.BigEndian.Uint64(v)
	default:
		return 0, fmt.Errorf("replica: corrupt deletion record of shard %d", shard)
	}
	h.deletedAt[shard] = at
	return at, nil
}

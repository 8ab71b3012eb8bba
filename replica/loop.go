package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

type readyGroup struct {
	g         *Group
	rd        raft.Ready
	appendMsg *pb.Message // MsgStorageAppend: what to persist, and the responses that wait for it
	applyMsg  *pb.Message // MsgStorageApply: committed entries, and the response once applied
}

type resolution struct {
	w *waiter
	v any
}

// groupMsg is a message of a group's raft. Storage responses for the group itself
// (MsgStorageAppendResp, a leader's acknowledgement of its own entries) carry the group they
// were produced for, so that one never reaches a group re-created for the same shard.
type groupMsg struct {
	g *Group
	m *pb.Message
}

// iterate is one turn of the event loop (see doc.go for the numbered duties).
func (h *Host) iterate(tick bool) {
	h.iterated.Store(monoStamp(time.Now()))
	// Group commit: while maxSyncsInFlight persisted batches await their fsync, new proposals
	// and log appends from leaders stay queued, to be written together once one completes.
	hold := h.syncsInFlight.Load() >= maxSyncsInFlight
	h.mu.Lock()
	msgs, local, props, reqs := h.mu.msgs, h.mu.local, h.mu.props, h.mu.reqs
	h.mu.msgs, h.mu.local, h.mu.props, h.mu.reqs = nil, nil, nil, nil
	if !hold {
		h.mu.propBytes, h.mu.msgBytes = 0, 0
	} else {
		h.mu.props = props
		props = nil
		var kept []ShardMessage
		for _, m := range msgs {
			if m.Msg.GetType() == pb.MsgApp {
				h.mu.msgs = append(h.mu.msgs, m) // their bytes stay counted in msgBytes
			} else {
				kept = append(kept, m)
			}
		}
		msgs = kept
	}
	h.mu.Unlock()

	// 1. Requests (open group, reads, conf changes, reports), storage responses, peers'
	// messages, proposals, ticks.
	for _, fn := range reqs {
		fn()
	}
	for _, lm := range local {
		if h.mu.groups[lm.g.shard] != lm.g || lm.g.retired.Load() {
			continue // the group was dropped or retired since
		}
		if err := lm.g.rn.Step(lm.m); err != nil {
			h.log.Debug("raft step (local)", "shard", lm.g.shard, "type", lm.m.GetType(), "err", err)
		}
		lm.g.stir()
	}
	var now time.Time
	if len(msgs) > 0 {
		now = time.Now()
	}
	for _, m := range msgs {
		g, err := h.groupFor(m.Shard, m.Msg)
		if err != nil {
			h.log.Debug("dropping raft message", "shard", m.Shard, "err", err)
			continue
		}
		if g.retired.Load() {
			continue
		}
		if g.quiesceAnswer(m.Msg) {
			continue
		}
		if g.heartbeatPastLog(m.Msg) {
			h.metrics.staleCommitPastLog.Inc()
			g.answerLogLost(m.Msg)
			continue
		}
		if g.logLostAnswer(m.Msg) {
			continue
		}
		g.lapseForVote(m.Msg)
		if err := g.rn.Step(m.Msg); err != nil {
			h.log.Debug("raft step", "shard", m.Shard, "err", err)
		}
		if fromLeader(m.Msg.GetType()) {
			g.heardFrom(m.Msg, m.arrived, now)
		}
		g.stir()
		g.stepped(m.Msg)
	}
	h.propose(props)
	if tick {
		var held []ShardMessage
		for _, g := range h.mu.groups {
			if g.retired.Load() {
				continue
			}
			if g.onTickQuiescence() {
				continue
			}
			g.rn.Tick()
			g.tickSuspicion()
			g.stir()
			g.checkTransfers()
			held = g.flushHeld(held)
		}
		if len(held) > 0 {
			h.cfg.Transport.Send(held)
		}
	}
	h.processReady()
	// Stepping apply responses may have produced more work: go round again without waiting
	// for a tick.
	for _, g := range h.stirred {
		if !g.retired.Load() && !g.installing && g.rn.HasReady() {
			h.notify()
			break
		}
	}
}

// propose steps all queued proposals, one MsgProp per group.
func (h *Host) propose(props []*proposal) {
	if len(props) == 0 {
		return
	}
	byGroup := h.propBuf
	defer clear(byGroup)
	for _, p := range props {
		if err := p.g.check(); err != nil {
			p.w.finish(nil, refused(err)) // Propose counts the error
			continue
		}
		if err := p.ctx.Err(); err != nil {
			// Its caller gave up (it waited behind held group commits): proposing it now
			// would only add load, and an outcome nobody reads.
			p.w.finish(nil, refused(err))
			continue
		}
		byGroup[p.g] = append(byGroup[p.g], p)
	}
	for g, ps := range byGroup {
		if err := g.step(ps); err != nil {
			for _, p := range ps {
				p.w.finish(nil, refused(err)) // Propose counts it
			}
		}
	}
}

// step hands ps to raft as one proposal, their waiters registered to be answered when each
// entry is applied; if raft drops it, no waiter stays and the error wraps ErrProposalDropped.
// Loop goroutine.
func (g *Group) step(ps []*proposal) error {
	g.wake()
	ents := make([]*pb.Entry, len(ps))
	for i, p := range ps {
		ents[i] = &pb.Entry{Data: append(g.header(p.id), p.data...)}
		g.waiters[p.id] = p.w
	}
	err := g.rn.Step(&pb.Message{Type: pb.MsgProp.Enum(), From: new(g.h.cfg.NodeID), Entries: ents})
	g.stir()
	if err != nil {
		for _, p := range ps {
			delete(g.waiters, p.id)
		}
		return fmt.Errorf("%w: %v", ErrProposalDropped, err)
	}
	g.h.metrics.Proposals.Add(float64(len(ps)))
	return nil
}

// processReady handles the Ready of every group that has one (raft's asynchronous storage
// writes, see doc.go): it sends what needs no durability, hands every group's log append to
// Pebble in one batch whose fsync the syncer waits for, applies committed entries, and
// settles reads, leadership and removal. It never waits for an fsync.
func (h *Host) processReady() {
	rds := h.readyBuf[:0]
	defer func() {
		clear(rds) // let go of the Readies' entries and messages
		h.readyBuf = rds[:0]
	}()
	var out []ShardMessage
	// Only stirred groups can have a Ready. Those stirred from here on (apply responses,
	// campaigns) go to the fresh list, for the check at the end of iterate and the next call.
	stirred := h.stirred
	h.stirred, h.stirredSpare = h.stirredSpare[:0], nil
	defer func() {
		clear(stirred)
		h.stirredSpare = stirred[:0]
	}()
	for _, g := range stirred {
		g.stirred = false
		if g.retired.Load() || h.mu.groups[g.shard] != g || g.installing || !g.rn.HasReady() {
			continue // an installing group is stirred again once its snapshot is in
		}
		r := readyGroup{g: g, rd: g.rn.Ready()}
		if len(r.rd.Entries) > 0 || len(r.rd.CommittedEntries) > 0 {
			g.idleTicks = 0
		}
		for _, m := range r.rd.Messages {
			g.tagTruncation(m)
			switch to := m.GetTo(); {
			case to == raft.LocalAppendThread:
				r.appendMsg = m
			case to == raft.LocalApplyThread:
				r.applyMsg = m
			case g.dropPreVotes && m.GetType() == pb.MsgPreVote:
			case g.holdCommitOnly(m):
			case m.GetType() == pb.MsgSnap:
				h.cfg.Transport.SendSnapshot(ShardMessage{Shard: g.shard, Msg: m})
			default:
				out = append(out, ShardMessage{Shard: g.shard, Msg: m})
			}
		}
		g.dropPreVotes = false
		rds = append(rds, r)
	}
	if len(rds) == 0 {
		return
	}

	// 2. Messages that need no durability (a leader's appends and heartbeats, votes asked
	// for) go out first, so that followers write while this node does.
	if len(out) > 0 {
		h.cfg.Transport.Send(out)
	}

	// 3. Every group's snapshot metadata, entries and hard state go into one batch, handed to
	// Pebble without waiting for its fsync; the syncer delivers the responses once it is
	// durable (group commit: Pebble's WAL syncs whatever is queued when its previous fsync
	// ends).
	h.persist(rds)

	// 4. Leadership bookkeeping; waiters of a lost leadership fail after the apply below, so
	// that proposals applied in this Ready still get their results.
	for _, r := range rds {
		r.g.observe(r.rd)
	}

	// 5. Apply committed entries (durable here: raft hands out only those) of every group in
	// one unsynced batch, answer the proposers and acknowledge the apply to raft.
	h.apply(rds)

	// 6. Settle reads, lost leadership and removal.
	for _, r := range rds {
		g := r.g
		if g.campaignPending && g.st.applied >= g.st.last {
			g.campaignPending = false
			_ = g.rn.Campaign()
			g.stir()
		}
		if g.lostLeadership {
			g.lostLeadership = false
			g.failProposals(&NotLeaderError{Shard: g.shard, Leader: g.leader.Load()})
		}
		g.settleReads(r.rd.ReadStates)
		if g.removed.Load() {
			g.markRemoved()
		}
	}
}

// persist stages every group's MsgStorageAppend (snapshot metadata, entries, hard state) into
// one batch and hands it to Pebble: with pebble.Sync and no wait when anything must be durable
// (entries, term, vote, snapshot), otherwise unsynced. The responses, which raft allows out
// only once this and every earlier append is durable, go to the syncer in order.
func (h *Host) persist(rds []readyGroup) {
	var b *pebble.Batch
	sync, nents := false, 0
	var resp []groupMsg
	for i := range rds {
		r := &rds[i]
		if r.appendMsg == nil {
			continue
		}
		if b == nil {
			b = h.db.NewBatch()
		}
		st := r.g.st
		if !raft.IsEmptySnap(r.rd.Snapshot) {
			h.must(st.applySnapshot(b, r.rd.Snapshot))
			cs := pb.EnsureConfState(r.rd.Snapshot.GetMetadata().GetConfState())
			r.g.removed.Store(!confHas(cs, h.cfg.NodeID))
			r.g.voter.Store(confVotes(cs, h.cfg.NodeID))
			r.g.setVoters(cs)
			sync = true
		}
		h.must(st.append(b, r.rd.Entries))
		st.trimCache()
		nents += len(r.rd.Entries)
		if !raft.IsEmptyHardState(r.rd.HardState) {
			h.must(st.setHardState(b, r.rd.HardState))
		}
		sync = sync || r.rd.MustSync
		for _, m := range r.appendMsg.Responses {
			resp = append(resp, groupMsg{r.g, m})
		}
	}
	if b == nil {
		return
	}
	it := syncItem{resp: resp, start: time.Now(), entries: nents}
	switch {
	case b.Empty():
		h.must(b.Close())
	case sync:
		h.cfg.CommitDelay.synced(nents)
		h.must(h.db.ApplyNoSyncWait(b, pebble.Sync))
		it.b = b
		h.syncsInFlight.Add(1)
	default:
		h.must(b.Commit(pebble.NoSync))
		h.must(b.Close())
	}
	if it.b != nil || len(it.resp) > 0 {
		h.syncQ <- it
	}
}

// syncItem is one persist call: the batch whose fsync is awaited (nil when nothing had to be
// synced) and the responses released after it.
type syncItem struct {
	b       *pebble.Batch
	start   time.Time
	entries int
	resp    []groupMsg
}

// syncLoop waits, in order, for every persisted batch to be durable and then releases its
// responses: peers' through the transport, the groups' own to the loop. Items without a batch
// wait behind the ones before them, as raft requires. It ends when syncQ is closed and
// drained.
func (h *Host) syncLoop() {
	defer close(h.syncDone)
	for it := range h.syncQ {
		if it.b != nil {
			h.must(it.b.SyncWait())
			h.must(it.b.Close())
			h.syncsInFlight.Add(-1)
			h.metrics.SyncLatency.Observe(time.Since(it.start).Seconds())
			h.metrics.EntriesPerSync.Observe(float64(it.entries))
		}
		var out []ShardMessage
		var local []groupMsg
		for _, r := range it.resp {
			if r.g.retired.Load() {
				continue // answers nothing once retired, not even for appends persisted before
			}
			if r.m.GetTo() == h.cfg.NodeID {
				local = append(local, r)
			} else {
				out = append(out, ShardMessage{Shard: r.g.shard, Msg: r.m})
			}
		}
		if len(out) > 0 {
			h.cfg.Transport.Send(out)
		}
		if len(local) > 0 {
			h.mu.Lock()
			h.mu.local = append(h.mu.local, local...)
			h.mu.Unlock()
		}
		// The loop steps the responses, and proposals held behind this fsync may go now.
		h.notify()
	}
}

// apply applies the committed entries of rds into one indexed batch committed without sync
// (the state can be rebuilt from the log), calls Committed on every touched state machine,
// answers the proposers and steps each group's MsgStorageApplyResp.
func (h *Host) apply(rds []readyGroup) {
	start := time.Now()
	var ab *pebble.Batch
	var res []resolution
	for i := range rds {
		r := &rds[i]
		if r.applyMsg == nil {
			continue
		}
		if ab == nil {
			ab = h.db.NewIndexedBatch()
		}
		smApplied := r.g.sm.Applied() // before this batch: entries at or below are in the state
		bsm, batched := r.g.sm.(BatchStateMachine)
		if batched {
			bsm.BeginBatch(ab)
		}
		for _, e := range r.applyMsg.Entries {
			res = h.applyEntry(ab, r.g, e, smApplied, res)
		}
		if batched {
			h.must(bsm.FinishBatch(ab))
		}
		h.maybeCompact(ab, r.g)
		if r.g.st.appliedDirty {
			h.must(r.g.st.setApplied(ab, r.g.st.applied))
		}
	}
	if ab == nil {
		return
	}
	if !ab.Empty() {
		h.must(ab.Commit(pebble.NoSync))
	}
	// Closing returns the batch, its buffer and its index to Pebble's pool for the next apply.
	h.must(ab.Close())
	for i := range rds {
		r := &rds[i]
		if r.applyMsg == nil {
			continue
		}
		r.g.sm.Committed()
		r.g.caughtUp()
		for _, m := range r.applyMsg.Responses {
			if err := r.g.rn.Step(m); err != nil {
				h.log.Debug("raft step (apply response)", "shard", r.g.shard, "err", err)
			}
			r.g.stir()
		}
	}
	h.metrics.ApplyLatency.Observe(time.Since(start).Seconds())
	for _, r := range res {
		r.w.finish(r.v, nil)
	}
}

// must stops the host on a storage failure err (Config.OnStorageFailure). The loop's goroutine
// or its sync goroutine.
func (h *Host) must(err error) {
	if err == nil {
		return
	}
	err = fmt.Errorf("replica: storage failure: %w", err)
	if h.cfg.OnStorageFailure != nil {
		h.cfg.OnStorageFailure(err)
	}
	h.log.Error("replica: storage failure", "err", err)
	panic(err.Error())
}

// applyEntry applies one committed entry into ab and returns res with the proposer's waiter
// appended when it is ours. Entries at or below smApplied are already in the state (after a
// snapshot install) and only advance the raft-level applied index.
func (h *Host) applyEntry(ab *pebble.Batch, g *Group, e *pb.Entry, smApplied uint64, res []resolution) []resolution {
	idx := e.GetIndex()
	if idx <= g.st.applied {
		return res
	}
	ahead := idx <= smApplied
	switch e.GetType() {
	case pb.EntryNormal:
		if len(e.Data) < headerLen {
			if !ahead {
				g.sm.SetApplied(ab, idx)
			}
			break
		}
		var v any
		if !ahead {
			v = g.sm.Apply(ab, idx, e.Data[headerLen:])
			if g.failer != nil {
				if err := g.failer.ApplyFailure(v); err != nil {
					h.must(fmt.Errorf("shard %d: applying entry %d: %w", g.shard, idx, err))
				}
			}
		}
		if pid, ok := g.ownID(e.Data); ok && pid == g.guarded {
			g.guarded = 0
		}
		if w := g.ownWaiter(e.Data); w != nil {
			res = append(res, resolution{w, v})
		}
	default:
		cc, cctx, err := decodeConfChange(e)
		if err != nil {
			h.must(fmt.Errorf("shard %d: undecodable conf change at %d: %w", g.shard, idx, err))
		}
		// A replica that joined late replays the log from the start, including
		// the changes made before it was added: it is removed only by a change
		// that takes it out of a configuration it was in.
		wasMember := g.st.cs != nil && confHas(g.st.cs, h.cfg.NodeID)
		cs := g.rn.ApplyConfChange(cc)
		g.stir()
		h.must(g.st.setConfState(ab, cs))
		if !ahead {
			g.sm.SetApplied(ab, idx)
		}
		if len(cctx) >= headerLen && binary.BigEndian.Uint64(cctx) == h.cfg.NodeID {
			pid := binary.BigEndian.Uint64(cctx[8:])
			if g.confPending == pid {
				g.confPending = 0
			}
		}
		if w := g.ownWaiter(cctx); w != nil {
			res = append(res, resolution{w, nil})
		}
		g.voter.Store(confVotes(cs, h.cfg.NodeID) && !g.retired.Load())
		g.setVoters(cs)
		if isMember := confHas(cs, h.cfg.NodeID); wasMember && !isMember {
			h.log.Info("removed from group", "shard", g.shard, "index", idx)
			g.removed.Store(true)
		} else if isMember && !g.retired.Load() {
			g.removed.Store(false) // (re-)added: a returning replica replays its old removal first
		}
	}
	g.st.applied = idx
	return res
}

// ownID returns the proposal ID in an entry header written by this node (g.header).
func (g *Group) ownID(hdr []byte) (uint64, bool) {
	if len(hdr) < headerLen || binary.BigEndian.Uint64(hdr) != g.h.cfg.NodeID {
		return 0, false
	}
	return binary.BigEndian.Uint64(hdr[8:]), true
}

// ownWaiter returns (and forgets) the waiter of a proposal made by this node.
func (g *Group) ownWaiter(hdr []byte) *waiter {
	pid, ok := g.ownID(hdr)
	if !ok {
		return nil
	}
	w := g.waiters[pid]
	if w != nil {
		delete(g.waiters, pid)
	}
	return w
}

// observe tracks leadership from a Ready. Loop goroutine.
func (g *Group) observe(rd raft.Ready) {
	if rd.SoftState == nil && rd.HardState == nil {
		return
	}
	bs := g.rn.BasicStatus()
	wasLeader, prevTerm := g.state == raft.StateLeader, g.term
	if lead := bs.Lead; lead != g.leader.Load() {
		g.leader.Store(lead)
		if lead != 0 {
			g.leaderless.Store(0)
			g.h.metrics.LeaderChanges.Inc()
		} else {
			g.leaderless.Store(monoStamp(time.Now()))
		}
	}
	g.state = bs.RaftState
	isLeader := bs.RaftState == raft.StateLeader
	if term := bs.HardState.GetTerm(); term > g.seenTerm {
		if g.seenTerm != 0 && !isLeader { // a new leader says so below
			// This replica's own campaign is part of an election whose outcome is logged
			// (leading, or a follower's term advanced by the new leader): debug only.
			lvl := slog.LevelInfo
			if bs.RaftState == raft.StateCandidate || bs.RaftState == raft.StatePreCandidate {
				lvl = slog.LevelDebug
			}
			g.h.log.Log(context.Background(), lvl, "shard term advanced", "shard", g.shard, "term", term, "from", g.seenTerm,
				"state", bs.RaftState.String(), "leader", bs.Lead)
		}
		g.seenTerm = term
	}
	if isLeader && (!wasLeader || bs.HardState.GetTerm() != prevTerm) {
		g.leadSure.Store(0) // elected by a quorum just now; CheckQuorum vouches from here
		g.forgetTruncation()
		g.term = bs.HardState.GetTerm()
		g.confBarrier = g.st.last
		g.readFloor = g.st.last
		if hook := testHookLeading.Load(); hook != nil {
			(*hook)(g)
		}
		g.h.log.Info("leading shard", "shard", g.shard, "term", g.term)
	}
	if wasLeader && (!isLeader || bs.HardState.GetTerm() != prevTerm) {
		g.h.log.Info("no longer leading shard", "shard", g.shard, "term", bs.HardState.GetTerm(), "leader", bs.Lead)
		g.lostLeadership = true // waiters fail after this Ready's entries were applied
		g.leadSure.Store(0)
		// The commit indexes held back go out now: no tick of this leadership will send them.
		if held := g.flushHeld(nil); len(held) > 0 {
			g.h.cfg.Transport.Send(held)
		}
	}
	if g.isLeader.Swap(isLeader) != isLeader {
		if isLeader {
			g.h.metrics.Leaders.Inc()
		} else {
			g.h.metrics.Leaders.Dec()
		}
	}
	// A transfer ends when its target leads, or when another member does (this node's own
	// leadership is settled by checkTransfers); while no leader is known it waits. Settled
	// after isLeader, so that its caller sees this node's new state.
	g.transfers = slices.DeleteFunc(g.transfers, func(t *transferReq) bool {
		switch bs.Lead {
		case t.to:
			t.w.finish(nil, nil)
		case 0, g.h.cfg.NodeID:
			return false
		default:
			t.w.finish(nil, &NotLeaderError{Shard: g.shard, Leader: bs.Lead})
		}
		return true
	})
}

// testHookLeading, set by tests, runs in the loop goroutine as this node begins to lead a group.
var testHookLeading atomic.Pointer[func(*Group)]

// settleReads records arrived read states and releases reads whose index is applied.
//
// A leader's read index is at least the log's last index when it began leading: every entry of
// an earlier term is applied before its reads are answered. raft waits for that itself, for an
// entry of the leader's term to commit, except for a sole voter, whose read index it answers at
// once with its commit index. After a restart that index is only what the stored state proves
// committed (the applied index, which a crash may leave behind entries committed, applied and
// acknowledged before it): a read right after the election would miss them until the new
// term's first entry commits. Only the leader's own reads pass here, which are all of shoal's
// (Group.ReadIndex runs on the leader); a read index a follower asked the leader for would
// come without the floor.
func (g *Group) settleReads(states []raft.ReadState) {
	for _, rs := range states {
		idx := max(rs.Index, 1)
		if g.state == raft.StateLeader {
			idx = max(idx, g.readFloor)
		}
		for _, r := range g.reads {
			if r.index == 0 && bytes.Equal(r.rctx, rs.RequestCtx) {
				r.index = idx
			}
		}
	}
	applied := max(g.st.applied, g.sm.Applied())
	kept := g.reads[:0]
	for _, r := range g.reads {
		if r.index != 0 && applied >= r.index {
			r.w.finish(nil, nil)
			continue
		}
		kept = append(kept, r)
	}
	clear(g.reads[len(kept):])
	g.reads = kept
}

// checkTransfers fails transfers raft gave up on. Loop goroutine, on ticks.
func (g *Group) checkTransfers() {
	if len(g.transfers) == 0 {
		return
	}
	// raft's own state, not g.state: the message that ends this leadership (the target's vote
	// request) may have been stepped in this iteration, before observe saw the change. raft
	// then has no transferee any more, and the transfer that succeeded would read as aborted.
	if bs := g.rn.BasicStatus(); bs.RaftState == raft.StateLeader && bs.LeadTransferee == 0 {
		for _, t := range g.transfers {
			t.w.finish(nil, fmt.Errorf("replica: shard %d: transfer to %d: %w", g.shard, t.to, ErrTransferAborted))
		}
		g.transfers = nil
	}
}

// fromLeader reports whether a message of type t is one only a leader sends.
func fromLeader(t pb.MessageType) bool {
	switch t {
	case pb.MsgApp, pb.MsgHeartbeat, pb.MsgSnap, pb.MsgTimeoutNow:
		return true
	}
	return false
}

// confVotes reports whether id votes in cs (in either half of a joint configuration).
func confVotes(cs *pb.ConfState, id uint64) bool {
	return containsID(cs.Voters, id) || containsID(cs.VotersOutgoing, id)
}

// Voters returns the voters of the group's configuration as last applied here (both halves
// of a joint configuration), without a call into the host's loop; nil before the replica has
// a configuration.
func (g *Group) Voters() []uint64 {
	if v := g.voters.Load(); v != nil {
		return *v
	}
	return nil
}

// setVoters records cs's voters for Voters. Loop goroutine (or the group's opening).
func (g *Group) setVoters(cs *pb.ConfState) {
	v := slices.Clone(cs.Voters)
	for _, id := range cs.VotersOutgoing {
		if !slices.Contains(v, id) {
			v = append(v, id)
		}
	}
	g.voters.Store(&v)
}

// confHas reports whether id is a voter or learner of cs, in either half of a
// joint configuration.
func confHas(cs *pb.ConfState, id uint64) bool {
	return containsID(cs.Voters, id) || containsID(cs.Learners, id) ||
		containsID(cs.VotersOutgoing, id) || containsID(cs.LearnersNext, id)
}

package replica

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

type readyGroup struct {
	g         *Group
	rd        raft.Ready
	smApplied uint64 // state machine's applied index before this iteration's apply batch
}

type resolution struct {
	w *waiter
	v any
}

// iterate is one turn of the event loop (see doc.go for the numbered duties).
func (h *Host) iterate(tick bool) {
	h.mu.Lock()
	msgs, props, reqs := h.mu.msgs, h.mu.props, h.mu.reqs
	h.mu.msgs, h.mu.props, h.mu.reqs = nil, nil, nil
	h.mu.Unlock()

	// 1. Requests (open group, reads, conf changes, reports), peers' messages, proposals, ticks.
	for _, fn := range reqs {
		fn()
	}
	for _, m := range msgs {
		g, err := h.groupFor(m.Shard)
		if err != nil {
			h.log.Debug("dropping raft message", "shard", m.Shard, "err", err)
			continue
		}
		if err := g.rn.Step(m.Msg); err != nil {
			h.log.Debug("raft step", "shard", m.Shard, "err", err)
		}
	}
	h.propose(props)
	if tick {
		for _, g := range h.mu.groups {
			g.rn.Tick()
			g.checkTransfers()
		}
	}
	h.processReady()
	// Advancing may have produced more work (a leader's own append acknowledged moves its
	// commit index): go round again without waiting for a tick.
	for _, g := range h.mu.groups {
		if g.rn.HasReady() {
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
	byGroup := make(map[*Group][]*proposal)
	for _, p := range props {
		if err := p.g.check(); err != nil {
			h.metrics.ProposalErrors.Inc()
			p.w.finish(nil, err)
			continue
		}
		byGroup[p.g] = append(byGroup[p.g], p)
	}
	for g, ps := range byGroup {
		ents := make([]*pb.Entry, len(ps))
		for i, p := range ps {
			ents[i] = &pb.Entry{Data: append(g.header(p.id), p.data...)}
			g.waiters[p.id] = p.w
		}
		err := g.rn.Step(&pb.Message{Type: pb.MsgProp.Enum(), From: new(h.cfg.NodeID), Entries: ents})
		if err != nil {
			for _, p := range ps {
				delete(g.waiters, p.id)
				p.w.finish(nil, fmt.Errorf("%w: %v", ErrProposalDropped, err))
			}
			h.metrics.ProposalErrors.Add(float64(len(ps)))
			continue
		}
		h.metrics.Proposals.Add(float64(len(ps)))
	}
}

// processReady persists, sends, applies and advances every group that has a Ready.
func (h *Host) processReady() {
	var rds []readyGroup
	for _, g := range h.mu.groups {
		if g.rn.HasReady() {
			rds = append(rds, readyGroup{g: g, rd: g.rn.Ready()})
		}
	}
	if len(rds) == 0 {
		return
	}

	// 5a. Committed entries that were already durable here before this Ready (the usual case on
	// a leader: the previous iteration synced them) are applied, and their proposers answered,
	// while this Ready's new entries are being synced (step 2): an answer never waits for an
	// fsync that does not concern it, and the apply's CPU work overlaps the fsync's I/O. Groups
	// whose Ready carries a snapshot, or whose committed entries are not yet durable here (a
	// follower told to commit entries it receives in the same Ready), apply after the sync (5b).
	var early, late []*readyGroup
	for i := range rds {
		r := &rds[i]
		if len(r.rd.CommittedEntries) == 0 {
			continue
		}
		lastCommitted := r.rd.CommittedEntries[len(r.rd.CommittedEntries)-1].GetIndex()
		if raft.IsEmptySnap(r.rd.Snapshot) && lastCommitted <= r.g.st.last &&
			(len(r.rd.Entries) == 0 || lastCommitted < r.rd.Entries[0].GetIndex()) {
			early = append(early, r)
		} else {
			late = append(late, r)
		}
	}

	// 3a. A leader's appends and heartbeats go out before its own fsync, so that its log write
	// and its followers' run in parallel (raft thesis §10.2.1; raft's doc.go allows messages
	// while the same Ready's entries are being persisted, once the hard state is durable). Only
	// when the Ready changes neither term nor vote, and has no snapshot. Commit still needs a
	// quorum of durable copies: raft counts the leader's own only after Advance (step 6), and
	// followers acknowledge only after their sync (step 3).
	early3 := make([]bool, len(rds))
	var outEarly []ShardMessage
	for i := range rds {
		r := &rds[i]
		hs, prev := r.rd.HardState, r.g.st.hs
		if !raft.IsEmptySnap(r.rd.Snapshot) ||
			(!raft.IsEmptyHardState(hs) && (prev == nil || hs.GetTerm() != prev.GetTerm() || hs.GetVote() != prev.GetVote())) {
			continue
		}
		early3[i] = true
		for _, m := range r.rd.Messages {
			if leaderMessage(m) {
				outEarly = append(outEarly, ShardMessage{Shard: r.g.shard, Msg: m})
			}
		}
	}
	if len(outEarly) > 0 {
		h.cfg.Transport.Send(outEarly)
	}

	// 2. One batch with every group's snapshot metadata, entries and hard state; one fsync.
	b := h.db.NewBatch()
	sync, nents := false, 0
	for i := range rds {
		r := &rds[i]
		st := r.g.st
		if !raft.IsEmptySnap(r.rd.Snapshot) {
			h.must(st.applySnapshot(b, r.rd.Snapshot))
			st.applied = r.rd.Snapshot.GetMetadata().GetIndex()
			r.g.removed.Store(!confHas(pb.EnsureConfState(r.rd.Snapshot.GetMetadata().GetConfState()), h.cfg.NodeID))
			sync = true
		}
		h.must(st.append(b, r.rd.Entries))
		nents += len(r.rd.Entries)
		if !raft.IsEmptyHardState(r.rd.HardState) {
			h.must(st.setHardState(b, r.rd.HardState))
		}
		sync = sync || r.rd.MustSync
	}
	// The early apply (CPU) overlaps the fsync (I/O): the batch commits on another goroutine
	// while this one applies; nothing below step 2 waits for durability except step 3.
	if b.Empty() {
		h.must(b.Close())
		h.apply(early, true)
	} else {
		start := time.Now()
		opts := pebble.NoSync
		if sync {
			opts = pebble.Sync
		}
		var took time.Duration // the commit alone, not the overlapping apply
		if len(early) == 0 {
			h.must(b.Commit(opts))
			took = time.Since(start)
		} else {
			committed := make(chan error, 1)
			go func() {
				err := b.Commit(opts)
				took = time.Since(start)
				committed <- err
			}()
			h.apply(early, true)
			h.must(<-committed)
		}
		if sync {
			h.metrics.SyncLatency.Observe(took.Seconds())
			h.metrics.EntriesPerSync.Observe(float64(nents))
		}
	}
	for _, r := range rds {
		r.g.st.trimCache()
		r.g.st.syncedCommit = r.g.st.hs.GetCommit()
	}

	// 3. Every other message goes out only after the state it acknowledges is durable.
	var out []ShardMessage
	for i, r := range rds {
		for _, m := range r.rd.Messages {
			if early3[i] && leaderMessage(m) {
				continue // sent in 3a
			}
			sm := ShardMessage{Shard: r.g.shard, Msg: m}
			if m.GetType() == pb.MsgSnap {
				h.cfg.Transport.SendSnapshot(sm)
				continue
			}
			out = append(out, sm)
		}
	}
	if len(out) > 0 {
		h.cfg.Transport.Send(out)
	}

	// 4. Leadership bookkeeping; waiters of a lost leadership fail after the apply below, so
	// that proposals committed in this Ready still get their results.
	for _, r := range rds {
		r.g.observe(r.rd)
	}

	// 5b. Apply the remaining committed entries (no sync).
	h.apply(late, false)

	// 6. Advance, then settle reads, lost leadership and removal.
	for _, r := range rds {
		g := r.g
		g.rn.Advance(r.rd)
		if g.campaignPending && g.st.applied >= g.st.last {
			g.campaignPending = false
			_ = g.rn.Campaign()
		}
		if g.lostLeadership {
			g.lostLeadership = false
			g.failAll(&NotLeaderError{Shard: g.shard, Leader: g.leader.Load()})
		}
		g.settleReads(r.rd.ReadStates)
		if g.removed.Load() {
			g.failAll(ErrGroupRemoved)
			if g.isLeader.Swap(false) {
				h.metrics.Leaders.Dec()
			}
		}
	}
}

// apply applies the committed entries of rds into one indexed batch committed without sync
// (the state can be rebuilt from the log), calls Committed on every touched state machine and
// answers the proposers.
//
// An early batch (applied while this Ready's hard state is being synced, see doc.go) also
// stores the hard state with the commit index lowered to what it applies (or what was synced
// before): it may reach the WAL
// before or after the synced batch, and either way the stored commit index stays at or above
// the stored applied indexes (the state machine's, A, and the truncation T), over entries that
// were durable before this Ready. Term and vote are those being synced now; persisting them
// early is harmless, and a stale commit index is harmless.
func (h *Host) apply(rds []*readyGroup, early bool) {
	if len(rds) == 0 {
		return
	}
	start := time.Now()
	ab := h.db.NewIndexedBatch()
	var res []resolution
	for _, r := range rds {
		r.smApplied = r.g.sm.Applied()
		bsm, batched := r.g.sm.(BatchStateMachine)
		if batched {
			bsm.BeginBatch(ab)
		}
		for _, e := range r.rd.CommittedEntries {
			res = h.applyEntry(ab, r.g, e, r.smApplied, res)
		}
		if batched {
			h.must(bsm.FinishBatch(ab))
		}
		h.must(r.g.st.setApplied(ab, r.g.st.applied))
		h.maybeCompact(ab, r.g)
		if early {
			h.must(ab.Set(raftKey(r.g.shard, keyHardState), encodeHardState(r.g.st.hs,
				max(r.g.st.applied, r.g.st.syncedCommit)), nil))
		}
	}
	if ab.Empty() {
		h.must(ab.Close())
	} else {
		h.must(ab.Commit(pebble.NoSync))
	}
	for _, r := range rds {
		r.g.sm.Committed()
	}
	h.metrics.ApplyLatency.Observe(time.Since(start).Seconds())
	for _, r := range res {
		r.w.finish(r.v, nil)
	}
}

func (h *Host) must(err error) {
	if err != nil {
		h.log.Error("replica: storage failure", "err", err)
		panic(fmt.Sprintf("replica: storage failure: %v", err))
	}
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
		if isMember := confHas(cs, h.cfg.NodeID); wasMember && !isMember {
			h.log.Info("removed from group", "shard", g.shard, "index", idx)
			g.removed.Store(true)
		} else if isMember {
			g.removed.Store(false) // (re-)added: a returning replica replays its old removal first
		}
	}
	g.st.applied = idx
	return res
}

// ownWaiter returns (and forgets) the waiter of a proposal made by this node.
func (g *Group) ownWaiter(hdr []byte) *waiter {
	if len(hdr) < headerLen || binary.BigEndian.Uint64(hdr) != g.h.cfg.NodeID {
		return nil
	}
	pid := binary.BigEndian.Uint64(hdr[8:])
	w := g.waiters[pid]
	if w != nil {
		delete(g.waiters, pid)
	}
	return w
}

// maybeCompact drops log entries LogRetainEntries behind applied (in chunks), or down to
// applied when the log outgrows MaxLogBytes. It is staged in the apply batch, so it is atomic
// with the state that covers the dropped entries.
func (h *Host) maybeCompact(ab *pebble.Batch, g *Group) {
	st, retain := g.st, h.cfg.LogRetainEntries
	chunk := max(retain/8, 1)
	var to uint64
	if st.applied > st.truncIdx+retain+chunk {
		to = st.applied - retain
	}
	if st.logBytes > h.cfg.MaxLogBytes {
		to = st.applied
	}
	if to > st.truncIdx {
		h.must(st.compact(ab, to))
	}
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
			g.h.metrics.LeaderChanges.Inc()
		}
	}
	g.state = bs.RaftState
	for i := 0; i < len(g.transfers); i++ {
		if t := g.transfers[i]; bs.Lead == t.to {
			t.w.finish(nil, nil)
			g.transfers = append(g.transfers[:i], g.transfers[i+1:]...)
			i--
		}
	}
	isLeader := bs.RaftState == raft.StateLeader
	if isLeader && (!wasLeader || bs.HardState.GetTerm() != prevTerm) {
		g.term = bs.HardState.GetTerm()
		g.confBarrier = g.st.last
	}
	if wasLeader && (!isLeader || bs.HardState.GetTerm() != prevTerm) {
		g.lostLeadership = true // waiters fail after this Ready's entries were applied
	}
	if g.isLeader.Swap(isLeader) != isLeader {
		if isLeader {
			g.h.metrics.Leaders.Inc()
		} else {
			g.h.metrics.Leaders.Dec()
		}
	}
}

// settleReads records arrived read states and releases reads whose index is applied.
func (g *Group) settleReads(states []raft.ReadState) {
	for _, rs := range states {
		for _, r := range g.reads {
			if r.index == 0 && bytes.Equal(r.rctx, rs.RequestCtx) {
				r.index = max(rs.Index, 1)
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
	if len(g.transfers) == 0 || g.state != raft.StateLeader {
		return
	}
	if g.rn.BasicStatus().LeadTransferee == 0 {
		for _, t := range g.transfers {
			t.w.finish(nil, fmt.Errorf("replica: shard %d: leadership transfer to %d aborted", g.shard, t.to))
		}
		g.transfers = nil
	}
}

// confHas reports whether id is a voter or learner of cs, in either half of a
// joint configuration.
func confHas(cs *pb.ConfState, id uint64) bool {
	return containsID(cs.Voters, id) || containsID(cs.Learners, id) ||
		containsID(cs.VotersOutgoing, id) || containsID(cs.LearnersNext, id)
}

// leaderMessage reports whether m is a leader's log replication or heartbeat,
// which may be sent before the leader's own entries are durable (step 3a).
func leaderMessage(m *pb.Message) bool {
	t := m.GetType()
	return t == pb.MsgApp || t == pb.MsgHeartbeat
}

package node

// Deleting the local replicas this node was removed from (see placement.go).

import (
	"context"
	"slices"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// dropConfirmed deletes the local replicas of shards this node was removed
// from, each once the shard's current leader confirms that its configuration
// no longer holds this node (the local configuration may be a stale one that
// a replica catching up passes through, and a replica deleted while its
// leader still tracks it would panic raft on the next heartbeat). As in
// dropOrphans, the replica is first retired if it stepped no leader message
// since since (taken before the views were gathered): a leader may have added
// the node back after its view was read, and the replica, no longer removed,
// may already have answered with its log's progress; deleting that log would
// leave the leader with a follower whose log it believes much longer, which
// panics raft on the next heartbeat, and again after every restart.
func (p *placer) dropConfirmed(shards []uint32, since time.Time, leaders map[uint32]*shoalv1.ShardInfo, maxTerm map[uint32]uint64) {
	self := p.n.ID()
	for _, id := range shards {
		s, ok := leaders[id]
		if !ok || !leavesOut(s, self) || s.Term < maxTerm[id] { // a deposed leader's view is not trusted
			continue
		}
		if retired, err := p.n.host.RetireGroupIfQuiet(id, since); err != nil || !retired {
			if err != nil {
				p.log.Debug("retiring removed replica failed; retrying later", "shard", id, "err", err)
			}
			continue // a leader spoke to it since: the next round looks again
		}
		if err := p.n.dropReplica(id, s.Term); err != nil {
			p.log.Info("deleting removed replica failed; retrying later", "shard", id, "err", err)
			continue
		}
		p.metrics.dropped.Inc()
		p.log.Info("deleted replica removed from its group", "shard", id, "leader", s.LeaderId, "term", s.Term)
	}
}

// dropRemoved deletes the removed replicas (dropConfirmed) and the orphans (dropOrphans) of one
// round, with the shards' leader views gathered once for both. since is taken before the
// gathering, as both require.
func (p *placer) dropRemoved(removed []uint32, orphans []orphan) {
	if len(removed) == 0 && len(orphans) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, placementStepTimeout)
	defer cancel()
	since := time.Now()
	leaders, maxTerm := p.n.leaderViews(ctx)
	p.dropConfirmed(removed, since, leaders, maxTerm)
	p.dropOrphans(orphans, since, leaders, maxTerm)
}

// orphan is a local replica that has heard from no leader for DeadAfter: perhaps one that
// never learned of its removal (see dropOrphans).
type orphan struct {
	shard   uint32
	applied uint64 // its raft applied index when seen
}

// dropOrphans deletes the local replicas among cands that their group no longer counts. A
// replica learns of its removal by applying it; one whose node was down when the removal
// committed, or that missed the one message carrying it, never does: no leader sends it
// anything again, and it would keep its data and campaign for good.
//
// Safety rests on two things. The shard's leader view, gathered from the alive members after
// since, leaves this node out, and no answering member reports a later term (a deposed
// leader's view is not trusted); its applied index is also at or past the replica's own.
// And the replica is retired only if it stepped no leader message since since, in one step of
// the raft loop, after which it answers nothing: a leader that added the node back after the
// views were read gets no answer from the old log, so it cannot count that log as the new
// member's and promote a replica about to be emptied. Such a leader then meets a fresh,
// empty replica and catches it up. A replica that is only cut off from its group is kept:
// the configuration still has it. (This also deletes a stray empty replica that a delayed
// message created for a group that no longer has this node.)
func (p *placer) dropOrphans(cands []orphan, since time.Time, leaders map[uint32]*shoalv1.ShardInfo, maxTerm map[uint32]uint64) {
	self := p.n.ID()
	for _, o := range cands {
		s, ok := leaders[o.shard]
		if !ok || !leavesOut(s, self) || s.Term < maxTerm[o.shard] || s.Applied < o.applied {
			continue
		}
		retired, err := p.n.host.RetireGroupIfQuiet(o.shard, since)
		if err != nil {
			p.log.Debug("retiring removed replica failed; retrying later", "shard", o.shard, "err", err)
		}
		if err != nil || !retired {
			continue
		}
		// Retired, the replica is also marked removed: should this drop fail, the next rounds
		// retry it through dropConfirmed.
		if err := p.n.dropReplica(o.shard, s.Term); err != nil {
			p.log.Info("deleting a replica left out of its group failed; retrying later", "shard", o.shard, "err", err)
			continue
		}
		p.metrics.dropped.Inc()
		p.log.Info("deleted a replica that its group left out while it heard from no leader",
			"shard", o.shard, "applied", o.applied, "leader", s.LeaderId, "term", s.Term, "leader_applied", s.Applied)
	}
}

// leavesOut reports whether the leader view s leaves node id out of its shard: id neither
// leads it nor is a voter or learner.
func leavesOut(s *shoalv1.ShardInfo, id uint64) bool {
	return s.LeaderId != id && !slices.Contains(s.Voters, id) && !slices.Contains(s.Learners, id)
}

// leaderViews returns, per shard, the local view of the alive member that
// reports leading it (the highest term wins), and the highest term any
// answering member reports for the shard, followers included: a leader view
// of a lower term comes from a deposed leader.
func (n *Node) leaderViews(ctx context.Context) (best map[uint32]*shoalv1.ShardInfo, maxTerm map[uint32]uint64) {
	best, maxTerm = map[uint32]*shoalv1.ShardInfo{}, map[uint32]uint64{}
	for _, v := range n.gatherTopologies(ctx, false, nil) {
		if len(v.Nodes) == 0 {
			continue
		}
		reporter := v.Nodes[0].Id
		for _, s := range v.Shards {
			maxTerm[s.Shard] = max(maxTerm[s.Shard], s.Term)
			if s.LeaderId == reporter && (best[s.Shard] == nil || s.Term > best[s.Shard].Term) {
				best[s.Shard] = s
			}
		}
	}
	return best, maxTerm
}

// dropReplica forgets shard id's local replica (groups.json and the state
// machine), then deletes its raft state and data. Forgetting first means a
// leader's later message finds no group and the factory opens a fresh state
// machine over the emptied keyspace. A crash in between leaves the old raft
// state on disk, not reopened at restart; should a leader add this node back,
// the factory reopens it and it catches up like a returning replica. term is the shard's term in
// its leader's view (see replica.Host.DropGroup).
func (n *Node) dropReplica(id uint32, term uint64) error {
	n.mu.Lock()
	sm := n.mu.shards[id]
	groups, err := n.dir.groups()
	if err == nil {
		err = n.dir.saveGroups(slices.DeleteFunc(groups, func(s uint32) bool { return s == id }))
	}
	if err == nil {
		delete(n.mu.shards, id)
	}
	n.mu.Unlock()
	if err != nil {
		return err
	}
	err = n.host.DropGroup(id, term)
	if sm != nil {
		// The group is gone, or retired if DropGroup failed (a retry, finding no state machine
		// here, could not close it), so no apply runs: end its filter scan before Pebble closes.
		sm.Close()
	}
	return err
}

// sameMembers reports whether a and b hold the same IDs (in any order).
func sameMembers(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for _, id := range a {
		if !slices.Contains(b, id) {
			return false
		}
	}
	return true
}

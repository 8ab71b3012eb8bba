package node

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/replica"
)

// HandOffLeaders transfers the leadership of every shard this node leads to another voter of
// that shard, all shards at once, and returns when every transfer has ended or ctx is done. It
// reports how many shards changed leader and how many this node still leads.
//
// A planned stop calls it before Close (shoal server does on SIGTERM and SIGINT): each shard
// the node led then changes leader in about one round trip, while the node still answers,
// instead of waiting for its followers to find it gone. It first stops the node's placement
// loop and tells the other nodes in gossip that it is stopping (membership.Meta.Stopping), so
// that no placement loop moves a leadership back to it. Requests already running on this node end as
// requests to a deposed leader do: a proposal that may still commit is "outcome unknown"
// (clients retry it under its event IDs), the rest are forwarded to the new leader.
func (n *Node) HandOffLeaders(ctx context.Context) (moved, kept int) {
	n.stopPlacement()
	if ml := n.gossip(); ml != nil {
		// Other nodes' placement loops move no leadership back to this node.
		if err := ml.UpdateMeta(func(m *membership.Meta) { m.Stopping = true }); err != nil {
			n.log.Debug("announcing the stop in gossip", "err", err)
		}
	}
	var wg sync.WaitGroup
	var movedN, keptN atomic.Int32
	for _, g := range n.host.Groups() {
		if !g.IsLeader() {
			continue
		}
		to := handOffTarget(g.Status())
		if to == 0 {
			keptN.Add(1) // no other voter (replication 1, or not replicated yet)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := g.TransferLeadership(ctx, to)
			if !g.IsLeader() {
				movedN.Add(1)
				return
			}
			keptN.Add(1)
			n.log.Info("shard leadership not handed off", "shard", g.Shard(), "to", to, "err", err)
		}()
	}
	wg.Wait()
	return int(movedN.Load()), int(keptN.Load())
}

// handOffTarget picks the voter to hand the leadership of st's shard to: among the other
// voters, one raft saw active recently before one it did not (raft clears that mark at every
// quorum check, so a live voter may lack it for a moment), then the furthest replicated, then
// the lowest ID. 0 when there is no other voter.
func handOffTarget(st replica.Status) uint64 {
	var best uint64
	var bestPr replica.Progress
	for _, id := range st.Voters {
		if id == st.ID {
			continue
		}
		pr := st.Progress[id]
		switch {
		case best == 0,
			pr.RecentActive && !bestPr.RecentActive,
			pr.RecentActive == bestPr.RecentActive && pr.Match > bestPr.Match,
			pr.RecentActive == bestPr.RecentActive && pr.Match == bestPr.Match && id < best:
			best, bestPr = id, pr
		}
	}
	return best
}

package node

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/replica"
)

// handOffRounds bounds how often HandOffLeaders looks again for shards this node leads: one
// may come to it during the hand-off (an election, or a balancing transfer another node
// started before it learned that this one is stopping).
const handOffRounds = 3

// handOffRecheck is the pause before HandOffLeaders looks again.
const handOffRecheck = 100 * time.Millisecond

// HandOffLeaders transfers the leadership of every shard this node leads to another voter of
// that shard, all shards at once, and returns when no shard is left to hand off or ctx is done.
// It reports how many shards changed leader and how many this node still leads.
//
// A planned stop calls it before Close (shoal server does on SIGTERM and SIGINT): each shard
// the node led then changes leader in about one round trip, while the node still answers,
// instead of waiting for its followers to find it gone. It first takes the node out of
// /readyz, stops the node's placement loop and tells the other nodes in gossip that it is
// stopping (membership.Meta.Stopping), so that no placement loop moves a leadership back to it. Both last until the node stops: call
// Close next. Requests already running on this node end as requests to a deposed leader do: a
// proposal that may still commit is "outcome unknown" (clients retry it under its event IDs),
// the rest are forwarded to the new leader.
func (n *Node) HandOffLeaders(ctx context.Context) (moved, kept int) {
	n.stopping.Store(true) // /readyz: send no more clients here
	n.stopPlacement(ctx)
	if ml := n.gossip(); ml != nil {
		if err := ml.UpdateMeta(func(m *membership.Meta) { m.Stopping = true }); err != nil {
			n.log.Debug("announcing the stop in gossip", "err", err)
		}
	}
	tried := map[uint32]bool{} // shards this call tried to hand off
	var (
		mu       sync.Mutex
		noTarget = map[uint32]bool{}  // shards no other voter could take
		failed   = map[uint32]error{} // shards whose transfers failed, with the last failure
	)
	for round := 0; round < handOffRounds && ctx.Err() == nil; round++ {
		members := n.Members()
		starting := n.startingPeers(ctx, members)
		var wg sync.WaitGroup
		for _, g := range n.host.Groups() {
			if !g.IsLeader() {
				continue
			}
			tried[g.Shard()] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				no, err := n.handOff(ctx, g, members, starting)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case no:
					noTarget[g.Shard()] = true
				case err != nil:
					failed[g.Shard()] = err
				}
			}()
		}
		if len(tried) == 0 {
			break // this node led nothing
		}
		// A raft loop stuck behind a hung disk answers no status request: ctx bounds the wait
		// (the goroutines end once the loop answers, or with the host).
		waitOrDone(ctx, &wg)
		if !othersAlive(members, n.ID()) {
			break // a node alone: no voter to take a leadership, none to bring one either
		}
		// Give a leadership that was on its way here a moment to arrive before looking again.
		select {
		case <-ctx.Done():
		case <-time.After(handOffRecheck):
		}
	}
	for shard := range tried {
		if g, ok := n.host.Group(shard); ok && g.IsLeader() {
			kept++
		} else {
			moved++
		}
	}
	// One line for the shards no other voter could take, one per other shard still led here.
	mu.Lock()
	defer mu.Unlock()
	var alone []uint32
	for shard := range noTarget {
		if g, ok := n.host.Group(shard); ok && g.IsLeader() && failed[shard] == nil {
			alone = append(alone, shard)
		}
	}
	if len(alone) > 0 {
		slices.Sort(alone)
		n.log.Info("shard leaderships not handed off: no other voter can take them", "shards", alone)
	}
	for shard, err := range failed {
		if g, ok := n.host.Group(shard); ok && g.IsLeader() {
			n.log.Info("shard leadership not handed off", "shard", shard, "err", err)
		}
	}
	return moved, kept
}

// othersAlive reports whether gossip holds any member but self alive.
func othersAlive(members []membership.Member, self uint64) bool {
	for _, m := range members {
		if m.Alive && m.NodeID != self {
			return true
		}
	}
	return false
}

// handOff transfers g's leadership to the first of its candidates that takes it. It reports
// whether there was no candidate, or else the last transfer's failure while g is still led
// here.
func (n *Node) handOff(ctx context.Context, g *replica.Group, members []membership.Member, starting map[uint64]bool) (none bool, _ error) {
	targets := handOffTargets(g.Status(), members, starting)
	if len(targets) == 0 {
		return true, nil
	}
	var err error
	for _, to := range targets {
		if ctx.Err() != nil || !g.IsLeader() {
			return false, nil
		}
		if err = g.TransferLeadership(ctx, to); !g.IsLeader() {
			return false, nil
		}
	}
	return false, fmt.Errorf("tried %v: %w", targets, err)
}

// handOffTargets orders the voters that may take the leadership of st's shard: neither this
// node, nor a member that gossip says is dead or stopping, nor one that says it is still
// starting (starting; it would refuse the shard's clients), nor one receiving a snapshot, nor
// one gossip does not know that raft has not heard from lately (a voter down since before
// this node started). Those raft saw active recently come first (raft clears that mark at
// every quorum check, so a live voter may lack it for a moment), then the furthest
// replicated, then the lowest ID. A decommissioning voter comes after all others: it still
// serves, and its placement loop hands the leadership on, where leaving the shard to an
// election would stop its writes for an election timeout.
func handOffTargets(st replica.Status, members []membership.Member, starting map[uint64]bool) []uint64 {
	unfit, decom, slow := map[uint64]bool{}, map[uint64]bool{}, map[uint64]bool{}
	for _, m := range members {
		unfit[m.NodeID] = !m.Alive || m.Stopping || starting[m.NodeID]
		decom[m.NodeID] = m.Decommissioning
		slow[m.NodeID] = m.DiskSlow
	}
	var out []uint64
	for _, id := range st.Voters {
		pr := st.Progress[id]
		bad, known := unfit[id]
		if id != st.ID && !bad && (known || pr.RecentActive) && !pr.Snapshotting {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(a, b uint64) int {
		if decom[a] != decom[b] {
			if decom[b] {
				return -1
			}
			return 1
		}
		if slow[a] != slow[b] { // a disk that syncs slowly (diskspeed.go) would slow the shard
			if slow[b] {
				return -1
			}
			return 1
		}
		pa, pb := st.Progress[a], st.Progress[b]
		if pa.RecentActive != pb.RecentActive {
			if pa.RecentActive {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(pb.Match, pa.Match), cmp.Compare(a, b))
	})
	return out
}

package node_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testgossip"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestPlacementKeepsVoterGossipLost: in a three-node cluster, one node's gossip is cut off
// (its raft traffic is not). The others hold it dead, for longer than DeadAfter, but the
// leaders of its shards still hear it: it keeps its replicas, since with no fourth node to
// take them its removal would leave every shard it votes in two voters, one failure from
// unavailable, for nothing. Appends go on through every node.
func TestPlacementKeepsVoterGossipLost(t *testing.T) {
	t.Parallel()
	var cut testgossip.Net
	gossip := make([]string, 3)
	c := testnode.Start(t, 3, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			placementConfig(cfg)
			gossip[i] = cfg.Gossip
			cfg.GossipTransport = cut.Wrap(cfg.Gossip)
		}})
	waitPlaced(t, c, "initial placement", voters(3, 0))
	const x = 2
	xID := c.Nodes[x].ID()

	cut.Isolate(gossip[x], true)
	t.Logf("cut node %d's gossip off", x+1)
	testnode.WaitFor(t, placementWait, "the others hold the cut node dead", func() string {
		for _, i := range []int{0, 1} {
			for _, m := range c.Nodes[i].Members() {
				if m.NodeID == xID && m.Alive {
					return fmt.Sprintf("node %d holds node %d alive", i+1, x+1)
				}
			}
		}
		return ""
	})
	deadAt := time.Now()
	// DeadAfter and then some placement rounds: the cut node keeps its votes throughout.
	for time.Since(deadAt) < placementDead+20*placementInterval {
		for _, s := range c.Shards() {
			if len(s.Voters) != 3 || !slices.Contains(s.Voters, xID) {
				t.Fatalf("%v, %v after gossip held node %d dead: want its three voters kept, node %d among them",
					s, time.Since(deadAt).Round(time.Millisecond), x+1, x+1)
			}
		}
		time.Sleep(placementInterval)
	}
	for i := range c.Nodes {
		placementAppendRead(t, c, i, (i+1)%len(c.Nodes), fmt.Sprintf("gossip-cut-%d", i))
	}
}

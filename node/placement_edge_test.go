package node_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// ledShards returns the state of every shard led by one of nodes, by shard.
func ledShards(nodes []*node.Node) map[uint32]testnode.ShardState {
	out := map[uint32]testnode.ShardState{}
	for _, n := range nodes {
		for _, g := range n.Groups() {
			st := g.Status()
			if st.Removed || st.Leader != n.ID() {
				continue
			}
			out[st.Shard] = testnode.ShardState{Shard: st.Shard, Leader: st.Leader,
				Voters: slices.Clone(st.Voters), Learners: slices.Clone(st.Learners)}
		}
	}
	return out
}

// everyLed is everyShard over the shards that nodes lead.
func everyLed(nodes []*node.Node, check func(s testnode.ShardState) string) string {
	shards := ledShards(nodes)
	for id := uint32(0); id < placementShards; id++ {
		s, ok := shards[id]
		if !ok {
			return fmt.Sprintf("shard %d has no running leader", id)
		}
		if msg := check(s); msg != "" {
			return s.String() + ": " + msg
		}
	}
	return ""
}

// TestPlacementDecommissionWhileDead: in a four-node cluster with replication 3, a node (n4) is
// down when another (n3) is decommissioned, and stays down past DeadAfter. n3 is the only node
// that could take n4's place, so each shard that holds n3 keeps it, as it would with n4 gone
// before the decommission: three voters, where removing n3 in favour of the down n4 left it two
// once n4 was removed. Back, n4 takes n3's replicas and the drain completes.
func TestPlacementDecommissionWhileDead(t *testing.T) {
	const deadAfter = 10 * time.Second
	regs := make([]*prometheus.Registry, 4)
	c := testnode.Start(t, 4, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			placementConfig(cfg)
			cfg.DeadAfter = deadAfter
			regs[i] = prometheus.NewRegistry()
			cfg.Registry = regs[i]
		}})
	waitPlaced(t, c, "initial placement", voters(3, 0))
	const down, decom = 3, 2
	downID, decomID := c.Nodes[down].ID(), c.Nodes[decom].ID()
	var withN3 []uint32
	for sh, s := range c.Shards() {
		if slices.Contains(s.Voters, decomID) {
			withN3 = append(withN3, sh)
		}
	}
	c.Stop(t, down)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := shoalv1.NewClusterClient(c.Dial(t, 0)).Decommission(ctx, &shoalv1.DecommissionRequest{Node: "n3"}); err != nil {
		t.Fatal(err)
	}
	stay := []uint64{c.Nodes[0].ID(), c.Nodes[1].ID()}
	testnode.WaitFor(t, placementWait+deadAfter, "the down node removed", func() string {
		return everyShard(c, func(s testnode.ShardState) string {
			if slices.Contains(s.Voters, downID) || len(s.Learners) > 0 || !slices.Contains(s.Voters, stay[0]) || !slices.Contains(s.Voters, stay[1]) {
				return "want the staying nodes and not the down one"
			}
			return ""
		})
	})
	for sh, s := range c.Shards() {
		if slices.Contains(withN3, sh) && !sameIDs(s.Voters, []uint64{stay[0], stay[1], decomID}) {
			t.Errorf("shard %d held n3 when it was decommissioned with n4 down; with n4 gone: voters %v, want n1, n2 and n3 (%v)",
				sh, s.Voters, []uint64{stay[0], stay[1], decomID})
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	cfg := c.Configs[down]
	cfg.Registry = prometheus.NewRegistry()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	back, err := node.Start(ctx2, cfg)
	cancel2()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { back.Close() })
	nodes := []*node.Node{c.Nodes[0], c.Nodes[1], c.Nodes[2], back}
	testnode.WaitFor(t, placementWait, "drain done once the down node is back", func() string {
		if msg := everyLed(nodes, func(s testnode.ShardState) string {
			if len(s.Learners) > 0 || !sameIDs(s.Voters, []uint64{stay[0], stay[1], downID}) {
				return "want n1, n2, n4"
			}
			return ""
		}); msg != "" {
			return msg
		}
		if g := c.Nodes[decom].Groups(); len(g) != 0 {
			return fmt.Sprintf("%d groups left on the decommissioned node", len(g))
		}
		return ""
	})
}

package node_test

import (
	"context"
	"fmt"
	"os"
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

// TestPlacementWipedNodeRejoins: a node restarted under its name with a wiped data directory
// comes back with a new raft ID while its old one still votes in its shards; every shard ends
// with the new ID in the old one's place, its replica (caught up from nothing) identical to
// the others and holding what was written before the wipe.
func TestPlacementWipedNodeRejoins(t *testing.T) {
	t.Parallel()
	c, _ := startPlacementCluster(t, 3)
	waitPlaced(t, c, "initial placement", threeVotersInZones(c))
	for i := range 3 {
		placementAppendRead(t, c, i, (i+1)%3, fmt.Sprintf("before-wipe-%d", i))
	}
	old := c.Nodes[2].ID()
	c.Stop(t, 2)
	cfg := c.Configs[2]
	if err := os.RemoveAll(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	back, _ := startAgain(t, cfg, "restarting the wiped node")
	if back.ID() == old {
		t.Fatal("the wiped node kept its raft ID")
	}
	nodes := []*node.Node{c.Nodes[0], c.Nodes[1], back}
	testnode.WaitFor(t, placementWait, "the new ID in the old one's place", func() string {
		return everyLed(nodes, func(s testnode.ShardState) string {
			want := []uint64{c.Nodes[0].ID(), c.Nodes[1].ID(), back.ID()}
			if len(s.Learners) > 0 || !sameIDs(s.Voters, want) {
				return fmt.Sprintf("want voters %v (old ID %d)", want, old)
			}
			return ""
		})
	})
	checkWritten(t, c, 0)
	placementAppendRead(t, c, 1, 0, "after-wipe")
	waitVotersEqual(t, nodes)
}

// TestPlacementDecommissionTwoOfFour: two of four nodes decommissioned at once with
// replication 3: every shard keeps three voters, the two staying nodes and one of the two
// leaving ones (no other node can take its replica), led by a staying node, and stays so,
// every voter holding what was written before.
func TestPlacementDecommissionTwoOfFour(t *testing.T) {
	t.Parallel()
	c, regs := startPlacementCluster(t, 4)
	waitPlaced(t, c, "initial placement", voters(3, 0))
	placementAppendRead(t, c, 2, 3, "before-two-drain")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc := shoalv1.NewClusterClient(c.Dial(t, 0))
	for _, name := range []string{"n3", "n4"} {
		if _, err := cc.Decommission(ctx, &shoalv1.DecommissionRequest{Node: name}); err != nil {
			t.Fatal(err)
		}
	}
	stay := []uint64{c.Nodes[0].ID(), c.Nodes[1].ID()}
	leave := []uint64{c.Nodes[2].ID(), c.Nodes[3].ID()}
	check := func(s testnode.ShardState) string {
		n := 0
		for _, id := range leave {
			if slices.Contains(s.Voters, id) {
				n++
			}
		}
		switch {
		case len(s.Learners) > 0:
			return "learners"
		case len(s.Voters) != 3 || !slices.Contains(s.Voters, stay[0]) || !slices.Contains(s.Voters, stay[1]) || n != 1:
			return fmt.Sprintf("want both staying nodes %v and one of %v", stay, leave)
		case slices.Contains(leave, s.Leader):
			return "led by a leaving node"
		}
		return ""
	}
	testnode.WaitFor(t, placementWait, "drain as far as it goes", func() string { return everyShard(c, check) })
	steps := func() float64 {
		return metricSum(t, regs, "shoal_placement_steps_total", "add_learner") + metricSum(t, regs, "shoal_placement_steps_total", "remove")
	}
	before := steps()
	for range 30 {
		time.Sleep(placementInterval)
		// A shard between two leaders for a moment (a balancing transfer, or an election on a
		// loaded machine) is left out of a look: it may not be led by a leaving node nor
		// change its members, which the led shards and the step count show.
		for id, s := range c.Shards() {
			if msg := check(s); msg != "" {
				t.Fatalf("after the drain: shard %d: %s", id, msg)
			}
		}
	}
	if after := steps(); after != before {
		t.Fatalf("membership steps went on after the drain: %v, then %v", before, after)
	}
	testnode.WaitFor(t, placementWait, "kept-extra gauge", func() string {
		if got := metricSum(t, regs, "shoal_placement_kept_extra_shards", ""); got != placementShards {
			return fmt.Sprintf("gauge %v, want %d", got, placementShards)
		}
		return ""
	})
	placementAppendRead(t, c, 3, 0, "two-drained")
	waitVotersEqual(t, runningNodes(c))
}

// TestPlacementReplacedNodeReturns: in a three-node cluster, a node down for longer than
// DeadAfter is removed from every shard (no node can take its place); back with its data, it is
// added again to every shard, its stale replicas caught up, and holds nothing else. Its
// replicas then hold, as the others do, what was written before it went down and while it was
// out.
func TestPlacementReplacedNodeReturns(t *testing.T) {
	t.Parallel()
	c, _ := startPlacementCluster(t, 3)
	waitPlaced(t, c, "initial placement", threeVotersInZones(c))
	for i := range 3 {
		placementAppendRead(t, c, i, (i+1)%3, fmt.Sprintf("before-down-%d", i))
	}
	id := c.Nodes[2].ID()
	c.Stop(t, 2)
	waitPlaced(t, c, "removal of the dead node", voters(2, id))
	placementAppendRead(t, c, 0, 1, "while-out")
	placementAppendRead(t, c, 1, 0, "while-out-2")
	back, _ := startAgain(t, c.Configs[2], "restarting the node")
	nodes := []*node.Node{c.Nodes[0], c.Nodes[1], back}
	testnode.WaitFor(t, placementWait, "the node back in every shard", func() string {
		if msg := everyLed(nodes, func(s testnode.ShardState) string {
			if len(s.Learners) > 0 || len(s.Voters) != 3 || !slices.Contains(s.Voters, id) {
				return "want three voters with the returning node"
			}
			return ""
		}); msg != "" {
			return msg
		}
		gs := back.Groups()
		if len(gs) != placementShards {
			return fmt.Sprintf("returning node holds %d groups", len(gs))
		}
		for _, g := range gs {
			if st := g.Status(); st.Removed {
				return fmt.Sprintf("shard %d removed on the returning node", st.Shard)
			}
		}
		return ""
	})
	checkWritten(t, c, 0)
	waitVotersEqual(t, nodes)
}

// TestPlacementZonesMetLater: three nodes in two zones hold every shard with three voters; a
// node in a third zone joins and every shard moves a replica to it, to three zones, with what
// was written before.
func TestPlacementZonesMetLater(t *testing.T) {
	t.Parallel()
	c := testnode.Start(t, 3, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			placementConfig(cfg)
			cfg.Zone = []string{"z1", "z2", "z2"}[i]
		}})
	waitPlaced(t, c, "three voters per shard", voters(3, 0))
	placementAppendRead(t, c, 0, 1, "before-zone")
	n4 := c.Add(t, func(cfg *node.Config) { placementConfig(cfg); cfg.Zone = "z3" })
	waitInRing(t, c, n4)
	waitPlaced(t, c, "three zones", threeVotersInZones(c))
	checkWritten(t, c, 3)
	waitVotersEqual(t, runningNodes(c))
}

// TestPlacementDecommissionWhileDead: in a four-node cluster with replication 3, a node (n4) is
// down when another (n3) is decommissioned, and stays down past DeadAfter. n3 is the only node
// that could take n4's place, so each shard that holds n3 keeps it, as it would with n4 gone
// before the decommission: three voters, where removing n3 in favour of the down n4 left it two
// once n4 was removed; and each shard that did not hold n3 gets a replica on it in n4's place
// (fillFromDraining), where it was left with two voters. Back, n4 takes n3's replicas, with
// what was written before it went down, and the drain completes.
func TestPlacementDecommissionWhileDead(t *testing.T) {
	t.Parallel()
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
	placementAppendRead(t, c, 0, 1, "before-n4-down")
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
	testnode.WaitFor(t, placementWait, "every shard three voters, n3 in n4's place", func() string {
		return everyShard(c, func(s testnode.ShardState) string {
			if len(s.Learners) > 0 || !sameIDs(s.Voters, []uint64{stay[0], stay[1], decomID}) {
				return "want n1, n2 and n3"
			}
			return ""
		})
	})
	if t.Failed() {
		t.FailNow()
	}
	back, _ := startAgain(t, c.Configs[down], "restarting the down node")
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
	checkWritten(t, c, 1)
	waitVotersEqual(t, nodes)
}

// TestPlacementBalancesWhileDrainWaits: in a three-node cluster with replication 3, a
// decommissioned node keeps its replicas for want of a replacement. Its leaderships go to the
// ring's preferred replicas, and stay balanced: once a node restarts (its leaderships go to the
// other), each shard's leadership returns to the ring's first replica.
func TestPlacementBalancesWhileDrainWaits(t *testing.T) {
	t.Parallel()
	c, _ := startPlacementCluster(t, 3)
	waitPlaced(t, c, "up-replication", threeVotersInZones(c))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := shoalv1.NewClusterClient(c.Dial(t, 0)).Decommission(ctx, &shoalv1.DecommissionRequest{Node: "n3"}); err != nil {
		t.Fatal(err)
	}
	drained := c.Nodes[2].ID()
	testnode.WaitFor(t, placementWait, "leaderships off the decommissioning node", func() string {
		return everyShard(c, func(s testnode.ShardState) string {
			if s.Leader == drained || len(s.Voters) != 3 {
				return "led by the decommissioning node, or not three voters"
			}
			return ""
		})
	})
	c.Stop(t, 0)
	testnode.WaitFor(t, placementWait, "every shard led by n2", func() string {
		return everyShard(c, func(s testnode.ShardState) string {
			if s.Leader != c.Nodes[1].ID() {
				return "not led by n2"
			}
			return ""
		})
	})
	back, _ := startAgain(t, c.Configs[0], "restarting n1")
	nodes := []*node.Node{back, c.Nodes[1], c.Nodes[2]}
	testnode.WaitFor(t, placementWait, "leaderships on the ring's first replicas", func() string {
		desired := c.Nodes[1].DesiredReplicas()
		return everyLed(nodes, func(s testnode.ShardState) string {
			if len(s.Voters) != 3 || !slices.Contains(s.Voters, drained) {
				return "not three voters with the decommissioning node"
			}
			if want := desired[s.Shard][0]; s.Leader != want {
				return fmt.Sprintf("preferred leader %d (ring %v)", want, desired[s.Shard])
			}
			return ""
		})
	})
}

package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestReadyDespiteOneShardLost: a shard that lost its quorum does not take the nodes that serve
// other shards out of service (/readyz): three nodes, replication 2, one stopped; the shards it
// held with each survivor have no leader, the others do, and both survivors are ready once the
// lost shards have been leaderless for three election timeouts.
func TestReadyDespiteOneShardLost(t *testing.T) {
	t.Parallel()
	c := replicatedCluster(t, 6, 2)
	// The node stopped is one that shares a shard with another: with replication 2 over three
	// nodes, every node that holds a shard does.
	victim := -1
	for _, s := range c.Shards() {
		for i := range 3 {
			if victim == -1 && slices.Contains(s.Voters, c.Nodes[i].ID()) {
				victim = i
			}
		}
	}
	if victim == -1 {
		t.Fatalf("no node holds a shard: %v", c.Shards())
	}
	c.Stop(t, victim)
	for i := range 3 {
		if i == victim {
			continue
		}
		testnode.WaitFor(t, 15*time.Second, fmt.Sprintf("n%d ready", i+1), func() string {
			if err := c.Nodes[i].Ready(); err != nil {
				return err.Error()
			}
			return ""
		})
	}
}

// TestNotReadyWhenEveryShardLost: a node whose every shard lost its quorum (replication 3, the
// two other nodes stopped) is taken out of service: /readyz names the state once the shards
// have been leaderless for three election timeouts, rather than calling them elections under
// way for good or the node ready.
func TestNotReadyWhenEveryShardLost(t *testing.T) {
	t.Parallel()
	c := replicatedCluster(t, 4, 3)
	c.Stop(t, 1)
	c.Stop(t, 2)
	testnode.WaitFor(t, 20*time.Second, "n1 out of service", func() string {
		err := c.Nodes[0].Ready()
		if err == nil || !strings.Contains(err.Error(), "every shard it holds lost its quorum") {
			return fmt.Sprintf("Ready: %v", err)
		}
		return ""
	})
}

// replicatedCluster starts three nodes with shards shards and waits until placement gave each
// shard replication voters and no learner; the cluster is closed when t ends.
func replicatedCluster(t *testing.T, shards uint32, replication int) *testnode.Cluster {
	t.Helper()
	c := testnode.Start(t, 3, testnode.Options{Shards: int(shards), Replication: replication,
		Configure: func(i int, cfg *node.Config) { cfg.PlacementInterval = 100 * time.Millisecond }})
	t.Cleanup(c.Close)
	testnode.WaitFor(t, 30*time.Second, fmt.Sprintf("%d voters per shard", replication), func() string {
		st := c.Shards()
		for id := range shards {
			if s, ok := st[id]; !ok || len(s.Voters) != replication || len(s.Learners) > 0 {
				return fmt.Sprintf("shard %d: %+v", id, s)
			}
		}
		return ""
	})
	return c
}

// TestNotReadyWhenCutOffWithALearner: a node cut off from its cluster is taken out of service
// although it also holds a learner, which never campaigns and goes on naming the leader it last
// knew: only its voters' leaders tell. Node 4 holds a voter of shard 1 (voters n1..n4) and a
// learner of shard 0 (voters n1..n3, led by n2); nodes 2 and 3 go.
func TestNotReadyWhenCutOffWithALearner(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c, nw := manualCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g0, g1 := firstLeads(t, c), firstLeadsShard(t, c, 1)
	addVoters(t, ctx, c, g1, 1, 2, 3)
	addVoters(t, ctx, c, g0, 1, 2)
	n2 := c.Nodes[1].ID()
	retry(t, "add learner n4 to shard 0", func() error { return g0.AddLearner(ctx, c.Nodes[3].ID()) })
	retry(t, "transfer shard 0's leadership to node 2", func() error { return g0.TransferLeadership(ctx, n2) })
	testnode.WaitFor(t, 20*time.Second, "node 4's learner knows node 2 leads", func() string {
		if lg, ok := c.Nodes[3].Host().Group(0); !ok || lg.Leader() != n2 || lg.Voter() {
			return fmt.Sprintf("node 4's replica of shard 0: %v", ok)
		}
		return ""
	})
	if err := c.Nodes[3].Ready(); err != nil {
		t.Fatalf("node 4 before: %v", err)
	}
	// Node 3 first; node 2, shard 0's leader, cut off before it stops, so that it hands its
	// leadership to no one.
	c.Stop(t, 2)
	nw.isolate(1, []int{0, 3})
	c.Stop(t, 1)
	testnode.WaitFor(t, 30*time.Second, "node 4 out of service", func() string {
		err := c.Nodes[3].Ready()
		if err == nil || !strings.Contains(err.Error(), "every shard it holds lost its quorum") {
			return fmt.Sprintf("Ready: %v", err)
		}
		return ""
	})
	if lg, _ := c.Nodes[3].Host().Group(0); lg.Leader() != n2 {
		t.Fatalf("the learner names %d, not the leader it last knew (%d): the scenario is gone", lg.Leader(), n2)
	}
}

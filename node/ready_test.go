package node_test

import (
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
	victim := c.Nodes[0].ID()
	lostOn := map[int]bool{}
	for _, s := range c.Shards() {
		if slices.Contains(s.Voters, victim) {
			for i := 1; i < 3; i++ {
				if slices.Contains(s.Voters, c.Nodes[i].ID()) {
					lostOn[i] = true
				}
			}
		}
	}
	if len(lostOn) == 0 {
		t.Skip("the stopped node shares no shard with the others (placement put every shard's two voters elsewhere)")
	}
	c.Stop(t, 0)
	for i := 1; i < 3; i++ {
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

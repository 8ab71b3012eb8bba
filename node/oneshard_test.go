package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/replica"
)

// firstLeads returns node 1's replica of shard 0 once it leads: the shard of a one-shard cluster
// whose nodes run no placement, so that the test builds its configuration itself.
func firstLeads(t *testing.T, c *testnode.Cluster) *replica.Group { return firstLeadsShard(t, c, 0) }

// firstLeadsShard is firstLeads for shard.
func firstLeadsShard(t *testing.T, c *testnode.Cluster, shard uint32) *replica.Group {
	t.Helper()
	g, ok := c.Nodes[0].Host().Group(shard)
	if !ok {
		t.Fatalf("node 1 has no replica of shard %d", shard)
	}
	testnode.WaitFor(t, 10*time.Second, fmt.Sprintf("node 1 leads shard %d", shard), func() string {
		if !g.IsLeader() {
			return "not yet"
		}
		return ""
	})
	return g
}

// retry calls f until it returns nil, for up to 20 s (a configuration change is refused while
// another is pending, a transfer while the target catches up).
func retry(t *testing.T, what string, f func() error) {
	t.Helper()
	testnode.WaitFor(t, 20*time.Second, what, func() string {
		if err := f(); err != nil {
			return err.Error()
		}
		return ""
	})
}

// addVoters makes the replicas of the nodes at indexes voters of shard 0, led by g: each a
// learner first, then promoted.
func addVoters(t *testing.T, ctx context.Context, c *testnode.Cluster, g *replica.Group, voters ...int) {
	t.Helper()
	for _, i := range voters {
		id := c.Nodes[i].ID()
		retry(t, fmt.Sprintf("add learner n%d", i+1), func() error { return g.AddLearner(ctx, id) })
		retry(t, fmt.Sprintf("promote n%d", i+1), func() error { return g.PromoteLearner(ctx, id) })
	}
}

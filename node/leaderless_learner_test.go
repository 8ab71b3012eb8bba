package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestLeaderlessNotMaskedByLearner: operations.md pages on `min by (shard)
// (shoal_shard_leaderless) > 0` for a shard that lost its quorum. A learner never campaigns and
// keeps its last leader, so it reports no such series: the min over the shard's replicas is the
// voters', and fires while a learner is catching up (placement adding a replica, replacing a
// dead node).
func TestLeaderlessNotMaskedByLearner(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	regs := make([]*prometheus.Registry, 4)
	c := testnode.Start(t, 4, testnode.Options{Shards: 1, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			cfg.PlacementInterval = -1
			cfg.DisableHTTP = true
			regs[i] = prometheus.NewRegistry()
			cfg.Registry = regs[i]
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := firstLeads(t, c)
	addVoters(t, ctx, c, g, 1, 2)
	learner := c.Nodes[3].ID()
	retry(t, "add learner 4", func() error { return g.AddLearner(ctx, learner) })
	testnode.WaitFor(t, 20*time.Second, "learner knows the leader", func() string {
		lg, ok := c.Nodes[3].Host().Group(0)
		if !ok || lg.Leader() == 0 {
			return "not yet"
		}
		return ""
	})
	// Two of the three voters go: the shard lost its quorum.
	c.Stop(t, 1)
	c.Stop(t, 2)
	value := func(reg *prometheus.Registry) float64 {
		for _, m := range gatherSeries(t, []*prometheus.Registry{reg}, "shoal_shard_leaderless") {
			return m.GetGauge().GetValue()
		}
		return -1
	}
	testnode.WaitFor(t, 30*time.Second, "the surviving voter reports the shard leaderless", func() string {
		if v := value(regs[0]); v != 1 {
			return fmt.Sprintf("voter reports %v", v)
		}
		return ""
	})
	time.Sleep(3 * time.Second) // past the learner's quiesce lapse
	if v0, v3 := value(regs[0]), value(regs[3]); v0 != 1 || v3 != -1 {
		t.Fatalf("quorum lost: the voter reports %v (want 1), the learner %v (want no series)", v0, v3)
	}
}

package node_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestTopologyRequestsShareGathers: a hundred clients asking one node for the topology at
// once (as after a failover) each get the whole, current topology, while the node asks its
// members for their views a few times only (shoal_topology_gathers_total against
// shoal_topology_requests_total).
func TestTopologyRequestsShareGathers(t *testing.T) {
	t.Parallel()
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry(), prometheus.NewRegistry()}
	c := testnode.Start(t, 3, testnode.Options{Shards: 8, Replication: 3, Configure: func(i int, cfg *node.Config) {
		cfg.DisableHTTP = true
		cfg.Registry = regs[i]
	}})
	waitPlaced(t, c, "replication 3", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cc := shoalv1.NewClusterClient(c.Dial(t, 0))

	const callers = 100
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make(chan error, callers)
		tops  = make(chan *shoalv1.TopologyResponse, callers)
	)
	for range callers {
		wg.Go(func() {
			<-start
			top, err := cc.Topology(ctx, &shoalv1.TopologyRequest{})
			if err != nil {
				errs <- err
				return
			}
			tops <- top
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	close(tops)
	for err := range errs {
		t.Fatal(err)
	}
	for top := range tops {
		if len(top.Nodes) != 3 || len(top.Shards) != 8 || len(top.ViewsFrom) != 3 {
			t.Fatalf("topology with %d nodes, %d shards, views from %v", len(top.Nodes), len(top.Shards), top.ViewsFrom)
		}
		for _, s := range top.Shards {
			if s.LeaderId == 0 || s.Unavailable || len(s.Voters) != 3 {
				t.Fatalf("shard %v", s)
			}
		}
	}
	requests := unlabelledCounter(t, regs[0], "shoal_topology_requests_total")
	gathers := unlabelledCounter(t, regs[0], "shoal_topology_gathers_total")
	t.Logf("%v topology requests, %v gathers", requests, gathers)
	if requests < callers || gathers < 1 || gathers > requests/5 {
		t.Fatalf("%v topology requests made %v gathers: not shared", requests, gathers)
	}
}

// unlabelledCounter returns the value of the counter of family name in reg that has no label.
func unlabelledCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

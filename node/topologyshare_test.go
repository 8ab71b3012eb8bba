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
// shoal_topology_requests_total); and the same for status requests.
func TestTopologyRequestsShareGathers(t *testing.T) {
	t.Parallel()
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry(), prometheus.NewRegistry()}
	c := testnode.Start(t, 3, testnode.Options{Shards: placementShards, Replication: 3, Configure: func(i int, cfg *node.Config) {
		cfg.DisableHTTP = true
		cfg.Registry = regs[i]
	}})
	waitPlaced(t, c, "replication 3", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cc := shoalv1.NewClusterClient(c.Dial(t, 0))

	const callers = 100
	for _, kind := range []string{"topology", "status"} {
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make(chan error, callers)
			tops  = make(chan *shoalv1.TopologyResponse, callers)
		)
		for range callers {
			wg.Go(func() {
				<-start
				var top *shoalv1.TopologyResponse
				var err error
				if kind == "topology" {
					top, err = cc.Topology(ctx, &shoalv1.TopologyRequest{})
				} else {
					var st *shoalv1.StatusResponse
					st, err = cc.Status(ctx, &shoalv1.StatusRequest{})
					top = st.GetTopology()
				}
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
			t.Fatalf("%s: %v", kind, err)
		}
		for top := range tops {
			if len(top.Nodes) != 3 || len(top.Shards) != placementShards || len(top.ViewsFrom) != 3 {
				t.Fatalf("%s with %d nodes, %d shards, views from %v", kind, len(top.Nodes), len(top.Shards), top.ViewsFrom)
			}
			for _, s := range top.Shards {
				if s.LeaderId == 0 || s.Unavailable || len(s.Voters) != 3 {
					t.Fatalf("%s: shard %v", kind, s)
				}
			}
		}
		requests := counterValue(t, regs[0], "shoal_topology_requests_total", kind)
		gathers := counterValue(t, regs[0], "shoal_topology_gathers_total", kind)
		t.Logf("%v %s requests, %v gathers", requests, kind, gathers)
		if requests < callers || gathers < 1 || gathers > requests/5 {
			t.Fatalf("%v %s requests made %v gathers: not shared", requests, kind, gathers)
		}
	}
}

// TestTopologyDuringClose: a node that is closing answers topology and status requests with
// complete views or an error, never with an answer made without its members' views (which
// names every shard unknown): its gathers' context ends when Close begins, before its gRPC
// server stops.
func TestTopologyDuringClose(t *testing.T) {
	t.Parallel()
	c := testnode.Start(t, 3, testnode.Options{Shards: placementShards, Replication: 3, Configure: func(i int, cfg *node.Config) {
		cfg.DisableHTTP = true
	}})
	waitPlaced(t, c, "replication 3", nil)
	cc := shoalv1.NewClusterClient(c.Dial(t, 0))
	whole := func(top *shoalv1.TopologyResponse) bool {
		if len(top.GetViewsFrom()) == 0 {
			return false
		}
		for _, s := range top.GetShards() {
			if s.GetUnknown() {
				return false
			}
		}
		return true
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		c.Stop(t, 0)
	}()
	answers := 0
	for ended := false; !ended; {
		select {
		case <-closed:
			ended = true
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		top, err := cc.Topology(ctx, &shoalv1.TopologyRequest{})
		var st *shoalv1.StatusResponse
		stErr := err
		if err == nil {
			st, stErr = cc.Status(ctx, &shoalv1.StatusRequest{})
		}
		cancel()
		if err == nil && !whole(top) {
			t.Fatalf("topology while closing, without views: views from %v, unanswered %v", top.ViewsFrom, top.Unanswered)
		}
		if stErr == nil && !whole(st.GetTopology()) {
			t.Fatalf("status while closing, without views: views from %v", st.GetTopology().GetViewsFrom())
		}
		if err == nil {
			answers++
		}
	}
	t.Logf("%d topology answers while closing", answers)
}

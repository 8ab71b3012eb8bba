package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestForwardedRequestsCountedOnce: a request forwarded to the shard's leader counts once in
// the request metrics, on the node its client called, and its events once in
// shoal_events_appended_total, on the leader that wrote them: summed over the nodes, the
// events written. A duplicate writes, and counts, nothing.
func TestForwardedRequestsCountedOnce(t *testing.T) {
	t.Parallel()
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	c := testnode.Start(t, 2, testnode.Options{Shards: 4, Replication: 1, Configure: func(i int, cfg *node.Config) {
		cfg.PlacementInterval = -1
		cfg.DisableHTTP = true
		cfg.Registry = regs[i]
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Node 2 holds no replica: it forwards to node 1, which leads every shard.
	if len(c.Nodes[1].Groups()) != 0 {
		t.Fatalf("node 2 holds %d groups", len(c.Nodes[1].Groups()))
	}
	sc := shoalv1.NewStreamsClient(c.Dial(t, 1))
	req := &shoalv1.AppendRequest{Stream: "fwd", Events: []*shoalv1.EventData{event("A"), event("B"), event("C")}}
	for range 2 { // the second is a duplicate
		if _, err := sc.Append(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := readAllErr(ctx, sc, &shoalv1.ReadRequest{Stream: "fwd"}); err != nil || n != 3 {
		t.Fatalf("read: %d events, %v", n, err)
	}
	if _, err := sc.Delete(ctx, &shoalv1.DeleteRequest{Stream: "fwd"}); err != nil {
		t.Fatal(err)
	}

	leader, called := regs[:1], regs[1:]
	for _, m := range []struct {
		name           string
		leader, called float64
	}{
		{"shoal_events_appended_total", 3, 0},
		{"shoal_appends_total", 0, 2},
		{"shoal_deletes_total", 0, 1},
		{"shoal_reads_total", 0, 1},
	} {
		if l, c := metricSum(t, leader, m.name, ""), metricSum(t, called, m.name, ""); l != m.leader || c != m.called {
			t.Errorf("%s: %v on the leader, %v on the node called; want %v and %v", m.name, l, c, m.leader, m.called)
		}
	}
	if _, l := histogramSum(t, leader, "shoal_append_duration_seconds"); l != 0 {
		t.Errorf("shoal_append_duration_seconds: %d forwarded appends observed on the leader, want 0", l)
	}
	if _, c := histogramSum(t, called, "shoal_append_duration_seconds"); c != 2 {
		t.Errorf("shoal_append_duration_seconds: %d appends observed on the node called, want 2", c)
	}
}

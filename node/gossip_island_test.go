package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/internal/testgossip"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestGossipIslandsMerge: four nodes restart while the link between {n1, n2} and {n3, n4} is
// down, and each pair joins the one it reaches. Gossip never heard of the other pair, so it
// would never ask it: once the link is back, the nodes ask the addresses they stored that no
// live member has, and the islands merge into one cluster again.
func TestGossipIslandsMerge(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster twice")
	}
	defer node.SetIslandRejoinEvery(500 * time.Millisecond)()
	var cut testgossip.Net
	gossip := make([]string, 4)
	c := testnode.Start(t, 4, testnode.Options{Shards: 4, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			gossip[i] = cfg.Gossip
			cfg.GossipTransport = cut.Wrap(cfg.Gossip)
		}})
	// holding returns the condition that every node of nodes holds want members alive.
	holding := func(nodes []*node.Node, want int) func() string {
		return func() string {
			for _, n := range nodes {
				alive := 0
				for _, m := range n.Members() {
					if m.Alive {
						alive++
					}
				}
				if alive != want {
					return fmt.Sprintf("%s holds %d members alive", n.Name(), alive)
				}
			}
			return ""
		}
	}
	testnode.WaitFor(t, 20*time.Second, "every node holds four alive", holding(c.Nodes, 4))
	// Long enough for every node to store the others as its peers.
	time.Sleep(time.Second)
	for i := range c.Nodes {
		c.Stop(t, i)
	}
	for _, a := range gossip[:2] {
		for _, b := range gossip[2:] {
			cut.Cut(a, b, true)
		}
	}
	back := make([]*node.Node, 4)
	var wg sync.WaitGroup
	for i := range back {
		wg.Go(func() {
			cfg := c.Configs[i]
			cfg.Registry = prometheus.NewRegistry()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n, err := node.Start(ctx, cfg)
			if err != nil {
				t.Errorf("restarting n%d: %v", i+1, err)
				return
			}
			back[i] = n
		})
	}
	wg.Wait()
	for _, n := range back {
		if n != nil {
			t.Cleanup(func() { n.Close() })
		}
	}
	if t.Failed() {
		return
	}
	testnode.WaitFor(t, 20*time.Second, "two islands of two", holding(back, 2))
	for _, a := range gossip[:2] {
		for _, b := range gossip[2:] {
			cut.Cut(a, b, false)
		}
	}
	testnode.WaitFor(t, 20*time.Second, "one cluster again", holding(back, 4))
}

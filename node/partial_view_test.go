package node_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestStatusFromCutOffNodeSaysItIsPartial: a node whose peer links are cut (gossip still up)
// answers the cluster status with its own view only, and says so: the views merged are its
// own, the two others are alive but did not answer, and every shard, which it knows no
// leader for while the majority leads them all, is unknown rather than plainly unavailable
// (unavailable stays set, for older clients). A majority node's answer names the cut-off
// node as unanswered and every shard's leader. Once healed, the victim's answer is whole.
func TestStatusFromCutOffNodeSaysItIsPartial(t *testing.T) {
	t.Parallel()
	nw := newTestNet()
	c, _ := startFailoverCluster(t, func(i int, cfg *node.Config) { cfg.PeerDialer = nw.dialer(i) })
	for i, n := range c.Nodes {
		nw.register(n.Addr(), i)
	}
	victim, majority := 0, []int{1, 2}
	victimConn, majorityConn := c.Dial(t, victim), c.Dial(t, majority[0]) // the test's own links, never cut
	nw.isolate(victim, majority)
	testnode.WaitFor(t, 15*time.Second, "a majority leader for every shard, the victim leading none", func() string {
		for sh := uint32(0); sh < failoverShards; sh++ {
			if majorityLeader(c, majority, sh) == 0 {
				return fmt.Sprintf("shard %d has no leader among the majority", sh)
			}
		}
		for _, g := range c.Nodes[victim].Groups() {
			if st := g.Status(); st.Leader != 0 {
				return fmt.Sprintf("victim still sees leader %d for shard %d", st.Leader, st.Shard)
			}
		}
		return ""
	})
	status := func(conn *grpc.ClientConn) *shoalv1.TopologyResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		st, err := shoalv1.NewClusterClient(conn).Status(ctx, &shoalv1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetTopology()
	}
	ids := func(is ...int) []uint64 {
		var out []uint64
		for _, i := range is {
			out = append(out, c.Nodes[i].ID())
		}
		slices.Sort(out)
		return out
	}

	topo := status(victimConn)
	if got, want := topo.GetViewsFrom(), ids(victim); !slices.Equal(got, want) {
		t.Errorf("cut-off node: views from %v, want only its own %v", got, want)
	}
	if got, want := topo.GetUnanswered(), ids(majority...); !slices.Equal(got, want) {
		t.Errorf("cut-off node: unanswered %v, want the majority %v", got, want)
	}
	for _, s := range topo.GetShards() {
		if !s.GetUnknown() || !s.GetUnavailable() || s.GetLeaderId() != 0 {
			t.Errorf("cut-off node: shard %d unknown %v, unavailable %v, leader %d; want unknown and unavailable, no leader",
				s.GetShard(), s.GetUnknown(), s.GetUnavailable(), s.GetLeaderId())
		}
	}

	// Gossip still holds the victim alive, so the majority's answer is partial too, but
	// every shard is led on its side: none is unknown.
	topo = status(majorityConn)
	if got, want := topo.GetUnanswered(), ids(victim); !slices.Equal(got, want) {
		t.Errorf("majority node: unanswered %v, want the cut-off node %v", got, want)
	}
	for _, s := range topo.GetShards() {
		if s.GetUnknown() || s.GetUnavailable() || s.GetLeaderId() == 0 {
			t.Errorf("majority node: shard %d unknown %v, unavailable %v, leader %d; want a leader",
				s.GetShard(), s.GetUnknown(), s.GetUnavailable(), s.GetLeaderId())
		}
	}

	nw.heal()
	testnode.WaitFor(t, 20*time.Second, "the cut-off node's answer whole again", func() string {
		topo := status(victimConn)
		if len(topo.GetUnanswered()) > 0 || len(topo.GetViewsFrom()) != 3 {
			return fmt.Sprintf("views from %v, unanswered %v", topo.GetViewsFrom(), topo.GetUnanswered())
		}
		for _, s := range topo.GetShards() {
			if s.GetUnknown() || s.GetLeaderId() == 0 {
				return fmt.Sprintf("shard %d: unknown %v, leader %d", s.GetShard(), s.GetUnknown(), s.GetLeaderId())
			}
		}
		return ""
	})
}

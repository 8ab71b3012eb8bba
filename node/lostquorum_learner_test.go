package node_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestLostShardWithLearnerAnsweredAtOnce: a shard that lost its quorum while a learner was
// catching up (placement adding a replica, replacing a dead node). The learner never
// campaigns, so it names the leader it last knew, gone with the quorum, at the term the
// surviving voter keeps (PreVote). The merged topology named that dead leader, so that clients
// were sent to it, and the survivor's requests for the shard were held for the whole routing
// wait (its leader cache took the learner's leader for a live one), and the learner's own node
// forwarded them to the dead leader (it took its replica's leader for the shard's): they are
// answered at once.
func TestLostShardWithLearnerAnsweredAtOnce(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c, nw := manualCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := firstLeads(t, c)
	addVoters(t, ctx, c, g, 1, 2)
	retry(t, "add learner 4", func() error { return g.AddLearner(ctx, c.Nodes[3].ID()) })
	// Node 2 leads, and goes with node 3: node 1's voter survives, with node 4's learner.
	dead := c.Nodes[1].ID()
	retry(t, "transfer the leadership to node 2", func() error { return g.TransferLeadership(ctx, dead) })
	testnode.WaitFor(t, 20*time.Second, "every replica knows node 2 leads", func() string {
		for i := range 4 {
			if rg, ok := c.Nodes[i].Host().Group(0); !ok || rg.Leader() != dead {
				return fmt.Sprintf("node %d's replica: %v", i+1, ok && rg.Leader() == dead)
			}
		}
		return ""
	})
	// Node 3 first, a follower. Then node 2, cut off from the others first: stopping, a
	// leader hands its leadership over, which would leave node 1 the leader (and the
	// learner naming it, the node's own replica knowing better).
	c.Stop(t, 2)
	nw.isolate(1, []int{0, 3})
	c.Stop(t, 1)
	after := 3 * c.Nodes[0].Host().ElectionTimeout()
	testnode.WaitFor(t, 30*time.Second, "node 1's voter leaderless", func() string {
		if d, ok := g.Leaderless(); !ok || d < after {
			return fmt.Sprintf("leader %d, leaderless %v", g.Leader(), d)
		}
		return ""
	})
	if lg, _ := c.Nodes[3].Host().Group(0); lg.Leader() != dead {
		t.Fatalf("the learner names %d, not the leader it last knew (%d): the scenario is gone", lg.Leader(), dead)
	}
	s := c.Nodes[0].Topology(ctx).Shards[0]
	if s.LeaderId != 0 || !s.Unavailable {
		t.Errorf("topology of the shard without quorum: leader %d, unavailable %t; want no leader", s.LeaderId, s.Unavailable)
	}
	for _, via := range []struct {
		node int
		what string
	}{{0, "the surviving voter's node"}, {3, "the learner's node"}} {
		start := time.Now()
		_, err := shoalv1.NewStreamsClient(c.Dial(t, via.node)).Append(ctx, &shoalv1.AppendRequest{Stream: "s",
			Events: []*shoalv1.EventData{{Id: []byte("0123456789abcdef"), Type: "T"}}})
		took := time.Since(start)
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "known no leader for") || took > 2*time.Second {
			t.Errorf("append to the shard without quorum, through %s: %v after %v; want UNAVAILABLE at once, saying the replicas have known no leader", via.what, err, took)
		}
	}
}

// manualCluster starts four nodes with shards shards, every replica on node 1 (no placement:
// the test moves them), and peer traffic through a net the test can cut.
func manualCluster(t *testing.T, shards int) (*testnode.Cluster, *testNet) {
	t.Helper()
	nw := newTestNet()
	c := testnode.Start(t, 4, testnode.Options{Shards: shards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			cfg.PlacementInterval = -1
			cfg.DisableHTTP = true
			cfg.PeerDialer = nw.dialer(i)
		}})
	for i, n := range c.Nodes {
		nw.register(n.Addr(), i)
	}
	return c, nw
}

package node_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestZombieReplicaNodeForwards: a node whose replica was removed from its group while cut off
// (it never learns of it: raft sends a removed member nothing more, and operations.md keeps
// such a replica until --dead-after after its node restarts) has known no leader for as long,
// while the shard is led and its leader is reachable. A request to that node is forwarded to
// the leader, as it was before shards that lost their quorum were answered at once: the
// replica's own silence says nothing of the shard. Here the leader cache has just lost its
// entry (invalidated, as a forward to a leader that moved or died does) right after a refresh
// that found the leader, so that the next refresh is up to 200 ms away.
func TestZombieReplicaNodeForwards(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	nw := newTestNet()
	c := testnode.Start(t, 4, testnode.Options{Shards: 1, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			noPlacement(i, cfg)
			cfg.DisableHTTP = true
			cfg.PeerDialer = nw.dialer(i)
		}})
	for i, n := range c.Nodes {
		nw.register(n.Addr(), i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	g := firstLeads(t, c)
	addVoters(t, ctx, c, g, 1, 2, 3)
	z := c.Nodes[3]
	var zg interface {
		Leader() uint64
		Leaderless() (time.Duration, bool)
		Removed() bool
	}
	testnode.WaitFor(t, 20*time.Second, "n4 a voter following the leader", func() string {
		gz, ok := z.Host().Group(0)
		if !ok || gz.Leader() != c.Nodes[0].ID() || !slices.Contains(gz.Status().Voters, z.ID()) {
			return "not yet"
		}
		zg = gz
		return ""
	})

	// n4 is cut off, removed, and let back in: a zombie.
	nw.isolate(3, []int{0, 1, 2})
	retry(t, "remove n4", func() error { return g.RemoveMember(ctx, z.ID()) })
	after := 3 * z.Host().ElectionTimeout()
	testnode.WaitFor(t, 20*time.Second, "n4 leaderless", func() string {
		if d, ok := zg.Leaderless(); !ok || d < after {
			return fmt.Sprintf("leader %d, leaderless %v", zg.Leader(), d)
		}
		return ""
	})
	nw.heal()
	time.Sleep(time.Second)
	if zg.Removed() || zg.Leader() != 0 {
		t.Fatalf("n4's replica: removed %t, leader %d; want a zombie (not removed, no leader)", zg.Removed(), zg.Leader())
	}

	streams := shoalv1.NewStreamsClient(c.Dial(t, 3))
	for i := range 5 {
		z.RefreshLeaders(ctx)
		if l, ok := z.CachedLeader(0); !ok || l != c.Nodes[0].ID() {
			t.Fatalf("n4's refresh: cached leader %d (%t), want n1", l, ok)
		}
		z.SetCachedLeader(0, z.ID()) // invalidated by route, as a stale entry naming this node is
		start := time.Now()
		_, err := streams.Append(ctx, &shoalv1.AppendRequest{Stream: fmt.Sprintf("zombie-%d", i),
			Events: []*shoalv1.EventData{{Id: []byte(fmt.Sprintf("%016d", i)), Type: "T"}}})
		if err != nil {
			t.Fatalf("append %d through n4, whose replica is a zombie of a led shard: %v (after %v)", i, err, time.Since(start))
		}
	}
}

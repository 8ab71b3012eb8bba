package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testnode"
)

// TestLeaderRefreshAfterCallerOutOfTime: a request whose context ended before (or while) the
// node refreshed its cache of other nodes' leaders does not spend the refresh's rate limit (one
// per 200 ms): the next request's refresh learns the leaders, instead of every request of the
// next 200 ms finding none.
func TestLeaderRefreshAfterCallerOutOfTime(t *testing.T) {
	t.Parallel()
	c := testnode.Start(t, 3, testnode.Options{Shards: 4, Replication: 3, Configure: noPlacement})
	leader := c.Nodes[0].ID() // without placement, the first node holds every shard alone
	testnode.WaitFor(t, 10*time.Second, "shard 0 led by the first node", func() string {
		if s, ok := c.Shards()[0]; !ok || s.Leader != leader {
			return fmt.Sprintf("shard 0: %v", s)
		}
		return ""
	})
	n := c.Nodes[2] // holds no replica: it routes through the cache
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	n.RefreshLeaders(ended)
	n.RefreshLeaders(context.Background())
	if l, ok := n.CachedLeader(0); !ok || l != leader {
		t.Fatalf("after a refresh by a caller out of time, then one by a caller in time: cached leader %d (%t), want %d", l, ok, leader)
	}
}

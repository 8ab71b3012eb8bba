package testnode

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/shard"
)

// Client starts a one-node cluster (4 shards, replication 1) for t and
// returns a client dialled to it; both close when t ends.
func Client(t testing.TB) *client.Client {
	t.Helper()
	cl := Start(t, 1, Options{Shards: 4, Replication: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, []string{cl.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// WaitMaxFormat waits until every shard that c's cluster reports is at shard.MaxFormat: the
// shards' leaders raise them shortly after start, once every replica's node runs this version.
func WaitMaxFormat(t testing.TB, c *client.Client, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, "every shard at the latest format", func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := c.Status(ctx)
		if err != nil {
			return err.Error()
		}
		for _, s := range st.GetTopology().GetShards() {
			if s.GetFormat() != shard.MaxFormat {
				return fmt.Sprintf("shard %d at format %d", s.GetShard(), s.GetFormat())
			}
		}
		return ""
	})
}

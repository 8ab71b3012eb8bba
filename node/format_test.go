package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/ring"
	"github.com/shoaldb/shoal/shard"
)

// TestDeletesInShardLog runs three nodes of this version: the placement loops raise every
// shard to the latest format, after which a delete takes a position in its shard's log on
// every replica, and ReadShard returns it with IncludeDeletes (and skips it without).
func TestDeletesInShardLog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c, _ := startPlacementCluster(t, 3)
	waitPlaced(t, c, "replication 3", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, []string{c.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testnode.WaitFor(t, placementWait, "every shard at the latest format", func() string {
		st, err := cl.Status(ctx)
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

	const stream = "order-1"
	sh := ring.ShardOf(stream, placementShards)
	ev := func(typ string) client.Event { return client.Event{Type: typ, Data: []byte("{}")} }
	first, err := cl.Append(ctx, stream, client.NoStream, ev("Placed"), ev("Paid"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Delete(ctx, stream, client.Exact(1)); err != nil {
		t.Fatal(err)
	}
	again, err := cl.Append(ctx, stream, client.Exact(1), ev("Placed"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Delete(ctx, stream, client.Exact(2), client.Tombstone()); err != nil {
		t.Fatal(err)
	}
	// Positions: two events, the soft delete, an event, the tombstone.
	if again.Position != first.Position+3 {
		t.Fatalf("append after the delete at position %d, want %d (the delete takes one)", again.Position, first.Position+3)
	}

	type entry struct {
		pos, version uint64
		deletion     client.Deletion
	}
	read := func(opts ...client.ReadOption) []entry {
		var out []entry
		for e, err := range cl.ReadShard(ctx, sh, first.Position, 0, opts...) {
			if err != nil {
				t.Fatal(err)
			}
			if e.Stream == stream {
				out = append(out, entry{e.Position, e.Version, e.Deletion})
			}
		}
		return out
	}
	p := first.Position
	want := fmt.Sprint([]entry{{p, 0, client.NotDeleted}, {p + 1, 1, client.NotDeleted}, {p + 2, 1, client.SoftDeleted},
		{p + 3, 2, client.NotDeleted}, {p + 4, 2, client.Tombstoned}})
	if got := fmt.Sprint(read(client.IncludeDeletes())); got != want {
		t.Fatalf("ReadShard with deletes:\n got %s\nwant %s", got, want)
	}
	want = fmt.Sprint([]entry{{p, 0, client.NotDeleted}, {p + 1, 1, client.NotDeleted}, {p + 3, 2, client.NotDeleted}})
	if got := fmt.Sprint(read()); got != want {
		t.Fatalf("ReadShard without deletes:\n got %s\nwant %s", got, want)
	}
	// A count covers positions: the three positions from the first event hold two events and
	// a delete.
	n := 0
	for _, err := range cl.ReadShard(ctx, sh, first.Position, 3) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("ReadShard of 3 positions without deletes returned %d events, want 2", n)
	}
	// Every replica holds the same log, deletes included.
	for i := range c.Nodes {
		conn := c.Dial(t, i)
		testnode.WaitFor(t, 15*time.Second, fmt.Sprintf("node %d's replica", i+1), func() string {
			evs, err := readShardStale(ctx, conn, sh)
			if err != nil {
				return err.Error()
			}
			if len(evs) == 0 || evs[len(evs)-1].GetPosition() != p+3 {
				return fmt.Sprintf("%d events", len(evs))
			}
			return ""
		})
	}
}

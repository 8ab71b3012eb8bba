package node_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/ring"
)

// TestDeletesInShardLog runs three nodes of this version: the placement loops raise every
// shard to the latest format, after which a delete takes a position in its shard's log on
// every replica, and ReadShard returns it with IncludeDeletes (and skips it without).
func TestDeletesInShardLog(t *testing.T) {
	t.Parallel()
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
	testnode.WaitMaxFormat(t, cl, placementWait)

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
	// A count is of the entries returned: three events, past the skipped delete.
	var got []uint64
	for e, err := range cl.ReadShard(ctx, sh, first.Position, 3) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Position)
	}
	if fmt.Sprint(got) != fmt.Sprint([]uint64{p, p + 1, p + 3}) {
		t.Fatalf("ReadShard of 3 without deletes: positions %v, want %v", got, []uint64{p, p + 1, p + 3})
	}
	// A reader that resumes after its last event is not stuck on a run of deletes longer than
	// its count: three streams of the shard deleted in a row, then an event.
	inShard := func(prefix string) string {
		for i := 0; ; i++ {
			if s := fmt.Sprintf("%s-%d", prefix, i); ring.ShardOf(s, placementShards) == sh {
				return s
			}
		}
	}
	var gone []string
	for i := range 3 {
		s := inShard(fmt.Sprintf("gone%d", i))
		if _, err := cl.Append(ctx, s, client.NoStream, ev("Placed")); err != nil {
			t.Fatal(err)
		}
		gone = append(gone, s)
	}
	for _, s := range gone {
		if err := cl.Delete(ctx, s, client.Exact(0)); err != nil {
			t.Fatal(err)
		}
	}
	after, err := cl.Append(ctx, inShard("after"), client.NoStream, ev("Placed"))
	if err != nil {
		t.Fatal(err)
	}
	resume := after.Position - 3 // the first of the three deletes
	var next []uint64
	for e, err := range cl.ReadShard(ctx, sh, resume, 2) {
		if err != nil {
			t.Fatal(err)
		}
		next = append(next, e.Position)
	}
	if fmt.Sprint(next) != fmt.Sprint([]uint64{after.Position}) {
		t.Fatalf("ReadShard of 2 from a run of 3 deletes: positions %v, want [%d]", next, after.Position)
	}

	// Every replica holds the same log, deletes included.
	for i := range c.Nodes {
		conn := c.Dial(t, i)
		testnode.WaitFor(t, 15*time.Second, fmt.Sprintf("node %d's replica", i+1), func() string {
			evs, err := readShardStale(ctx, conn, sh)
			if err != nil {
				return err.Error()
			}
			if len(evs) == 0 || evs[len(evs)-1].GetPosition() != after.Position {
				return fmt.Sprintf("%d events", len(evs))
			}
			return ""
		})
	}
}

// TestReadShardCountOverDeletes: a ReadShard with a small count (without include_deletes)
// reads across a run of deletes in full pages, not one page (a ReadLog and an empty response)
// per delete.
func TestReadShardCountOverDeletes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a node")
	}
	c := testnode.Start(t, 1, testnode.Options{Shards: 1, Replication: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, []string{c.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testnode.WaitMaxFormat(t, cl, 30*time.Second)
	const n = 300
	var first uint64
	for i := range n {
		r, err := cl.Append(ctx, fmt.Sprintf("s-%d", i), client.NoStream, client.Event{Type: "E", Data: []byte("{}")})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = r.Position
		}
	}
	for i := range n {
		if err := cl.Delete(ctx, fmt.Sprintf("s-%d", i), client.Exact(0)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.Append(ctx, "after", client.NoStream, client.Event{Type: "E", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	rs, err := shoalv1.NewStreamsClient(c.Dial(t, 0)).ReadShard(ctx, &shoalv1.ReadShardRequest{
		Shard: 0, FromPosition: first + n, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	pages, events := 0, 0
	for {
		p, err := rs.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pages++
		events += len(p.GetEvents())
	}
	if events != 1 {
		t.Fatalf("%d events, want 1", events)
	}
	if pages > 3 {
		t.Fatalf("%d pages (one per delete) to return one event past %d deletes", pages, n)
	}
}

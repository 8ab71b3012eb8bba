package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
)

// TestForwardedReadRoutedAgain: a read forwarded to a node that is not the shard's leader, or
// that does not answer (it just died), is routed again, as a forwarded write is, rather than
// failing: a read is safe to repeat.
func TestForwardedReadRoutedAgain(t *testing.T) {
	t.Parallel()
	c := testnode.Start(t, 3, testnode.Options{Shards: 4, Replication: 1, Configure: noPlacement})
	leader := c.Nodes[0] // without placement, the first node holds every shard alone
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := shoalv1.NewStreamsClient(c.Dial(t, 0)).Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: []*shoalv1.EventData{event("A")}})
	if err != nil {
		t.Fatal(err)
	}
	testnode.WaitFor(t, 10*time.Second, "the shard led by the first node", func() string {
		if s, ok := c.Shards()[r.Shard]; !ok || s.Leader != leader.ID() {
			return fmt.Sprintf("shard %d: %v", r.Shard, s)
		}
		return ""
	})
	via := c.Nodes[2] // holds no replica: it routes through its leader cache
	sc := shoalv1.NewStreamsClient(c.Dial(t, 2))
	read := func(ctx context.Context) {
		t.Helper()
		if n, err := readAllErr(ctx, sc, &shoalv1.ReadRequest{Stream: "s"}); err != nil || n != 1 {
			t.Fatalf("read: %d events, %v; want the one event", n, err)
		}
		if l, _ := via.CachedLeader(r.Shard); l != leader.ID() {
			t.Fatalf("leader cache names node %d after the read, want %d", l, leader.ID())
		}
	}

	// The second node is no leader: at its last hop, the read is answered not-leader there,
	// naming the leader.
	via.SetCachedLeader(r.Shard, c.Nodes[1].ID())
	read(metadata.AppendToOutgoingContext(ctx, "shoal-hops", "1"))

	// The second node is gone: the read reaches nothing there.
	c.Stop(t, 1)
	via.SetCachedLeader(r.Shard, c.Nodes[1].ID())
	read(ctx)
}

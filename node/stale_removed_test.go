package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestRemovedReplicaServesNoStaleRead: a replica removed from its group, not yet deleted
// (placement off here; about a second in a cluster, and for good while the shard has no
// leader to confirm the removal), no longer serves stale reads: it answered "not found" for a
// stream written after its removal, on a node alive and connected. The read goes to the
// leader, and finds the stream.
func TestRemovedReplicaServesNoStaleRead(t *testing.T) {
	t.Parallel()
	c := testnode.Start(t, 2, testnode.Options{Shards: 1, Replication: 2,
		Configure: func(_ int, cfg *node.Config) { cfg.PlacementInterval = -1 }})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g, ok := c.Nodes[0].Host().Group(0)
	if !ok {
		t.Fatal("the first node holds no replica of shard 0")
	}
	testnode.WaitFor(t, 10*time.Second, "the first node leads shard 0", func() string {
		if !g.IsLeader() {
			return "not yet"
		}
		return ""
	})
	id := c.Nodes[1].ID()
	do := func(what string, f func() error) {
		testnode.WaitFor(t, 20*time.Second, what, func() string {
			if err := f(); err != nil {
				return err.Error()
			}
			return ""
		})
	}
	do("second node added", func() error { return g.AddLearner(ctx, id) })
	do("second node promoted", func() error { return g.PromoteLearner(ctx, id) })
	s0 := shoalv1.NewStreamsClient(c.Dial(t, 0))
	s1 := shoalv1.NewStreamsClient(c.Dial(t, 1))
	appendTo := func(stream string) {
		u := uuid.New()
		if _, err := s0.Append(ctx, &shoalv1.AppendRequest{Stream: stream, Events: []*shoalv1.EventData{{Id: u[:], Type: "t"}}}); err != nil {
			t.Fatal(err)
		}
	}
	appendTo("a")
	do("second node removed", func() error { return g.RemoveMember(ctx, id) })
	testnode.WaitFor(t, 10*time.Second, "the removed replica applied its removal", func() string {
		if g1, ok := c.Nodes[1].Host().Group(0); !ok || !g1.Removed() {
			return "not yet"
		}
		return ""
	})
	appendTo("b")
	rs, err := s1.Read(ctx, &shoalv1.ReadRequest{Stream: "b", AllowStale: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := rs.Recv()
	if err != nil || len(m.GetEvents()) != 1 {
		t.Fatalf("a stale read at the removed replica's node: %d events, %v; want the stream's event", len(m.GetEvents()), status.Convert(err))
	}
}

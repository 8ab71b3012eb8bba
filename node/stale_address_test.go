package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/ring"
)

// TestForwardToAnotherClustersAddress: a node whose view of a shard leader's address is stale,
// the address now served by a node of another cluster, does not relay that node's refusal
// (WRONG_CLUSTER) to its caller: the caller dialled the right cluster, and a client takes that
// refusal for good ("dial again"). Nothing ran there; the node routes again, and answers as for
// a leader it cannot reach.
func TestForwardToAnotherClustersAddress(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c, _ := startPlacementCluster(t, 3)
	waitPlaced(t, c, "replication 3", nil)
	other := testnode.Start(t, 1, testnode.Options{Shards: 1}) // a cluster of its own
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n0 := c.Nodes[0]
	var (
		stream string
		id     uint32
		leader uint64
	)
	for i := 0; stream == "" && i < 10_000; i++ {
		name := fmt.Sprintf("s-%d", i)
		sh := ring.ShardOf(name, placementShards)
		if l := n0.Topology(ctx).Shards[sh].LeaderId; l != 0 && l != n0.ID() {
			stream, id, leader = name, sh, l
		}
	}
	if stream == "" {
		t.Fatal("node 1 leads every shard")
	}
	n0.PointMemberAt(leader, other.Nodes[0].Addr())
	sc := shoalv1.NewStreamsClient(c.Dial(t, 0))
	evID := uuid.New()
	_, err := sc.Append(ctx, &shoalv1.AppendRequest{Stream: stream, Events: []*shoalv1.EventData{{Id: evID[:], Type: "T"}}})
	if st := status.Convert(err); shoalv1.IsWrongCluster(st) {
		t.Fatalf("append forwarded to another cluster's node: %v; want it routed again, not that node's refusal", err)
	}
	rs, err := sc.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: id})
	if err == nil {
		for err == nil {
			_, err = rs.Recv()
		}
	}
	if st := status.Convert(err); shoalv1.IsWrongCluster(st) {
		t.Fatalf("shard read forwarded to another cluster's node: %v; want it routed again, not that node's refusal", err)
	}
	t.Logf("append and read through a stale address answered: %v", err)
}

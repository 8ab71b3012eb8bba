package node_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/ring"
)

// TestReadShardLocalOnly: a local_only read is served by the node's own replica and never
// forwarded: a node without a replica of the shard answers FAILED_PRECONDITION saying so,
// where a plain stale read would have been forwarded and answered. local_only without
// allow_stale, or with a staleness bound, is refused as invalid.
func TestReadShardLocalOnly(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	const shards = 6
	c := replicatedCluster(t, shards, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s0 := shoalv1.NewStreamsClient(c.Dial(t, 0))
	written := map[uint32]int{}
	for i := range 30 {
		name := fmt.Sprintf("local-%d", i)
		if _, err := s0.Append(ctx, &shoalv1.AppendRequest{Stream: name, Events: []*shoalv1.EventData{event("A")}}); err != nil {
			t.Fatal(err)
		}
		written[ring.ShardOf(name, shards)]++
	}
	read := func(i int, req *shoalv1.ReadShardRequest) (int, error) {
		evs, err := readShardReq(ctx, c.Dial(t, i), req)
		return len(evs), err
	}
	// Placement may still move a replica: each check reads the shard's members as they are, and
	// is tried again until it holds.
	holders := 0
	for sh := range uint32(shards) {
		for i, nd := range c.Nodes {
			local := &shoalv1.ReadShardRequest{Shard: sh, AllowStale: true, LocalOnly: true}
			holds := false
			testnode.WaitFor(t, 10*time.Second, fmt.Sprintf("n%d's replica of shard %d", i+1, sh), func() string {
				info := c.Shards()[sh]
				voter, learner := slices.Contains(info.Voters, nd.ID()), slices.Contains(info.Learners, nd.ID())
				n, err := read(i, local)
				switch {
				case voter && (err != nil || n != written[sh]):
					return fmt.Sprintf("a voter: %d events, %v; want %d", n, err, written[sh])
				case !voter && !learner && !shoalv1.IsNoLocalReplica(status.Convert(err)):
					return fmt.Sprintf("no replica: %d events, %v; want FAILED_PRECONDITION, no local replica", n, err)
				case learner:
					return "a learner: placement is still moving the shard"
				}
				holds = voter
				return ""
			})
			if holds {
				holders++
				continue
			}
			if n, err := read(i, &shoalv1.ReadShardRequest{Shard: sh, AllowStale: true}); err != nil || n != written[sh] {
				t.Fatalf("stale read of shard %d from n%d (forwarded): %d events, %v; want %d", sh, i+1, n, err, written[sh])
			}
		}
	}
	if holders != shards*2 {
		t.Fatalf("%d replicas read, want %d", holders, shards*2)
	}
	for _, req := range []*shoalv1.ReadShardRequest{{LocalOnly: true}, {LocalOnly: true, AllowStale: true, MaxStalenessMs: 1000}} {
		if _, err := read(0, req); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("ReadShard %v: %v, want INVALID_ARGUMENT", req, err)
		}
	}
}

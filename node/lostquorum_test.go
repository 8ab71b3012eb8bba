package node_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// TestLostShardAnsweredAtOnce: a shard that lost its quorum answers UNAVAILABLE at once, saying
// why, once its replica has known no leader for longer than an election takes, instead of
// holding every request for the shard for the routing wait (3 s) and then answering "no
// leader". Three nodes, replication 2, one stopped: a pipeline stream to a survivor is filled
// with appends to a shard the stopped node held with it (its whole in-flight allowance), then
// given one append to a shard the two survivors hold: every append to the lost shard is refused
// before anything is proposed (UNAVAILABLE, a NotLeader detail, never UNKNOWN), and the healthy
// shard's append is applied. The third node, which holds no replica of the lost shard, answers
// an append to it at once too, from the replicas' topology views.
func TestLostShardAnsweredAtOnce(t *testing.T) {
	t.Parallel()
	const shards = 6
	c := replicatedCluster(t, shards, 2)
	// The node to stop is one that holds some shards with a survivor and none of the others
	// (which the two survivors hold), chosen from the placement, which node IDs decide.
	var lost, healthy []uint32
	victim, survivor := -1, -1
	for v := 0; v < 3 && (len(lost) == 0 || len(healthy) == 0); v++ {
		victim, survivor, lost, healthy = v, -1, nil, nil
		for id, s := range c.Shards() {
			if !slices.Contains(s.Voters, c.Nodes[v].ID()) {
				healthy = append(healthy, id)
				continue
			}
			for i := range 3 {
				if i != v && slices.Contains(s.Voters, c.Nodes[i].ID()) && (survivor == -1 || survivor == i) {
					survivor = i
					lost = append(lost, id)
				}
			}
		}
	}
	if len(lost) == 0 || len(healthy) == 0 {
		t.Fatalf("no node holds both a shard with one other node and none of the shards the other two hold: %v", c.Shards())
	}
	t.Logf("stopping n%d: shards %v lost (with n%d), %v healthy", victim+1, lost, survivor+1, healthy)
	c.Stop(t, victim)
	n := c.Nodes[survivor]
	g, ok := n.Host().Group(lost[0])
	if !ok {
		t.Fatalf("n%d holds no replica of shard %d", survivor+1, lost[0])
	}
	after := 3 * n.Host().ElectionTimeout()
	testnode.WaitFor(t, 20*time.Second, fmt.Sprintf("shard %d leaderless on n%d for %v", lost[0], survivor+1, after), func() string {
		if d, ok := g.Leaderless(); !ok || d < after {
			return fmt.Sprintf("leader %d, leaderless %v", g.Leader(), d)
		}
		return ""
	})

	streamIn := func(shard uint32, prefix string) func() string {
		i := 0
		return func() string {
			for {
				i++
				if name := fmt.Sprintf("%s-%d", prefix, i); ring.ShardOf(name, shards) == shard {
					return name
				}
			}
		}
	}
	lostStream, healthyStream := streamIn(lost[0], "lost"), streamIn(healthy[0], "healthy")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := shoalv1.NewStreamsClient(c.Dial(t, survivor)).AppendPipeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	item := func(id uint64, stream string) *shoalv1.AppendItem {
		return &shoalv1.AppendItem{Id: id, TimeoutMs: 30_000, Request: &shoalv1.AppendRequest{Stream: stream,
			Events: []*shoalv1.EventData{{Id: []byte(fmt.Sprintf("%016d", id)), Type: "T"}}}}
	}
	start := time.Now()
	const lostItems = node.MaxPipelineInFlight
	for id := uint64(1); id <= lostItems; {
		b := &shoalv1.AppendBatch{}
		for ; id <= lostItems && len(b.Items) < node.MaxPipelineBatch; id++ {
			b.Items = append(b.Items, item(id, lostStream()))
		}
		if err := st.Send(b); err != nil {
			t.Fatal(err)
		}
	}
	healthyID := uint64(lostItems + 1)
	if err := st.Send(&shoalv1.AppendBatch{Items: []*shoalv1.AppendItem{item(healthyID, healthyStream())}}); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	answered := 0
	var healthyAt time.Duration
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range m.Results {
			answered++
			if r.Id == healthyID {
				healthyAt = time.Since(start)
				if r.Error != nil {
					t.Fatalf("append to healthy shard %d: %v", healthy[0], r.Error.Err())
				}
				continue
			}
			if r.Error == nil {
				t.Fatalf("item %d: applied to shard %d, which has no quorum", r.Id, lost[0])
			}
			s := status.Convert(r.Error.Err())
			var nl *shoalv1.NotLeader
			for _, d := range s.Details() {
				if d, ok := d.(*shoalv1.NotLeader); ok {
					nl = d
				}
			}
			if s.Code() != codes.Unavailable || nl == nil || !strings.Contains(s.Message(), "has known no leader for") {
				t.Fatalf("item %d to shard %d without quorum: %v (NotLeader detail %v); want UNAVAILABLE saying the replica has known no leader",
					r.Id, lost[0], s, nl)
			}
		}
	}
	if answered != lostItems+1 {
		t.Fatalf("%d answers, want %d", answered, lostItems+1)
	}
	t.Logf("%d appends to the lost shard and one to a healthy shard answered in %v; the healthy one after %v",
		lostItems, time.Since(start), healthyAt)

	// A node that holds no replica of the shard learns the same from the replicas' views.
	other := 3 - victim - survivor
	// (It may keep a replica removed from the group while placement spread the replicas.)
	if g, ok := c.Nodes[other].Host().Group(lost[0]); ok && !g.Removed() {
		t.Fatalf("n%d holds a replica of shard %d, whose two voters were on n%d and n%d: %+v", other+1, lost[0], victim+1, survivor+1, g.Status())
	}
	start = time.Now()
	_, err = shoalv1.NewStreamsClient(c.Dial(t, other)).Append(ctx, &shoalv1.AppendRequest{Stream: lostStream(),
		Events: []*shoalv1.EventData{{Id: []byte("0123456789abcdef"), Type: "T"}}})
	if s := status.Convert(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "replicas that answered have known no leader for") {
		t.Fatalf("append to shard %d through n%d, which holds no replica of it: %v; want UNAVAILABLE saying its replicas have known no leader",
			lost[0], other+1, err)
	}
	t.Logf("through a node without a replica: answered in %v: %v", time.Since(start), err)
}

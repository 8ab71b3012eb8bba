package node_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// An append that a shard's leader started before it began to close commits during Close's
// grace for the calls in flight: the followers' acknowledgements still come in on their raft
// streams then. (Their streams were ended first, and such an append failed once the grace
// was over, though it had been sent to every follower.) Close without a hand-off, as an
// embedder's and a planned stop whose hand-off kept some shards do.
func TestCloseCommitsAppendsInFlight(t *testing.T) {
	t.Parallel()
	c, _ := startReplicatedCluster(t, 1, nil)
	defer c.Close()
	var leaderID uint64
	testnode.WaitFor(t, 20*time.Second, "a shard with a leader", func() string {
		if leaderID, _ = c.BusiestLeader(); leaderID == 0 {
			return "no shard has a leader"
		}
		return ""
	})
	leader := c.Nodes[c.Index(leaderID)]

	started, release := node.HoldPipelineAppends(leader)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pipe, err := shoalv1.NewStreamsClient(c.Dial(t, c.Index(leaderID))).AppendPipeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	req := &shoalv1.AppendRequest{Stream: "in-flight", Events: []*shoalv1.EventData{{Id: id[:], Type: "T", Data: []byte("x")}}}
	if err := pipe.Send(&shoalv1.AppendBatch{Items: []*shoalv1.AppendItem{{Id: 1, Request: req}}}); err != nil {
		t.Fatal(err)
	}
	<-started
	closed := make(chan error, 1)
	go func() { closed <- leader.Close() }()
	// The item goes on once the node takes no more calls: its gRPC listener is closed.
	testnode.WaitFor(t, 10*time.Second, "the closing node's listener closed", func() string {
		conn, err := net.DialTimeout("tcp", leader.Addr(), time.Second)
		if err != nil {
			return ""
		}
		conn.Close()
		return "it still accepts connections"
	})
	close(release)
	var res *shoalv1.AppendItemResult
	for res == nil {
		m, err := pipe.Recv()
		if err != nil {
			t.Fatalf("the stream ended before answering the item: %v", err)
		}
		for _, r := range m.GetResults() {
			if r.GetId() == 1 {
				res = r
			}
		}
	}
	if res.GetError() != nil {
		t.Errorf("the append in flight failed: %v", res.GetError())
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

package node

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// SIGTERM's hand-off is bounded by its ctx (5 s in shoal server) even when the raft loop is
// stuck behind a hung WAL sync (it asked the loop for each group's status without a deadline).
func TestHandOffBoundedWithStuckRaftLoop(t *testing.T) {
	t.Parallel()
	n := stuckLoopNode(t)
	time.Sleep(time.Second) // the raft loop is now behind the WAL's sync
	g, _ := n.host.Group(0)
	stc := make(chan struct{})
	go func() { g.Status(); close(stc) }()
	select {
	case <-stc:
		t.Logf("raft loop still answers")
	case <-time.After(time.Second):
		t.Logf("raft loop answers no call")
	}

	hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
	defer hcancel()
	done := make(chan struct{})
	start := time.Now()
	go func() { n.HandOffLeaders(hctx); close(done) }()
	select {
	case <-done:
		t.Logf("HandOffLeaders returned after %v", time.Since(start))
	case <-time.After(4 * time.Second):
		t.Fatalf("HandOffLeaders with a 1 s ctx still running after 4 s: the raft loop is stuck and g.Status() ignores ctx")
	}
}

// After a hand-off that timed out on a stuck raft loop, Close should still leave gossip and
// stop serving gRPC promptly (it cannot finish until the disk answers).
func TestCloseAfterTimedOutHandOffStopsServing(t *testing.T) {
	t.Parallel()
	n := stuckLoopNode(t)
	time.Sleep(2 * time.Second) // a placement round (1 s interval) is now stuck in g.Status
	hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
	defer hcancel()
	n.HandOffLeaders(hctx)
	go n.Close()
	time.Sleep(3 * time.Second)
	sctx, scancel := context.WithTimeout(context.Background(), time.Second)
	defer scancel()
	_, err := shoalv1.NewClusterClient(dial(t, n.Addr())).Settings(sctx, &shoalv1.SettingsRequest{})
	alive := n.gossip() != nil && len(n.gossip().Members()) > 0
	t.Logf("3 s into Close: Settings err=%v, gossip members=%v", err, alive)
	if err == nil {
		t.Errorf("3 s into Close the node still serves gRPC: Close is waiting for the stuck placement round before stopping anything")
	}
}

// Topology answers within its timeout when the node's raft loop is stuck behind a hung WAL
// sync: every Topology call (peers' LocalOnly ones included) and the leader cache's refresh
// waited for the loop until the stall ended the process. The node then gives no view of its
// own, rather than one made up without its loop: a LocalOnly call is refused as unavailable
// (the asking peer counts it as not answering), and the merged topology lists the node as not
// answering.
func TestTopologyAnswersWithStuckRaftLoop(t *testing.T) {
	t.Parallel()
	n := stuckLoopNode(t)
	time.Sleep(1500 * time.Millisecond) // the raft loop is now behind the WAL's sync
	cc := shoalv1.NewClusterClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := cc.Topology(ctx, &shoalv1.TopologyRequest{LocalOnly: true})
	if status.Code(err) != codes.Unavailable || time.Since(start) > 3*time.Second {
		t.Fatalf("local Topology with a stuck raft loop: %v after %v; want UNAVAILABLE within topologyTimeout",
			err, time.Since(start).Round(time.Millisecond))
	}
	start = time.Now()
	top, err := cc.Topology(ctx, &shoalv1.TopologyRequest{})
	if err != nil || time.Since(start) > 3*time.Second || !slices.Contains(top.GetUnanswered(), n.ID()) {
		t.Fatalf("Topology with a stuck raft loop: %v after %v, unanswered %v; want an answer within topologyTimeout naming this node unanswered",
			err, time.Since(start).Round(time.Millisecond), top.GetUnanswered())
	}
}

// stuckLoopNode starts a one-shard node whose WAL sync then hangs (until the test ends), with
// 8 MiB of appends queued behind it, so that its raft loop stops answering.
func stuckLoopNode(t *testing.T) *Node {
	t.Helper()
	fs := &stallFS{FS: vfs.Default}
	cfg := testConfig(t, t.TempDir())
	cfg.Shards = 1
	cfg.fs = fs
	cfg.MaxSyncDuration = -1 // --max-sync-duration -1s: never exit
	n := startNode(t, cfg)
	t.Cleanup(fs.resume)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: events("A")}); err != nil {
		t.Fatal(err)
	}
	fs.stall()
	for i := 0; i < 32; i++ {
		go func() {
			id := uuid.New()
			c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: []*shoalv1.EventData{{Id: id[:], Type: "B", Data: make([]byte, 256<<10)}}})
		}()
	}
	// Until the loop is behind the WAL's sync: a fixed wait was too short on a loaded machine
	// (CI, the race detector), and the loop still answered.
	for deadline := time.Now().Add(10 * time.Second); ; {
		sctx, scancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := n.host.Statuses(sctx)
		scancel()
		if err != nil {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatal("the raft loop still answers 10 s after the disk stalled")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

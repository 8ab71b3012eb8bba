package node

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/internal/testaddr"
	"github.com/shoaldb/shoal/replica"
)

// wedgedRaft takes a snapshot's first chunk and then stops reading, as a receiver on a slow
// disk or a paused process does.
type wedgedRaft struct {
	shoalv1.UnimplementedRaftServer
	got     chan struct{}
	release chan struct{}
}

func (w *wedgedRaft) Snapshot(s shoalv1.Raft_SnapshotServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	close(w.got)
	<-w.release
	return nil
}

// Close does not wait for an outgoing snapshot stream to a peer that stopped reading: the
// transport, whose closing aborts the stream, closes before the host, which waits for the
// snapshot's writer. (In the other order Close waited for the stall timeout, a minute.)
func TestCloseDuringOutgoingSnapshot(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.Shards = 1
	cfg.DisableHTTP = true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // 36 MB synced, on a loaded machine too
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, n)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	for i := 0; i < 12; i++ { // ~36 MB of incompressible events in shard 0
		evs := make([]*shoalv1.EventData, 3)
		for j := range evs {
			data := make([]byte, 1<<20)
			rand.Read(data)
			id := uuid.New()
			evs[j] = &shoalv1.EventData{Id: id[:], Type: "Big", Data: data}
		}
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "big", Events: evs}); err != nil {
			t.Fatal(err)
		}
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wedgedRaft{got: make(chan struct{}), release: make(chan struct{})}
	srv := grpc.NewServer()
	shoalv1.RegisterRaftServer(srv, w)
	go srv.Serve(lis)
	defer srv.Stop()
	var once sync.Once
	release := func() { once.Do(func() { close(w.release) }) }
	defer release()

	members := []membership.Member{{Meta: membership.Meta{NodeID: 999, GRPCAddr: lis.Addr().String()}, Alive: true}}
	n.members.Store(&members)
	g, _ := n.host.Group(0)
	st := g.Status()
	typ := pb.MsgSnap
	n.tr.SendSnapshot(replica.ShardMessage{Shard: 0, Msg: &pb.Message{Type: &typ, To: proto.Uint64(999), From: proto.Uint64(n.ID()),
		Snapshot: &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: proto.Uint64(st.Applied), Term: proto.Uint64(st.Term)}}}})
	select {
	case <-w.got:
	case <-time.After(10 * time.Second):
		t.Fatal("snapshot stream never started")
	}
	time.Sleep(500 * time.Millisecond) // let the sender fill the flow-control windows

	closed := make(chan time.Duration, 1)
	start := time.Now()
	go func() { n.Close(); closed <- time.Since(start) }()
	select {
	case d := <-closed:
		t.Logf("Close took %v", d)
	case <-time.After(10 * time.Second):
		t.Errorf("Close still blocked after 10 s behind a stalled outgoing snapshot (the stall timeout is %v)", time.Minute)
		release()
		t.Logf("Close returned %v after the receiver was released", <-closed)
	}
}

// peerStarting tells a node that is still starting (it answers client calls "is starting")
// from one that has started, so that placement and hand-off do not give it a leadership yet.
func TestPeerStarting(t *testing.T) {
	t.Parallel()
	ready, err := Start(context.Background(), testConfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer ready.Close()
	waitReady(t, ready)

	cfg := testConfig(t, t.TempDir())
	cfg.Join, cfg.JoinTimeout = []string{testaddr.Gossip(t)}, 3*time.Second // a seed that never answers
	startingAddr := testaddr.Gossip(t)                                      // a free TCP port
	cfg.Listen = startingAddr
	done := make(chan error, 1)
	go func() {
		_, err := Start(context.Background(), cfg)
		done <- err
	}()
	ctx := context.Background()
	deadline := time.Now().Add(2 * time.Second)
	for !ready.peerStarting(ctx, startingAddr) {
		if time.Now().After(deadline) {
			t.Fatal("a node that is joining its cluster is not seen as starting")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ready.peerStarting(ctx, ready.Addr()) {
		t.Error("a started node is seen as starting")
	}
	if err := <-done; !errors.Is(err, ErrJoinTimeout) {
		t.Fatalf("Start: %v, want ErrJoinTimeout", err)
	}
	if ready.peerStarting(ctx, startingAddr) {
		t.Error("an address nothing listens on is seen as starting")
	}
}

// A node started again on the registry it was given, after a failed Start and after a
// Close, registers its metrics again rather than panicking on duplicates, and the metrics it
// serves are the running node's.
func TestRestartOnSameRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, t.TempDir())
	cfg.Registry = reg
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	failing := cfg
	failing.Listen = busy.Addr().String() // Start fails after registering its metrics
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := Start(ctx, failing); err == nil {
		t.Fatal("Start on a busy address succeeded")
	}
	n := startNode(t, cfg)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
		t.Fatalf("after Close the registry gathers %d families (%v), want none", len(mfs), err)
	}
	cfg.Gossip = testaddr.Gossip(t)
	n = startNode(t, cfg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var shards bool
	for _, mf := range mfs {
		shards = shards || mf.GetName() == "shoal_replica_proposals_total"
	}
	if !shards {
		t.Error("the restarted node's replica metrics are not registered")
	}
}

// A Config.Registry that already holds the Go runtime's and the process's collectors (as
// prometheus.DefaultRegisterer does) is used as it is; one that holds a collector of the
// node's own names refuses Start with an error naming the registry, not a panic, and leaves
// the data directory free for the next Start.
func TestStartOnBusyRegistry(t *testing.T) {
	dir := t.TempDir()
	shared := prometheus.NewRegistry()
	shared.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg := testConfig(t, dir)
	cfg.Registry = shared
	n := startNode(t, cfg)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	taken := prometheus.NewRegistry()
	taken.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_appends_total", Help: "another"}))
	cfg = testConfig(t, dir)
	cfg.Registry = taken
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := Start(ctx, cfg); err == nil || !strings.Contains(err.Error(), "Config.Registry") {
		t.Fatalf("Start on a registry holding shoal_appends_total: %v", err)
	}
	cfg = testConfig(t, dir)
	startNode(t, cfg) // the failed Start released the data directory
}

// A restart joins the peers it last saw alive. One that accepts connections but never
// answers holds a join for membership.DefaultTCPTimeout per address, so Start's ctx must bound
// the join (the server's ctx ends on SIGTERM): Start gives up when ctx ends, leaving the data
// directory free for the next start.
func TestRestartJoinEndsWithContext(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	n := startNode(t, cfg)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		held  []net.Conn
		holes []string
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				held = append(held, c) // open, never answered
				mu.Unlock()
			}
		}()
		holes = append(holes, ln.Addr().String())
	}
	if err := n.dir.savePeers(holes); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	n2, err := Start(ctx, cfg)
	took := time.Since(start)
	if err == nil {
		n2.Close()
		t.Fatalf("Start succeeded after %v, past its context, with peers that never answer", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start: %v, want the context's deadline", err)
	}
	if all := time.Duration(len(holes)) * membership.DefaultTCPTimeout; took >= all {
		t.Fatalf("Start gave up after %v: it waited for every peer (%v) instead of its context", took, all)
	}
	t.Logf("Start gave up after %v: %v", took, err)

	if err := n.dir.savePeers(nil); err != nil {
		t.Fatal(err)
	}
	startNode(t, cfg) // the aborted start released the directory
}

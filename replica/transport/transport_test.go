package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/internal/lockedbuf"
	"github.com/shoaldb/shoal/replica"
)

func seed(t testing.TB) *rand.Rand {
	s := uint64(time.Now().UnixNano())
	t.Logf("seed %d", s)
	return rand.New(rand.NewPCG(s, s>>1))
}

// Messages of several shards reach two peers complete, in Send order per
// peer, and packed into fewer batches than messages.
func TestSendOrderedBatched(t *testing.T) {
	rng := seed(t)
	dir := newDirectory()
	reg := prometheus.NewRegistry()
	n1 := startNode(t, 1, "c", dir, func(c *Config) { c.Registerer = reg })
	n2 := startNode(t, 2, "c", dir, nil)
	n3 := startNode(t, 3, "c", dir, nil)

	const perPeer = 3000
	var want = map[uint64][]replica.ShardMessage{}
	var idx uint64
	for len(want[2]) < perPeer || len(want[3]) < perPeer {
		var msgs []replica.ShardMessage
		for range 1 + rng.IntN(40) {
			to := uint64(2 + rng.IntN(2))
			if len(want[to]) >= perPeer {
				continue
			}
			idx++
			payload := make([]byte, rng.IntN(300))
			for i := range payload {
				payload[i] = byte(idx) + byte(i)
			}
			m := msg(uint32(rng.IntN(8)), 1, to, idx, payload)
			msgs = append(msgs, m)
			want[to] = append(want[to], m)
		}
		n1.tr.Send(msgs)
		if rng.IntN(4) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	for _, n := range []*testNode{n2, n3} {
		waitFor(t, 20*time.Second, fmt.Sprintf("node %d to receive %d messages", n.id, perPeer), func() bool {
			return n.rec.count() >= perPeer
		})
		got := n.rec.received()
		if len(got) != perPeer {
			t.Fatalf("node %d: got %d messages, want %d", n.id, len(got), perPeer)
		}
		for i, g := range got {
			w := want[n.id][i]
			if g.Shard != w.Shard || !proto.Equal(g.Msg, w.Msg) {
				t.Fatalf("node %d message %d: got shard %d %v, want shard %d %v", n.id, i, g.Shard, g.Msg, w.Shard, w.Msg)
			}
		}
		n.rec.mu.Lock()
		batches := n.rec.batches
		n.rec.mu.Unlock()
		t.Logf("node %d: %d messages in %d batches", n.id, perPeer, batches)
		if batches >= perPeer {
			t.Errorf("node %d: no batching: %d batches for %d messages", n.id, batches, perPeer)
		}
	}
	if got := counterValue(n1.tr.Metrics().MessagesSent.WithLabelValues("2")); got != perPeer {
		t.Errorf("messages_sent{peer=2} = %v, want %d", got, perPeer)
	}
	if got := counterValue(n2.tr.Metrics().MessagesReceived.WithLabelValues("1")); got != perPeer {
		t.Errorf("messages_received{peer=1} = %v, want %d", got, perPeer)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, f := range fams {
		if f.GetName() == "shoal_transport_batches_sent_total" {
			series = len(f.GetMetric())
		}
	}
	if series != 2 {
		t.Errorf("registered batches_sent series = %d, want 2", series)
	}
}

// rawClient dials addr for one raw stream of a test, which ends within 5 seconds; the
// connection is closed at the test's end.
func rawClient(t *testing.T, addr string) (shoalv1.RaftClient, context.Context) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpcopt.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(func() {
		cancel()
		conn.Close()
	})
	return shoalv1.NewRaftClient(conn), ctx
}

// rawSend opens a Raft.Send stream to addr, sends b and returns the status.
func rawSend(t *testing.T, addr string, b *shoalv1.RaftBatch) error {
	t.Helper()
	c, ctx := rawClient(t, addr)
	stream, err := c.Send(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(b); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	_, err = stream.CloseAndRecv()
	return err
}

// The receiver refuses batches from another cluster or for another node with
// FailedPrecondition and a message naming the facts, and malformed ones (a message whose
// sender is not the batch's, which raft would take for another member's) with InvalidArgument; a transport configured
// for another cluster delivers nothing and reports the peer unreachable.
func TestRefusals(t *testing.T) {
	dir := newDirectory()
	n2 := startNode(t, 2, "cluster-a", dir, nil)
	raw, _ := proto.Marshal(msg(0, 1, 2, 1, nil).Msg)
	good := func() *shoalv1.RaftBatch {
		return &shoalv1.RaftBatch{From: 1, To: 2, ClusterId: "cluster-a", Shards: []uint32{0}, Messages: [][]byte{raw}}
	}
	for _, tc := range []struct {
		name string
		mod  func(*shoalv1.RaftBatch)
		code codes.Code
		text string
	}{
		{"ok", func(*shoalv1.RaftBatch) {}, codes.OK, ""},
		{"empty cluster id accepted", func(b *shoalv1.RaftBatch) { b.ClusterId = "" }, codes.OK, ""},
		{"cluster", func(b *shoalv1.RaftBatch) { b.ClusterId = "cluster-b" }, codes.FailedPrecondition, `cluster ID mismatch: node 1 of cluster "cluster-b"`},
		{"to", func(b *shoalv1.RaftBatch) { b.To = 7 }, codes.FailedPrecondition, "addressed to node 7, but this is node 2"},
		{"from", func(b *shoalv1.RaftBatch) { b.From = 0 }, codes.InvalidArgument, "sender node ID is 0"},
		{"shards", func(b *shoalv1.RaftBatch) { b.Shards = nil }, codes.InvalidArgument, "0 shards for 1 messages"},
		{"garbage", func(b *shoalv1.RaftBatch) { b.Messages[0] = []byte{0xff, 0xff} }, codes.InvalidArgument, "message 0"},
		{"message from another node", func(b *shoalv1.RaftBatch) { b.From = 3 }, codes.InvalidArgument, "message 0 is from node 1, in a batch of node 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := good()
			tc.mod(b)
			err := rawSend(t, n2.addr, b)
			s := status.Convert(err)
			if s.Code() != tc.code || !strings.Contains(s.Message(), tc.text) {
				t.Fatalf("got %v %q, want %v containing %q", s.Code(), s.Message(), tc.code, tc.text)
			}
		})
	}
	if got := n2.rec.count(); got != 2 {
		t.Fatalf("handler got %d messages, want 2 (the accepted batches)", got)
	}

	// A whole transport of another cluster.
	n1 := startNode(t, 1, "cluster-b", dir, nil)
	waitFor(t, 10*time.Second, "unreachable report", func() bool {
		n1.tr.Send([]replica.ShardMessage{msg(5, 1, 2, 1, nil)})
		time.Sleep(5 * time.Millisecond)
		return n1.rec.unreachableCount(5, 2) > 0
	})
	if got := n2.rec.count(); got != 2 {
		t.Fatalf("handler got %d messages from a foreign cluster", got-2)
	}
	// A refusing peer is retried with growing back-off (10..100 ms here),
	// not after every accepted-then-refused first send.
	errs0 := counterValue(n1.tr.Metrics().StreamErrors.WithLabelValues("2"))
	if errs0 == 0 {
		t.Fatal("no stream error counted")
	}
	for range 60 {
		n1.tr.Send([]replica.ShardMessage{msg(5, 1, 2, 1, nil)})
		time.Sleep(10 * time.Millisecond)
	}
	if d := counterValue(n1.tr.Metrics().StreamErrors.WithLabelValues("2")) - errs0; d > 25 {
		t.Fatalf("%v refused streams in 600 ms: back-off not applied", d)
	}
}

// A peer that is down gets its messages dropped and reported; once it is
// back (same address) the sender reconnects and delivers again.
func TestReconnect(t *testing.T) {
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, nil)
	n2 := startNode(t, 2, "c", dir, nil)

	var idx uint64
	send := func() {
		idx++
		n1.tr.Send([]replica.ShardMessage{msg(uint32(idx%3), 1, 2, idx, []byte("x"))})
	}
	send()
	waitFor(t, 10*time.Second, "first delivery", func() bool { return n2.rec.count() == 1 })

	n2.srv.Stop() // down
	waitFor(t, 10*time.Second, "unreachable reports while down", func() bool {
		send()
		time.Sleep(5 * time.Millisecond)
		return n2.rec.count() == 1 && n1.rec.unreachableCount(0, 2)+n1.rec.unreachableCount(1, 2)+n1.rec.unreachableCount(2, 2) > 0
	})
	if counterValue(n1.tr.Metrics().MessagesDropped.WithLabelValues("2", dropUnreachable)) == 0 {
		t.Fatal("no unreachable drops counted")
	}

	n2.serve(t, n2.addr) // back, same address
	before := n2.rec.count()
	waitFor(t, 10*time.Second, "delivery after reconnect", func() bool {
		send()
		time.Sleep(5 * time.Millisecond)
		return n2.rec.count() > before+3
	})
	// Order survives reconnects: indexes only grow.
	var last uint64
	for _, m := range n2.rec.received() {
		if m.Msg.GetIndex() <= last {
			t.Fatalf("index %d after %d", m.Msg.GetIndex(), last)
		}
		last = m.Msg.GetIndex()
	}
}

// A peer whose stream breaks and whose address then refuses connections is reported down,
// once; a peer whose stream breaks while its address still accepts connections is not.
func TestPeerDown(t *testing.T) {
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, nil)
	n2 := startNode(t, 2, "c", dir, nil)
	n3 := startNode(t, 3, "c", dir, nil)
	var idx uint64
	send := func(to uint64) {
		idx++
		n1.tr.Send([]replica.ShardMessage{msg(1, 1, to, idx, nil)})
	}
	send(2)
	send(3)
	waitFor(t, 10*time.Second, "delivery to both peers", func() bool { return n2.rec.count() == 1 && n3.rec.count() == 1 })

	// n2 goes down: its server stops and nothing listens on its address.
	n2.srv.Stop()
	waitFor(t, 10*time.Second, "n2 reported down", func() bool { return len(n1.rec.peersDown()) > 0 })
	if got := n1.rec.peersDown(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("peers reported down: %v, want [2]", got)
	}
	if v := counterValue(n1.tr.Metrics().PeerDown.WithLabelValues("2")); v != 1 {
		t.Fatalf("peer_down_total{peer=2} = %v, want 1", v)
	}

	// n3's connections are reset while its server keeps listening (a network blip, not a
	// dead process): its stream breaks, and no report follows.
	n3.brk.breakAll()
	waitFor(t, 10*time.Second, "n3's stream error", func() bool {
		return counterValue(n1.tr.Metrics().StreamErrors.WithLabelValues("3")) > 0
	})
	// Every probe attempt (about 300 ms in all) finds the address accepting.
	time.Sleep(time.Second)
	if got := n1.rec.peersDown(); len(got) != 1 {
		t.Fatalf("peers reported down: %v, want only [2]", got)
	}
	send(3)
	waitFor(t, 10*time.Second, "delivery to n3 after the blip", func() bool { return n3.rec.count() == 2 })
}

// A probe's connection that is reset while it opens (the listener of a process being killed
// took it, then went) does not end the probe: the next attempt finds the address refusing,
// and the peer is reported down. (Seen in about one kill -9 in fifteen on loopback, where it
// cost the failover an election timeout.)
func TestPeerDownAfterResetDial(t *testing.T) {
	dir := newDirectory()
	var dials atomic.Int32
	n1 := startNode(t, 1, "c", dir, func(c *Config) {
		var d net.Dialer
		c.ProbeDial = func(ctx context.Context, addr string) (net.Conn, error) {
			if dials.Add(1) == 1 {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNRESET)}
			}
			return d.DialContext(ctx, "tcp", addr)
		}
	})
	n2 := startNode(t, 2, "c", dir, nil)
	n1.tr.Send([]replica.ShardMessage{msg(1, 1, 2, 1, nil)})
	waitFor(t, 10*time.Second, "delivery", func() bool { return n2.rec.count() == 1 })
	n2.srv.Stop()
	waitFor(t, 10*time.Second, "n2 reported down", func() bool { return len(n1.rec.peersDown()) > 0 })
	if n := dials.Load(); n < 2 {
		t.Fatalf("%d probe dials, want the reset one and a refused one", n)
	}
}

// A full queue drops (counted, reported); what was queued is delivered.
// TestQueueBytesBound: a peer's append queue holds at most QueueBytes of entries, whatever
// its room in messages; an append that does not fit is dropped and reported like one that
// finds the queue full, and one larger than the bound goes when the queue is empty. Heartbeats
// are not held back by it.
func TestQueueBytesBound(t *testing.T) {
	dir := newDirectory()
	n2 := startNode(t, 2, "c", dir, nil)
	release := make(chan struct{})
	reg := prometheus.NewRegistry()
	n1 := startNode(t, 1, "c", dir, func(c *Config) {
		c.Registerer = reg
		c.QueueBytes = 10 << 10
		c.Resolve = func(id uint64) (string, bool) {
			<-release // the peer goroutine is stuck dialing
			return dir.resolve(id)
		}
	})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)

	// 1 KiB appends: the goroutine holds the first, the queue nine more (9 KiB and overhead
	// fit in 10 KiB, a tenth does not).
	var msgs []replica.ShardMessage
	for i := range 30 {
		msgs = append(msgs, msg(0, 1, 2, uint64(i+1), make([]byte, 1<<10)))
	}
	n1.tr.Send(msgs)
	hb := msg(0, 1, 2, 100, nil)
	hb.Msg.Type = new(pb.MsgHeartbeat)
	n1.tr.Send([]replica.ShardMessage{hb})
	dropped := int(counterValue(n1.tr.Metrics().MessagesDropped.WithLabelValues("2", dropQueueFull)))
	if dropped < 20 || dropped > 21 {
		t.Fatalf("dropped %d of 30 1-KiB appends with QueueBytes 10 KiB, want 20 or 21", dropped)
	}
	// The queues as a scrape sees them: the appends queued (the goroutine holds one more, or
	// not yet) and the heartbeat; their entry bytes within the bound.
	queued := func(name string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name && len(mf.GetMetric()) == 1 && mf.GetMetric()[0].GetLabel()[0].GetValue() == "2" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatalf("no %s series for peer 2", name)
		return 0
	}
	if m, b := queued("shoal_transport_queued_messages"), queued("shoal_transport_queued_bytes"); m < 9 || m > 11 || b < 8<<10 || b > 10<<10 {
		t.Fatalf("queued %v messages, %v bytes; want 9..11 (the appends and the heartbeat), 8..10 KiB", m, b)
	}
	waitFor(t, 5*time.Second, "an unreachable report", func() bool { return n1.rec.unreachableCount(0, 2) >= 1 })
	unblock()
	waitFor(t, 10*time.Second, "queued messages", func() bool { return n2.rec.count() == 30-dropped+1 })

	// The queue is empty: one append larger than the bound goes.
	n1.tr.Send([]replica.ShardMessage{msg(1, 1, 2, 200, make([]byte, 64<<10))})
	waitFor(t, 10*time.Second, "the large append", func() bool { return n2.rec.count() == 30-dropped+2 })
	if got := int(counterValue(n1.tr.Metrics().MessagesDropped.WithLabelValues("2", dropQueueFull))); got != dropped {
		t.Fatalf("the large append into an empty queue was dropped (%d drops, were %d)", got, dropped)
	}
	if m, b := queued("shoal_transport_queued_messages"), queued("shoal_transport_queued_bytes"); m != 0 || b != 0 {
		t.Fatalf("queued %v messages, %v bytes once all were sent; want 0", m, b)
	}
}

func TestQueueFull(t *testing.T) {
	dir := newDirectory()
	n2 := startNode(t, 2, "c", dir, nil)
	release := make(chan struct{})
	n1 := startNode(t, 1, "c", dir, func(c *Config) {
		c.QueueSize = 8
		c.Resolve = func(id uint64) (string, bool) {
			<-release // the peer goroutine is stuck dialing
			return dir.resolve(id)
		}
	})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before n1's Close (cleanups run last-in first-out), even on failure
	const total = 30
	var msgs []replica.ShardMessage
	for i := range total {
		msgs = append(msgs, msg(uint32(i%2), 1, 2, uint64(i+1), nil))
	}
	n1.tr.Send(msgs)
	dropped := int(counterValue(n1.tr.Metrics().MessagesDropped.WithLabelValues("2", dropQueueFull)))
	// The goroutine holds at most one message, the queue 8.
	if dropped < total-9 || dropped > total-8 {
		t.Fatalf("dropped %d of %d with queue 8", dropped, total)
	}
	// Reports are coalesced, not exactly once: the reporter may run between two drops of the
	// same shard and report it again.
	waitFor(t, 5*time.Second, "unreachable reports", func() bool {
		return n1.rec.unreachableCount(0, 2) >= 1 && n1.rec.unreachableCount(1, 2) >= 1
	})
	if n := n1.rec.unreachableCount(0, 2) + n1.rec.unreachableCount(1, 2); n > dropped {
		t.Fatalf("%d unreachable reports for %d dropped messages", n, dropped)
	}
	unblock()
	waitFor(t, 10*time.Second, "queued messages", func() bool { return n2.rec.count() == total-dropped })
	// The queue took the first 8 in order. The goroutine may take message 1
	// from the queue before or after message 9 is refused, so the ninth
	// delivered, if any, is whichever message found the free slot: later than
	// 8, in order.
	got := n2.rec.received()
	for i, m := range got {
		idx := m.Msg.GetIndex()
		if i < 8 && idx != uint64(i+1) {
			t.Fatalf("message %d has index %d; want the first 8 in order", i, idx)
		}
		if i >= 8 && idx <= got[i-1].Msg.GetIndex() {
			t.Fatalf("message %d has index %d after %d; want them in order", i, idx, got[i-1].Msg.GetIndex())
		}
	}
}

// No address: messages are dropped and reported, dial errors counted.
func TestUnknownPeer(t *testing.T) {
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, nil)
	waitFor(t, 5*time.Second, "unreachable report", func() bool {
		n1.tr.Send([]replica.ShardMessage{msg(4, 1, 9, 1, nil)})
		time.Sleep(5 * time.Millisecond)
		return n1.rec.unreachableCount(4, 9) > 0
	})
	if counterValue(n1.tr.Metrics().DialErrors.WithLabelValues("9")) == 0 {
		t.Fatal("no dial error counted")
	}
	// Self and node 0 are dropped without a peer.
	n1.tr.Send([]replica.ShardMessage{msg(0, 1, 1, 1, nil), msg(0, 1, 0, 1, nil)})
	if peers := peerCount(n1.tr); peers != 1 {
		t.Fatalf("%d peers, want 1", peers)
	}
}

// An oversized message is dropped alone; its neighbours go through.
func TestOversizedMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 32 MiB")
	}
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, nil)
	n2 := startNode(t, 2, "c", dir, nil)
	n1.tr.Send([]replica.ShardMessage{
		msg(0, 1, 2, 1, nil),
		msg(1, 1, 2, 2, bytes.Repeat([]byte{1}, MaxMessageSize)),
		msg(0, 1, 2, 3, nil),
	})
	waitFor(t, 10*time.Second, "two messages", func() bool { return n2.rec.count() == 2 })
	if counterValue(n1.tr.Metrics().MessagesDropped.WithLabelValues("2", dropTooLarge)) != 1 {
		t.Fatal("oversized drop not counted")
	}
	waitFor(t, 5*time.Second, "unreachable report", func() bool { return n1.rec.unreachableCount(1, 2) == 1 })
}

// Close is idempotent; Send and SendSnapshot after Close do nothing.
func TestClose(t *testing.T) {
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, nil)
	n2 := startNode(t, 2, "c", dir, nil)
	n1.tr.Send([]replica.ShardMessage{msg(0, 1, 2, 1, nil)})
	waitFor(t, 5*time.Second, "delivery", func() bool { return n2.rec.count() == 1 })
	if err := n1.tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n1.tr.Close(); err != nil {
		t.Fatal(err)
	}
	n1.tr.Send([]replica.ShardMessage{msg(0, 1, 2, 2, nil)})
	n1.tr.SendSnapshot(replica.ShardMessage{Shard: 0, Msg: &pb.Message{Type: new(pb.MsgSnap), To: new(uint64(2))}})
	if r := n1.rec.snapReports(); len(r) != 0 {
		t.Fatalf("snapshot reports after Close: %v", r)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := func(uint64) (string, bool) { return "", false }
	for _, tc := range []struct {
		cfg  Config
		text string
	}{
		{Config{Resolve: ok}, "NodeID"},
		{Config{NodeID: 1}, "Resolve"},
		{Config{NodeID: 1, Resolve: ok, QueueSize: -1}, "negative"},
		{Config{NodeID: 1, Resolve: ok, BackoffInitial: time.Second, BackoffMax: time.Millisecond}, "BackoffInitial"},
		{Config{NodeID: 1, Resolve: ok, MaxBatchBytes: 64 << 20}, "MaxBatchBytes 67108864 exceeds the largest message"},
		{Config{NodeID: 1, Resolve: ok, SnapshotChunkSize: MaxMessageSize + 1}, "SnapshotChunkSize"},
		{Config{NodeID: 1, Resolve: ok, MaxBatchBytes: MaxMessageSize, SnapshotChunkSize: MaxMessageSize}, ""},
		{Config{NodeID: 1, Resolve: ok}, ""},
	} {
		err := tc.cfg.Validate()
		if (tc.text == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.text)) {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.text)
		}
	}
	e := error(&ClusterMismatchError{Local: "a", Remote: "b", From: 3})
	if !errors.Is(e, ErrClusterMismatch) || errors.Is(e, ErrWrongNode) {
		t.Fatal("ClusterMismatchError.Is")
	}
	if !errors.Is(&WrongNodeError{Self: 1, To: 2}, ErrWrongNode) {
		t.Fatal("WrongNodeError.Is")
	}
}

// slowConn writes at bps bytes a second, as a slow or saturated link does.
type slowConn struct {
	net.Conn
	bps float64
}

func (c *slowConn) Write(p []byte) (int, error) {
	time.Sleep(time.Duration(float64(len(p)) / c.bps * float64(time.Second)))
	return c.Conn.Write(p)
}

// slowLink starts node 1 (a) and node 2 (b), a sending to b over a link of 8 MiB/s.
func slowLink(t *testing.T) (a, b *testNode) {
	t.Helper()
	dir := newDirectory()
	b = startNode(t, 2, "c", dir, nil)
	a = startNode(t, 1, "c", dir, func(c *Config) {
		var d net.Dialer
		c.DialOptions = append(grpcopt.PeerDialOptions(), grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			cn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return &slowConn{Conn: cn, bps: 8 << 20}, nil
		}))
	})
	return a, b
}

// A heartbeat queued behind megabytes of one shard's appends goes ahead of them: over a link
// taking 3 s for the appends, a heartbeat of another shard that waited for all of them would
// arrive after several election timeouts, and that shard's followers would elect a new
// leader. The appends keep their order.
func TestHeartbeatsOvertakeAppends(t *testing.T) {
	a, b := slowLink(t)
	payload := make([]byte, 1<<20)
	var msgs []replica.ShardMessage
	for i := range 24 {
		msgs = append(msgs, msg(1, 1, 2, uint64(i+1), payload))
	}
	hb := &pb.Message{Type: new(pb.MsgHeartbeat), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(3))}
	msgs = append(msgs, replica.ShardMessage{Shard: 2, Msg: hb})
	start := time.Now()
	a.tr.Send(msgs)
	var hbAfter time.Duration
	waitFor(t, 30*time.Second, "every message", func() bool {
		got := b.rec.received()
		for i, m := range got {
			if m.Shard == 2 && hbAfter == 0 {
				hbAfter = time.Since(start)
				t.Logf("the heartbeat arrived %v after the send, after %d of the 24 appends", hbAfter.Round(time.Millisecond), i)
			}
		}
		return len(got) == 25
	})
	total := time.Since(start)
	t.Logf("all 25 messages in %v", total.Round(time.Millisecond))
	if hbAfter > total/2 {
		t.Fatalf("the heartbeat arrived %v after the send, with the appends (%v in all)", hbAfter, total)
	}
	var idx []uint64
	for _, m := range b.rec.received() {
		if m.Shard == 1 {
			idx = append(idx, m.Msg.GetIndex())
		}
	}
	if !slices.IsSorted(idx) || len(idx) != 24 {
		t.Fatalf("appends arrived as %v, want indexes 1..24 in order", idx)
	}
}

// TestWaitedOnSender: a message that waited on its sender's queue to the peer (here appends
// behind megabytes of others on a slow link) arrives saying how long (ShardMessage.Waited), so
// that its receiver dates what it says as of its sending, not its arrival: a follower counted
// itself current as of appends that had waited seconds behind others, and served bounded-stale
// reads older than their bound.
func TestWaitedOnSender(t *testing.T) {
	a, b := slowLink(t)
	payload := make([]byte, 1<<20)
	var msgs []replica.ShardMessage
	for i := range 12 {
		msgs = append(msgs, msg(1, 1, 2, uint64(i+1), payload))
	}
	start := time.Now()
	a.tr.Send(msgs)
	waitFor(t, 30*time.Second, "every message", func() bool { return len(b.rec.received()) == 12 })
	got := b.rec.received()
	first, last := got[0].Waited, got[len(got)-1].Waited
	t.Logf("the first append waited %v on its sender, the last %v; all arrived in %v", first, last, time.Since(start).Round(time.Millisecond))
	if last < 500*time.Millisecond || last > time.Since(start) || first > last {
		t.Fatalf("appends waited %v (first) and %v (last) on their sender by their batches' account; want the last at least 0.5 s (12 MiB at 8 MiB/s), no more than the %v since the send",
			first, last, time.Since(start))
	}
}

// A probe attempt that times out is not a peer down on its own (a lost connection request is
// sent again only after a second, and the packet loss that broke the stream often drops the
// first attempt's too); a peer whose every attempt times out is.
func TestPeerDownNeedsEveryAttemptTimedOut(t *testing.T) {
	for _, tc := range []struct {
		name     string
		timeouts int32 // attempts that time out before the dials go through
		down     bool
	}{
		{"first attempt times out", 1, false},
		{"all but the last time out", int32(len(probeDelays) - 1), false},
		{"every attempt times out", int32(len(probeDelays)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newDirectory()
			var dials atomic.Int32
			n1 := startNode(t, 1, "c", dir, func(c *Config) {
				var d net.Dialer
				c.ProbeDial = func(ctx context.Context, addr string) (net.Conn, error) {
					if dials.Add(1) <= tc.timeouts {
						return nil, &net.OpError{Op: "dial", Net: "tcp", Err: context.DeadlineExceeded}
					}
					return d.DialContext(ctx, "tcp", addr)
				}
			})
			n2 := startNode(t, 2, "c", dir, nil)
			n1.tr.Send([]replica.ShardMessage{msg(1, 1, 2, 1, nil)})
			waitFor(t, 10*time.Second, "delivery", func() bool { return n2.rec.count() == 1 })
			n2.brk.breakAll() // the stream breaks; n2 still listens
			waitFor(t, 10*time.Second, "the probe's attempts", func() bool { return dials.Load() >= min(tc.timeouts+1, int32(len(probeDelays))) })
			time.Sleep(500 * time.Millisecond) // the probe's remaining attempts (300 ms in all)
			if got := len(n1.rec.peersDown()) > 0; got != tc.down {
				t.Fatalf("%d dials, %d timed out: reported down %v, want %v", dials.Load(), tc.timeouts, got, tc.down)
			}
		})
	}
}

// A node that stops serving ends its peers' raft streams into it with ErrStopping: its gRPC
// server's graceful stop then ends (the streams never end by themselves), and the peers log the
// stop at Info, as no fault, and still report the node down once its address refuses.
func TestStopServing(t *testing.T) {
	var log lockedbuf.Buffer
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	n2 := startNode(t, 2, "c", dir, nil)
	n1.tr.Send([]replica.ShardMessage{msg(1, 1, 2, 1, nil)})
	waitFor(t, 10*time.Second, "delivery", func() bool { return n2.rec.count() == 1 })

	n2.tr.StopServing()
	stopped := make(chan struct{})
	go func() { n2.srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the gRPC server's graceful stop still waits for the raft stream into it")
	}
	waitFor(t, 10*time.Second, "n2 reported down", func() bool { return len(n1.rec.peersDown()) > 0 })
	out := log.String()
	if !strings.Contains(out, `level=INFO msg="transport: peer is stopping; its raft stream ended" peer=2`) {
		t.Errorf("no Info line of the peer stopping:\n%s", out)
	}
	if strings.Contains(out, "level=WARN") || strings.Contains(out, "level=ERROR") {
		t.Errorf("a peer's stop logged as a fault:\n%s", out)
	}
}

package transport

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"

	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/replica"
)

// recorder is a Handler that records everything the transport hands it.
type recorder struct {
	mu          sync.Mutex
	batches     int
	msgs        []replica.ShardMessage
	unreachable map[shardPeer]int
	snaps       []snapReport
	down        []uint64 // ReportPeerDown calls, in order

	// Optional behaviour.
	writeSnap   func(shard uint32, snap *pb.Snapshot, w io.Writer) error
	receiveSnap func(m replica.ShardMessage, r io.Reader) error
	snapSize    uint64                                          // SnapshotSize's answer
	snapFits    func(m replica.ShardMessage, size uint64) error // nil: every snapshot fits
	onBatch     func(msgs []replica.ShardMessage)
}

// snapReport is a ReportSnapshot call: the shard, destination and snapshot index of the
// message reported.
type snapReport struct {
	shard uint32
	to    uint64
	index uint64
	ok    bool
}

func newRecorder() *recorder { return &recorder{unreachable: make(map[shardPeer]int)} }

func (r *recorder) HandleMessages(msgs []replica.ShardMessage) {
	r.mu.Lock()
	r.batches++
	r.msgs = append(r.msgs, msgs...)
	f := r.onBatch
	r.mu.Unlock()
	if f != nil {
		f(msgs)
	}
}

func (r *recorder) WriteSnapshot(shard uint32, snap *pb.Snapshot, w io.Writer) error {
	return r.writeSnap(shard, snap, w)
}

func (r *recorder) SnapshotSize(uint32) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snapSize
}

func (r *recorder) SnapshotFits(m replica.ShardMessage, size uint64) (func(), error) {
	r.mu.Lock()
	f := r.snapFits
	r.mu.Unlock()
	if f == nil {
		return func() {}, nil
	}
	return func() {}, f(m, size)
}

func (r *recorder) ReceiveSnapshot(m replica.ShardMessage, rd io.Reader) error {
	return r.receiveSnap(m, rd)
}

func (r *recorder) ReportUnreachable(shard uint32, to uint64) {
	r.mu.Lock()
	r.unreachable[shardPeer{shard, to}]++
	r.mu.Unlock()
}

func (r *recorder) ReportPeerDown(to uint64) {
	r.mu.Lock()
	r.down = append(r.down, to)
	r.mu.Unlock()
}

func (r *recorder) peersDown() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.down...)
}

func (r *recorder) ReportSnapshot(m replica.ShardMessage, ok bool) {
	r.mu.Lock()
	r.snaps = append(r.snaps, snapReport{m.Shard, m.Msg.GetTo(), m.Msg.GetSnapshot().GetMetadata().GetIndex(), ok})
	r.mu.Unlock()
}

func (r *recorder) received() []replica.ShardMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]replica.ShardMessage(nil), r.msgs...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *recorder) unreachableCount(shard uint32, to uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unreachable[shardPeer{shard, to}]
}

func (r *recorder) snapReports() []snapReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]snapReport(nil), r.snaps...)
}

// directory maps node IDs to addresses for Config.Resolve.
type directory struct {
	mu sync.Mutex
	m  map[uint64]string
}

func newDirectory() *directory { return &directory{m: make(map[uint64]string)} }

func (d *directory) set(id uint64, addr string) {
	d.mu.Lock()
	d.m[id] = addr
	d.mu.Unlock()
}

func (d *directory) resolve(id uint64) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.m[id]
	return a, ok
}

// testNode is a Transport served by a real gRPC server on 127.0.0.1:0.
type testNode struct {
	id   uint64
	tr   *Transport
	rec  *recorder
	srv  *grpc.Server
	addr string
	brk  *breakableListener // the server's current listener
}

// breakableListener remembers the connections it accepted, so that a test can reset them all
// while the server goes on listening.
type breakableListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *breakableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// breakAll closes every accepted connection.
func (l *breakableListener) breakAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

func startNode(t testing.TB, id uint64, cluster string, dir *directory, mod func(*Config)) *testNode {
	t.Helper()
	cfg := Config{
		NodeID:         id,
		ClusterID:      func() string { return cluster },
		Resolve:        dir.resolve,
		BackoffInitial: 10 * time.Millisecond,
		BackoffMax:     100 * time.Millisecond,
		// Tests that fail a snapshot and send another do not wait out the default.
		SnapshotBackoffInitial: 10 * time.Millisecond,
		SnapshotBackoffMax:     100 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	n := &testNode{id: id, tr: New(cfg), rec: newRecorder()}
	n.tr.SetHandler(n.rec)
	n.serve(t, "127.0.0.1:0")
	dir.set(id, n.addr)
	t.Cleanup(func() {
		n.srv.Stop()
		n.tr.Close()
	})
	return n
}

// serve starts a gRPC server for n on addr.
func (n *testNode) serve(t testing.TB, addr string) {
	t.Helper()
	var lis net.Listener
	var err error
	for range 50 { // the port of a stopped server may linger briefly
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	n.srv = grpc.NewServer(grpcopt.ServerOptions()...)
	n.tr.Register(n.srv)
	n.addr = lis.Addr().String()
	n.brk = &breakableListener{Listener: lis}
	go n.srv.Serve(n.brk)
}

// msg builds a message from -> to of shard, numbered by index.
func msg(shard uint32, from, to, index uint64, payload []byte) replica.ShardMessage {
	m := &pb.Message{
		Type:  new(pb.MsgApp),
		From:  new(from),
		To:    new(to),
		Term:  new(uint64(3)),
		Index: new(index),
	}
	if payload != nil {
		m.Entries = []*pb.Entry{{Term: new(uint64(3)), Index: new(index + 1), Data: payload}}
	}
	return replica.ShardMessage{Shard: shard, Msg: m}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// counterValue reads a counter without prometheus/testutil.
// histogramCount returns how many observations o, a histogram, holds.
func histogramCount(o prometheus.Observer) uint64 {
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		panic(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

package transport

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
)

func snapMsg(shard uint32, from, to, index uint64) replica.ShardMessage {
	return replica.ShardMessage{Shard: shard, Msg: &pb.Message{
		Type: new(pb.MsgSnap), From: new(from), To: new(to), Term: new(uint64(4)),
		Snapshot: &pb.Snapshot{Metadata: &pb.SnapshotMetadata{
			Index: new(index), Term: new(uint64(4)),
			ConfState: &pb.ConfState{Voters: []uint64{from, to}},
		}},
	}}
}

// snapshotData is deterministic: random (incompressible) and zero runs.
func snapshotData(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 64 << 10 {
		end := min(i+64<<10, n)
		if rng.IntN(3) > 0 {
			for j := i; j < end; j++ {
				b[j] = byte(rng.Uint32())
			}
		}
	}
	return b
}

// writeInPieces writes data to w in irregular pieces.
func writeInPieces(rng *rand.Rand, data []byte, w io.Writer) error {
	for len(data) > 0 {
		k := min(len(data), 1+rng.IntN(300<<10))
		if _, err := w.Write(data[:k]); err != nil {
			return err
		}
		data = data[k:]
	}
	return nil
}

func waitReport(t *testing.T, rec *recorder) snapReport {
	t.Helper()
	waitFor(t, 20*time.Second, "snapshot report", func() bool { return len(rec.snapReports()) > 0 })
	r := rec.snapReports()
	if len(r) != 1 {
		t.Fatalf("reports %v, want one", r)
	}
	return r[0]
}

// A multi-MiB snapshot arrives intact, with its header message.
func TestSnapshotRoundTrip(t *testing.T) {
	rng := seed(t)
	data := snapshotData(rng, 9<<20+12345)
	want := sha256.Sum256(data)
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, nil)
	n2 := startNode(t, 2, "c", dir, nil)

	var mu sync.Mutex
	var gotSum [32]byte
	var gotLen int
	var gotMsg replica.ShardMessage
	n1.rec.writeSnap = func(shard uint32, snap *pb.Snapshot, w io.Writer) error {
		if shard != 7 || snap.GetMetadata().GetIndex() != 42 {
			return errors.New("wrong snapshot")
		}
		return writeInPieces(rng, data, w)
	}
	n2.rec.receiveSnap = func(m replica.ShardMessage, r io.Reader) error {
		h := sha256.New()
		n, err := io.Copy(h, r)
		mu.Lock()
		defer mu.Unlock()
		gotMsg, gotLen = m, int(n)
		copy(gotSum[:], h.Sum(nil))
		return err
	}
	sent := snapMsg(7, 1, 2, 42)
	n1.tr.SendSnapshot(sent)
	if r := waitReport(t, n1.rec); r != (snapReport{7, 2, 42, true}) {
		t.Fatalf("report %+v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if gotLen != len(data) || gotSum != want {
		t.Fatalf("received %d bytes (sha %x), want %d (sha %x)", gotLen, gotSum[:4], len(data), want[:4])
	}
	if gotMsg.Shard != 7 || gotMsg.Msg.GetSnapshot().GetMetadata().GetIndex() != 42 || gotMsg.Msg.GetFrom() != 1 {
		t.Fatalf("header %d %v", gotMsg.Shard, gotMsg.Msg)
	}
	wire := counterValue(n1.tr.Metrics().SnapshotBytes.WithLabelValues("sent"))
	t.Logf("%d bytes sent as %v compressed bytes", len(data), wire)
	if wire <= 0 || wire >= float64(len(data)) {
		t.Errorf("compressed %v bytes of %d", wire, len(data))
	}
	if counterValue(n2.tr.Metrics().SnapshotsRecv.WithLabelValues("ok")) != 1 {
		t.Error("snapshots_received{ok} != 1")
	}
	if n := histogramCount(n2.tr.Metrics().SnapshotSeconds.WithLabelValues("received", "ok")); n != 1 {
		t.Errorf("snapshot_duration_seconds{received,ok} counts %d, want 1", n)
	}
	waitFor(t, 5*time.Second, "the send's duration observed", func() bool {
		return histogramCount(n1.tr.Metrics().SnapshotSeconds.WithLabelValues("sent", "ok")) == 1
	})
}

// Failures on either side end in ReportSnapshot(ok=false), and the receiver
// never sees a truncated stream as complete.
func TestSnapshotFailures(t *testing.T) {
	rng := seed(t)
	data := snapshotData(rng, 4<<20)
	for _, tc := range []struct {
		name    string
		write   func(w io.Writer) error
		receive func(r io.Reader) error
	}{
		{
			name:  "receiver fails",
			write: func(w io.Writer) error { return writeInPieces(rng, data, w) },
			receive: func(r io.Reader) error {
				if _, err := io.CopyN(io.Discard, r, 100<<10); err != nil {
					return err
				}
				return errors.New("disk full")
			},
		},
		{
			name: "sender fails",
			write: func(w io.Writer) error {
				if err := writeInPieces(rng, data[:3<<20], w); err != nil {
					return err
				}
				return errors.New("pebble snapshot gone")
			},
			receive: func(r io.Reader) error {
				_, err := io.Copy(io.Discard, r)
				if err == nil {
					return errors.New("truncated stream read as complete")
				}
				return err
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var recvErr atomic.Value
			// Registered before the nodes, so it runs after they stopped: a receiver still
			// reading by then has ended too.
			t.Cleanup(func() {
				if err, _ := recvErr.Load().(error); err != nil && strings.Contains(err.Error(), "read as complete") {
					t.Error(err)
				}
			})
			dir := newDirectory()
			n1 := startNode(t, 1, "c", dir, nil)
			n2 := startNode(t, 2, "c", dir, nil)
			n1.rec.writeSnap = func(_ uint32, _ *pb.Snapshot, w io.Writer) error { return tc.write(w) }
			n2.rec.receiveSnap = func(_ replica.ShardMessage, r io.Reader) error {
				err := tc.receive(r)
				recvErr.Store(err)
				return err
			}
			n1.tr.SendSnapshot(snapMsg(3, 1, 2, 10))
			if r := waitReport(t, n1.rec); r != (snapReport{3, 2, 10, false}) {
				t.Fatalf("report %+v", r)
			}
			if counterValue(n1.tr.Metrics().SnapshotsSent.WithLabelValues("failed")) != 1 {
				t.Error("snapshots_sent{failed} != 1")
			}
			if tc.name == "receiver fails" {
				// The failure came from the receiver, so it ran. A failing sender may cancel
				// the stream before the receiver reads its header, and then it never runs.
				waitFor(t, 5*time.Second, "receiver outcome", func() bool { return recvErr.Load() != nil })
			}
			t.Logf("receiver saw: %v", recvErr.Load())
		})
	}
}

// Unknown peer, wrong cluster: ok=false without hanging.
func TestSnapshotRefused(t *testing.T) {
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, nil)
	startNode(t, 2, "other", dir, nil)
	n1.rec.writeSnap = func(_ uint32, _ *pb.Snapshot, w io.Writer) error {
		_, err := w.Write(bytes.Repeat([]byte("a"), 3<<20))
		return err
	}
	n1.tr.SendSnapshot(snapMsg(1, 1, 2, 5))
	n1.tr.Send([]replica.ShardMessage{snapMsg(1, 1, 9, 5)}) // no address; Send hands MsgSnap on
	waitFor(t, 10*time.Second, "two reports", func() bool { return len(n1.rec.snapReports()) == 2 })
	for _, r := range n1.rec.snapReports() {
		if r.ok {
			t.Fatalf("report %+v", r)
		}
	}
}

// No more than MaxSnapshotSends snapshots are written at once.
func TestSnapshotConcurrencyLimit(t *testing.T) {
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, func(c *Config) { c.MaxSnapshotSends = 1 })
	n2 := startNode(t, 2, "c", dir, nil)
	var cur, peak atomic.Int32
	n1.rec.writeSnap = func(_ uint32, _ *pb.Snapshot, w io.Writer) error {
		if c := cur.Add(1); c > peak.Load() {
			peak.Store(c)
		}
		defer cur.Add(-1)
		time.Sleep(30 * time.Millisecond)
		_, err := w.Write([]byte("state"))
		return err
	}
	n2.rec.receiveSnap = func(_ replica.ShardMessage, r io.Reader) error {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	for s := range uint32(3) {
		n1.tr.SendSnapshot(snapMsg(s, 1, 2, 5))
	}
	waitFor(t, 10*time.Second, "three reports", func() bool { return len(n1.rec.snapReports()) == 3 })
	for _, r := range n1.rec.snapReports() {
		if !r.ok {
			t.Fatalf("report %+v", r)
		}
	}
	if p := peak.Load(); p != 1 {
		t.Fatalf("peak concurrent snapshot writes %d, want 1", p)
	}
}

// A stream on which nothing moves for SnapshotStallTimeout is aborted.
func TestSnapshotStall(t *testing.T) {
	rng := seed(t)
	data := snapshotData(rng, 2<<20)
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, func(c *Config) { c.SnapshotStallTimeout = 100 * time.Millisecond })
	n2 := startNode(t, 2, "c", dir, nil)
	n1.rec.writeSnap = func(_ uint32, _ *pb.Snapshot, w io.Writer) error {
		time.Sleep(400 * time.Millisecond) // wedged source
		return writeInPieces(rng, data, w)
	}
	n2.rec.receiveSnap = func(_ replica.ShardMessage, r io.Reader) error {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	n1.tr.SendSnapshot(snapMsg(2, 1, 2, 9))
	if r := waitReport(t, n1.rec); r.ok {
		t.Fatalf("report %+v", r)
	}
}

// stuckReceiver makes n's ReceiveSnapshot announce each snapshot on entered, then wait for
// release before reading it; it records the peak number received at once. The returned
// function releases it (also at cleanup, before the nodes stop).
func stuckReceiver(t *testing.T, n *testNode) (entered <-chan replica.ShardMessage, peak *atomic.Int32, release func()) {
	ch := make(chan replica.ShardMessage, 16)
	rel := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(release)
	var cur atomic.Int32
	peak = new(atomic.Int32)
	n.rec.receiveSnap = func(m replica.ShardMessage, r io.Reader) error {
		c := cur.Add(1)
		defer cur.Add(-1)
		for p := peak.Load(); c > p && !peak.CompareAndSwap(p, c); p = peak.Load() {
		}
		ch <- m
		<-rel
		_, err := io.Copy(io.Discard, r)
		return err
	}
	return ch, peak, release
}

func writeState(_ uint32, _ *pb.Snapshot, w io.Writer) error {
	_, err := w.Write([]byte("state"))
	return err
}

func receiveAll(_ replica.ShardMessage, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func waitEntered(t *testing.T, entered <-chan replica.ShardMessage) replica.ShardMessage {
	t.Helper()
	select {
	case m := <-entered:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a snapshot to reach the receiver")
		return replica.ShardMessage{}
	}
}

// A receiver that is slow to take its snapshots holds one of the MaxSnapshotSends slots, not
// all of them: a snapshot to another node goes through meanwhile. A node receives one
// snapshot at a time, and every SendSnapshot is reported once.
func TestSnapshotSlowReceiver(t *testing.T) {
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, func(c *Config) { c.MaxSnapshotSends = 2 })
	n2 := startNode(t, 2, "c", dir, nil)
	n3 := startNode(t, 3, "c", dir, nil)
	n1.rec.writeSnap = writeState
	entered, peak, release := stuckReceiver(t, n2)
	n3.rec.receiveSnap = receiveAll

	n1.tr.SendSnapshot(snapMsg(1, 1, 2, 5))
	n1.tr.SendSnapshot(snapMsg(2, 1, 2, 5))
	waitEntered(t, entered)
	n1.tr.SendSnapshot(snapMsg(3, 1, 3, 5))
	waitFor(t, 10*time.Second, "the snapshot to node 3 while node 2 is stuck", func() bool {
		return len(n1.rec.snapReports()) > 0
	})
	if r := n1.rec.snapReports(); len(r) != 1 || r[0] != (snapReport{3, 3, 5, true}) {
		t.Fatalf("reports %+v, want only node 3's, ok", r)
	}

	release()
	waitFor(t, 10*time.Second, "three reports", func() bool { return len(n1.rec.snapReports()) >= 3 })
	time.Sleep(50 * time.Millisecond) // a fourth report would be a bug; give it a chance to show
	want := map[snapReport]int{{3, 3, 5, true}: 1, {1, 2, 5, true}: 1, {2, 2, 5, true}: 1}
	for _, r := range n1.rec.snapReports() {
		want[r]--
	}
	for r, n := range want {
		if n != 0 {
			t.Fatalf("report %+v: %d too few; all reports %+v", r, n, n1.rec.snapReports())
		}
	}
	if p := peak.Load(); p != 1 {
		t.Fatalf("node 2 received %d snapshots at once, want 1", p)
	}
}

// Snapshots to one node wait in call order; a call for a shard that is still waiting replaces
// the waiting snapshot (not the one being sent). Each snapshot sent is reported once, with its
// message; one replaced is not reported (raft no longer waits for it).
func TestSnapshotCoalesced(t *testing.T) {
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, nil)
	n2 := startNode(t, 2, "c", dir, nil)
	n1.rec.writeSnap = writeState
	entered, _, release := stuckReceiver(t, n2)

	type snap struct {
		shard uint32
		index uint64
	}
	var got []snap
	receive := func() {
		m := waitEntered(t, entered)
		got = append(got, snap{m.Shard, m.Msg.GetSnapshot().GetMetadata().GetIndex()})
	}
	n1.tr.SendSnapshot(snapMsg(1, 1, 2, 5))
	receive()
	n1.tr.SendSnapshot(snapMsg(2, 1, 2, 5))
	n1.tr.SendSnapshot(snapMsg(1, 1, 2, 6)) // waits behind the one being sent
	n1.tr.SendSnapshot(snapMsg(2, 1, 2, 7)) // replaces 2@5
	n1.tr.SendSnapshot(snapMsg(1, 1, 2, 8)) // replaces 1@6
	release()
	receive()
	receive()
	if want := []snap{{1, 5}, {2, 7}, {1, 8}}; !slices.Equal(got, want) {
		t.Fatalf("received %v, want %v", got, want)
	}
	waitFor(t, 10*time.Second, "three reports", func() bool { return len(n1.rec.snapReports()) >= 3 })
	time.Sleep(50 * time.Millisecond) // a fourth report would be a bug; give it a chance to show
	want := []snapReport{{1, 2, 5, true}, {2, 2, 7, true}, {1, 2, 8, true}}
	if r := n1.rec.snapReports(); !slices.Equal(r, want) {
		t.Fatalf("reports %+v, want %+v", r, want)
	}
	if v := counterValue(n1.tr.Metrics().SnapshotsSent.WithLabelValues("ok")); v != 3 {
		t.Fatalf("snapshots_sent_total{ok} = %v, want 3 streams", v)
	}
	select {
	case m := <-entered:
		t.Fatalf("a fourth snapshot arrived: shard %d", m.Shard)
	default:
	}
}

// Close ends a snapshot being sent and drops those waiting, without reports, and leaves no
// sender behind (Close waits for them).
func TestSnapshotCloseWhileWaiting(t *testing.T) {
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, nil)
	n2 := startNode(t, 2, "c", dir, nil)
	n1.rec.writeSnap = writeState
	entered, _, _ := stuckReceiver(t, n2)
	n1.tr.SendSnapshot(snapMsg(1, 1, 2, 5))
	n1.tr.SendSnapshot(snapMsg(2, 1, 2, 5))
	waitEntered(t, entered)
	done := make(chan struct{})
	go func() {
		n1.tr.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs with a snapshot waiting")
	}
	if r := n1.rec.snapReports(); len(r) != 0 {
		t.Fatalf("reports after Close: %+v", r)
	}
	n1.tr.mu.Lock()
	senders := len(n1.tr.mu.snaps)
	n1.tr.mu.Unlock()
	if senders != 0 {
		t.Fatalf("%d snapshot senders left", senders)
	}
}

// oneSlotSender starts node 1, which sends one snapshot at a time (the state it writes), and
// nodes 2 and 3, whose receivers hold each snapshot until released.
func oneSlotSender(t *testing.T) (n1 *testNode, entered2, entered3 <-chan replica.ShardMessage, release2, release3 func()) {
	dir := newDirectory()
	n1 = startNode(t, 1, "c", dir, func(c *Config) { c.MaxSnapshotSends = 1 })
	n2 := startNode(t, 2, "c", dir, nil)
	n3 := startNode(t, 3, "c", dir, nil)
	n1.rec.writeSnap = writeState
	entered2, _, release2 = stuckReceiver(t, n2)
	entered3, _, release3 = stuckReceiver(t, n3)
	return n1, entered2, entered3, release2, release3
}

// SnapshotWaiting tells a snapshot that waits its turn, behind another to the same node or for
// a send slot, from one being sent, and from none.
func TestSnapshotWaiting(t *testing.T) {
	n1, entered2, entered3, release2, _ := oneSlotSender(t)
	check := func(shard uint32, to uint64, want bool) {
		t.Helper()
		if got := n1.tr.SnapshotWaiting(shard, to); got != want {
			t.Fatalf("SnapshotWaiting(shard %d, to %d) = %v, want %v", shard, to, got, want)
		}
	}
	check(1, 2, false)
	n1.tr.SendSnapshot(snapMsg(1, 1, 2, 5))
	waitEntered(t, entered2)
	check(1, 2, false) // being sent
	n1.tr.SendSnapshot(snapMsg(2, 1, 2, 5))
	check(2, 2, true) // behind shard 1's, to the same node
	n1.tr.SendSnapshot(snapMsg(7, 1, 3, 5))
	waitFor(t, 10*time.Second, "shard 7's sender waiting for the slot", func() bool { return n1.tr.SnapshotWaiting(7, 3) })
	check(7, 2, false)
	release2()
	m := waitEntered(t, entered3) // shard 1's done, shard 7's took the slot: shard 2's waits for it
	if m.Shard != 7 {
		t.Fatalf("n3 received shard %d's snapshot, want 7's", m.Shard)
	}
	check(7, 3, false)
	check(2, 2, true)
}

// TestSnapshotReplacedWaitingForSlot: a newer snapshot of a shard whose older one waits for a
// send slot replaces it once the slot is taken: only the newer is streamed and reported (the
// older, streamed in full first, delayed the one raft waits for by a whole transfer).
func TestSnapshotReplacedWaitingForSlot(t *testing.T) {
	n1, entered2, entered3, release2, release3 := oneSlotSender(t)
	n1.tr.SendSnapshot(snapMsg(1, 1, 2, 5))
	waitEntered(t, entered2) // holds the only slot
	n1.tr.SendSnapshot(snapMsg(7, 1, 3, 5))
	waitFor(t, 10*time.Second, "shard 7's sender waiting for the slot", func() bool { return n1.tr.SnapshotWaiting(7, 3) })
	n1.tr.SendSnapshot(snapMsg(7, 1, 3, 9)) // newer, while the older waits for the slot
	release2()
	if m := waitEntered(t, entered3); m.Shard != 7 || m.Msg.GetSnapshot().GetMetadata().GetIndex() != 9 {
		t.Fatalf("n3 received shard %d's snapshot at %d, want shard 7's at 9", m.Shard, m.Msg.GetSnapshot().GetMetadata().GetIndex())
	}
	release3()
	waitFor(t, 10*time.Second, "two reports", func() bool { return len(n1.rec.snapReports()) >= 2 })
	time.Sleep(50 * time.Millisecond) // a third report would be a bug; give it a chance to show
	if r, want := n1.rec.snapReports(), []snapReport{{1, 2, 5, true}, {7, 3, 9, true}}; !slices.Equal(r, want) {
		t.Fatalf("reports %+v, want %+v", r, want)
	}
	select {
	case m := <-entered3:
		t.Fatalf("another snapshot arrived at n3: shard %d at %d", m.Shard, m.Msg.GetSnapshot().GetMetadata().GetIndex())
	default:
	}
}

// rawSnapshot opens a Raft.Snapshot stream to addr, sends chunks and returns the status.
func rawSnapshot(t *testing.T, addr string, chunks ...*shoalv1.SnapshotChunk) error {
	t.Helper()
	c, ctx := rawClient(t, addr)
	stream, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chunks {
		if err := stream.Send(c); err != nil {
			if !errors.Is(err, io.EOF) { // EOF: the receiver ended the stream; its status follows
				t.Fatal(err)
			}
			break
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

// A snapshot stream whose message names another sender than the stream's is refused with
// InvalidArgument naming both, before any data is read: the receiver would step the MsgSnap
// as that node's. The handler never sees it.
func TestSnapshotFromAnotherNode(t *testing.T) {
	dir := newDirectory()
	n2 := startNode(t, 2, "c", dir, nil)
	var received atomic.Int32
	n2.rec.receiveSnap = func(m replica.ShardMessage, r io.Reader) error {
		received.Add(1)
		return receiveAll(m, r)
	}
	var data bytes.Buffer
	zw, err := zstd.NewWriter(&data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write([]byte("state")); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		from     uint64 // the message's sender; the stream's is node 1
		code     codes.Code
		text     string
		received int32 // ReceiveSnapshot calls
	}{
		{"from the stream's sender", 1, codes.OK, "", 1},
		{"from another node", 3, codes.InvalidArgument, "snapshot message is from node 3, on a stream of node 1", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			received.Store(0)
			header, err := proto.Marshal(snapMsg(4, tc.from, 2, 10).Msg)
			if err != nil {
				t.Fatal(err)
			}
			err = rawSnapshot(t, n2.addr,
				&shoalv1.SnapshotChunk{From: 1, To: 2, ClusterId: "c", Shard: 4, Message: header},
				&shoalv1.SnapshotChunk{Data: data.Bytes()})
			if s := status.Convert(err); s.Code() != tc.code || !strings.Contains(s.Message(), tc.text) {
				t.Fatalf("got %v %q, want %v containing %q", s.Code(), s.Message(), tc.code, tc.text)
			}
			if n := received.Load(); n != tc.received {
				t.Fatalf("ReceiveSnapshot called %d times, want %d", n, tc.received)
			}
		})
	}
}

// TestSnapshotBackoff: after a failed snapshot, the next one to the same destination waits
// out an exponential backoff (raft asks again a heartbeat after a failure, and a node that
// keeps refusing was sent the shard ten times a second), while another destination is not
// held back; a success ends the backoff.
func TestSnapshotBackoff(t *testing.T) {
	const initial, maxWait = 300 * time.Millisecond, 600 * time.Millisecond
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, func(c *Config) {
		c.SnapshotBackoffInitial, c.SnapshotBackoffMax = initial, maxWait
	})
	n2 := startNode(t, 2, "c", dir, nil)
	n3 := startNode(t, 3, "c", dir, nil)
	n1.rec.writeSnap = func(_ uint32, _ *pb.Snapshot, w io.Writer) error {
		_, err := w.Write(bytes.Repeat([]byte("s"), 64<<10))
		return err
	}
	var refuse atomic.Bool
	refuse.Store(true)
	arrived := make(chan time.Time, 16)
	receive := func(_ replica.ShardMessage, r io.Reader) error {
		arrived <- time.Now()
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
		if refuse.Load() {
			return errors.New("no room for the snapshot")
		}
		return nil
	}
	n2.rec.receiveSnap, n3.rec.receiveSnap = receive, receive

	// send sends a snapshot and returns when it arrived and when its outcome was reported.
	send := func(to, index uint64) (at, reported time.Time, ok bool) {
		t.Helper()
		before := len(n1.rec.snapReports())
		n1.tr.SendSnapshot(snapMsg(3, 1, to, index))
		waitFor(t, 20*time.Second, "snapshot report", func() bool { return len(n1.rec.snapReports()) > before })
		reported = time.Now()
		r := n1.rec.snapReports()[before]
		select {
		case at = <-arrived:
		default:
			t.Fatalf("snapshot %d reported (%+v) without reaching its receiver", index, r)
		}
		return at, reported, r.ok
	}

	_, last, ok := send(2, 10)
	if ok {
		t.Fatal("the refused snapshot was reported sent")
	}
	// Each retry waits at least half its interval (±50% jitter): 300 ms, then 600 ms.
	for i, least := range []time.Duration{initial / 2, maxWait / 2} {
		at, reported, ok := send(2, uint64(11+i))
		if ok {
			t.Fatalf("retry %d reported sent", i+1)
		}
		if gap := at.Sub(last); gap < least {
			t.Fatalf("retry %d reached node 2 %v after the failure before it, want at least %v", i+1, gap, least)
		}
		last = reported
	}
	// Another destination is not held back by node 2's backoff: its snapshot arrives before
	// node 2's next may go (at least 300 ms after node 2's last failure).
	n1.tr.mu.Lock()
	next := n1.tr.mu.snapRetry[2].at
	n1.tr.mu.Unlock()
	if at, _, ok := send(3, 20); ok || !at.Before(next) {
		t.Fatalf("node 3's snapshot arrived %v after node 2's backoff ended (reported ok %v)", at.Sub(next), ok)
	}

	// A success ends the backoff: nothing is kept for node 2.
	refuse.Store(false)
	if _, _, ok := send(2, 30); !ok {
		t.Fatal("the accepted snapshot was reported failed")
	}
	n1.tr.mu.Lock()
	_, backingOff := n1.tr.mu.snapRetry[2]
	n1.tr.mu.Unlock()
	if backingOff {
		t.Fatal("node 2 still backed off after a snapshot it took")
	}
}

// TestSnapshotBackoffReplaced: a snapshot of a shard that arrives while an older one of the
// same shard waits out its destination's backoff replaces it, as in the queue: only the newer
// is sent and reported.
func TestSnapshotBackoffReplaced(t *testing.T) {
	const initial = 400 * time.Millisecond
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, func(c *Config) {
		c.SnapshotBackoffInitial, c.SnapshotBackoffMax = initial, initial
	})
	n2 := startNode(t, 2, "c", dir, nil)
	n1.rec.writeSnap = func(_ uint32, _ *pb.Snapshot, w io.Writer) error {
		_, err := w.Write([]byte("s"))
		return err
	}
	var refuse atomic.Bool
	refuse.Store(true)
	var mu sync.Mutex
	var got []uint64
	n2.rec.receiveSnap = func(m replica.ShardMessage, r io.Reader) error {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
		mu.Lock()
		got = append(got, m.Msg.GetSnapshot().GetMetadata().GetIndex())
		mu.Unlock()
		if refuse.Load() {
			return errors.New("no room for the snapshot")
		}
		return nil
	}
	n1.tr.SendSnapshot(snapMsg(3, 1, 2, 10))
	waitFor(t, 20*time.Second, "first report", func() bool { return len(n1.rec.snapReports()) == 1 })
	refuse.Store(false)
	n1.tr.SendSnapshot(snapMsg(3, 1, 2, 11)) // waits out the backoff
	time.Sleep(initial / 8)
	n1.tr.SendSnapshot(snapMsg(3, 1, 2, 12)) // the same shard, newer
	waitFor(t, 20*time.Second, "second report", func() bool { return len(n1.rec.snapReports()) >= 2 })
	time.Sleep(initial) // any further send would be done by now
	reports := n1.rec.snapReports()
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 2 || reports[1].index != 12 || !reports[1].ok || !slices.Equal(got, []uint64{10, 12}) {
		t.Fatalf("reports %+v, received %v; want the snapshot at 12 to replace the one at 11", reports, got)
	}
}

// TestSnapshotStaleNoBackoff: a snapshot the receiver refuses as stale (the sender's
// leadership ended) does not back off the next snapshots to that node.
func TestSnapshotStaleNoBackoff(t *testing.T) {
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, func(c *Config) {
		c.SnapshotBackoffInitial, c.SnapshotBackoffMax = 10*time.Second, 10*time.Second
	})
	n2 := startNode(t, 2, "c", dir, nil)
	n1.rec.writeSnap = func(_ uint32, _ *pb.Snapshot, w io.Writer) error {
		_, err := w.Write([]byte("s"))
		return err
	}
	n2.rec.receiveSnap = func(m replica.ShardMessage, r io.Reader) error {
		if m.Shard == 3 {
			return fmt.Errorf("%w: shard 3", replica.ErrStaleSnapshot)
		}
		_, err := io.Copy(io.Discard, r)
		return err
	}
	n1.tr.SendSnapshot(snapMsg(3, 1, 2, 10))
	waitFor(t, 20*time.Second, "stale report", func() bool { return len(n1.rec.snapReports()) == 1 })
	if r := n1.rec.snapReports()[0]; r.ok {
		t.Fatalf("the stale snapshot was reported sent: %+v", r)
	}
	start := time.Now()
	n1.tr.SendSnapshot(snapMsg(4, 1, 2, 10))
	waitFor(t, 20*time.Second, "second report", func() bool { return len(n1.rec.snapReports()) == 2 })
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shard 4's snapshot waited %v behind shard 3's stale refusal", d)
	}
}

// TestSnapshotSizeHint: the sender's SnapshotSize goes with the header, and a receiver whose
// SnapshotFits refuses it answers before the data flows: ReceiveSnapshot never runs, and the
// send is reported failed.
func TestSnapshotSizeHint(t *testing.T) {
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, nil)
	n2 := startNode(t, 2, "c", dir, nil)
	n1.rec.snapSize = 12345
	n1.rec.writeSnap = func(_ uint32, _ *pb.Snapshot, w io.Writer) error {
		_, err := w.Write(bytes.Repeat([]byte("s"), 64<<10))
		return err
	}
	var hint atomic.Uint64
	n2.rec.snapFits = func(_ replica.ShardMessage, size uint64) error {
		hint.Store(size)
		return errors.New("no room for 12345 bytes")
	}
	var received atomic.Int32
	n2.rec.receiveSnap = func(_ replica.ShardMessage, r io.Reader) error {
		received.Add(1)
		_, err := io.Copy(io.Discard, r)
		return err
	}
	n1.tr.SendSnapshot(snapMsg(3, 1, 2, 10))
	if r := waitReport(t, n1.rec); r.ok {
		t.Fatalf("a snapshot the receiver has no room for reported sent: %+v", r)
	}
	if got := hint.Load(); got != 12345 {
		t.Fatalf("the receiver saw size hint %d, want 12345", got)
	}
	if n := received.Load(); n != 0 {
		t.Fatalf("ReceiveSnapshot ran %d times for a refused snapshot", n)
	}
}

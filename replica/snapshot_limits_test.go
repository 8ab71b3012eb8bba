package replica

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// snapCase is a snapshot of shard 6 led by node 1, for node 2, whose replica is opened empty.
type snapCase struct {
	msg    ShardMessage
	stream []byte // the framed snapshot
	bytes  uint64 // its records' keys and values
	want   []string
}

// newSnapCase proposes values on node 1 (a single voter) and frames its state as node 1's
// snapshot for node 2 at the leader's applied index and term.
func newSnapCase(t *testing.T, c *cluster, values int) snapCase {
	t.Helper()
	const shard = 6
	if c.group(1, shard) == nil {
		c.open(1, shard, []uint64{1})
		c.open(2, shard, nil)
	}
	lead := c.leader(shard, 1)
	sc := snapCase{want: c.sm(1, shard).values(t)}
	for i := range values {
		v := fmt.Sprintf("%02d-%s", len(sc.want)+i, strings.Repeat("v", 500))
		sc.want = append(sc.want, v)
		c.propose(shard, v)
	}
	c.converged(shard, sc.want, 1)
	lo, hi := c.sm(1, shard).Span()
	recs := spanKVs(t, c.nodes[1].db, lo, hi)
	for _, r := range recs {
		sc.bytes += uint64(len(r.k) + len(r.v))
	}
	index, term := c.sm(1, shard).Applied(), lead.Status().Term
	snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(index), Term: new(term),
		ConfState: &pb.ConfState{Voters: []uint64{1}, Learners: []uint64{2}}}}
	sc.msg = ShardMessage{Shard: shard, Msg: &pb.Message{Type: pb.MsgSnap.Enum(), To: new(uint64(2)), From: new(uint64(1)),
		Term: new(term), Snapshot: snap}}
	sc.stream = encodeSnap(shard, index, term, lo, hi, recs)
	return sc
}

// snapCluster is two nodes whose received snapshots go to tables of 2 KiB, node 2 on fs2.
func snapCluster(t *testing.T, fs2 vfs.FS) *cluster {
	return newCluster(t, clusterOpts{nodes: 2, snapSST: 2 << 10, fsFor: func(id uint64) vfs.FS {
		if id == 2 {
			return fs2
		}
		return vfs.NewMem()
	}})
}

// TestReceiveSnapshotBound: a snapshot whose records would take the snapshots being received
// past Config.MaxSnapshotBytes is refused, naming the limit, and leaves neither files nor
// state; the bound is shared by the receives under way, each giving its share back when it
// ends.
func TestReceiveSnapshotBound(t *testing.T) {
	fs2 := vfs.NewMem()
	c := snapCluster(t, fs2)
	sc := newSnapCase(t, c, 30)
	h2 := c.nodes[2].host
	dir := h2.cfg.SnapshotDir

	h2.cfg.MaxSnapshotBytes = sc.bytes - 1
	err := h2.ReceiveSnapshot(sc.msg, bytes.NewReader(sc.stream))
	if !errors.Is(err, ErrSnapshotTooLarge) || !strings.Contains(err.Error(), "Config.MaxSnapshotBytes") {
		t.Fatalf("a snapshot of %d bytes with MaxSnapshotBytes %d: %v, want ErrSnapshotTooLarge naming the limit",
			sc.bytes, sc.bytes-1, err)
	}
	if f := scratchFiles(t, fs2, dir); len(f) != 0 {
		t.Fatalf("scratch files left: %v", f)
	}
	if got := c.sm(2, 6).values(t); len(got) != 0 {
		t.Fatalf("the refused snapshot installed %d values", len(got))
	}
	if n := h2.snapBytes.Load(); n != 0 {
		t.Fatalf("%d bytes still held after the refusal", n)
	}

	// Room for one and a half: a receive under way holds its bytes, and a second one is refused.
	h2.cfg.MaxSnapshotBytes = sc.bytes + sc.bytes/2
	pr, pw := io.Pipe()
	first := make(chan error, 1)
	go func() { first <- h2.ReceiveSnapshot(sc.msg, pr) }()
	tail := 1 + 8 + 8 // end tag, count and checksum
	if _, err := pw.Write(sc.stream[:len(sc.stream)-tail]); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); h2.snapBytes.Load() != sc.bytes; {
		if time.Now().After(deadline) {
			t.Fatalf("the first receive holds %d bytes, want %d", h2.snapBytes.Load(), sc.bytes)
		}
		time.Sleep(time.Millisecond)
	}
	if err := h2.ReceiveSnapshot(sc.msg, bytes.NewReader(sc.stream)); !errors.Is(err, ErrSnapshotTooLarge) {
		t.Fatalf("a second receive beside one under way: %v, want ErrSnapshotTooLarge", err)
	}
	if _, err := pw.Write(sc.stream[len(sc.stream)-tail:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-first; err != nil {
		t.Fatalf("the first receive, within the bound: %v", err)
	}
	if n := h2.snapBytes.Load(); n != 0 {
		t.Fatalf("%d bytes still held after both receives ended", n)
	}
	if f := scratchFiles(t, fs2, dir); len(f) != 0 {
		t.Fatalf("scratch files left: %v", f)
	}
	if got := c.sm(2, 6).values(t); fmt.Sprint(got) != fmt.Sprint(sc.want) {
		t.Fatalf("installed %d values, want %d", len(got), len(sc.want))
	}
}

// TestReceiveSnapshotDiskFree: a receive does not start a scratch table that would leave less
// than Config.SnapshotMinFreeBytes free on the snapshot directory's file system, counting the
// tables other receives are writing.
func TestReceiveSnapshotDiskFree(t *testing.T) {
	fs2 := vfs.NewMem()
	c := snapCluster(t, fs2)
	sc := newSnapCase(t, c, 30)
	h2 := c.nodes[2].host
	const minFree = 1 << 30
	tables := uint64(2 << 10)
	for _, tc := range []struct {
		avail uint64
		ok    bool
	}{
		{avail: minFree + tables - 1},
		{avail: minFree + tables + 2*sc.bytes, ok: true},
	} {
		fs2.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: tc.avail, TotalBytes: 4 * minFree, UsedBytes: 4*minFree - tc.avail})
		err := h2.ReceiveSnapshot(sc.msg, bytes.NewReader(sc.stream))
		if tc.ok {
			if err != nil {
				t.Fatalf("%d bytes free: %v", tc.avail, err)
			}
			continue
		}
		if !errors.Is(err, ErrSnapshotTooLarge) || !strings.Contains(err.Error(), "Config.SnapshotMinFreeBytes") {
			t.Fatalf("%d bytes free: %v, want ErrSnapshotTooLarge naming Config.SnapshotMinFreeBytes", tc.avail, err)
		}
		if f := scratchFiles(t, fs2, h2.cfg.SnapshotDir); len(f) != 0 {
			t.Fatalf("scratch files left: %v", f)
		}
		if got := c.sm(2, 6).values(t); len(got) != 0 {
			t.Fatalf("the refused snapshot installed %d values", len(got))
		}
	}
	if got := c.sm(2, 6).values(t); fmt.Sprint(got) != fmt.Sprint(sc.want) {
		t.Fatalf("installed %d values, want %d", len(got), len(sc.want))
	}

	// Receives under way check the same free space: each counts the tables the others are
	// writing. With one receive's table open, room for a single table refuses a second.
	more := newSnapCase(t, c, 30)
	pr, pw := io.Pipe()
	first := make(chan error, 1)
	go func() { first <- h2.ReceiveSnapshot(more.msg, pr) }()
	if _, err := pw.Write(more.stream[:1200]); err != nil { // a record or two: a table open
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); h2.snapTablesOpen.Load() != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("%d tables open, want the first receive's", h2.snapTablesOpen.Load())
		}
		time.Sleep(time.Millisecond)
	}
	fs2.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: minFree + tables + tables/2, TotalBytes: 4 * minFree, UsedBytes: 3 * minFree})
	err := h2.ReceiveSnapshot(more.msg, bytes.NewReader(more.stream))
	if !errors.Is(err, ErrSnapshotTooLarge) || !strings.Contains(err.Error(), "with the 1 others being written") {
		t.Fatalf("a second receive with room for one table, beside one writing a table: %v, want ErrSnapshotTooLarge", err)
	}
	fs2.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 2 * minFree, TotalBytes: 4 * minFree, UsedBytes: 2 * minFree})
	if _, err := pw.Write(more.stream[1200:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-first; err != nil {
		t.Fatalf("the first receive: %v", err)
	}
	if n := h2.snapTablesOpen.Load(); n != 0 {
		t.Fatalf("%d tables still counted open after both receives ended", n)
	}
	if got := c.sm(2, 6).values(t); fmt.Sprint(got) != fmt.Sprint(more.want) {
		t.Fatalf("installed %d values, want %d", len(got), len(more.want))
	}
}

// readCounter counts the bytes read through it.
type readCounter struct {
	r io.Reader
	n int
}

func (r *readCounter) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += n
	return n, err
}

// TestReceiveSnapshotStaleTerm: a snapshot sent at a term before the replica's (a deposed
// leader's) is refused before a byte of it is read, and not installed, even ahead of the
// replica's state: raft would drop its message.
func TestReceiveSnapshotStaleTerm(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 2})
	sc := newSnapCase(t, c, 5)
	h2 := c.nodes[2].host
	if err := h2.ReceiveSnapshot(sc.msg, bytes.NewReader(sc.stream)); err != nil {
		t.Fatal(err)
	}
	g2 := c.group(2, 6)
	term := g2.Status().Term
	if term < 1 || g2.Status().Term != sc.msg.Msg.GetTerm() {
		t.Fatalf("replica 2 at term %d after the snapshot of term %d", term, sc.msg.Msg.GetTerm())
	}

	// A later snapshot, ahead of replica 2's state, but sent at an earlier term.
	later := newSnapCase(t, c, 5)
	later.msg.Msg.Term = new(term - 1)
	r := &readCounter{r: bytes.NewReader(later.stream)}
	err := h2.ReceiveSnapshot(later.msg, r)
	if !errors.Is(err, ErrStaleSnapshot) {
		t.Fatalf("a snapshot of term %d at a replica of term %d: %v, want ErrStaleSnapshot", term-1, term, err)
	}
	if r.n != 0 {
		t.Fatalf("the refused snapshot was read: %d bytes", r.n)
	}
	if got := c.sm(2, 6).values(t); len(got) != len(sc.want) {
		t.Fatalf("replica 2 holds %d values after the refusal, want the first snapshot's %d", len(got), len(sc.want))
	}
}

// TestSnapshotFits: a snapshot whose sender's size hint leaves less than
// Config.SnapshotMinFreeBytes free is refused before its data flows; no hint is never
// refused. SnapshotSize estimates a shard's state from the DB's tables.
func TestSnapshotFits(t *testing.T) {
	fs2 := vfs.NewMem()
	c := snapCluster(t, fs2)
	sc := newSnapCase(t, c, 30)
	h1, h2 := c.nodes[1].host, c.nodes[2].host
	if err := c.nodes[1].db.Flush(); err != nil {
		t.Fatal(err)
	}
	size := h1.SnapshotSize(6)
	if size == 0 {
		t.Fatal("SnapshotSize of a shard with flushed data is 0")
	}
	if n := h1.SnapshotSize(99); n != 0 {
		t.Fatalf("SnapshotSize of an unknown shard: %d", n)
	}
	const minFree = 1 << 30
	fs2.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: minFree + size - 1, TotalBytes: 4 * minFree, UsedBytes: 3 * minFree})
	fits := func(size uint64) (func(), error) {
		t.Helper()
		release, err := h2.SnapshotFits(sc.msg, size)
		if (release == nil) != (err != nil) {
			t.Fatalf("SnapshotFits(%d): release %v with error %v", size, release != nil, err)
		}
		return release, err
	}
	if release, err := fits(0); err != nil {
		t.Fatalf("no size hint: %v", err)
	} else {
		release()
	}
	_, err := fits(size)
	if !errors.Is(err, ErrSnapshotTooLarge) || !strings.Contains(err.Error(), "Config.SnapshotMinFreeBytes") {
		t.Fatalf("a hint of %d bytes with %d free: %v, want ErrSnapshotTooLarge naming Config.SnapshotMinFreeBytes", size, minFree+size-1, err)
	}
	fs2.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 4 * minFree, TotalBytes: 8 * minFree, UsedBytes: 4 * minFree})
	release, err := fits(size)
	if err != nil {
		t.Fatalf("a hint of %d bytes with room for it: %v", size, err)
	}
	release()
	release() // a second call gives nothing back twice

	// Config.MaxSnapshotBytes: a snapshot larger than it, or one that would take the receives
	// under way past it, is refused before its data flows; the flag that sets it is named.
	h2.cfg.MaxSnapshotBytes = size - 1
	_, err = fits(size)
	if !errors.Is(err, ErrSnapshotTooLarge) || !strings.Contains(err.Error(), "raise it past the shard's size") ||
		!strings.Contains(err.Error(), "--max-snapshot-size") {
		t.Fatalf("a hint of %d bytes past a limit of %d: %v, want ErrSnapshotTooLarge saying to raise --max-snapshot-size", size, size-1, err)
	}
	h2.cfg.MaxSnapshotBytes = 2 * size
	h2.snapBytes.Add(size + 1) // a receive under way holds that much
	_, err = fits(size)
	h2.snapBytes.Add(-(size + 1))
	if !errors.Is(err, ErrSnapshotTooLarge) || !strings.Contains(err.Error(), "the sender retries later") {
		t.Fatalf("a hint of %d bytes beside %d held, limit %d: %v, want ErrSnapshotTooLarge", size, size+1, 2*size, err)
	}

	// Receives that start together: each one let through holds its size until released, so
	// that the third of three finds the limit taken.
	first, err := fits(size)
	if err != nil {
		t.Fatalf("a hint of %d bytes within the limit: %v", size, err)
	}
	second, err := fits(size)
	if err != nil {
		t.Fatalf("a second hint of %d bytes, with the limit at twice that: %v", size, err)
	}
	if _, err := fits(size); !errors.Is(err, ErrSnapshotTooLarge) {
		t.Fatalf("a third hint of %d bytes beside two let through, limit %d: %v, want ErrSnapshotTooLarge", size, 2*size, err)
	}
	first()
	third, err := fits(size)
	if err != nil {
		t.Fatalf("a hint of %d bytes once the first was released: %v", size, err)
	}
	second()
	third()
	if n := h2.snapBytes.Load(); n != 0 {
		t.Fatalf("%d bytes held after every reservation was released", n)
	}
}

// TestSnapshotReservationCountedOnce: a receive's records within what SnapshotFits reserved
// for it are not counted again against Config.MaxSnapshotBytes, and what they take past it is.
func TestSnapshotReservationCountedOnce(t *testing.T) {
	c := snapCluster(t, vfs.NewMem())
	sc := newSnapCase(t, c, 30)
	h2 := c.nodes[2].host
	// The limit has room for the records once, not twice.
	h2.cfg.MaxSnapshotBytes = sc.bytes + sc.bytes/2
	release, err := h2.SnapshotFits(sc.msg, sc.bytes)
	if err != nil {
		t.Fatal(err)
	}
	err = h2.ReceiveSnapshot(sc.msg, bytes.NewReader(sc.stream))
	release()
	if err != nil {
		t.Fatalf("a snapshot of %d bytes of records, reserved, limit %d: %v", sc.bytes, h2.cfg.MaxSnapshotBytes, err)
	}
	c.converged(6, sc.want, 2)

	// A reservation short of the records: the rest is counted, and passes the limit.
	later := newSnapCase(t, c, 30)
	h2.cfg.MaxSnapshotBytes = later.bytes
	release, err = h2.SnapshotFits(later.msg, later.bytes/2)
	if err != nil {
		t.Fatal(err)
	}
	h2.snapBytes.Add(later.bytes / 4) // another receive under way
	err = h2.ReceiveSnapshot(later.msg, bytes.NewReader(later.stream))
	h2.snapBytes.Add(-(later.bytes / 4))
	release()
	if !errors.Is(err, ErrSnapshotTooLarge) || !strings.Contains(err.Error(), "--max-snapshot-size") {
		t.Fatalf("records of %d bytes, %d reserved, %d held by another, limit %d: %v, want ErrSnapshotTooLarge",
			later.bytes, later.bytes/2, later.bytes/4, later.bytes, err)
	}
	if n := h2.snapBytes.Load(); n != 0 {
		t.Fatalf("%d bytes held after the receives ended", n)
	}
}

package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

type kv struct{ k, v []byte }

// spanKVs returns every key and value of [lo, hi) in db.
func spanKVs(t *testing.T, db *pebble.DB, lo, hi []byte) []kv {
	t.Helper()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []kv
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, kv{slices.Clone(it.Key()), slices.Clone(it.Value())})
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// encodeSnap frames records as WriteSnapshot does (doc.go), in the order given.
func encodeSnap(shard uint32, index, term uint64, lo, hi []byte, recs []kv) []byte {
	var b []byte
	b = append(b, snapMagic...)
	b = binary.BigEndian.AppendUint32(b, shard)
	b = binary.BigEndian.AppendUint64(b, index)
	b = binary.BigEndian.AppendUint64(b, term)
	for _, f := range [][]byte{lo, hi} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	for _, r := range recs {
		b = append(b, 1) // a record
		b = binary.AppendUvarint(b, uint64(len(r.k)))
		b = append(b, r.k...)
		b = binary.AppendUvarint(b, uint64(len(r.v)))
		b = append(b, r.v...)
	}
	b = append(b, 0) // the trailer
	b = binary.BigEndian.AppendUint64(b, uint64(len(recs)))
	return binary.BigEndian.AppendUint64(b, xxhash.Sum64(b))
}

// scratchFiles lists the files left in fs's dir.
func scratchFiles(t *testing.T, fs vfs.FS, dir string) []string {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// shard6Snapshot writes values to shard 6, led by node 1 of c alone, opens an empty replica of
// it on node 2, and returns the values, node 1's span and records, and the MsgSnap at its
// applied index that would bring node 2's replica up, for ReceiveSnapshot to be handed.
func shard6Snapshot(t *testing.T, c *cluster, values []string) (lo, hi []byte, recs []kv, index, term uint64, msg ShardMessage) {
	t.Helper()
	c.open(1, 6, []uint64{1})
	lead := c.leader(6, 1)
	for _, v := range values {
		c.propose(6, v)
	}
	c.converged(6, values, 1)
	c.open(2, 6, nil)
	lo, hi = c.sm(1, 6).Span()
	recs = spanKVs(t, c.nodes[1].db, lo, hi)
	index, term = c.sm(1, 6).Applied(), lead.Status().Term
	msg = ShardMessage{Shard: 6, Msg: &pb.Message{Type: pb.MsgSnap.Enum(), To: new(uint64(2)), From: new(uint64(1)),
		Term: new(term), Snapshot: &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(index), Term: new(term),
			ConfState: &pb.ConfState{Voters: []uint64{1}}}}}}
	return lo, hi, recs, index, term, msg
}

func TestReceiveSnapshotOrderScratchAndDurability(t *testing.T) {
	fs2 := vfs.NewCrashableMem()
	c := snapCluster(t, fs2)
	var want []string
	for i := range 30 {
		want = append(want, fmt.Sprintf("%02d-%s", i, strings.Repeat("v", 500)))
	}
	lo, hi, recs, index, term, msg := shard6Snapshot(t, c, want)
	n2 := c.nodes[2]
	dir := n2.host.cfg.SnapshotDir

	// Well-framed streams (checksum and count right) whose keys are out of order are refused
	// and leave neither scratch files nor state behind.
	swapped := slices.Clone(recs)
	swapped[3], swapped[4] = swapped[4], swapped[3]
	dup := slices.Insert(slices.Clone(recs), 5, recs[5])
	outside := append(slices.Clone(recs), kv{hi, []byte("x")})
	for name, bad := range map[string][]kv{"swapped": swapped, "duplicate": dup, "outside": outside} {
		err := n2.host.ReceiveSnapshot(msg, bytes.NewReader(encodeSnap(6, index, term, lo, hi, bad)))
		if !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("%s: %v", name, err)
		}
		if f := scratchFiles(t, fs2, dir); len(f) != 0 {
			t.Fatalf("%s: scratch files left: %v", name, f)
		}
	}
	if got := spanKVs(t, n2.db, lo, hi); len(got) != 0 {
		t.Fatalf("refused snapshots left %d keys", len(got))
	}
	if n := testutilCounter(n2.host.metrics.SnapshotsReceived); n != 0 {
		t.Fatalf("refused snapshots counted as received: %v", n)
	}

	// The same records in order install (over several sstables: snapSST is 2 KiB) and leave
	// no scratch file.
	if err := n2.host.ReceiveSnapshot(msg, bytes.NewReader(encodeSnap(6, index, term, lo, hi, recs))); err != nil {
		t.Fatal(err)
	}
	if f := scratchFiles(t, fs2, dir); len(f) != 0 {
		t.Fatalf("scratch files left after install: %v", f)
	}
	if n := testutilCounter(n2.host.metrics.SnapshotsReceived); n != 1 {
		t.Fatalf("received %v snapshots, want 1", n)
	}
	if got := c.sm(2, 6).values(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("installed %d values, want %d", len(got), len(want))
	}
	if got := c.sm(2, 6).Applied(); got != index {
		t.Fatalf("applied %d after install, want %d", got, index)
	}

	// The install was durable when ReceiveSnapshot returned: a crash keeps it.
	crashed := fs2.CrashClone(vfs.CrashCloneCfg{})
	db, err := pebble.Open("db", &pebble.Options{FS: crashed, Logger: quietLogger{}, FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := spanKVs(t, db, lo, hi); fmt.Sprint(got) != fmt.Sprint(recs) {
		t.Fatalf("after a crash the span has %d keys, want %d", len(got), len(recs))
	}
}

// TestIngestAndExciseDurable checks what ReceiveSnapshot relies on: IngestAndExcise of the
// tables snapTables writes (several, or none for an empty snapshot) replaces exactly the span,
// durably on return, whether the span's old data is still in the memtable or flushed.
func TestIngestAndExciseDurable(t *testing.T) {
	lo, hi := []byte("S\x00\x00\x00\x02"), []byte("S\x00\x00\x00\x03")
	for _, tc := range []struct {
		name    string
		records int
		flushed bool
	}{
		{"tables/memtable", 200, false},
		{"tables/flushed", 200, true},
		{"empty/memtable", 0, false},
		{"empty/flushed", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			opts := &pebble.Options{FS: fs, Logger: quietLogger{}, FormatMajorVersion: pebble.FormatNewest}
			db, err := pebble.Open("db", opts)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			b := db.NewBatch()
			for _, k := range []string{"S\x00\x00\x00\x01z", "S\x00\x00\x00\x02a", "S\x00\x00\x00\x02q", "S\x00\x00\x00\x03"} {
				_ = b.Set([]byte(k), []byte("old"), nil)
			}
			if err := b.Commit(pebble.Sync); err != nil {
				t.Fatal(err)
			}
			if tc.flushed {
				if err := db.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			if err := fs.MkdirAll("snaps", 0o755); err != nil {
				t.Fatal(err)
			}
			tables := &snapTables{fs: fs, prefix: "snaps/t", target: 1 << 10,
				opts: defaultSnapWriterOptions(db)}
			defer tables.remove(slog.New(slog.DiscardHandler))
			var want []kv
			for i := range tc.records {
				r := kv{append(slices.Clone(lo), fmt.Sprintf("k%04d", i)...), bytes.Repeat([]byte{'n'}, 40)}
				if err := tables.set(r.k, r.v); err != nil {
					t.Fatal(err)
				}
				want = append(want, r)
			}
			if err := tables.finish(); err != nil {
				t.Fatal(err)
			}
			if tc.records > 0 && len(tables.paths) < 2 {
				t.Fatalf("%d records in %d tables, want several", tc.records, len(tables.paths))
			}
			if _, err := db.IngestAndExcise(t.Context(), tables.paths, nil, nil, pebble.KeyRange{Start: lo, End: hi}); err != nil {
				t.Fatal(err)
			}
			if f := scratchFiles(t, fs, "snaps"); len(f) != 0 {
				t.Fatalf("ingest left its source files: %v", f)
			}

			crashed := fs.CrashClone(vfs.CrashCloneCfg{})
			db2, err := pebble.Open("db", &pebble.Options{FS: crashed, Logger: quietLogger{}, FormatMajorVersion: pebble.FormatNewest})
			if err != nil {
				t.Fatal(err)
			}
			defer db2.Close()
			for _, d := range []*pebble.DB{db, db2} {
				if got := spanKVs(t, d, lo, hi); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("span has %d keys, want %d", len(got), len(want))
				}
				if got := spanKVs(t, d, []byte("S"), lo); len(got) != 1 {
					t.Fatalf("keys below the span: %d, want 1", len(got))
				}
				if got := spanKVs(t, d, hi, []byte("T")); len(got) != 1 {
					t.Fatalf("keys above the span: %d, want 1", len(got))
				}
			}
		})
	}
}

// TestWriteSnapshotNotBehind: WriteSnapshot refuses to stream a state behind the snapshot's
// index (a group dropped and created again, empty, while raft's request waited), which a
// receiver would install in place of its own.
func TestWriteSnapshotNotBehind(t *testing.T) {
	const shard = 4
	c := newCluster(t, clusterOpts{nodes: 1})
	c.openVoters(shard)
	c.propose(shard, "a")
	c.propose(shard, "b")
	h := c.nodes[1].host
	applied := c.group(1, shard).Status().Applied
	var buf bytes.Buffer
	if err := h.WriteSnapshot(shard, &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(applied), Term: new(uint64(1))}}, &buf); err != nil {
		t.Fatalf("a snapshot at the applied index %d: %v", applied, err)
	}
	buf.Reset()
	err := h.WriteSnapshot(shard, &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(applied + 5), Term: new(uint64(1))}}, &buf)
	if err == nil || !strings.Contains(err.Error(), "applied only") {
		t.Fatalf("a snapshot at index %d of a state applied to %d: %v, want a refusal", applied+5, applied, err)
	}
}

// TestSnapshotAcrossDropNotInstalled: a snapshot that was streaming in when the replica was
// deleted (an addition given up, the replica retired and dropped) does not create the replica
// again once it is complete: it may name this node in a configuration that removed it since.
func TestSnapshotAcrossDropNotInstalled(t *testing.T) {
	const shard = 6
	c := newCluster(t, clusterOpts{nodes: 2, factory: true}) // a leader's message creates a replica
	c.open(1, shard, []uint64{1})
	lead := c.leader(shard, 1)
	c.propose(shard, "a")
	c.propose(shard, "b")
	c.open(2, shard, nil)
	lo, hi := c.sm(1, shard).Span()
	recs := spanKVs(t, c.nodes[1].db, lo, hi)
	index, term := c.sm(1, shard).Applied(), lead.Status().Term
	snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(index), Term: new(term),
		ConfState: &pb.ConfState{Voters: []uint64{1}, Learners: []uint64{2}}}}
	msg := ShardMessage{Shard: shard, Msg: &pb.Message{Type: pb.MsgSnap.Enum(), To: new(uint64(2)), From: new(uint64(1)),
		Term: new(term), Snapshot: snap}}
	stream := encodeSnap(shard, index, term, lo, hi, recs)

	h2 := c.nodes[2].host
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- h2.ReceiveSnapshot(msg, pr) }()
	if _, err := pw.Write(stream[:8]); err != nil { // read: the receive is under way
		t.Fatal(err)
	}
	if err := h2.DropGroup(shard, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := pw.Write(stream[8:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-done; !errors.Is(err, ErrGroupRemoved) {
		t.Fatalf("a snapshot received across the replica's deletion: %v, want ErrGroupRemoved", err)
	}
	if _, ok := h2.Group(shard); ok {
		t.Fatal("the snapshot created the deleted replica again")
	}
	if got := spanKVs(t, c.nodes[2].db, lo, hi); len(got) != 0 {
		t.Fatalf("the refused snapshot left %d keys", len(got))
	}
}

// TestWriteSnapshotRacesDropGroup: a snapshot send whose turn on the loop comes just before a
// DropGroup of its shard streams the state as of that turn: opened after the turn, its
// iterator saw the span the drop had deleted, and streamed no record under the snapshot's
// index; a receiver excised its own state for it, then panicked (applied behind the
// snapshot) and could not reopen. The loop is held while both calls queue, in that order.
func TestWriteSnapshotRacesDropGroup(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 1})
	c.open(1, 1, []uint64{1})
	for i := range 5 {
		c.propose(1, fmt.Sprint("v", i))
	}
	h := c.nodes[1].host
	st := c.group(1, 1).Status()
	snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(st.Applied), Term: new(st.Term)}}

	block, held := make(chan struct{}), make(chan struct{})
	if err := h.do(func() { close(held); <-block }); err != nil {
		t.Fatal(err)
	}
	<-held
	released := false
	defer func() {
		if !released {
			close(block)
		}
	}()
	queued := func(n int) {
		eventually(t, 5*time.Second, func() error {
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.mu.reqs) < n {
				return fmt.Errorf("%d calls queued, want %d", len(h.mu.reqs), n)
			}
			return nil
		})
	}
	var buf bytes.Buffer
	sent := make(chan error, 1)
	go func() { sent <- h.WriteSnapshot(1, snap, &buf) }()
	queued(1)
	dropped := make(chan error, 1)
	go func() { dropped <- h.DropGroup(1, 0) }()
	queued(2)
	close(block)
	released = true
	if err := <-dropped; err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("WriteSnapshot, its turn before the drop: %v", err)
	}
	b := buf.Bytes()
	index, count := binary.BigEndian.Uint64(b[8:]), binary.BigEndian.Uint64(b[len(b)-16:])
	if index != st.Applied || count == 0 {
		t.Fatalf("snapshot stream: header index %d (want %d), %d records: the state as of after the drop", index, st.Applied, count)
	}
}

// TestStaleSnapshotReportDropped: the outcome of a snapshot send is stepped into raft only
// while raft waits for that snapshot. raft's report names only the follower, and a send can
// outlast what it was for: the report of a snapshot at an older index (raft moved on to a
// newer one) or of an earlier term (the node lost and regained its leadership since) ended
// the snapshot under way, so raft probed the follower from past a snapshot it never got, and
// noteSnapshotIn recorded the wrong index. The report that matches is stepped as before.
func TestStaleSnapshotReportDropped(t *testing.T) {
	const shard = 2
	c, behind, _, gate, _ := snapshotUnderWay(t, shard)
	t.Cleanup(func() { close(gate) }) // before the cluster's cleanup: the held send must end
	lead := c.leader(shard)
	h := lead.h
	// No answer of the follower moves raft's progress of it but the reports.
	c.net.cutLink(h.cfg.NodeID, behind, true)

	// awaited reads, on the loop, the leader's term, its progress of behind and the snapshot
	// index noteSnapshotIn recorded for behind (0: none).
	type awaited struct {
		term, pending, in uint64
		state             tracker.StateType
	}
	read := func() awaited {
		t.Helper()
		var a awaited
		err := h.call(context.Background(), func() error {
			a.term = lead.rn.BasicStatus().HardState.GetTerm()
			pr := lead.rn.Status().Progress[behind]
			a.state, a.pending, a.in = pr.State, pr.PendingSnapshot, lead.snapIn[behind]
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	report := func(term, index uint64, ok bool) {
		t.Helper()
		h.ReportSnapshot(ShardMessage{Shard: shard, Msg: &pb.Message{
			Type: pb.MsgSnap.Enum(), From: new(h.cfg.NodeID), To: new(behind), Term: new(term),
			Snapshot: &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(index), Term: new(term)}},
		}}, ok)
	}

	before := read()
	if before.state != tracker.StateSnapshot || before.pending == 0 {
		t.Fatalf("progress of %d: %v at pending snapshot %d, want a snapshot under way", behind, before.state, before.pending)
	}
	for _, tc := range []struct {
		name        string
		term, index uint64
		ok          bool
	}{
		{"earlier term", before.term - 1, before.pending, true},
		{"earlier term, failed", before.term - 1, before.pending, false},
		{"older index", before.term, before.pending - 1, true},
		{"older index, failed", before.term, before.pending - 1, false},
	} {
		report(tc.term, tc.index, tc.ok)
		// The report's turn on the loop came before read's (the loop runs calls in order).
		if got := read(); got != before {
			t.Fatalf("%s (term %d, index %d, ok %v): progress of %d %v at pending snapshot %d, snapIn %d; want %v at %d, snapIn %d",
				tc.name, tc.term, tc.index, tc.ok, behind, got.state, got.pending, got.in, before.state, before.pending, before.in)
		}
	}

	report(before.term, before.pending, true)
	if got := read(); got.term != before.term || got.state == tracker.StateSnapshot || got.in != before.pending {
		t.Fatalf("matching report: progress of %d %v (term %d), snapIn %d; want it out of StateSnapshot, snapIn %d",
			behind, got.state, got.term, got.in, before.pending)
	}
}

// TestSnapshotInstallClearOfMemtables: a snapshot installed over a replica of the shard that
// this node dropped (its range deletion still in the memtables) does not make its ingest wait
// for or queue a memtable flush: ReceiveSnapshot flushes first. Such ingests took 0.2-0.6 s,
// the group paused (and, when the ingest ran on the loop, every group of the node). A new
// replica's install, whose span holds nothing, flushes nothing.
func TestSnapshotInstallClearOfMemtables(t *testing.T) {
	c := snapCluster(t, vfs.NewMem())
	want := numbered(10)
	lo, hi, recs, index, term, msg := shard6Snapshot(t, c, want)
	n2 := c.nodes[2]
	stream := encodeSnap(6, index, term, lo, hi, recs)

	// A new replica: no flush.
	flushes := n2.db.Metrics().Flush.Count
	if err := n2.host.ReceiveSnapshot(msg, bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if n := n2.db.Metrics().Flush.Count - flushes; n != 0 {
		t.Fatalf("the install of a new replica flushed %d times", n)
	}

	// Dropped, then added again: its range deletion is in the memtables.
	if err := n2.host.DropGroup(6, term); err != nil {
		t.Fatal(err)
	}
	c.open(2, 6, nil)
	flushes = n2.db.Metrics().Flush.Count
	before := n2.db.Metrics().Flush.AsIngestCount
	if err := n2.host.ReceiveSnapshot(msg, bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if n := n2.db.Metrics().Flush.Count - flushes; n == 0 {
		t.Fatal("the install over a dropped replica's span flushed nothing first")
	}
	if got := c.sm(2, 6).values(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("installed %v, want %v", got, want)
	}
	if got := spanKVs(t, n2.db, lo, hi); fmt.Sprint(got) != fmt.Sprint(recs) {
		t.Fatalf("the span holds %d keys after the install, want the snapshot's %d", len(got), len(recs))
	}
	if n := n2.db.Metrics().Flush.AsIngestCount - before; n != 0 {
		t.Fatalf("the install went through the memtables (%d flushable ingests)", n)
	}
}

// A host closed while an install flushes the memtables waits for the flush: its owner closes
// the DB once Close returns, under a flush that would then fail on a closed DB.
func TestCloseWaitsForInstallFlush(t *testing.T) {
	c := snapCluster(t, vfs.NewMem())
	lo, hi, recs, index, term, msg := shard6Snapshot(t, c, []string{"a", "b"})
	n2 := c.nodes[2]
	if err := n2.host.DropGroup(6, term); err != nil { // its range deletion makes the install flush
		t.Fatal(err)
	}
	c.open(2, 6, nil)
	closed := make(chan struct{})
	var closedEarly atomic.Bool
	hook := func() {
		go func() {
			_ = n2.host.Close()
			close(closed)
		}()
		for {
			n2.host.mu.Lock()
			started := n2.host.mu.closed
			n2.host.mu.Unlock()
			if started {
				break
			}
			time.Sleep(time.Millisecond)
		}
		select {
		case <-closed:
			closedEarly.Store(true)
		case <-time.After(100 * time.Millisecond):
		}
	}
	testHookInstallFlush.Store(&hook)
	defer testHookInstallFlush.Store(nil)
	err := n2.host.ReceiveSnapshot(msg, bytes.NewReader(encodeSnap(6, index, term, lo, hi, recs)))
	if !errors.Is(err, ErrStopped) {
		t.Errorf("an install whose host closed during its flush: %v, want ErrStopped", err)
	}
	if closedEarly.Load() {
		t.Fatal("Close returned while the install's flush had yet to run")
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the flush")
	}
}

// A second Close waits, as the first does, for an ingest still using the DB: it returned once
// the loop stopped, and an owner that then closed the DB closed it under the ingest.
func TestSecondCloseWaitsForIngest(t *testing.T) {
	c := snapCluster(t, vfs.NewMem())
	_, letGo, received := receivePaused(t, c, []string{"a", "b", "c"})
	n2 := c.nodes[2]
	first, second := make(chan struct{}), make(chan struct{})
	go func() { _ = n2.host.Close(); close(first) }()
	<-n2.host.done // the first Close waits for the ingest from here on
	go func() { _ = n2.host.Close(); close(second) }()
	select {
	case <-second:
		t.Error("a second Close returned while the ingest still used the DB")
	case <-time.After(200 * time.Millisecond):
	}
	letGo()
	for _, ch := range []chan struct{}{first, second} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return after the ingest")
		}
	}
	<-received
}

// SnapshotSize, which the transport asks off the loop, reads nothing once the host is closed:
// its owner may have closed the DB since.
func TestSnapshotSizeAfterClose(t *testing.T) {
	c := snapCluster(t, vfs.NewMem())
	shard6Snapshot(t, c, []string{"a", "b", "c"})
	n1 := c.nodes[1]
	h := n1.host
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n1.db.Close(); err != nil {
		t.Fatal(err)
	}
	n1.host = nil // closed here, not by the cluster's cleanup
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("SnapshotSize of a closed host, its DB closed: %v", r)
		}
	}()
	if n := h.SnapshotSize(6); n != 0 {
		t.Fatalf("SnapshotSize of a closed host: %d, want 0", n)
	}
}

// leaveOnWrite is a snapshot's destination that hands the shard's leadership over at its
// first write, then takes everything.
type leaveOnWrite struct {
	once  sync.Once
	leave func()
}

func (w *leaveOnWrite) Write(p []byte) (int, error) {
	w.once.Do(w.leave)
	return len(p), nil
}

// A snapshot whose sender stops leading while it streams is abandoned: the receiver would
// refuse it (a deposed leader's), and streaming the rest of a large one took minutes of disk
// and bandwidth from the new leader's.
func TestSnapshotSendAbandonedOnLostLeadership(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 2})
	c.openVoters(6)
	lead := c.leader(6)
	from := lead.h.cfg.NodeID
	to := c.others(from)[0]
	var want []string
	for i := range 1500 {
		v := fmt.Sprintf("%04d-%s", i, strings.Repeat("v", 100))
		c.propose(6, v)
		want = append(want, v)
	}
	c.converged(6, want, 1, 2)
	index, term := c.sm(from, 6).Applied(), lead.Status().Term
	snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(index), Term: new(term),
		ConfState: &pb.ConfState{Voters: []uint64{1, 2}}}}
	w := &leaveOnWrite{leave: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := lead.TransferLeadership(ctx, to); err != nil {
			t.Error(err)
		}
	}}
	err := c.nodes[from].host.WriteSnapshot(6, snap, w)
	if err == nil || !strings.Contains(err.Error(), "no longer leads") {
		t.Fatalf("a snapshot whose sender lost the leadership while it streamed: %v, want it abandoned", err)
	}
}

// A snapshot's ingest runs off the loop: while it lasts, only its group waits, and the node's
// other groups go on committing (an ingest that held the loop half a second on a loaded
// machine cost leaders elsewhere their quorum). The paused group takes the snapshot after.
func TestSnapshotIngestLeavesLoopFree(t *testing.T) {
	c := snapCluster(t, vfs.NewMem())
	want := numbered(10)
	c.openVoters(7) // both nodes vote: a commit needs node 2's loop
	lead7 := c.leader(7)
	_, letGo, done := receivePaused(t, c, want)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err := lead7.Propose(ctx, []byte("meanwhile"))
	cancel()
	if err != nil {
		t.Errorf("shard 7 committed nothing while shard 6's snapshot was ingested on node 2: %v", err)
	}
	letGo()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := c.sm(2, 6).values(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("installed %v, want %v", got, want)
	}
	if err == nil {
		c.converged(7, []string{"meanwhile"}, 1, 2)
	}
}

// A replica dropped while its snapshot is ingested is not created again until the ingest
// ends (the ingest would replace the new replica's span), and the span is deleted again after
// it: the dropped replica leaves nothing behind.
func TestSnapshotIngestDropMeanwhile(t *testing.T) {
	c := snapCluster(t, vfs.NewMem())
	term, letGo, done := receivePaused(t, c, []string{"a", "b", "c"})
	n2 := c.nodes[2]
	if err := n2.host.DropGroup(6, term); err != nil {
		t.Fatal(err)
	}
	if _, err := n2.host.OpenGroup(6, newTestSM(t, n2.db, 6), nil); err == nil || !strings.Contains(err.Error(), "being installed") {
		t.Fatalf("a replica opened while the dropped one's snapshot is ingested: %v, want refused", err)
	}
	letGo()
	if err := <-done; !errors.Is(err, ErrGroupRemoved) {
		t.Fatalf("the install of a replica dropped during its ingest: %v, want ErrGroupRemoved", err)
	}
	lo, hi := c.sm(1, 6).Span()
	if got := spanKVs(t, n2.db, lo, hi); len(got) != 0 {
		t.Fatalf("the dropped replica's span holds %d keys after its install ended", len(got))
	}
	c.open(2, 6, nil) // now it may be created again
}

// pauseIngest makes snapshot ingests wait, once entered is closed, until letGo is called (by
// the test, or at its end, before the cluster's cleanup, which waits for the ingest).
func pauseIngest(t *testing.T) (entered <-chan struct{}, letGo func()) {
	in, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func() {
		once.Do(func() { close(in) })
		<-release
	}
	testHookInstallIngest.Store(&hook)
	var releaseOnce sync.Once
	letGo = func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(func() {
		letGo()
		testHookInstallIngest.Store(nil)
	})
	return in, letGo
}

// receivePaused has node 2 receive node 1's snapshot of shard 6 holding values
// (shard6Snapshot), and returns once its ingest is paused (pauseIngest): the snapshot's term,
// what lets the ingest go, and where the receive's error comes.
func receivePaused(t *testing.T, c *cluster, values []string) (term uint64, letGo func(), done <-chan error) {
	t.Helper()
	lo, hi, recs, index, term, msg := shard6Snapshot(t, c, values)
	entered, letGo := pauseIngest(t)
	received := make(chan error, 1)
	go func() {
		received <- c.nodes[2].host.ReceiveSnapshot(msg, bytes.NewReader(encodeSnap(6, index, term, lo, hi, recs)))
	}()
	select {
	case <-entered:
	case err := <-received:
		t.Fatalf("the install ended before its ingest: %v", err)
	}
	return term, letGo, received
}

// numbered returns the values "00", "01", … of n entries.
func numbered(n int) []string {
	var vs []string
	for i := range n {
		vs = append(vs, fmt.Sprintf("%02d", i))
	}
	return vs
}

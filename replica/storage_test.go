package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func memDB(t testing.TB) *pebble.DB {
	t.Helper()
	db, err := pebble.Open("db", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{},
		FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func ents(term uint64, lo, hi uint64) []*pb.Entry {
	var out []*pb.Entry
	for i := lo; i < hi; i++ {
		out = append(out, &pb.Entry{Term: new(term), Index: new(i), Type: pb.EntryNormal.Enum(), Data: []byte{byte(i)}})
	}
	return out
}

func TestStorageAppendOverwriteCompactReopen(t *testing.T) {
	db := memDB(t)
	st, err := openStorage(db, 4)
	if err != nil {
		t.Fatal(err)
	}
	if !st.isEmpty() {
		t.Fatal("new storage not empty")
	}
	commit := func(f func(b *pebble.Batch) error) {
		t.Helper()
		b := db.NewBatch()
		if err := f(b); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(pebble.Sync); err != nil {
			t.Fatal(err)
		}
		st.trimCache()
	}
	commit(func(b *pebble.Batch) error { return st.append(b, ents(1, 1, 2001)) })
	// Overwrite a suffix with a new term.
	commit(func(b *pebble.Batch) error { return st.append(b, ents(2, 1500, 1601)) })
	commit(func(b *pebble.Batch) error {
		return st.setHardState(b, &pb.HardState{Term: new(uint64(2)), Vote: new(uint64(1)), Commit: new(uint64(1600))})
	})
	check := func(st *storage) {
		t.Helper()
		if li, _ := st.LastIndex(); li != 1600 {
			t.Fatalf("last %d", li)
		}
		if tm, _ := st.Term(1499); tm != 1 {
			t.Fatalf("term 1499 = %d", tm)
		}
		if tm, _ := st.Term(1500); tm != 2 {
			t.Fatalf("term 1500 = %d", tm)
		}
		got, err := st.Entries(400, 1601, 1<<30)
		if err != nil || len(got) != 1201 || got[0].GetIndex() != 400 || got[1200].GetTerm() != 2 {
			t.Fatalf("entries: %d %v", len(got), err)
		}
		got, _ = st.Entries(400, 1601, 1) // at least one
		if len(got) != 1 {
			t.Fatalf("size-limited entries: %d", len(got))
		}
		if _, err := st.Term(1601); !errors.Is(err, raft.ErrUnavailable) {
			t.Fatalf("term beyond last: %v", err)
		}
	}
	check(st)
	commit(func(b *pebble.Batch) error { return st.compact(b, 300) })
	if _, err := st.Entries(300, 301, 100); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("compacted entries: %v", err)
	}
	if fi, _ := st.FirstIndex(); fi != 301 {
		t.Fatalf("first %d", fi)
	}
	st2, err := openStorage(db, 4)
	if err != nil {
		t.Fatal(err)
	}
	check(st2)
	if fi, _ := st2.FirstIndex(); fi != 301 {
		t.Fatalf("reopened first %d", fi)
	}
	if hs, _, _ := st2.InitialState(); hs.GetCommit() != 1600 || hs.GetVote() != 1 {
		t.Fatalf("hard state %v", hs)
	}
	// Snapshot install resets the log.
	snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(5000)), Term: new(uint64(3)),
		ConfState: &pb.ConfState{Voters: []uint64{1, 2}}}}
	st = st2
	commit(func(b *pebble.Batch) error { return st.applySnapshot(b, snap) })
	st3, _ := openStorage(db, 4)
	if fi, _ := st3.FirstIndex(); fi != 5001 {
		t.Fatalf("first after snapshot %d", fi)
	}
	if li, _ := st3.LastIndex(); li != 5000 {
		t.Fatalf("last after snapshot %d", li)
	}
	if _, cs, _ := st3.InitialState(); len(cs.Voters) != 2 {
		t.Fatalf("conf state %v", cs)
	}
}

func TestSnapshotStreamRejectsCorruption(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 2})
	g := c.open(1, 6, []uint64{1})
	c.leader(6, 1)
	for i := range 20 {
		c.propose(6, string(rune('a'+i)))
	}
	c.open(2, 6, nil)
	snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(5)), Term: new(uint64(2)),
		ConfState: &pb.ConfState{Voters: []uint64{1}}}}
	var buf bytes.Buffer
	if err := c.nodes[1].host.WriteSnapshot(6, snap, &buf); err != nil {
		t.Fatal(err)
	}
	msg := ShardMessage{Shard: 6, Msg: &pb.Message{Type: pb.MsgSnap.Enum(), To: new(uint64(2)), From: new(uint64(1)),
		Term: new(uint64(2)), Snapshot: snap}}
	for _, pos := range []int{2, buf.Len() / 2, buf.Len() - 3} {
		bad := bytes.Clone(buf.Bytes())
		bad[pos] ^= 0x40
		if err := c.nodes[2].host.ReceiveSnapshot(msg, bytes.NewReader(bad)); !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("corruption at %d: %v", pos, err)
		}
	}
	if err := c.nodes[2].host.ReceiveSnapshot(msg, bytes.NewReader(buf.Bytes()[:buf.Len()-1])); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("truncated: %v", err)
	}
	_ = g
}

func truncatedIndex(t *testing.T, db *pebble.DB, shard uint32) uint64 {
	t.Helper()
	v, c, err := db.Get(raftKey(shard, keyTruncated))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0
	} else if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return binary.BigEndian.Uint64(v)
}

func TestCompactionByCountAndBytes(t *testing.T) {
	for _, tc := range []struct {
		name          string
		retain, bytes uint64
		minTrunc      uint64
	}{
		{"count", 20, 0, 60},
		{"bytes", 100000, 8 << 10, 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, clusterOpts{nodes: 1, retain: tc.retain, maxBytes: tc.bytes})
			c.open(1, 1, []uint64{1})
			var want []string
			for i := range 100 {
				want = append(want, fmt.Sprintf("%03d-%s", i, bytes.Repeat([]byte("x"), 200)))
				c.propose(1, want[i])
			}
			c.converged(1, want, 1)
			if tr := truncatedIndex(t, c.nodes[1].db, 1); tr < tc.minTrunc {
				t.Fatalf("truncated index %d, want >= %d", tr, tc.minTrunc)
			}
			// Restart: the compacted log plus the state still serve the group.
			c.stopNode(1)
			c.start(1, c.nodes[1].fs, clusterOpts{retain: tc.retain, maxBytes: tc.bytes})
			c.open(1, 1, []uint64{1})
			want = append(want, "after")
			c.propose(1, "after")
			c.converged(1, want, 1)
		})
	}
}

func TestConfigValidateAndMetrics(t *testing.T) {
	db := memDB(t)
	if _, err := NewHost(Config{DB: db, Transport: &nodeTransport{n: newNetwork()}}); err == nil {
		t.Fatal("NodeID 0 accepted")
	}
	if _, err := NewHost(Config{NodeID: 1, DB: db, Transport: &nodeTransport{n: newNetwork()},
		ElectionTicks: 1, HeartbeatTicks: 2}); err == nil {
		t.Fatal("ElectionTicks <= HeartbeatTicks accepted")
	}
	old, err := pebble.Open("old", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{},
		FormatMajorVersion: pebble.FormatVirtualSSTables - 1})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := NewHost(Config{NodeID: 1, DB: old, Transport: &nodeTransport{n: newNetwork()}}); err == nil {
		t.Fatal("a DB without IngestAndExcise accepted")
	}
	reg := prometheus.NewRegistry()
	h, err := NewHost(Config{NodeID: 1, DB: db, Transport: &nodeTransport{n: newNetwork()}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.cfg.TickInterval != DefaultTickInterval || h.cfg.LogRetainEntries != DefaultLogRetainEntries ||
		h.cfg.FS != vfs.Default || h.cfg.SnapshotDir != os.TempDir() {
		t.Fatalf("defaults not applied: %+v", h.cfg)
	}
	if _, err := h.OpenGroup(1, newTestSM(t, db, 1), []uint64{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.OpenGroup(1, newTestSM(t, db, 1), []uint64{1}); !errors.Is(err, ErrGroupExists) {
		t.Fatalf("second open: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"shoal_replica_groups", "shoal_replica_proposals_total", "shoal_replica_sync_seconds"} {
		if !names[n] {
			t.Fatalf("metric %s not registered (have %v)", n, names)
		}
	}
	_ = h.Close()
	g, _ := h.Group(1)
	if _, err := g.Propose(context.Background(), []byte("x")); !errors.Is(err, ErrStopped) && !errors.Is(err, ErrNotLeader) {
		t.Fatalf("propose after close: %v", err)
	}
}

// TestSizeTrimKeepsWhatFollowersNeed: a log past MaxLogBytes is trimmed to the applied
// index, except that a leader keeps, up to twice the limit, the entries a follower still
// needs. A follower whose appends were lost while 1.5 MiB of entries committed (the
// limit 1 MiB) catches up from the log, without a snapshot of the whole shard.
func TestSizeTrimKeepsWhatFollowersNeed(t *testing.T) {
	const shard = 5
	c := newCluster(t, clusterOpts{nodes: 3, maxBytes: 1 << 20, retain: 1 << 20})
	c.openVoters(shard)
	lead := c.leader(shard)
	slow := lead.Status().ID%3 + 1
	c.net.mu.Lock()
	c.net.drop = func(from uint64, m *pb.Message) bool {
		return m.GetTo() == slow && m.GetType() == pb.MsgApp && len(m.Entries) > 0
	}
	c.net.mu.Unlock()
	var want []string
	for i := range 96 {
		want = append(want, fmt.Sprintf("%02d-%s", i, strings.Repeat("x", 16<<10)))
		c.propose(shard, want[i])
	}
	lid := c.leader(shard).Status().ID
	c.net.mu.Lock()
	c.net.drop = nil
	c.net.mu.Unlock()
	c.converged(shard, want, 1, 2, 3)
	if n := testutilCounter(c.nodes[lid].host.metrics.SnapshotsSent); n != 0 {
		t.Fatalf("the leader sent %v snapshots to a follower 1.5 MiB behind (MaxLogBytes 1 MiB)", n)
	}

	// Past twice the limit the log is trimmed all the same: the follower gets a snapshot.
	c.net.mu.Lock()
	c.net.drop = func(from uint64, m *pb.Message) bool {
		return m.GetTo() == slow && m.GetType() == pb.MsgApp && len(m.Entries) > 0
	}
	c.net.mu.Unlock()
	for i := range 160 {
		want = append(want, fmt.Sprintf("%03d-%s", i, strings.Repeat("y", 16<<10)))
		c.propose(shard, want[len(want)-1])
	}
	lid = c.leader(shard).Status().ID
	c.net.mu.Lock()
	c.net.drop = nil
	c.net.mu.Unlock()
	c.converged(shard, want, 1, 2, 3)
	if n := testutilCounter(c.nodes[lid].host.metrics.SnapshotsSent); n == 0 {
		t.Fatal("a follower 2.5 MiB behind (MaxLogBytes 1 MiB) caught up without a snapshot: the log was kept past twice the limit")
	}
}

// TestRestartWithoutAppliedKey: a fresh replica (node 4) persisted its first entries (1..3,
// the bootstrap configuration) with a hard state committing them, then ingested a snapshot at
// 50 before applying them, and crashed before the snapshot's raft keys (T, C, A) were
// written: its state machine is at 50, its raft keys hold no applied index and no conf
// state. raft must restart from the log's start and apply the configuration: restarted at the
// state machine's 50 (then at the commit index, 3), it skipped it and ran with no voters, and
// conf changes applied later on that empty base could make the node its group's only voter.
func TestRestartWithoutAppliedKey(t *testing.T) {
	for _, smAt := range []uint64{0, 50} {
		t.Run(fmt.Sprint("state machine at ", smAt), func(t *testing.T) {
			fs := vfs.NewMem()
			db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: quietLogger{}, FormatMajorVersion: pebble.FormatNewest})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			const shard = 1
			b := db.NewBatch()
			for i, id := range []uint64{1, 2, 3} {
				data, err := proto.Marshal(&pb.ConfChange{Type: pb.ConfChangeAddNode.Enum(), NodeId: new(id)})
				if err != nil {
					t.Fatal(err)
				}
				v := append(binary.BigEndian.AppendUint64([]byte{byte(pb.EntryConfChange)}, 1), data...)
				if err := b.Set(logKey(shard, uint64(i+1)), v, nil); err != nil {
					t.Fatal(err)
				}
			}
			hs := &pb.HardState{Term: new(uint64(2)), Vote: new(uint64(0)), Commit: new(uint64(3))}
			if err := b.Set(raftKey(shard, keyHardState), encodeHardState(hs), nil); err != nil {
				t.Fatal(err)
			}
			sm := newTestSM(t, db, shard)
			if smAt > 0 {
				sm.SetApplied(b, smAt)
			}
			if err := b.Commit(pebble.Sync); err != nil {
				t.Fatal(err)
			}
			if err := sm.Reload(); err != nil {
				t.Fatal(err)
			}
			h, err := NewHost(Config{NodeID: 4, DB: db, FS: fs, SnapshotDir: "snaps",
				Transport: &nodeTransport{n: newNetwork(), from: 4}, TickInterval: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			g, err := h.OpenGroup(shard, sm, nil)
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, func() error {
				if st := g.Status(); !slices.Equal(st.Voters, []uint64{1, 2, 3}) {
					return fmt.Errorf("voters %v (applied %d, commit %d), want [1 2 3]", st.Voters, st.Applied, st.Commit)
				}
				return nil
			})
		})
	}
}

// TestLogBytesAfterOverwrite: a suffix raft overwrites (a new leader's log replacing an
// uncommitted tail) gives its bytes back to the log's size, which drives the size trim: the
// count grew by every overwritten entry, so a replica passed MaxLogBytes early, and a leader
// at twice that trimmed to its applied index whatever its followers still needed. Exact from
// the cached tail, a proportional share below it, and as a reopen counts in both cases.
func TestLogBytesAfterOverwrite(t *testing.T) {
	db := memDB(t)
	st, err := openStorage(db, 1)
	if err != nil {
		t.Fatal(err)
	}
	sized := func(term, lo, hi uint64) []*pb.Entry {
		out := ents(term, lo, hi)
		for _, e := range out {
			e.Data = make([]byte, 1<<10)
		}
		return out
	}
	write := func(es []*pb.Entry) {
		t.Helper()
		b := db.NewBatch()
		if err := st.append(b, es); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		re, err := openStorage(db, 1)
		if err != nil {
			t.Fatal(err)
		}
		if st.logBytes != re.logBytes {
			t.Fatalf("%s: log bytes %d, a reopen counts %d", when, st.logBytes, re.logBytes)
		}
	}
	write(sized(1, 1, 11))
	write(sized(2, 4, 11)) // overwrites 4..10
	check("overwritten from the cached tail")
	write(sized(3, 1, 6)) // overwrites all, shorter
	check("overwritten whole")
	if st, err = openStorage(db, 1); err != nil { // an empty cache
		t.Fatal(err)
	}
	write(sized(4, 3, 9))
	check("overwritten below the cached tail")
}

// storeRaftState stores shard's raft state as a replica would: entries 1..10 of term 3, the
// configuration cs, and a hard state of term 4, a vote for 8, commit 8.
func storeRaftState(t *testing.T, db *pebble.DB, shard uint32, cs *pb.ConfState) {
	t.Helper()
	st, err := openStorage(db, shard)
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	if err := st.append(b, ents(3, 1, 11)); err != nil {
		t.Fatal(err)
	}
	if err := st.setConfState(b, cs); err != nil {
		t.Fatal(err)
	}
	if err := st.setHardState(b, &pb.HardState{Term: new(uint64(4)), Vote: new(uint64(8)), Commit: new(uint64(8))}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// storedMembership is whether id is a voter or a learner of shard's stored configuration.
func storedMembership(db *pebble.DB, shard uint32, id uint64) (voter, learner bool, err error) {
	st, err := Inspect(db, shard)
	return slices.Contains(st.Voters, id), slices.Contains(st.Learners, id), err
}

// TestResetToSoleVoter: the reset ends the log at the applied index (the entries after it
// gone, a conf change among them), makes the configuration the node alone, starts a new term
// without a vote, and Inspect reads the result; an applied index outside the log is
// refused.
func TestResetToSoleVoter(t *testing.T) {
	db := memDB(t)
	storeRaftState(t, db, 2, &pb.ConfState{Voters: []uint64{7, 8, 9}})
	if voter, _, err := storedMembership(db, 2, 9); err != nil || !voter {
		t.Fatalf("StoredMembership before: voter %v, %v; want a voter", voter, err)
	}
	if err := ResetToSoleVoter(db, 2, 7, 11); err == nil {
		t.Fatal("reset at an index past the log: no error")
	}
	if err := ResetToSoleVoter(db, 2, 7, 6); err != nil {
		t.Fatal(err)
	}
	st, err := openStorage(db, 2)
	if err != nil {
		t.Fatal(err)
	}
	hs, cs, _ := st.InitialState()
	first, _ := st.FirstIndex()
	last, _ := st.LastIndex()
	term, _ := st.Term(6)
	if hs.GetTerm() != 5 || hs.GetVote() != 0 || hs.GetCommit() != 6 || fmt.Sprint(cs.GetVoters()) != "[7]" ||
		first != 7 || last != 6 || term != 3 {
		t.Fatalf("after the reset: hard state %v, conf %v, log %d..%d, term(6) %d; want term 5 no vote commit 6, [7], empty from 7, 3",
			hs, cs, first, last, term)
	}
	for id, want := range map[uint64]bool{7: true, 8: false, 9: false} {
		if voter, learner, err := storedMembership(db, 2, id); err != nil || voter != want || learner {
			t.Fatalf("storedMembership(%d) after the reset: %v %v %v, want voter %v", id, voter, learner, err, want)
		}
	}
}

// TestInspect reads a stored replica's raft state: its hard state, log bounds and
// configuration, a joint one's members included, and changes nothing.
func TestInspect(t *testing.T) {
	db := memDB(t)
	if st, err := Inspect(db, 3); err != nil || fmt.Sprintf("%+v", st) != "{Term:0 Vote:0 Commit:0 FirstIndex:1 LastIndex:0 LastTerm:0 Voters:[] Learners:[]}" {
		t.Fatalf("Inspect of a shard never stored: %+v, %v", st, err)
	}
	storeRaftState(t, db, 3, &pb.ConfState{Voters: []uint64{9, 7, 8}, VotersOutgoing: []uint64{7, 8, 6},
		Learners: []uint64{5}, LearnersNext: []uint64{6}})
	want := "{Term:4 Vote:8 Commit:8 FirstIndex:1 LastIndex:10 LastTerm:3 Voters:[6 7 8 9] Learners:[5 6]}"
	for range 2 { // twice: the first changed nothing
		if got, err := Inspect(db, 3); err != nil || fmt.Sprintf("%+v", got) != want {
			t.Fatalf("Inspect: %+v, %v; want %s", got, err, want)
		}
	}
	if err := ResetToSoleVoter(db, 3, 7, 6); err != nil {
		t.Fatal(err)
	}
	want = "{Term:5 Vote:0 Commit:6 FirstIndex:7 LastIndex:6 LastTerm:3 Voters:[7] Learners:[]}"
	if got, err := Inspect(db, 3); err != nil || fmt.Sprintf("%+v", got) != want {
		t.Fatalf("Inspect after a reset: %+v, %v; want %s", got, err, want)
	}
}

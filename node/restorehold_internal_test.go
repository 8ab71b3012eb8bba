package node

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
)

// TestJudgeRestore: the restore check's verdict on one member's RaftPoints answer, for the
// backup of node 1 holding shard 0 (voters 1, 2, 3) and shard 1 (voter 1 alone), both at
// entry 10 of term 2.
func TestJudgeRestore(t *testing.T) {
	n := &Node{dir: &dataDir{path: "/data/n1", id: identity{NodeID: 1, Name: "n1"}}}
	m := &backupManifest{Node: "n1", NodeID: 1, Created: time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)}
	at := raftPoint{Term: 2, LastIndex: 10, LastTerm: 2}
	held := map[uint32]heldReplica{
		0: {point: at, voters: []uint64{1, 2, 3}},
		1: {point: at, voters: []uint64{1}},
	}
	point := func(shard uint32, p raftPoint) *shoalv1.RaftPoint {
		return &shoalv1.RaftPoint{Shard: shard, Term: p.Term, LastIndex: p.LastIndex, LastTerm: p.LastTerm}
	}
	ahead := raftPoint{Term: 3, LastIndex: 12, LastTerm: 3}
	for _, tc := range []struct {
		name string
		id   uint64 // the member answering
		resp *shoalv1.RaftPointsResponse
		want string // "" accepted; else a part of the refusal
	}{
		{"same log", 2, &shoalv1.RaftPointsResponse{Current: []*shoalv1.RaftPoint{point(0, at)}}, ""},
		{"same log, restoring too", 2, &shoalv1.RaftPointsResponse{Restoring: true, Current: []*shoalv1.RaftPoint{point(0, at)}}, ""},
		{"went on, restored from this moment", 2, &shoalv1.RaftPointsResponse{Current: []*shoalv1.RaftPoint{point(0, ahead)},
			Restored: []*shoalv1.RaftPoint{point(0, at)}}, ""},
		{"not a replica, and not a voter then", 4, &shoalv1.RaftPointsResponse{}, ""},
		{"went on", 2, &shoalv1.RaftPointsResponse{Current: []*shoalv1.RaftPoint{point(0, ahead)}},
			"the cluster went on after it: n2 holds a log ending at entry 12 of term 3, in term 3 of shard 0; this backup a log ending at entry 10 of term 2"},
		{"went on, this node ran since its restore", 2, &shoalv1.RaftPointsResponse{Current: []*shoalv1.RaftPoint{point(0, ahead)}, YouRanSince: true},
			"this node has run in the cluster since"},
		{"restored from another moment", 2, &shoalv1.RaftPointsResponse{Current: []*shoalv1.RaftPoint{point(0, ahead)},
			Restored: []*shoalv1.RaftPoint{point(0, ahead)}}, "the cluster went on after it"},
		{"behind", 2, &shoalv1.RaftPointsResponse{Current: []*shoalv1.RaftPoint{point(0, raftPoint{Term: 2, LastIndex: 9, LastTerm: 2})}},
			"the cluster went on after it"},
		{"a voter then holds none now", 3, &shoalv1.RaftPointsResponse{}, "n3, a voter of shard 0 then, holds no replica of it now"},
		{"a member holds the one-voter shard now", 4, &shoalv1.RaftPointsResponse{Current: []*shoalv1.RaftPoint{point(1, ahead)}},
			"holds a log ending at entry 12 of term 3, in term 3 of shard 1"},
		{"given a shard since", 4, &shoalv1.RaftPointsResponse{ListingYou: []uint32{5}}, "n4 has this node in shard 5, of which the backup holds no replica"},
		{"restoring, another log", 2, &shoalv1.RaftPointsResponse{Restoring: true, Current: []*shoalv1.RaftPoint{point(0, ahead)}},
			"starting on a restored backup too, holds another raft log of shard 0"},
		{"restoring, no replica", 3, &shoalv1.RaftPointsResponse{Restoring: true}, "starting on a restored backup too, holds no replica of shard 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n.known.Store(&[]knownMember{{ID: 2, Name: "n2"}, {ID: 3, Name: "n3"}, {ID: 4, Name: "n4"}})
			byRestore, err := n.judgeRestore(m, held, tc.id, tc.resp)
			if want := tc.name == "went on, restored from this moment"; byRestore != want {
				t.Errorf("accepted by the restored point: %v, want %v", byRestore, want)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (!errors.Is(err, ErrRestoreUnsafe) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("verdict %v, want ErrRestoreUnsafe saying %q", err, tc.want)
			case err != nil && !strings.Contains(err.Error(), "backup.json kept"):
				t.Fatalf("refusal %v does not say backup.json is kept", err)
			}
		})
	}
}

// TestCrossCheckRestore: a member accepted by where it stood when it was restored is not
// enough once a node that ran in the cluster since is being restored again.
func TestCrossCheckRestore(t *testing.T) {
	n := &Node{dir: &dataDir{path: "/data/n1", id: identity{NodeID: 1, Name: "n1"}}}
	n.known.Store(&[]knownMember{{ID: 2, Name: "n2"}, {ID: 3, Name: "n3"}})
	m := &backupManifest{Node: "n1", NodeID: 1}
	// n3 accepted by its restored point; n2 ran since (n3 heard from it).
	peers := map[uint64]*restorePeer{2: {done: true}, 3: {done: true, ranSince: []uint64{2}}}
	if err := n.crossCheckRestore(m, peers); err != nil {
		t.Fatalf("n2 running on: %v", err)
	}
	peers[2].restorer = true // n2 restored again, from a backup of the same moment
	if err := n.crossCheckRestore(m, peers); !errors.Is(err, ErrRestoreUnsafe) || !strings.Contains(err.Error(), "n2, starting on a restored backup, ran in the cluster after n3 was restored") {
		t.Fatalf("n2 restored again: %v, want ErrRestoreUnsafe naming n2 and n3", err)
	}
}

// TestRestoreRecordsSenders: a restored node records in restored.json each node whose raft
// traffic reaches it, once, and reloads the record; while the restore check holds the shards
// closed, raft traffic and snapshots are refused before anything (the host) sees them.
func TestRestoreRecordsSenders(t *testing.T) {
	dir := t.TempDir()
	n := &Node{dir: &dataDir{path: dir, id: identity{NodeID: 1, Name: "n1"}}, log: slog.New(slog.DiscardHandler)}
	msg := func(from uint64) replica.ShardMessage {
		return replica.ShardMessage{Shard: 0, Msg: &raftpb.Message{From: new(from), To: new(uint64(1))}}
	}
	// Held: dropped without reaching the host (nil here: reaching it would panic).
	held := map[uint32]heldReplica{}
	n.restore.hold.Store(&held)
	r := raftReceiver{n: n}
	r.HandleMessages([]replica.ShardMessage{msg(2)})
	if err := r.ReceiveSnapshot(msg(2), strings.NewReader("")); err == nil || !strings.Contains(err.Error(), "restore check") {
		t.Fatalf("snapshot while held: %v, want refused", err)
	}
	n.restore.hold.Store(nil)

	// Never restored: nothing to record.
	if !n.noteRaftSenders([]replica.ShardMessage{msg(2)}) {
		t.Fatal("a node never restored refused a batch")
	}
	n.setRestoreRecord(&restoreRecord{Backup: "b", Points: map[uint32]raftPoint{0: {Term: 2, LastIndex: 10, LastTerm: 2}}})
	for _, batch := range [][]replica.ShardMessage{{msg(3), msg(2)}, {msg(2), msg(3)}, {msg(4)}} {
		if !n.noteRaftSenders(batch) {
			t.Fatal("batch refused")
		}
	}
	n2 := &Node{dir: &dataDir{path: dir, id: identity{NodeID: 1, Name: "n1"}}}
	if err := n2.loadRestoreRecord(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(n2.restore.rec.RanSince); got != "[2 3 4]" {
		t.Fatalf("restored.json's ran_since after a restart: %s, want [2 3 4]", got)
	}
	// A node that ran since gets no restored points, and is told so.
	resp, err := n2.raftPoints(&shoalv1.RaftPointsRequest{Shards: []uint32{0}, NodeId: 3})
	if err != nil || len(resp.GetRestored()) != 0 || !resp.GetYouRanSince() {
		t.Fatalf("answer to node 3, which ran since: %v, %v", resp, err)
	}
	resp, err = n2.raftPoints(&shoalv1.RaftPointsRequest{Shards: []uint32{0}, NodeId: 5})
	if err != nil || len(resp.GetRestored()) != 1 || resp.GetYouRanSince() || fmt.Sprint(resp.GetRanSince()) != "[2 3 4]" {
		t.Fatalf("answer to node 5, which did not: %v, %v", resp, err)
	}
}

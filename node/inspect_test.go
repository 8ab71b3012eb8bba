package node_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/ring"
	"github.com/shoaldb/shoal/shard"
)

// TestInspect reads the data directories of a three-node cluster's stopped nodes: each names
// its node and cluster, holds a voter of every shard with what it applied and its shard log's
// end, and is left as it was; a running node's directory is refused.
func TestInspect(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c, _ := startPlacementCluster(t, 3)
	waitPlaced(t, c, "replication 3", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, []string{c.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	positions := map[uint32]uint64{} // by shard: the next position of its log
	for i := range 20 {
		stream := fmt.Sprintf("inspect-%d", i)
		if _, err := cl.Append(ctx, stream, client.NoStream, client.Event{Type: "E"}, client.Event{Type: "F"}); err != nil {
			t.Fatal(err)
		}
		positions[ring.ShardOf(stream, placementShards)] += 2
	}
	testnode.WaitMaxFormat(t, cl, 20*time.Second) // the replicas' format, checked below, is raised after the start
	if _, err := node.Inspect(c.Configs[0].DataDir); !errors.Is(err, node.ErrDataDirLocked) {
		t.Fatalf("Inspect of a running node's directory: %v, want ErrDataDirLocked", err)
	}
	// Every replica applies its shard's log before the nodes stop; the stops may add to it
	// (a leader's hand-off, an election), so the replicas applied at least that.
	applied := map[uint32]uint64{}
	testnode.WaitFor(t, 20*time.Second, "every replica applied its shard's log", func() string {
		clear(applied)
		for _, n := range c.Nodes {
			for _, g := range n.Groups() {
				st := g.Status()
				if st.Applied < st.Commit || st.Commit == 0 {
					return fmt.Sprintf("%s shard %d: applied %d of %d", n.Name(), st.Shard, st.Applied, st.Commit)
				}
				if a, ok := applied[st.Shard]; !ok || st.Applied < a {
					applied[st.Shard] = st.Applied
				}
			}
		}
		return ""
	})
	for i := range c.Nodes {
		c.Stop(t, i)
	}

	for i, n := range c.Nodes {
		dir := c.Configs[i].DataDir
		before := storeFiles(t, dir)
		in, err := node.Inspect(dir)
		if err != nil {
			t.Fatalf("Inspect %s: %v", dir, err)
		}
		if after := storeFiles(t, dir); !slices.Equal(before, after) {
			t.Errorf("Inspect changed %s's files:\n%v\nto\n%v", dir, before, after)
		}
		if in.NodeID != n.ID() || in.Name != n.Name() || in.ClusterID != c.Nodes[0].Settings().ClusterID ||
			in.Shards != placementShards || in.Replication != 3 || in.Backup || in.NewCluster != "" {
			t.Fatalf("%s: %+v", dir, in)
		}
		for _, r := range in.Replicas {
			if !slices.Contains(r.Voters, n.ID()) || len(r.Voters) != 3 || r.Applied < applied[r.Shard] ||
				r.LastIndex < r.Applied || r.Format != shard.MaxFormat || r.LastPosition != positions[r.Shard] {
				t.Errorf("%s shard %d: %+v, want a voter of 3 that applied at least %d, at format %d, next position %d",
					n.Name(), r.Shard, r, applied[r.Shard], shard.MaxFormat, positions[r.Shard])
			}
		}
		if len(in.Replicas) != placementShards {
			t.Errorf("%s holds %d shards' replicas, want all %d", n.Name(), len(in.Replicas), placementShards)
		}
	}
	if _, err := node.Inspect(t.TempDir()); err == nil {
		t.Error("Inspect of an empty directory: no error")
	}
}

// storeFiles lists dir's files with their sizes and modification times.
func storeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %d %v", path, fi.Size(), fi.ModTime().UnixNano()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCompareApplied: directories compare by what --new-cluster would keep of each shard: a
// voter's or a learner's replica that applied something; a directory --new-cluster refuses
// says why.
func TestCompareApplied(t *testing.T) {
	rep := func(shard uint32, applied uint64, voters, learners []uint64) node.ReplicaState {
		return node.ReplicaState{Shard: shard, Applied: applied, StoredState: replica.StoredState{Voters: voters, Learners: learners}}
	}
	in := func(dir string, id uint64, reps ...node.ReplicaState) *node.Inspection {
		return &node.Inspection{Dir: dir, NodeID: id, ClusterID: "c", Shards: 3, Replicas: reps}
	}
	all := []uint64{1, 2, 3}
	ins := []*node.Inspection{
		in("a", 1, rep(0, 10, all, nil), rep(1, 7, all, nil), rep(2, 5, all, nil)),
		in("b", 2, rep(0, 10, all, nil), rep(1, 9, []uint64{1, 3}, []uint64{2}), rep(2, 4, all, nil)), // a learner of 1: it counts
		in("c", 3, rep(0, 12, []uint64{1, 2}, nil), rep(1, 0, nil, nil)),                              // removed from 0, empty in 1, no 2
	}
	want := []string{
		"{Dir:a Furthest:[0 2] Behind:[{Shard:1 Entries:2}] Refused:}",
		"{Dir:b Furthest:[0 1] Behind:[{Shard:2 Entries:1}] Refused:}",
		"{Dir:c Furthest:[] Behind:[] Refused:no replica of shard(s) [2]; nothing applied in shard(s) [1]; removed from the group of shard(s) [0]}",
	}
	for i, sv := range node.CompareApplied(ins) {
		if got := fmt.Sprintf("%+v", sv); got != want[i] {
			t.Errorf("%s: %s, want %s", ins[i].Dir, got, want[i])
		}
	}
	// Logs the same: last index, its term, and the term.
	logRep := func(shard uint32, last, lastTerm, term uint64, voters []uint64) node.ReplicaState {
		r := rep(shard, last, voters, nil)
		r.LastIndex, r.LastTerm, r.Term = last, lastTerm, term
		return r
	}
	same := func(id uint64) *node.Inspection {
		return in(fmt.Sprint(id), id, logRep(0, 10, 2, 2, all), logRep(1, 7, 1, 3, all), logRep(2, 5, 1, 1, all))
	}
	if !node.SameLogs([]*node.Inspection{same(1), same(2), same(3)}) {
		t.Error("SameLogs of three identical backups: false")
	}
	if node.SameLogs([]*node.Inspection{same(1), same(2)}) {
		t.Error("SameLogs without a voter's directory: true")
	}
	if node.SameLogs([]*node.Inspection{same(1)}) {
		t.Error("SameLogs of one of three voters' directories: true")
	}
	// A one-node cluster's directory, its node every shard's only voter, is the whole cluster.
	alone := in("1", 1, logRep(0, 10, 2, 2, []uint64{1}), logRep(1, 7, 1, 3, []uint64{1}), logRep(2, 5, 1, 1, []uint64{1}))
	if !node.SameLogs([]*node.Inspection{alone}) {
		t.Error("SameLogs of a one-node cluster's directory: false")
	}
	if node.SameLogs([]*node.Inspection{same(1), same(2), same(3), same(3)}) {
		t.Error("SameLogs with two copies of one node: true")
	}
	for i, change := range []func(*node.ReplicaState){
		func(r *node.ReplicaState) { r.LastIndex++ },
		func(r *node.ReplicaState) { r.LastTerm++ },
		func(r *node.ReplicaState) { r.Term++ },
	} {
		third := same(3)
		change(&third.Replicas[1])
		if node.SameLogs([]*node.Inspection{same(1), same(2), third}) {
			t.Errorf("change %d: SameLogs true", i)
		}
	}
	// A voter's directory without its replica of the shard.
	partial := same(3)
	partial.Replicas = partial.Replicas[:2]
	if node.SameLogs([]*node.Inspection{same(1), same(2), partial}) {
		t.Error("SameLogs with a voter's directory lacking the shard: true")
	}

	made := in("d", 1, rep(0, 1, all, nil), rep(1, 1, all, nil), rep(2, 1, all, nil))
	made.NewCluster = "c"
	if sv := node.CompareApplied([]*node.Inspection{made})[0]; !strings.Contains(sv.Refused, "already made its cluster") {
		t.Errorf("a directory that made its cluster: %+v", sv)
	}
}

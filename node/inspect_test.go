package node_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
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
	c := testnode.Start(t, 3, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) { placementConfig(cfg) }})
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
			if !slices.Contains(r.Voters, n.ID()) || len(r.Voters) != 3 || r.Applied < applied[r.Shard] || r.Commit < r.Applied ||
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

// storeFiles lists dir's files with their sizes and modification times, but for lock files
// (Pebble's is opened, and so touched, by any open).
func storeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "LOCK" {
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

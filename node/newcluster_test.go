package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/internal/testaddr"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestNewClusterFromBackup: a three-node cluster, replication 3, is lost but for one node's
// backup, taken once that node had applied every write. A node started on a copy of it with
// Restore and NewCluster is the only member of a new cluster (a new ID) that serves every
// event at its version and takes appends after them; a new node joining it receives replicas;
// an old node started again with its data is refused by the new cluster (another cluster ID).
// Directories without every shard, and NewCluster with Join, are refused.
func TestNewClusterFromBackup(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c, ctx, cl := placedClusterClient(t, 90*time.Second)
	const streams, perStream = 16, 5
	appendSome(t, ctx, cl, "dr", streams, perStream)
	// n1 applied everything: its own replicas, read stale, hold every event.
	n1 := shoalv1.NewStreamsClient(c.Dial(t, 0))
	testnode.WaitFor(t, 15*time.Second, "n1 caught up", func() string {
		for s := range streams {
			got, err := readAllErr(ctx, n1, &shoalv1.ReadRequest{Stream: fmt.Sprintf("dr-%d", s), AllowStale: true})
			if err != nil || got != perStream {
				return fmt.Sprintf("dr-%d: %d events, %v", s, got, err)
			}
		}
		return ""
	})
	info, err := cl.Backup(ctx, "n1", "dr")
	if err != nil {
		t.Fatal(err)
	}
	old := c.Nodes[0].Settings().ClusterID
	oldN2 := c.Configs[1]
	c.Close()

	restored := t.TempDir()
	if err := os.CopyFS(restored, os.DirFS(info.Path)); err != nil {
		t.Fatal(err)
	}
	cfg := c.Configs[0]
	cfg.DataDir, cfg.Gossip, cfg.Restore, cfg.NewCluster = restored, testaddr.Gossip(t), true, true
	start := func(cfg node.Config) (*node.Node, error) {
		sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
		defer scancel()
		return node.Start(sctx, cfg)
	}
	joining := cfg
	joining.Join = []string{oldN2.Gossip}
	if _, err := start(joining); !errors.Is(err, node.ErrConfigConflict) {
		t.Fatalf("NewCluster with Join: %v, want a conflict", err)
	}
	n, err := start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if id := n.Settings().ClusterID; id == old || id == "" {
		t.Fatalf("cluster ID after NewCluster: %q, want a new one (was %q)", id, old)
	}
	nc, err := client.Dial(ctx, []string{n.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for s := range streams {
		stream := fmt.Sprintf("dr-%d", s)
		var got []uint64
		for ev, err := range nc.Read(ctx, stream) {
			if err != nil {
				t.Fatalf("read %s from the new cluster: %v", stream, err)
			}
			got = append(got, ev.Version)
		}
		if fmt.Sprint(got) != "[0 1 2 3 4]" {
			t.Fatalf("%s in the new cluster: versions %v, want 0..4", stream, got)
		}
		if _, err := nc.Append(ctx, stream, client.Exact(perStream-1), client.Event{Type: "After"}); err != nil {
			t.Fatalf("append to %s in the new cluster: %v", stream, err)
		}
	}

	// A new node joins and receives replicas (replication 3 wants them on every node).
	fresh := node.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", DisableHTTP: true, Gossip: testaddr.Gossip(t),
		Name: "n9", Zone: "z9", Join: []string{cfg.Gossip}, JoinTimeout: 20 * time.Second,
		DeadAfter: cfg.DeadAfter, PlacementInterval: cfg.PlacementInterval}
	n9, err := start(fresh)
	if err != nil {
		t.Fatal(err)
	}
	defer n9.Close()
	conn9, err := grpc.NewClient(n9.Addr(), grpcopt.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn9.Close()
	n9c := shoalv1.NewStreamsClient(conn9)
	testnode.WaitFor(t, 30*time.Second, "n9 holds the streams", func() string {
		for s := range streams {
			got, err := readAllErr(ctx, n9c, &shoalv1.ReadRequest{Stream: fmt.Sprintf("dr-%d", s), AllowStale: true})
			if err != nil || got != perStream+1 {
				return fmt.Sprintf("dr-%d on n9: %d events, %v", s, got, err)
			}
		}
		return ""
	})

	// An old node started again with its data is not taken in: another cluster.
	oldN2.Join = []string{cfg.Gossip}
	n2, err := start(oldN2)
	if err == nil {
		defer n2.Close()
		time.Sleep(2 * time.Second)
		for _, m := range n.Members() {
			if m.Name == "n2" && m.Alive {
				t.Fatal("the new cluster took in an old node")
			}
		}
	}
	t.Logf("the old n2 started again: %v", err)

	// The flag left on: the next start is refused, and without it the node restarts in its
	// new cluster.
	id := n.Settings().ClusterID
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := start(cfg); !errors.Is(err, node.ErrConfigConflict) {
		t.Fatalf("NewCluster again on the cluster it made: %v, want a conflict", err)
	}
	cfg.NewCluster, cfg.Restore = false, false
	again, err := start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if got := again.Settings().ClusterID; got != id {
		t.Fatalf("restarted without NewCluster: cluster %s, want %s", got, id)
	}

	// A directory without every shard: refused, nothing changed.
	part := c.Configs[2]
	part.DataDir, part.Gossip, part.Join, part.NewCluster = t.TempDir(), testaddr.Gossip(t), nil, true
	if _, err := start(part); !errors.Is(err, node.ErrConfigConflict) {
		t.Fatalf("NewCluster on an empty directory: %v, want a conflict", err)
	}
	// A backup refused as a new cluster (here: made to lack shards) stays a backup.
	lacking := t.TempDir()
	if err := os.CopyFS(lacking, os.DirFS(info.Path)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lacking, "groups.json"), []byte("[0]"), 0o600); err != nil {
		t.Fatal(err)
	}
	// and whole by its backup.json, which gives every file's size
	var manifest map[string]any
	if b, err := os.ReadFile(filepath.Join(lacking, "backup.json")); err != nil || json.Unmarshal(b, &manifest) != nil {
		t.Fatalf("backup.json: %v", err)
	}
	manifest["files"].(map[string]any)["groups.json"] = 3
	if b, err := json.Marshal(manifest); err != nil || os.WriteFile(filepath.Join(lacking, "backup.json"), b, 0o600) != nil {
		t.Fatalf("rewriting backup.json: %v", err)
	}
	part.DataDir, part.Restore, part.Name = lacking, true, "n1"
	if _, err := start(part); !errors.Is(err, node.ErrConfigConflict) || !strings.Contains(err.Error(), "holds no replica of shard(s)") {
		t.Fatalf("NewCluster on a backup that lacks shards: %v, want a conflict naming them", err)
	}
	if _, err := os.Stat(filepath.Join(lacking, "backup.json")); err != nil {
		t.Fatalf("backup.json after the refused start: %v, want it kept", err)
	}
}

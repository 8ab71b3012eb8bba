package node_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// restoreCopy copies the backup at path into a new directory and returns it.
func restoreCopy(t *testing.T, path string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "restored")
	if err := os.CopyFS(dir, os.DirFS(path)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// placedClusterClient starts three nodes (replication 3), waits until every shard has its three
// voters, and returns them with a client of them and a context of timeout.
func placedClusterClient(t *testing.T, timeout time.Duration) (*testnode.Cluster, context.Context, *client.Client) {
	t.Helper()
	c, _ := startPlacementCluster(t, 3)
	waitPlaced(t, c, "replication 3", nil)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	cl, err := client.Dial(ctx, c.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return c, ctx, cl
}

// appendSome appends n events to each of streams new streams named prefix-i.
func appendSome(t *testing.T, ctx context.Context, cl *client.Client, prefix string, streams, n int) {
	t.Helper()
	for s := range streams {
		for v := range uint64(n) {
			exp := client.Exact(v - 1)
			if v == 0 {
				exp = client.NoStream
			}
			if _, err := cl.Append(ctx, fmt.Sprintf("%s-%d", prefix, s), exp, client.Event{Type: "Step"}); err != nil {
				t.Fatalf("append to %s-%d: %v", prefix, s, err)
			}
		}
	}
}

// TestRestoreIntoRunningClusterRefused: a node's backup restored (Restore) while the cluster
// it came from went on after the backup is refused at start, naming the shard and the peer
// whose raft log is ahead; backup.json stays, and nothing of the running cluster changes.
func TestRestoreIntoRunningClusterRefused(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c, ctx, cl := placedClusterClient(t, 90*time.Second)
	appendSome(t, ctx, cl, "before", 8, 3)
	info, err := cl.Backup(ctx, "n3", "b")
	if err != nil {
		t.Fatal(err)
	}
	appendSome(t, ctx, cl, "after", 8, 3) // the cluster goes on: every shard's log grows
	// A member answers for the shards asked, and names the others that have the asker in
	// their configuration.
	resp, err := shoalv1.NewClusterClient(c.Dial(t, 0)).RaftPoints(ctx, &shoalv1.RaftPointsRequest{Shards: []uint32{0}, NodeId: c.Nodes[2].ID()})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetCurrent()) != 1 || resp.GetCurrent()[0].GetShard() != 0 || len(resp.GetCurrent()[0].GetVoters()) != 3 ||
		!slices.Equal(resp.GetListingYou(), []uint32{1, 2, 3, 4, 5, 6, 7}) || resp.GetRestoring() || len(resp.GetRestored()) != 0 {
		t.Fatalf("RaftPoints of n1 for shard 0, asked as n3: %v; want shard 0 with 3 voters, shards 1..7 listing n3", resp)
	}
	c.Stop(t, 2)

	cfg := c.Configs[2]
	cfg.DataDir, cfg.Restore = restoreCopy(t, info.Path), true
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = node.Start(sctx, cfg)
	scancel()
	if !errors.Is(err, node.ErrRestoreUnsafe) || !strings.Contains(err.Error(), "went on after it") ||
		!strings.Contains(err.Error(), "empty data directory") {
		t.Fatalf("restore of n3's backup into the running cluster: %v, want ErrRestoreUnsafe saying the cluster went on", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "backup.json")); err != nil {
		t.Fatalf("backup.json after the refused restore: %v, want it kept", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "restored.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("restored.json after the refused restore: %v, want none", err)
	}
	// The two others serve on: every acknowledged event is there.
	for _, prefix := range []string{"before", "after"} {
		for s := range 8 {
			stream := fmt.Sprintf("%s-%d", prefix, s)
			n := 0
			for _, err := range cl.Read(ctx, stream) {
				if err != nil {
					t.Fatalf("read %s: %v", stream, err)
				}
				n++
			}
			if n != 3 {
				t.Fatalf("%s: %d events, want 3", stream, n)
			}
		}
	}
}

// raftPoints asks node i for its RaftPoints of every shard.
func raftPoints(t *testing.T, ctx context.Context, c *testnode.Cluster, i int) map[uint32]string {
	t.Helper()
	shards := make([]uint32, placementShards)
	for s := range shards {
		shards[s] = uint32(s)
	}
	resp, err := shoalv1.NewClusterClient(c.Dial(t, i)).RaftPoints(ctx, &shoalv1.RaftPointsRequest{Shards: shards})
	if err != nil {
		t.Fatalf("RaftPoints of n%d: %v", i+1, err)
	}
	out := map[uint32]string{}
	for _, p := range resp.GetCurrent() {
		out[p.GetShard()] = fmt.Sprintf("%d/%d/%d", p.GetTerm(), p.GetLastIndex(), p.GetLastTerm())
	}
	return out
}

// idleBackups backs up every node of c under name once all hold the same raft logs, and
// returns the backups' paths: it retries (with a new name) until the logs were the same
// before and after.
func idleBackups(t *testing.T, ctx context.Context, c *testnode.Cluster, cl *client.Client) []string {
	t.Helper()
	same := func() (map[uint32]string, bool) {
		ref := raftPoints(t, ctx, c, 0)
		for i := 1; i < len(c.Nodes); i++ {
			if !maps.Equal(raftPoints(t, ctx, c, i), ref) {
				return nil, false
			}
		}
		return ref, len(ref) == placementShards
	}
	for attempt := range 20 {
		before, ok := same()
		if !ok {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var paths []string
		for i := range c.Nodes {
			info, err := cl.Backup(ctx, fmt.Sprintf("n%d", i+1), fmt.Sprintf("idle-%d", attempt))
			if err != nil {
				t.Fatal(err)
			}
			paths = append(paths, info.Path)
		}
		if after, ok := same(); ok && maps.Equal(before, after) {
			return paths
		}
	}
	t.Fatal("the nodes' raft logs never stayed the same across the backups")
	return nil
}

// TestWholeClusterRestore: every node of a three-node cluster restored from backups taken
// while it was idle starts again (each waits, its shards closed, for its voter peers to show
// they hold the same raft logs) and serves every event; a node that ran in the restored
// cluster is refused a second restore from its backup of that moment once the cluster went
// on, and backups of two nodes taken at different moments refuse each other.
func TestWholeClusterRestore(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c, ctx, cl := placedClusterClient(t, 120*time.Second)
	appendSome(t, ctx, cl, "w", 8, 3)
	// A backup of n1 before more appends, for the last part.
	info1, err := cl.Backup(ctx, "n1", "early")
	if err != nil {
		t.Fatal(err)
	}
	appendSome(t, ctx, cl, "x", 8, 1)
	paths := idleBackups(t, ctx, c, cl)
	cl.Close()
	c.Close()

	// Every node restored, started together: each holds until its peers answer.
	type started struct {
		n   *node.Node
		err error
	}
	results := make(chan started, 3)
	restored := make([]node.Config, 3)
	for i := range 3 {
		cfg := c.Configs[i]
		cfg.DataDir, cfg.Restore, cfg.Registry = restoreCopy(t, paths[i]), true, nil
		restored[i] = cfg
		go func() {
			if i == 2 {
				time.Sleep(2 * time.Second) // n1 and n2 wait for it
			}
			sctx, scancel := context.WithTimeout(ctx, 40*time.Second)
			defer scancel()
			n, err := node.Start(sctx, cfg)
			results <- started{n, err}
		}()
	}
	nodes := map[string]*node.Node{}
	for range 3 {
		r := <-results
		if r.err != nil {
			t.Fatalf("whole-cluster restore: %v", r.err)
		}
		nodes[r.n.Name()] = r.n
		t.Cleanup(func() { r.n.Close() })
	}
	addrs := []string{nodes["n1"].Addr(), nodes["n2"].Addr(), nodes["n3"].Addr()}
	rc, err := client.Dial(ctx, addrs)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	for s := range 8 {
		stream := fmt.Sprintf("w-%d", s)
		var got []uint64
		for ev, err := range rc.Read(ctx, stream) {
			if err != nil {
				t.Fatalf("read %s from the restored cluster: %v", stream, err)
			}
			got = append(got, ev.Version)
		}
		if !slices.Equal(got, []uint64{0, 1, 2}) {
			t.Fatalf("%s in the restored cluster: versions %v, want 0..2", stream, got)
		}
	}
	// The restored cluster goes on; n3 ran in it, so its backup of the restore's moment is
	// refused now.
	appendSome(t, ctx, rc, "later", 8, 2)
	rc.Close()
	if err := nodes["n3"].Close(); err != nil {
		t.Fatal(err)
	}
	again := restored[2]
	again.DataDir = restoreCopy(t, paths[2])
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = node.Start(sctx, again)
	scancel()
	if !errors.Is(err, node.ErrRestoreUnsafe) {
		t.Fatalf("second restore of n3 after it ran in the restored cluster: %v, want ErrRestoreUnsafe", err)
	}
	for _, n := range nodes {
		n.Close()
	}

	// Backups of different moments: n1's early one and n2's idle one refuse each other (or one
	// refuses, and the other, left alone, waits for its peers until its deadline).
	errs := make(chan error, 2)
	for i, path := range []string{info1.Path, paths[1]} {
		cfg := restored[i]
		cfg.DataDir = restoreCopy(t, path)
		go func() {
			sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
			defer scancel()
			n, err := node.Start(sctx, cfg)
			if n != nil {
				n.Close()
			}
			errs <- err
		}()
	}
	e1, e2 := <-errs, <-errs
	unsafe := func(err error) bool {
		return errors.Is(err, node.ErrRestoreUnsafe) && strings.Contains(err.Error(), "node inspect")
	}
	if !unsafe(e1) && !unsafe(e2) || !unsafe(e1) && !errors.Is(e1, context.DeadlineExceeded) || !unsafe(e2) && !errors.Is(e2, context.DeadlineExceeded) {
		t.Fatalf("restores of backups of two moments: %v; %v; want ErrRestoreUnsafe naming node inspect", e1, e2)
	}
}

package node

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/lockedbuf"
	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/internal/testaddr"
)

// TestRestartWithForeignSeed: a node of a cluster restarted with a seed that now belongs to
// another cluster (its address reused by a new cluster) and another that does not answer
// starts alone, to rejoin when its peers return, instead of refusing to start. With every seed
// another cluster's (a --join pointing elsewhere), it refuses, naming the cause.
func TestRestartWithForeignSeed(t *testing.T) {
	other := testConfig(t, t.TempDir())
	other.Name = "other"
	foreign := startNode(t, other) // a cluster of its own

	dir := t.TempDir()
	cfg := testConfig(t, dir)
	n := startNode(t, cfg)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	cfg.Join = []string{foreign.cfg.Gossip, testaddr.Gossip(t)} // the second: nobody there
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("restart with one foreign seed and one down: %v", err)
	}
	waitReady(t, n)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	cfg.Join = []string{foreign.cfg.Gossip}
	if n, err := Start(ctx, cfg); !errors.Is(err, membership.ErrClusterMismatch) {
		if err == nil {
			n.Close()
		}
		t.Fatalf("restart with every seed another cluster's: %v, want ErrClusterMismatch", err)
	}
}

// TestJoinRefusedAfterInterruptedBootstrap: a node that stopped while creating a cluster (its
// shard groups written, not yet cluster.json) refuses to join another with --join: it would
// reopen its own one-voter groups beside the cluster's.
func TestJoinRefusedAfterInterruptedBootstrap(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	n := startNode(t, cfg)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, clusterFile)); err != nil { // as if it stopped before writing it
		t.Fatal(err)
	}
	cfg.Join = []string{testaddr.Gossip(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := Start(ctx, cfg); !errors.Is(err, ErrConfigConflict) || !strings.Contains(err.Error(), "start it without --join") {
		if err == nil {
			n.Close()
		}
		t.Fatalf("joining with an interrupted bootstrap's groups: %v, want ErrDataDirMismatch", err)
	}
}

// TestJoinWithAnotherGossipKey: a new node whose gossip key is not its seeds' is refused at
// once, naming the key, rather than retried as unreachable for JoinTimeout.
func TestJoinWithAnotherGossipKey(t *testing.T) {
	seed := testConfig(t, t.TempDir())
	seed.Name = "seed"
	seed.GossipKey = []byte("0123456789abcdef")
	s := startNode(t, seed)

	cfg := testConfig(t, t.TempDir())
	cfg.GossipKey = []byte("fedcba9876543210")
	cfg.Join = []string{s.cfg.Gossip}
	cfg.JoinTimeout = 10 * time.Second // retried as unreachable, it would end in ErrJoinTimeout
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err == nil {
		n.Close()
	}
	if !errors.Is(err, membership.ErrGossipKey) || !strings.Contains(err.Error(), "--gossip-key-file") {
		t.Fatalf("join with another gossip key: %v, want ErrGossipKey naming --gossip-key-file", err)
	}
}

// TestRestartBeforePeersLogsInfo: a node restarted without --join while the peers it last saw
// are down (a cluster restarted, this node up first, as `shoal dev` starts its nodes) starts
// alone and says so at Info, naming them: nothing is wrong. With --join seeds that do not
// answer it warns.
func TestRestartBeforePeersLogsInfo(t *testing.T) {
	c1, c2 := testConfig(t, t.TempDir()), testConfig(t, t.TempDir())
	c1.Name, c2.Name, c2.Zone = "n1", "n2", "z2"
	c2.Shards, c2.Replication, c2.Join = 0, 0, []string{c1.Gossip}
	n1 := startNode(t, c1)
	n2 := startNode(t, c2)
	deadline := time.Now().Add(20 * time.Second)
	saved := func() bool { p, err := n1.dir.peers(); return err == nil && len(p) > 0 }
	for len(n1.gossip().Members()) < 2 || !saved() {
		if time.Now().After(deadline) {
			t.Fatal("n1 never saw n2 (or saved it)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	n2.Close()
	n1.Close()

	for _, tc := range []struct {
		join []string
		want string
	}{
		{nil, `level=INFO msg="none of the peers this node last saw alive answers yet; starting alone and joining them once they are up"`},
		{[]string{testaddr.Gossip(t)}, `level=WARN msg="no seed reachable; starting alone and retrying in the background"`},
	} {
		var log lockedbuf.Buffer
		cfg := c1
		cfg.Join = tc.join
		cfg.Logger = slog.New(slog.NewTextHandler(&log, nil))
		n := startNode(t, cfg)
		n.Close()
		if !strings.Contains(log.String(), tc.want) {
			t.Errorf("restart with --join %v, its peers down: want %s in:\n%s", tc.join, tc.want, log.String())
		}
	}
}

package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/internal/testaddr"
)

// TestDataDirMode: a data directory the node creates is its owner's alone (it holds every event
// of the node's replicas, in files Pebble creates readable by all), its missing parents are
// created as mkdir -p creates them, and a directory that exists keeps the mode its operator gave.
func TestDataDirMode(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "srv", "shoal")
	d, err := openDataDir(dir, "n1", "host")
	if err != nil {
		t.Fatal(err)
	}
	defer d.unlock()
	snaps, err := d.resetSnapshots()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, snaps: 0o700, filepath.Join(dir, lockFile): 0o600} {
		if fi, err := os.Stat(path); err != nil {
			t.Fatal(err)
		} else if got := fi.Mode().Perm(); got&0o077 != 0 || got&want != want {
			t.Errorf("%s: mode %v, want %v", path, got, os.FileMode(want))
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "srv")); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm()&0o005 == 0 {
		t.Errorf("parent %s: mode %v, want it traversable as mkdir -p makes it", fi.Name(), fi.Mode().Perm())
	}

	shared := filepath.Join(root, "shared")
	if err := os.Mkdir(shared, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o750); err != nil { // whatever the umask
		t.Fatal(err)
	}
	d2, err := openDataDir(shared, "n2", "host")
	if err != nil {
		t.Fatal(err)
	}
	defer d2.unlock()
	if fi, err := os.Stat(shared); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm() != 0o750 {
		t.Errorf("existing directory's mode changed to %v, want 0750 kept", fi.Mode().Perm())
	}
}

func TestRestartKeepsDataAndID(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	n := startNode(t, cfg)
	id := n.ID()
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: fmt.Sprintf("s-%d", i), Events: events("A", "B")}); err != nil {
			t.Fatal(err)
		}
	}
	settings := n.Settings()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil { // idempotent
		t.Fatal(err)
	}

	cfg.Gossip = testaddr.Gossip(t)
	n2 := startNode(t, cfg)
	if n2.ID() != id || n2.Settings() != settings {
		t.Fatalf("after restart: id %d (was %d), settings %v (were %v)", n2.ID(), id, n2.Settings(), settings)
	}
	c2 := shoalv1.NewStreamsClient(dial(t, n2.Addr()))
	for i := range 20 {
		got, err := readAll(ctx, c2, &shoalv1.ReadRequest{Stream: fmt.Sprintf("s-%d", i)})
		if err != nil || len(got) != 2 {
			t.Fatalf("stream %d after restart: %d events, %v", i, len(got), err)
		}
	}
	r, err := c2.Append(ctx, &shoalv1.AppendRequest{Stream: "s-0", Expected: exact(1), Events: events("C")})
	if err != nil || r.FirstVersion != 2 {
		t.Fatalf("append after restart: %v, %v", r, err)
	}
}

func TestDataDirRefusals(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	n := startNode(t, cfg)

	second := testConfig(t, dir)
	if _, err := Start(context.Background(), second); !errors.Is(err, ErrDataDirLocked) {
		t.Fatalf("second Start on a locked dir: %v", err)
	} else {
		t.Log(err)
	}
	n.Close()

	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"shards", func(c *Config) { c.Shards = 8 }},
		{"replication", func(c *Config) { c.Replication = 3 }},
		{"name", func(c *Config) { c.Name = "other" }},
	} {
		c := testConfig(t, dir)
		tc.mod(&c)
		_, err := Start(context.Background(), c)
		if !errors.Is(err, ErrDataDirMismatch) || !errors.Is(err, ErrConfigConflict) {
			t.Fatalf("%s mismatch: %v", tc.name, err)
		}
		t.Log(err)
	}
	// A directory with a node's state but without its identity file is refused: a new
	// node ID would run the old raft state as another member.
	if err := os.Rename(filepath.Join(dir, identityFile), filepath.Join(dir, "identity.saved")); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(context.Background(), testConfig(t, dir)); !errors.Is(err, ErrDataDirMismatch) || errors.Is(err, ErrConfigConflict) ||
		!strings.Contains(err.Error(), "no identity.json") {
		t.Fatalf("Start without identity.json: %v", err)
	}
	if err := os.Rename(filepath.Join(dir, "identity.saved"), filepath.Join(dir, identityFile)); err != nil {
		t.Fatal(err)
	}
	// A directory whose Pebble directory is gone lost its raft state: the node must not rejoin
	// its shards under its old ID with empty logs.
	if err := os.Rename(filepath.Join(dir, pebbleDir), filepath.Join(dir, "pebble.saved")); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(context.Background(), testConfig(t, dir)); !errors.Is(err, ErrDataDirMismatch) || errors.Is(err, ErrConfigConflict) ||
		!strings.Contains(err.Error(), "raft state is lost") {
		t.Fatalf("Start without %s: %v", pebbleDir, err)
	}
	// So did one whose Pebble directory is there but empty (a volume that did not mount, a
	// wiped one): Pebble would have created an empty store in it.
	if err := os.Mkdir(filepath.Join(dir, pebbleDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(context.Background(), testConfig(t, dir)); !errors.Is(err, ErrDataDirMismatch) || errors.Is(err, ErrConfigConflict) ||
		!strings.Contains(err.Error(), "raft state is lost") || !strings.Contains(err.Error(), "an empty pebble directory") {
		t.Fatalf("Start with an empty %s: %v", pebbleDir, err)
	}
	if err := os.RemoveAll(filepath.Join(dir, pebbleDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "pebble.saved"), filepath.Join(dir, pebbleDir)); err != nil {
		t.Fatal(err)
	}
	// Zero shards/replication accept the stored cluster's.
	c := testConfig(t, dir)
	c.Shards, c.Replication, c.Name = 0, 0, ""
	n2 := startNode(t, c)
	if s := n2.Settings(); s.Shards != 4 || s.Replication != 1 || n2.Name() != "solo" {
		t.Fatalf("settings %v name %q", s, n2.Name())
	}
}

// TestCopiedDataDirRefused: a copy of a node's data directory started beside it (same name and
// raft ID, another address) is refused once Config.JoinTimeout has passed without the
// original being declared dead, before it opens any shard: two processes with one raft
// identity can vote twice in a term.
func TestCopiedDataDirRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	startNode(t, cfg).Close()
	copyDir := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	startNode(t, cfg)

	cc := testConfig(t, copyDir)
	cc.Join, cc.JoinTimeout = []string{cfg.Gossip}, 2*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Start(ctx, cc)
	if err == nil {
		n.Close()
	}
	if !errors.Is(err, membership.ErrIdentityInUse) {
		t.Fatalf("Start of a copy of a running node's data directory: %v", err)
	}
	t.Log(err)
}

package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestBackupCLI: shoal node backup writes a backup under the node's --backup-dir and says
// where, and refuses a taken name or an unknown node with the usage exit.
func TestBackupCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	dir := t.TempDir()
	n := startNodeWith(t, func(c *node.Config) { c.BackupDir = dir })
	env := map[string]string{"SHOAL_SERVER": n.Addr()}
	run := cliRunner(t, env)
	run(exitOK, "append", "bk-1", "--type", "Step")
	want := filepath.Join(dir, "nightly")
	if out := run(exitOK, "node", "backup", "e2e", "--name", "nightly"); !strings.Contains(out, "backup of e2e written to "+want) {
		t.Fatalf("node backup: %q", out)
	}
	if m, err := filepath.Glob(filepath.Join(want, "pebble", "MANIFEST-*")); err != nil || len(m) == 0 {
		t.Fatalf("the backup holds no Pebble store: %v, %v", m, err)
	}
	if out := run(exitUsage, "node", "backup", "e2e", "--name", "nightly"); !strings.Contains(out, "choose another --name") {
		t.Fatalf("node backup of a taken name: %q", out)
	}
	run(exitUsage, "node", "backup", "e2e", "--name", "a/b")
	run(exitUsage, "node", "backup", "nobody")
	if out := run(exitOK, "node", "backup", "e2e"); !strings.Contains(out, filepath.Join(dir, "e2e-")) {
		t.Fatalf("node backup without --name: %q", out)
	}
}

// TestClusterBackupCLI: shoal cluster backup backs every node up under one name, each into its
// own --backup-dir (through the one --server given), and reports a node whose backup is
// refused while the others go on.
func TestClusterBackupCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	c := testnode.Start(t, 3, testnode.Options{Shards: 2, Replication: 3, Configure: func(i int, cfg *node.Config) {
		cfg.BackupDir = dirs[i]
	}})
	testnode.WaitFor(t, 30*time.Second, "every shard on three voters", func() string {
		shards := c.Shards()
		for sh := range uint32(2) {
			if s, ok := shards[sh]; !ok || len(s.Voters) != 3 {
				return fmt.Sprintf("shard %d: %v", sh, s)
			}
		}
		return ""
	})
	run := cliRunner(t, map[string]string{"SHOAL_SERVER": c.Nodes[0].Addr()})
	run(exitOK, "node", "backup", "n2", "--name", "taken")
	out := run(exitOK, "cluster", "backup", "--name", "nightly")
	for i, name := range []string{"n1", "n2", "n3"} {
		if !strings.Contains(out, "backup of "+name+" written to "+filepath.Join(dirs[i], "nightly")) {
			t.Fatalf("cluster backup: %q, want %s's backup in %s", out, name, dirs[i])
		}
	}
	out = run(exitError, "cluster", "backup", "--name", "taken")
	if strings.Count(out, " written to ") != 2 || !strings.Contains(out, `backup "taken" is missing on n2 (above)`) {
		t.Fatalf("cluster backup with n2's name taken: %q, want n1's and n3's written, n2 reported", out)
	}

	// n3 stopped: it holds replicas, so the command reports it and fails, the others backed up.
	c.Stop(t, 2)
	env := map[string]string{"SHOAL_SERVER": c.Nodes[0].Addr()}
	testnode.WaitFor(t, 20*time.Second, "n3 reported down", func() string {
		code, out, errOut := runCLI(t, env, "", "cluster", "backup", "--name", fmt.Sprintf("down-%d", time.Now().UnixNano()))
		if code != exitError || !strings.Contains(out, "n3 is down: no backup") || strings.Count(out, " written to ") != 2 {
			return fmt.Sprintf("exit %d: %s%s", code, out, errOut)
		}
		return ""
	})
}

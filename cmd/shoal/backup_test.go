package main

import (
	"path/filepath"
	"strings"
	"testing"

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

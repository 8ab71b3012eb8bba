package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// TestInspectCLI inspects two backups of one node taken an append apart: each shows its
// replicas, and the comparison finds the first behind in the appended stream's shard only. The
// running node's own directory is refused, as are no directory and one that holds no node.
func TestInspectCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	backups := t.TempDir()
	var data string
	n := startNodeWith(t, func(c *node.Config) {
		c.BackupDir, data = backups, c.DataDir
		c.PlacementInterval = -1 // no format raise between the backups: they differ by one append only
	})
	run := cliRunner(t, map[string]string{"SHOAL_SERVER": n.Addr()})
	run(exitOK, "append", "insp-1", "--type", "A")
	run(exitOK, "node", "backup", "e2e", "--name", "before")
	run(exitOK, "append", "insp-1", "--type", "B")
	run(exitOK, "node", "backup", "e2e", "--name", "after")
	before, after := filepath.Join(backups, "before"), filepath.Join(backups, "after")
	behind := ring.ShardOf("insp-1", 4)

	out := run(exitOK, "node", "inspect", before, after)
	for _, want := range []string{
		before + ": node e2e (", ", cluster " + n.Settings().ClusterID + ": 4 shards, replication 1",
		"note: a backup (backup.json): a server starts on it only with --restore",
		"SHARD  ROLE   TERM  COMMIT  APPLIED",
		"for --new-cluster (cluster " + n.Settings().ClusterID + "), the shards in which each directory applied the most:",
		"  " + before + ": furthest in 3 of 4; behind in " + strconv.FormatUint(uint64(behind), 10) + " (by 1 entry)\n",
		"  " + after + ": furthest in 4 of 4\n",
		// A one-node cluster's backup: restored as it is, not made a new cluster.
		"  " + after + " is furthest in every shard and holds every voter of every shard, the whole cluster: " +
			"restore it: start it with --restore (or with --restore --new-cluster, as a new cluster)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(before, "pebble", "LOCK")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("inspect left a lock file in the backup (%v): it must change nothing", err)
	}
	if got := len(regexp.MustCompile(`(?m)^\d+ +voter +\d+`).FindAllString(out, -1)); got != 8 {
		t.Errorf("%d voter rows, want 4 per directory:\n%s", got, out)
	}

	var doc struct {
		Dirs []struct {
			Name     string `json:"name"`
			NodeID   string `json:"node_id"`
			Replicas []struct {
				Shard        uint32 `json:"shard"`
				Role         string `json:"role"`
				LastPosition uint64 `json:"last_position"`
			} `json:"replicas"`
		} `json:"dirs"`
		Clusters []struct {
			Survivors []struct {
				Dir    string `json:"dir"`
				Behind []struct {
					Shard uint32 `json:"shard"`
				} `json:"behind"`
			} `json:"survivors"`
		} `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(run(exitOK, "node", "inspect", before, after, "--json")), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Dirs) != 2 || doc.Dirs[1].Name != "e2e" || len(doc.Dirs[1].Replicas) != 4 || len(doc.Clusters) != 1 ||
		len(doc.Clusters[0].Survivors) != 2 || len(doc.Clusters[0].Survivors[0].Behind) != 1 || doc.Clusters[0].Survivors[0].Behind[0].Shard != behind {
		t.Fatalf("--json: %+v", doc)
	}
	for _, r := range doc.Dirs[1].Replicas {
		if r.Shard == behind && (r.Role != "voter" || r.LastPosition != 2) {
			t.Errorf("--json, shard %d after both appends: %+v", behind, r)
		}
	}

	if out := run(exitError, "node", "inspect", data); !strings.Contains(out, "a node runs on it") {
		t.Errorf("inspect of the running node's directory: %q", out)
	}
	// A directory that cannot be read fails the command, and the others are still shown.
	if out := run(exitError, "node", "inspect", t.TempDir(), before); !strings.Contains(out, "holds no node") ||
		!strings.Contains(out, before+": node e2e (") {
		t.Errorf("inspect of an empty directory and a backup: %q", out)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	if out := run(exitError, "node", "inspect", missing); !strings.Contains(out, "stat "+missing+": no such file or directory") {
		t.Errorf("inspect of a directory that does not exist: %q", out)
	}
	run(exitUsage, "node", "inspect")
}

package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/ring"
)

// TestReadShard: `shoal read-shard` prints a shard's log in position order, the deletes too
// with --deletes, as text and as JSON, and refuses a bad shard or position.
func TestReadShard(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	n := startNode(t)
	c := dialNode(t, n)
	testnode.WaitMaxFormat(t, c, 20*time.Second)
	env := map[string]string{"SHOAL_SERVER": n.Addr()}
	run := cliRunner(t, env)
	run(exitOK, "append", "rs-1", "--type", "Placed", "--data", `{"n":1}`, "--expected", "no-stream")
	run(exitOK, "delete", "rs-1", "--expected", "0")
	run(exitOK, "append", "rs-1", "--type", "Placed", "--data", `{"n":2}`, "--expected", "0")
	sh := fmt.Sprint(ring.ShardOf("rs-1", 4))

	lines := strings.Split(strings.TrimSpace(run(exitOK, "read-shard", sh, "--deletes")), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "0  rs-1@0  Placed") ||
		!strings.HasPrefix(lines[1], "1  rs-1@0  soft delete") || !strings.HasPrefix(lines[2], "2  rs-1@1  Placed") {
		t.Fatalf("read-shard --deletes:\n%s", strings.Join(lines, "\n"))
	}
	// Every shard at once, filtered to this test's stream.
	all := strings.Split(strings.TrimSpace(run(exitOK, "read-all", "--deletes", "--stream-prefix", "rs-")), "\n")
	if len(all) != 3 || !strings.HasPrefix(all[0], sh+":0  rs-1@0  Placed") || !strings.HasPrefix(all[2], sh+":2  rs-1@1  Placed") {
		t.Fatalf("read-all --deletes --stream-prefix rs-:\n%s", strings.Join(all, "\n"))
	}
	if out := run(exitUsage, "read-all", "--from", "3"); !strings.Contains(out, "positions are per shard") {
		t.Fatalf("read-all --from 3: %s", out)
	}
	// Filters: by stream prefix (deletes too) and by event type (not deletes).
	if out := run(exitOK, "read-shard", sh, "--deletes", "--stream-prefix", "other-"); out != "" {
		t.Fatalf("read-shard --stream-prefix other-: %q, want nothing", out)
	}
	if out := run(exitOK, "read-shard", sh, "--deletes", "--stream-prefix", "rs-", "--type", "Paid", "--type", "Shipped"); strings.Count(out, "\n") != 1 ||
		!strings.HasPrefix(out, "1  rs-1@0  soft delete") {
		t.Fatalf("read-shard --type Paid,Shipped --deletes:\n%s", out)
	}
	if out := run(exitOK, "read-shard", sh); strings.Contains(out, "delete") || strings.Count(out, "\n") != 2 {
		t.Fatalf("read-shard without --deletes:\n%s", out)
	}
	if out := run(exitOK, "read-shard", sh, "--from", "1", "--count", "1", "--deletes", "--json"); !strings.Contains(out, `"deletion":"soft delete"`) ||
		strings.Count(out, "\n") != 1 {
		t.Fatalf("read-shard --json:\n%s", out)
	}
	// A position typed past the end: the way on, not only the restore it could also mean.
	if out := run(exitError, "read-shard", sh, "--from", "50"); !strings.Contains(out, "shard "+sh+" ends before position 50 "+
		"(its next entry takes position 3): read from 3 or before, or --from end") {
		t.Fatalf("read-shard --from 50: %s", out)
	}
	if out := run(exitUsage, "read-shard", "x"); !strings.Contains(out, "SHARD must be a shard number") {
		t.Fatalf("bad shard: %s", out)
	}
	if out := run(exitUsage, "read-shard", "99"); !strings.Contains(out, "shard") {
		t.Fatalf("out-of-range shard: %s", out)
	}
	// --from is spelled as read's: any case, surrounding spaces ignored.
	for _, end := range []string{"end", "End", " END"} {
		if out := run(exitOK, "read-shard", sh, "--from", end); out != "" {
			t.Fatalf("read-shard --from %q printed %q, want nothing (the end)", end, out)
		}
		if out := run(exitOK, "read-all", "--from", end); out != "" {
			t.Fatalf("read-all --from %q printed %q, want nothing (the end)", end, out)
		}
	}
	if out := run(exitOK, "read-shard", sh, "--from", " 0 ", "--count", "1"); out == "" {
		t.Fatal("read-shard --from ' 0 ' printed nothing")
	}
	if out := run(exitUsage, "read-shard", sh, "--from", "last"); !strings.Contains(out, "--from must be a position") {
		t.Fatalf("bad --from: %s", out)
	}
}

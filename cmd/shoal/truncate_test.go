package main

import (
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testnode"
)

// TestTruncateCLI: shoal truncate removes a stream's first events, says where the stream now
// starts, keeps the last event of a live stream, and refuses what it must with the usage exit.
func TestTruncateCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	n := startNode(t)
	testnode.WaitMaxFormat(t, dialNode(t, n), 20*time.Second)
	env := map[string]string{"SHOAL_SERVER": n.Addr()}
	run := cliRunner(t, env)
	for range 4 {
		run(exitOK, "append", "tr-1", "--type", "Step")
	}
	run(exitUsage, "truncate", "tr-1")
	run(exitUsage, "truncate", "tr-1", "--before", "soon")
	if out := run(exitUsage, "truncate", "tr-1", "--before", "2", "--expected", "no-stream"); !strings.Contains(out, "does not apply to truncate") {
		t.Fatalf("truncate --expected no-stream: %q", out)
	}
	// However it is spelt (as parseExpected reads it), the refusal names truncate.
	if out := run(exitUsage, "truncate", "tr-1", "--before", "2", "--expected", " No-Stream"); !strings.Contains(out, "does not apply to truncate") {
		t.Fatalf("truncate --expected ' No-Stream': %q", out)
	}
	run(exitConflict, "truncate", "tr-1", "--before", "2", "--expected", "2")
	if out := run(exitOK, "truncate", "tr-1", "--before", "2", "--expected", "3"); !strings.Contains(out, "truncated tr-1: it now starts at version 2") {
		t.Fatalf("truncate --before 2: %q", out)
	}
	if out := run(exitOK, "read", "tr-1"); strings.Count(out, "\n") != 2 || !strings.HasPrefix(out, "tr-1@2") {
		t.Fatalf("read after truncating before 2: %q", out)
	}
	if out := run(exitError, "read", "tr-1", "--whole-history"); !strings.Contains(out, "truncated before version 2") {
		t.Fatalf("read --whole-history from 0 after truncating before 2: %q", out)
	}
	if out := run(exitOK, "read", "tr-1", "--whole-history", "--from", "2"); strings.Count(out, "\n") != 2 {
		t.Fatalf("read --whole-history from 2: %q", out)
	}
	run(exitUsage, "read", "tr-1", "--whole-history", "--backward")
	if out := run(exitOK, "truncate", "tr-1", "--before", "all"); !strings.Contains(out, "now starts at version 3") {
		t.Fatalf("truncate --before all of a live stream: %q, want the last event kept", out)
	}
	run(exitNotFound, "truncate", "nobody-here", "--before", "1")
}

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testnode"
)

// TestTruncateCLI: shoal truncate removes a stream's first events, says where the stream now
// starts (for a deleted stream: which of its hidden events are left), keeps the last event of a
// live stream, and refuses what it must with the usage exit.
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

	// A live stream whose earlier versions a soft delete hid: a truncation below its start
	// says which of them are left.
	for range 4 {
		run(exitOK, "append", "tr-hid", "--type", "Step")
	}
	run(exitOK, "delete", "tr-hid")
	run(exitOK, "append", "tr-hid", "--type", "Step")
	want := "truncated tr-hid: it starts at version 4; versions before 2 are gone, and it still holds 2 events a delete hid " +
		"(versions 2 to 3), which --before 4 removes"
	if out := run(exitOK, "truncate", "tr-hid", "--before", "2"); !strings.Contains(out, want) {
		t.Fatalf("truncate --before 2 of a live stream with hidden events: %q, want %q", out, want)
	}
	if out := run(exitOK, "truncate", "tr-hid", "--before", "4"); !strings.Contains(out, "truncated tr-hid: it now starts at version 4 (the events before it are gone)") {
		t.Fatalf("truncate --before 4 of a live stream with hidden events: %q", out)
	}

	// A deleted stream's start is past its last version: what a truncation left of it is its
	// hidden events, which the output and stream-info count from the first one still stored.
	for _, tc := range []struct{ stream, deleteFlag, state string }{
		{"tr-soft", "--expected", "deleted"},
		{"tr-tomb", "--tombstone", "tombstoned"},
	} {
		for range 4 {
			run(exitOK, "append", tc.stream, "--type", "Step")
		}
		args := []string{"delete", tc.stream, tc.deleteFlag}
		if tc.deleteFlag == "--expected" {
			args = append(args, "3")
		}
		run(exitOK, args...)
		want = "truncated " + tc.stream + ": versions before 2 are gone; it is " + tc.state +
			", and still holds 2 hidden events (versions 2 to 3), which --before all removes"
		if out := run(exitOK, "truncate", tc.stream, "--before", "2"); !strings.Contains(out, want) {
			t.Fatalf("truncate --before 2 of a %s stream: %q, want %q", tc.state, out, want)
		}
		if out := run(exitOK, "stream-info", tc.stream); !strings.Contains(out, "truncated      versions before 2 were removed") ||
			!strings.Contains(out, "hidden events  2,") {
			t.Fatalf("stream-info of a %s stream truncated before 2:\n%s", tc.state, out)
		}
		if out := run(exitOK, "stream-info", tc.stream, "--json"); !strings.Contains(out, `"truncated":true,"stored_from":2,"hidden_events":2`) {
			t.Fatalf("stream-info --json of a %s stream truncated before 2:\n%s", tc.state, out)
		}
		if out := run(exitOK, "list-streams", "--deleted", "--prefix", tc.stream); !strings.Contains(out, tc.state+", truncated, 2 hidden") {
			t.Fatalf("list-streams of a %s stream truncated before 2:\n%s", tc.state, out)
		}
		want = "truncated " + tc.stream + ": it is " + tc.state + ", and every event it held is gone"
		if out := run(exitOK, "truncate", tc.stream, "--before", "all"); !strings.Contains(out, want) {
			t.Fatalf("truncate --before all of a %s stream: %q, want %q", tc.state, out, want)
		}
		if out := run(exitOK, "stream-info", tc.stream); !strings.Contains(out, "truncated  every event was removed") {
			t.Fatalf("stream-info of a %s stream truncated before all:\n%s", tc.state, out)
		}
	}
}

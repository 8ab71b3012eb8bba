package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testnode"
)

// TestListStreamsCLI: list-streams prints the streams in name order as a table or JSON lines,
// by prefix, after a name, up to a count, with the deleted ones when asked; stream-info prints
// one stream's state; both refuse bad input with the usage exit.
func TestListStreamsCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	n := startNode(t)
	testnode.WaitMaxFormat(t, dialNode(t, n), 20*time.Second)
	run := cliRunner(t, map[string]string{"SHOAL_SERVER": n.Addr()})
	for _, s := range []string{"order-2", "order-10", "order-1", "cart-1", "order-1", "order-1"} {
		run(exitOK, "append", s, "--type", "Step")
	}
	run(exitOK, "delete", "cart-1")
	run(exitOK, "truncate", "order-1", "--before", "1")

	out := run(exitOK, "list-streams")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "STREAM") ||
		!strings.HasPrefix(lines[1], "order-1 ") || !strings.Contains(lines[1], "live, truncated") || !strings.Contains(lines[1], "1..2") ||
		!strings.HasPrefix(lines[2], "order-10 ") || !strings.HasPrefix(lines[3], "order-2 ") {
		t.Fatalf("list-streams:\n%s", out)
	}
	if out := run(exitOK, "list-streams", "--deleted", "--count", "2"); !strings.Contains(out, "cart-1") ||
		!strings.Contains(out, "none (deleted at version 0)") || strings.Contains(out, "order-10") {
		t.Fatalf("list-streams --deleted --count 2:\n%s", out)
	}
	out = run(exitOK, "list-streams", "--prefix", "order-", "--after", "order-1", "--json")
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var s struct {
			Stream       string  `json:"stream"`
			State        string  `json:"state"`
			Events       uint64  `json:"events"`
			LastPosition *uint64 `json:"last_position"`
			LastCreated  string  `json:"last_created"`
		}
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("list-streams --json: %q: %v", line, err)
		}
		if s.State != "live" || s.Events != 1 || s.LastPosition == nil || s.LastCreated == "" {
			t.Fatalf("list-streams --json: %q", line)
		}
		got = append(got, s.Stream)
	}
	if fmt.Sprint(got) != "[order-10 order-2]" {
		t.Fatalf("list-streams --prefix order- --after order-1: %q", got)
	}
	if out := run(exitOK, "list-streams", "--prefix", "nothing-"); out != "" {
		t.Fatalf("list-streams of a prefix no stream has: %q, want nothing", out)
	}

	out = run(exitOK, "stream-info", "order-1")
	for _, want := range []string{"state       live", "versions    1..2", "events      2", "truncated   versions before 1 were removed", "last event  at position "} {
		if !strings.Contains(out, want) {
			t.Fatalf("stream-info order-1: no %q in\n%s", want, out)
		}
	}
	if out := run(exitOK, "stream-info", "cart-1", "--json"); !strings.Contains(out, `"state":"deleted"`) || strings.Contains(out, "last_position") {
		t.Fatalf("stream-info cart-1 --json: %q", out)
	}
	if out := run(exitNotFound, "stream-info", "order-"); !strings.Contains(out, "order- does not exist") {
		t.Fatalf("stream-info of a name no stream has: %q", out)
	}

	long := strings.Repeat("p", 513)
	if out := run(exitUsage, "list-streams", "--prefix", long); !strings.Contains(out, "at most 512 bytes") {
		t.Fatalf("list-streams with a 513-byte prefix: %q", out)
	}
	run(exitUsage, "list-streams", "--after", long)
	run(exitUsage, "list-streams", "extra")
	run(exitUsage, "stream-info")
	run(exitUsage, "stream-info", long)
}

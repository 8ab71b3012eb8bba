package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
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

// TestRetainCLI: retain applies a retention policy once to a prefix's streams: --keep-last,
// --max-age, --deleted (the events deletes hid, of deleted and live streams), --dry-run; run
// again it removes nothing; other prefixes are untouched; bad flags are usage errors.
func TestRetainCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	n := startNodeWith(t, func(cfg *node.Config) { cfg.RetentionMinAge = -1 }) // events just appended may go
	testnode.WaitMaxFormat(t, dialNode(t, n), 20*time.Second)
	run := cliRunner(t, map[string]string{"SHOAL_SERVER": n.Addr()})
	appendN := func(stream string, k int) {
		for range k {
			run(exitOK, "append", stream, "--type", "Tick")
		}
	}
	appendN("s-count", 5)
	appendN("s-gone", 2)
	run(exitOK, "delete", "s-gone")
	appendN("s-again", 2)
	run(exitOK, "delete", "s-again")
	appendN("s-again", 1) // versions 0..1 hidden, 2 live
	appendN("other-1", 5)

	if out := run(exitOK, "stream-info", "s-again"); !strings.Contains(out, "hidden events  2, which a delete hid") ||
		!strings.Contains(out, "shoal truncate 's-again' --before 2") {
		t.Fatalf("stream-info of a stream with hidden events:\n%s", out)
	}
	if out := run(exitOK, "stream-info", "s-gone"); !strings.Contains(out, "shoal truncate 's-gone' --before all") {
		t.Fatalf("stream-info of a deleted stream with hidden events:\n%s", out)
	}
	out := run(exitOK, "retain", "--prefix", "s-", "--keep-last", "2", "--deleted", "--dry-run")
	for _, want := range []string{
		"s-again (live): would remove 2 events a delete hid",
		"s-count (live): would remove versions 0..2",
		"s-gone (deleted): would remove 2 events a delete hid",
		"would remove 7 events from 3 streams",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("retain --dry-run: no %q in\n%s", want, out)
		}
	}
	if out := run(exitOK, "stream-info", "s-count"); !strings.Contains(out, "versions    0..4") {
		t.Fatalf("a dry run removed events:\n%s", out)
	}
	if out := run(exitOK, "retain", "--prefix", "s-", "--keep-last", "2", "--deleted"); !strings.Contains(out, "removed 7 events from 3 streams") {
		t.Fatalf("retain:\n%s", out)
	}
	if out := run(exitOK, "retain", "--prefix", "s-", "--keep-last", "2", "--deleted"); !strings.Contains(out, "removed 0 events from 0 streams") ||
		!strings.Contains(out, "--retention-min-age") {
		t.Fatalf("retain again:\n%s", out)
	}
	out = run(exitOK, "list-streams", "--deleted")
	var rows []string // each row's first four columns, one space apart
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, strings.Join(strings.Fields(line)[:4], " "))
	}
	// The events a delete hid are gone too: those streams no longer hold their first versions.
	for _, want := range []string{"s-again live, truncated 2..2", "s-count live, truncated 3..4", "other-1 live 0..4 5", "s-gone deleted, truncated none"} {
		if !slices.Contains(rows, want) {
			t.Fatalf("after retain: no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden") {
		t.Fatalf("hidden events left after retain --deleted:\n%s", out)
	}

	// --max-age: the events older than it, from the first on; a live stream keeps its last.
	appendN("t-age", 3)
	time.Sleep(1500 * time.Millisecond)
	appendN("t-age", 2)
	if out := run(exitOK, "retain", "--prefix", "t-", "--max-age", "1s"); !strings.Contains(out, "t-age (live): removed versions 0..2") {
		t.Fatalf("retain --max-age 1s:\n%s", out)
	}
	time.Sleep(1100 * time.Millisecond)
	if out := run(exitOK, "retain", "--prefix", "t-", "--max-age", "1s"); !strings.Contains(out, "t-age (live): removed versions 3..3") {
		t.Fatalf("retain --max-age 1s of a stream all older:\n%s", out)
	}

	run(exitUsage, "retain", "--keep-last", "2")
	run(exitUsage, "retain", "--prefix", "s-")
	run(exitUsage, "retain", "--prefix", "s-", "--max-age", "-1s")
	if out := run(exitUsage, "retain", "--prefix", "s-", "--max-age", "1500us"); !strings.Contains(out, "whole milliseconds") {
		t.Fatalf("retain --max-age 1500us:\n%s", out)
	}
	run(exitUsage, "retain", "--prefix", "s-", "--keep-last", "x")
}

// TestRetentionCLI: retention set, list and remove; the policy is applied by the server
// (every 100 ms here); usage errors name the flag.
func TestRetentionCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	n := startNodeWith(t, func(cfg *node.Config) { cfg.RetentionInterval, cfg.RetentionMinAge = 100*time.Millisecond, -1 })
	testnode.WaitMaxFormat(t, dialNode(t, n), 20*time.Second)
	run := cliRunner(t, map[string]string{"SHOAL_SERVER": n.Addr()})

	if out := run(exitOK, "retention", "list"); !strings.Contains(out, "no retention policies") {
		t.Fatalf("retention list of none:\n%s", out)
	}
	for _, args := range [][]string{
		{"retention", "set", "--keep-last", "2"},
		{"retention", "set", "--prefix", "s-"},
		{"retention", "set", "--prefix", "s-", "--max-age", "10us"},
		{"retention", "set", "--prefix", "s-", "--max-age", "1500us"},
		{"retention", "remove"},
	} {
		run(exitUsage, args...)
	}
	if out := run(exitUsage, "retention", "set", "--prefix", "$x", "--keep-last", "1"); !strings.Contains(out, "'$'") {
		t.Fatalf("a '$' prefix:\n%s", out)
	}
	for range 5 {
		run(exitOK, "append", "s-count", "--type", "Tick")
	}
	if out := run(exitOK, "retention", "set", "--prefix", "s-", "--keep-last", "2"); !strings.Contains(out, `retention policy set for "s-": keep the last 2`) {
		t.Fatalf("retention set:\n%s", out)
	}
	run(exitOK, "retention", "set", "--prefix", "", "--deleted")
	out := run(exitOK, "retention", "list")
	for _, want := range []string{"every stream ('')", "remove what deletes hid", `"s-"`, "keep the last 2"} {
		if !strings.Contains(out, want) {
			t.Fatalf("retention list: no %q in\n%s", want, out)
		}
	}
	if out := run(exitOK, "retention", "list", "--json"); !strings.Contains(out, `{"prefix":"s-","keep_last":2,"max_age_ms":0,"deleted":false,"set":"`) ||
		!strings.Contains(out, `"shards":4,"of_shards":4,"read_shards":4}`) {
		t.Fatalf("retention list --json:\n%s", out)
	}
	testnode.WaitFor(t, 20*time.Second, "s-count truncated by its policy", func() string {
		if out := run(exitOK, "stream-info", "s-count"); !strings.Contains(out, "versions    3..4") {
			return out
		}
		return ""
	})
	if out := run(exitOK, "retention", "remove", "--prefix", "s-"); !strings.Contains(out, `retention policy removed for "s-"`) {
		t.Fatalf("retention remove:\n%s", out)
	}
	if out := run(exitOK, "retention", "list"); strings.Contains(out, `"s-"`) {
		t.Fatalf("retention list after a removal:\n%s", out)
	}
	if out := run(exitOK, "retention", "remove", "--prefix", "s-"); !strings.Contains(out, `no retention policy for "s-": nothing removed`) {
		t.Fatalf("retention remove of a policy removed already:\n%s", out)
	}
}

// TestWritePoliciesUnread: with shards unread, `retention list` shows a policy held by every
// shard read as such, one held by fewer as incomplete, and JSON says how many shards were read.
func TestWritePoliciesUnread(t *testing.T) {
	ps := []client.RetentionPolicy{
		{Prefix: "a-", KeepLast: 1, Shards: 30, Set: time.Unix(1, 0)},
		{Prefix: "b-", Deleted: true, Shards: 29, Set: time.Unix(1, 0)},
	}
	unread := &client.RetentionUnreadError{Unread: []uint32{4, 9}, Shards: 32, Err: errors.New("no leader")}
	var out strings.Builder
	if err := writePolicies(&out, ps, 32, unread, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"30 of 32 (2 unread)", "29 of 32 (incomplete: set or remove it again)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := writePolicies(&out, ps, 32, nil, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "30 of 32 (incomplete") {
		t.Errorf("every shard read, a policy in 30 of 32 is incomplete:\n%s", out.String())
	}
	out.Reset()
	if err := writePolicies(&out, ps[:1], 32, unread, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"shards":30,"of_shards":32,"read_shards":30}`) {
		t.Errorf("--json:\n%s", out.String())
	}
	out.Reset()
	if err := writePolicies(&out, nil, 32, unread, false); err != nil || !strings.Contains(out.String(), "no retention policies in the 30 of 32 shards read") {
		t.Errorf("none read: %q, %v", out.String(), err)
	}
}

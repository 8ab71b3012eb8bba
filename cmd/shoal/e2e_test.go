package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/lockedbuf"
	"github.com/shoaldb/shoal/node"
)

// startNode starts a one-node cluster in a temporary directory.
// dialNode dials a client to n, closed when t ends.
func dialNode(t *testing.T, n *node.Node) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, []string{n.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func startNode(t *testing.T) *node.Node {
	t.Helper()
	return startNodeWith(t, nil)
}

// startNodeWith is startNode with configure applied to the node's configuration.
func startNodeWith(t *testing.T, configure func(*node.Config)) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.Gossip = "127.0.0.1:0"
	cfg.DisableHTTP = true
	cfg.Name = "e2e"
	cfg.Zone = "z1"
	cfg.Shards = 4
	cfg.Replication = 1
	if configure != nil {
		configure(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	return n
}

func decode(t *testing.T, line string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("not JSON: %q: %v", line, err)
	}
	return m
}

// TestEndToEnd runs the command tree in-process against an in-process node.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	n := startNode(t)
	env := map[string]string{"SHOAL_SERVER": n.Addr()} // --server defaults to it
	cli := func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, env, stdin, args...)
	}
	expect := func(wantCode int, stdin string, args ...string) string {
		t.Helper()
		code, out, errOut := cli(stdin, args...)
		if code != wantCode {
			t.Fatalf("shoal %s: exit %d (stderr %q), want %d", strings.Join(args, " "), code, errOut, wantCode)
		}
		if wantCode != 0 && (strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "shoal: ")) {
			t.Fatalf("shoal %s: stderr %q, want one line", strings.Join(args, " "), errOut)
		}
		return out
	}

	// Append: JSON output, then plain, with exact expected versions.
	out := expect(0, "", "append", "orders-1", "--type", "Placed", "--data", `{"total": 12.5}`, "--metadata", `{"user":"ann"}`, "--expected", "no-stream", "--json")
	m := decode(t, out)
	if m["stream"] != "orders-1" || m["version"] != 0.0 || m["shard"] == nil || m["position"] == nil || m["id"] == "" {
		t.Fatalf("append --json: %v", m)
	}
	out = expect(0, "", "append", "orders-1", "--type", "Paid", "--expected", "0", "--server", n.Addr())
	if !strings.Contains(out, "orders-1 at version 1") || strings.Count(out, "\n") != 1 {
		t.Fatalf("append: %q", out)
	}
	expect(exitConflict, "", "append", "orders-1", "--type", "Paid", "--expected", "0")
	expect(exitConflict, "", "append", "orders-1", "--type", "Paid", "--expected", "no-stream")
	expect(exitConflict, "", "append", "orders-9", "--type", "Paid", "--expected", "exists")
	// Binary data from stdin, then a JSON file.
	expect(0, "raw\x00bytes", "append", "orders-1", "--type", "Blob", "--data", "-")
	file := filepath.Join(t.TempDir(), "ev.json")
	if err := os.WriteFile(file, []byte(`{"from": "file"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	expect(0, "", "append", "orders-1", "--type", "Filed", "--data", "@"+file, "--expected", "2")

	// Idempotency: the same --id twice is one event.
	id := "6f1c1b9e-6d5b-4b7e-9a43-3f1f2a7c0d11"
	m = decode(t, expect(0, "", "append", "orders-1", "--type", "Once", "--id", id, "--json"))
	again := decode(t, expect(0, "", "append", "orders-1", "--type", "Once", "--id", id, "--json"))
	if m["version"] != 4.0 || again["version"] != 4.0 || again["duplicate"] != true {
		t.Fatalf("idempotent append: %v then %v", m, again)
	}
	// The server matches IDs, not content: a duplicate with other content says the stored
	// event stays as it was.
	out = expect(0, "", "append", "orders-1", "--type", "Other", "--data", `{"not":"stored"}`, "--id", id)
	if !strings.HasPrefix(out, "already there: event "+id+" is version 4 of orders-1") || strings.Contains(out, "appended Other") ||
		!strings.Contains(out, "the stored event keeps its own type, data and metadata") {
		t.Fatalf("duplicate with other content: %q", out)
	}

	// Read as JSON lines.
	out = expect(0, "", "read", "orders-1", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("read --json: %d lines:\n%s", len(lines), out)
	}
	first := decode(t, lines[0])
	for _, k := range []string{"stream", "version", "id", "type", "data", "metadata", "created"} {
		if _, ok := first[k]; !ok {
			t.Fatalf("read --json lacks %q: %s", k, lines[0])
		}
	}
	if d, _ := first["data"].(map[string]any); d["total"] != 12.5 || first["type"] != "Placed" || first["data_encoding"] != "json" {
		t.Fatalf("event 0: %s", lines[0])
	}
	if md, _ := first["metadata"].(map[string]any); md["user"] != "ann" {
		t.Fatalf("event 0 metadata: %s", lines[0])
	}
	if _, err := time.Parse(time.RFC3339Nano, first["created"].(string)); err != nil {
		t.Fatalf("created: %v", err)
	}
	blob := decode(t, lines[2])
	if blob["data"] != "cmF3AGJ5dGVz" || blob["data_encoding"] != "base64" {
		t.Fatalf("binary event: %s", lines[2])
	}
	if f := decode(t, lines[3]); f["data"].(map[string]any)["from"] != "file" {
		t.Fatalf("file event: %s", lines[3])
	}

	// Plain, backward, from a version, with a count.
	out = expect(0, "", "read", "orders-1")
	if strings.Count(out, "\n") != 5 || !strings.Contains(out, "orders-1@0") || !strings.Contains(out, `{"total":12.5}`) {
		t.Fatalf("read: %q", out)
	}
	out = expect(0, "", "read", "orders-1", "--backward", "--count", "1")
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "orders-1@4") {
		t.Fatalf("read --backward --count 1: %q", out)
	}
	out = expect(0, "", "read", "orders-1", "--from", "1", "--count", "2")
	if strings.Count(out, "\n") != 2 || !strings.HasPrefix(out, "orders-1@1") || !strings.Contains(out, "orders-1@2") {
		t.Fatalf("read --from 1 --count 2: %q", out)
	}
	out = expect(0, "", "read", "orders-1", "--stale", "--from", "3")
	if strings.Count(out, "\n") != 2 || !strings.HasPrefix(out, "orders-1@3") {
		t.Fatalf("read --stale --from 3: %q", out)
	}
	out = expect(0, "", "read", "orders-1", "--max-staleness", "5s", "--from", "3")
	if strings.Count(out, "\n") != 2 || !strings.HasPrefix(out, "orders-1@3") {
		t.Fatalf("read --max-staleness 5s --from 3: %q", out)
	}
	expect(exitUsage, "", "read", "orders-1", "--max-staleness", "0s")
	expect(exitNotFound, "", "read", "nobody-here")

	// Server-side invalid argument.
	expect(exitUsage, "", "append", "$system", "--type", "X")

	// Delete: wrong version, soft delete, then tombstone.
	expect(exitConflict, "", "delete", "orders-1", "--expected", "9")
	out = expect(0, "", "delete", "orders-1", "--expected", "4")
	if !strings.Contains(out, "deleted orders-1") {
		t.Fatalf("delete: %q", out)
	}
	expect(exitNotFound, "", "read", "orders-1")
	if _, _, msg := cli("", "read", "orders-1"); !strings.Contains(msg, "does not exist or was deleted") || strings.Contains(msg, "check the name") {
		t.Fatalf("read after a soft delete: %q, want no claim that the name is wrong", msg)
	}
	expect(0, "", "append", "orders-2", "--type", "X")
	expect(0, "", "delete", "orders-2", "--tombstone")
	expect(exitNotFound, "", "append", "orders-2", "--type", "X")

	// Cluster status, as tables and as JSON.
	out = expect(0, "", "cluster", "status")
	for _, want := range []string{"NODE", "e2e", "alive", "SHARD", "LEADER", "ok"} {
		if !strings.Contains(out, want) {
			t.Fatalf("cluster status lacks %q:\n%s", want, out)
		}
	}
	st := decode(t, expect(0, "", "cluster", "status", "--json"))
	if st["shard_count"] != 4.0 || len(st["nodes"].([]any)) != 1 || len(st["shards"].([]any)) != 4 {
		t.Fatalf("cluster status --json: %v", st)
	}

	// Decommission, then cancel it: status shows the flag while it is set.
	out = expect(0, "", "node", "decommission", "e2e")
	if !strings.Contains(out, "decommissioning e2e") {
		t.Fatalf("node decommission: %q", out)
	}
	if out = expect(0, "", "cluster", "status"); !strings.Contains(out, "decommissioning") {
		t.Fatalf("cluster status after decommission:\n%s", out)
	}
	if out = expect(0, "", "node", "decommission", "e2e"); !strings.Contains(out, "decommissioning e2e (already, as cluster status showed it)") {
		t.Fatalf("node decommission again: %q", out)
	}
	if out = expect(0, "", "node", "recommission", "e2e"); !strings.Contains(out, "e2e is no longer decommissioning") {
		t.Fatalf("node recommission: %q", out)
	}
	if out = expect(0, "", "node", "recommission", "e2e"); !strings.Contains(out, "e2e was not decommissioning: nothing changed") {
		t.Fatalf("node recommission again: %q", out)
	}
	if out = expect(0, "", "cluster", "status"); strings.Contains(out, "decommissioning") {
		t.Fatalf("cluster status after recommission:\n%s", out)
	}
	expect(exitUsage, "", "node", "recommission", "nobody")

	// A short benchmark through the CLI, with its JSON report.
	report := filepath.Join(t.TempDir(), "bench.json")
	out = expect(0, "", "bench", "append", "--count", "40", "--warmup", "0", "--concurrency", "4",
		"--streams", "8", "--expected", "exact", "--batch", "2", "--json", report)
	if !strings.Contains(out, "appends") || !strings.Contains(out, "latency ms") {
		t.Fatalf("bench append table:\n%s", out)
	}
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	r := decode(t, string(raw))
	if r["ops"] != 40.0 || r["events"] != 80.0 || r["conflicts"] != 0.0 || r["system"].(map[string]any)["name"] != "shoal" {
		t.Fatalf("bench report: %s", raw)
	}
}

// TestUnreachableServer: a --server the CLI cannot reach is named with the cause it can tell,
// each case retried for the CLI's 5 s first (run side by side).
func TestUnreachableServer(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		code, _, errOut := runCLI(t, nil, "", "read", "s", "--server", "127.0.0.1:1")
		if code != exitError || !strings.Contains(errOut, "cannot reach a shoal server at 127.0.0.1:1 (connection refused: nothing listens there)") {
			t.Fatalf("exit %d stderr %q", code, errOut)
		}
	})
	t.Run("resolver down", func(t *testing.T) {
		t.Parallel()
		// A DNS server that does not answer (a UDP port closed at once): the resolver failed,
		// which says nothing of the name, nor that nothing listens at it.
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dns := pc.LocalAddr().String()
		pc.Close()
		server := "dns://" + dns + "/shoal.example:7400"
		code, _, errOut := runCLI(t, nil, "", "read", "s", "--server", server)
		if code != exitError || !strings.Contains(errOut, "at "+server+": its host name could not be resolved: ") ||
			strings.Contains(errOut, "nothing listens there") {
			t.Fatalf("resolver down: exit %d stderr %q", code, errOut)
		}
	})
	t.Run("no address", func(t *testing.T) {
		t.Parallel()
		// A host name that resolves to nothing (.invalid never does, RFC 2606), where this
		// machine's resolver says so at once.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var dnsErr *net.DNSError
		if _, err := net.DefaultResolver.LookupHost(ctx, "shoal.invalid"); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Skipf("the resolver does not answer NXDOMAIN for shoal.invalid (%v)", err)
		}
		code, _, errOut := runCLI(t, nil, "", "read", "s", "--server", "shoal.invalid:7400")
		if code != exitError || !strings.Contains(errOut, "shoal.invalid:7400: its host name resolves to no address") {
			t.Fatalf("unresolvable host: exit %d stderr %q", code, errOut)
		}
	})
}

// TestServerGracefulStop runs `shoal server` in-process and stops it the
// way SIGINT does, by cancelling its context; with --log-format json, every
// line it logs is a JSON object.
func TestServerGracefulStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			serving, stopped := "msg=serving", "msg=stopped"
			if format == "json" {
				serving, stopped = `"msg":"serving"`, `"msg":"stopped"`
			}
			var out, errOut lockedbuf.Buffer
			a := newApp(strings.NewReader(""), &out, &errOut, func(string) string { return "" })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan int, 1)
			go func() {
				done <- a.run(ctx, []string{"server", "--data", t.TempDir(), "--listen", "127.0.0.1:0",
					"--gossip", "127.0.0.1:0", "--http", "off", "--replication", "1", "--shards", "2", "--node", "solo",
					"--log-format", format})
			}()
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(errOut.String(), serving) {
				select {
				case code := <-done:
					t.Fatalf("server exited with %d: %s", code, errOut.String())
				case <-time.After(20 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("server did not start: %s", errOut.String())
				}
			}
			cancel()
			select {
			case code := <-done:
				if code != 0 || !strings.Contains(errOut.String(), stopped) {
					t.Fatalf("exit %d, log:\n%s", code, errOut.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatal("server did not stop")
			}
			if format != "json" {
				return
			}
			for _, line := range strings.Split(strings.TrimSpace(errOut.String()), "\n") {
				if !json.Valid([]byte(line)) {
					t.Fatalf("a log line that is not JSON: %q", line)
				}
			}
		})
	}
}

// TestAppendMetadataFromFile: --metadata takes @FILE, as the hint for metadata that is not
// JSON says; the file may hold any bytes.
func TestAppendMetadataFromFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	n := startNode(t)
	env := map[string]string{"SHOAL_SERVER": n.Addr()}
	code, _, errOut := runCLI(t, env, "", "append", "meta", "--type", "T", "--metadata", "not json")
	if code != exitUsage || !strings.Contains(errOut, "--metadata @FILE") {
		t.Fatalf("exit %d stderr %q: want a usage error that suggests --metadata @FILE", code, errOut)
	}
	dir := t.TempDir()
	for i, content := range []string{`{"user": "ann"}`, "raw\x00bytes"} {
		file := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, _, errOut := runCLI(t, env, "", "append", "meta", "--type", "T", "--metadata", "@"+file); code != exitOK {
			t.Fatalf("append --metadata @FILE: exit %d stderr %q", code, errOut)
		}
	}
	code, out, errOut := runCLI(t, env, "", "read", "meta", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 2 {
		t.Fatalf("read: exit %d stderr %q stdout %q", code, errOut, out)
	}
	if m := decode(t, lines[0]); m["metadata_encoding"] != "json" || m["metadata"].(map[string]any)["user"] != "ann" {
		t.Fatalf("event 0: %s", lines[0])
	}
	if m := decode(t, lines[1]); m["metadata_encoding"] != "base64" || m["metadata"] != base64.StdEncoding.EncodeToString([]byte("raw\x00bytes")) {
		t.Fatalf("event 1: %s", lines[1])
	}
	if code, _, errOut := runCLI(t, env, "", "append", "meta", "--type", "T", "--metadata", "-"); code != exitUsage || !strings.Contains(errOut, "stdin") {
		t.Fatalf("--metadata -: exit %d stderr %q, want a usage error", code, errOut)
	}
}

// TestAppendDiskLow: a node whose disk has less free space than its --min-free-disk (here more
// than any disk has) refuses appends, and `shoal append` says why, naming the flag, that
// nothing was written and that reads go on; the read still works, and `cluster status --check`
// names the node and exits 5.
func TestAppendDiskLow(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	n := startNodeWith(t, func(cfg *node.Config) { cfg.MinFreeDisk = 1 << 60 })
	env := map[string]string{"SHOAL_SERVER": n.Addr()}
	code, _, errOut := runCLI(t, env, "", "append", "s-1", "--type", "T")
	want := fmt.Sprintf("'s 1 voter (%s) has less free space on the data directory's disk than --min-free-disk (this node, %s, has", n.Name(), n.Name())
	if code != exitError || !strings.Contains(errOut, want) || !strings.Contains(errOut, "against its floor of 1.0 EiB; appends resume at 1.1 EiB free)") ||
		!strings.Contains(errOut, "reads, deletes and truncations go on; nothing was written") {
		t.Fatalf("append with the disk below --min-free-disk: exit %d, stderr %q; want %d and %q", code, errOut, exitError, want)
	}
	if code, _, errOut := runCLI(t, env, "", "read", "s-1"); code != exitNotFound {
		t.Fatalf("read after the refused append: exit %d, stderr %q; want %d (nothing written)", code, errOut, exitNotFound)
	}
	code, out, errOut := runCLI(t, env, "", "cluster", "status", "--check")
	if code != exitDegraded || !strings.Contains(errOut, "not ok: 1 node below --min-free-disk (appends refused on ") ||
		!strings.Contains(out, n.Name()+" has less free disk than its --min-free-disk: a shard most of whose voters") ||
		!strings.Contains(out, "refusing appends (disks below --min-free-disk)") || !strings.Contains(out, "ok (appends refused: disks low)") {
		t.Fatalf("cluster status --check with the disk below --min-free-disk: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

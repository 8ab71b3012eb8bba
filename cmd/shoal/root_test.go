package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/bench"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/clusterstatus"
	"github.com/shoaldb/shoal/internal/testaddr"
	"github.com/shoaldb/shoal/node"
)

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code int
		msg  string // substring of the message
	}{
		{"usage", usagef("--count must be a number"), exitUsage, "--count"},
		{"bench config", fmt.Errorf("%w: dist must be uniform or zipf", bench.ErrInvalidConfig), exitUsage, "dist must be"},
		{"flag against the stored cluster", fmt.Errorf("node: open: %w", configConflict("--shards 16 differs from cluster c's 32 shards")),
			exitUsage, "--shards 16 differs from cluster c's 32 shards"},
		{"damaged data directory", fmt.Errorf("%w: d holds a node's pebble but no identity.json", node.ErrDataDirMismatch),
			exitError, "no identity.json"},
		{"corrupt data", fmt.Errorf("cannot start the server: %w (d): pebble: invalid chunk; move it away", node.ErrCorruptData),
			node.ExitCorrupt, "holds corrupt data (d)"},
		{"wrong version", &client.WrongExpectedVersionError{Stream: "s", Expected: client.Exact(2), Actual: 4, StreamExists: true}, exitConflict, "--expected 4"},
		{"wrong version absent", &client.WrongExpectedVersionError{Stream: "s", Expected: client.StreamExists}, exitConflict, "does not exist"},
		{"wrong version deleted", &client.WrongExpectedVersionError{Stream: "s", Expected: client.Exact(1), Actual: 4, StreamDeleted: true}, exitConflict, "continue it with --expected 4"},
		{"wrong version exists", &client.WrongExpectedVersionError{Stream: "s", Expected: client.NoStream, Actual: 0, StreamExists: true}, exitConflict, "already exists"},
		{"not found", fmt.Errorf("%w: %q", client.ErrStreamNotFound, "s"), exitNotFound, `stream "s" was not found: it does not exist or was deleted`},
		{"deleted", fmt.Errorf("%w: %q", client.ErrStreamDeleted, "s"), exitNotFound, "tombstoned"},
		{"invalid", &client.InvalidArgumentError{Field: "stream", Limit: "at most 512 bytes", Reason: "too long"}, exitUsage, "invalid stream: too long (limit: at most 512 bytes)"},
		{"invalid status", status.Error(codes.InvalidArgument, "bad count"), exitUsage, "bad count"},
		{"other status", status.Error(codes.Internal, "disk on fire"), exitError, "disk on fire"},
		{"id conflict", &client.IDConflictError{Stream: "s", ExistingStream: "t", ExistingVersion: 3}, exitError, "new --id"},
		{"unreachable", (&app{}).unreachable(&client.UnavailableError{Err: errors.New("refused")}, "h:1"), exitError, "cannot reach a shoal server at h:1"},
		{"deadline", (&app{}).unreachable(context.DeadlineExceeded, "h:1"), exitError, "cannot reach"},
		{"starting", (&app{}).unreachable(&client.UnavailableError{Err: status.Error(codes.Unavailable,
			"node n2 is starting (joining its cluster, reopening its shards); try another node")}, "h:1"), exitError,
			"the shoal server at h:1 is starting"},
		{"starting, caller's deadline", (&app{}).unreachable(fmt.Errorf("client: %w after %d attempts, last error: %w", context.DeadlineExceeded, 3,
			status.Error(codes.Unavailable, "node n2 is starting (joining its cluster, reopening its shards); try another node")), "h:1"), exitError,
			"the shoal server at h:1 is starting"},
		{"no leader", (&app{}).unreachable(&client.UnavailableError{Err: noLeader(t, 3, 0)}, "h:1"), exitError, "shard 3 has no leader that answers: most of its replicas are down"},
		{"not the leader", (&app{}).unreachable(&client.UnavailableError{Err: noLeader(t, 3, 7)}, "h:1"), exitError, "cannot reach a shoal server at h:1"},
		{"refused at a limit", (&app{}).unreachable(&client.UnavailableError{Err: status.Error(codes.ResourceExhausted,
			"subscription refused: node n1 holds 10 subscriptions, its limit (--max-subscriptions 10); end some")}, "h:1"), exitError,
			"the cluster at h:1 answered, but refused the request at a limit until the retries gave up: subscription refused: node n1 holds 10 subscriptions, its limit (--max-subscriptions 10)"},
		{"other", errors.New("client: boom\nmore"), exitError, "boom; more"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := explain(tc.err)
			if code != tc.code || !strings.Contains(msg, tc.msg) || strings.Contains(msg, "\n") {
				t.Fatalf("explain = %d %q, want %d and a line containing %q", code, msg, tc.code, tc.msg)
			}
		})
	}
}

// runCLI runs the command tree in-process.
// cliRunner returns a function that runs the CLI with env and no stdin, fails t unless it
// exits with want, and returns its stdout and stderr together.
func cliRunner(t *testing.T, env map[string]string) func(want int, args ...string) string {
	return func(want int, args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(t, env, "", args...)
		if code != want {
			t.Fatalf("shoal %s: exit %d (stdout %q, stderr %q), want %d", strings.Join(args, " "), code, out, errOut, want)
		}
		return out + errOut
	}
}

func runCLI(t *testing.T, env map[string]string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := newApp(strings.NewReader(stdin), &out, &errb, func(k string) string { return env[k] })
	code = a.run(context.Background(), args)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"frob"}, "unknown command"},
		{[]string{"node", "backup", "n1", "--timeout", "0s"}, "--timeout must be positive, got 0s"},
		{[]string{"cluster", "backup", "--timeout", "-1m"}, "--timeout must be positive, got -1m0s"},
		{[]string{"append"}, "needs STREAM"},
		{[]string{"append", "s"}, "--type"},
		{[]string{"append", "s", "--type", "T", "--data", "{bad"}, "--data is not valid JSON"},
		{[]string{"append", "s", "--type", "T", "--metadata", "nope"}, "--metadata is not valid JSON"},
		{[]string{"append", "s", "--type", "T", "--data", "@/does/not/exist"}, "cannot read --data file"},
		{[]string{"append", "s", "--type", "T", "--expected", "soon"}, "--expected must be"},
		{[]string{"append", "s", "--type", "T", "--id", "123"}, "--id must be a UUID"},
		// --server: a command that took the nil UUID would fail to reach a server, not start one.
		{[]string{"append", "s", "--type", "T", "--id", "00000000-0000-0000-0000-000000000000", "--server", "127.0.0.1:1"},
			"--id must not be the nil UUID 00000000-0000-0000-0000-000000000000: event IDs are non-zero"},
		{[]string{"append", "s", "--type", "T", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"read", "s", "--from", "middle"}, "--from must be"},
		{[]string{"read", "s", "--count", "-1"}, `--count takes a whole number, 0 or more, got "-1"`},
		{[]string{"list-streams", "--count", "many"}, `--count takes a whole number, 0 or more, got "many"`},
		{[]string{"read", "s", "--follow", "--backward"}, "--follow and --backward exclude each other"},
		{[]string{"read", "s", "-f", "--count", "3"}, "--follow and --count exclude each other"},
		{[]string{"read-shard", "0", "--follow", "--count", "3"}, "--follow and --count exclude each other"},
		{[]string{"delete", "s", "--expected", "no-stream"}, "does not apply to delete"},
		{[]string{"dev", "--nodes", "9"}, "--nodes must be at most 8"},
		{[]string{"dev", "--nodes", "0"}, "--nodes must be at least 1, got 0"},
		{[]string{"read-shard", "-1"}, "-1 is not valid here: shard numbers, counts and versions are 0 or more"},
		{[]string{"read", "s", "--server", "localhost"}, `--server: "localhost" has no port; give a node's gRPC address as host:port`},
		{[]string{"append", "s", "--type", "T", "--server", "http://127.0.0.1:7400"}, `--server: "http://127.0.0.1:7400" is a URL`},
		{[]string{"node", "decommission"}, "needs NAME"},
		{[]string{"node", "recommission", "a", "b"}, `takes NAME; got 2 arguments: "a" "b"`},
		// An unquoted JSON value, split by the shell.
		{[]string{"append", "t", "--type", "T", "--data", `{"a":`, "1}"}, `shoal append takes STREAM; got 2 arguments: "t" "1}" (quote a flag's value that holds spaces`},
		{[]string{"cluster", "frob"}, "unknown command"},
		{[]string{"read", "s", "--max-staleness", "100000h"}, "at most 1193h2m47.295s (about 49 days: 2^32-1 ms), got 100000h0m0s"},
		{[]string{"retention", "set", "--prefix", "x-", "--keep-last", "0"}, "--keep-last 0 and --max-age 0 set no limit"},
		{[]string{"cluster", "set-replication"}, "needs N"},
		{[]string{"cluster", "set-replication", "0"}, `replication factor "0" out of range 1..7`},
		{[]string{"cluster", "set-replication", "three"}, `replication factor "three" out of range 1..7`},
		{[]string{"bench", "append", "--dist", "pareto"}, "dist must be uniform or zipf"},
		{[]string{"bench", "append", "--embedded", "--server", "x:1"}, "exclude each other"},
		{[]string{"bench", "read", "--duration", "1s", "--count", "5"}, "exclude each other"},
		// Every append of such a benchmark was refused: it ran its whole duration, then reported
		// "invalid=68905" and no operation succeeded. --server 127.0.0.1:1: nothing to reach.
		{[]string{"bench", "append", "--stream-prefix", "$sys-", "--duration", "1s", "--warmup", "0", "--server", "127.0.0.1:1"},
			`--stream-prefix "$sys-" makes invalid stream names such as "$sys-9999": starts with '$'`},
		{[]string{"bench", "read", "--stream-prefix", strings.Repeat("p", 512), "--streams", "10", "--server", "127.0.0.1:1"},
			"too long (513 bytes) (limit: 1..512 bytes"},
		{[]string{"server", "--listen", "nope"}, `--listen "nope" is not host:port`},
		// An unset variable in --join "$SEEDS" must not start a cluster of its own.
		{[]string{"server", "--join", ""}, "--join is empty"},
		{[]string{"server", "--join", " , "}, "--join is empty"},
		{[]string{"server", "--http", ""}, `--http is empty: give an address, or "off"`},
		{[]string{"server", "--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`},
		{[]string{"server", "--pprof", "maybe"}, `--pprof "maybe": want "loopback", "on" or "off"`},
		{[]string{"server", "--log-format", "xml"}, `--log-format "xml": want text or json`},
		{[]string{"server", "--data", ""}, "--data is empty"},
		{[]string{"server", "--replication", "9"}, "--replication 9 out of range 1..7"},
		// --listen nope: a server that took the 0 for the default would stop there, not start.
		{[]string{"server", "--shards", "0", "--listen", "nope"}, "--shards 0 out of range 1..4096"},
		{[]string{"server", "--shards", "5000", "--listen", "nope"}, "--shards 5000 out of range 1..4096 (leave it out for 32"},
		{[]string{"server", "--replication", "0", "--listen", "nope"}, "--replication 0 out of range 1..7"},
		{[]string{"server", "--dead-after", "-1s"}, "--dead-after -1s is negative"},
		{[]string{"server", "--dead-after", "0"}, "--dead-after 0s: give a positive duration (leave it out for the default, 1m0s)"},
		{[]string{"server", "--join-timeout", "0s"}, "--join-timeout 0s: give a positive duration (leave it out for the default, 1m0s)"},
		{[]string{"server", "--retention-min-age", "0"}, "--retention-min-age 0s: give a positive duration, or a negative one for no minimum age (leave it out for the default, 1m0s)"},
		{[]string{"server", "--max-sync-duration", "0"}, "--max-sync-duration 0s: give at least 1s, or a negative duration to never exit (leave it out for the default, 20s)"},
		{[]string{"server", "--wal-commit-delay", "1s"}, "--wal-commit-delay 1s out of range 0..100ms"},
		{[]string{"server", "--wal-commit-delay", "-1ms"}, "--wal-commit-delay -1ms out of range 0..100ms"},
		{[]string{"server", "--snapshot-min-free", "10"}, `invalid argument "10" for "--snapshot-min-free" flag: 10 B is below the minimum of 1.0 MiB`},
		{[]string{"server", "--max-snapshot-size", "lots"}, `invalid argument "lots" for "--max-snapshot-size" flag: want a size such as 512MiB, 10GB or 1048576, got "lots"`},
		{[]string{"server", "--join", "127.0.0.1:7401,127.0.0.1:gossip"}, `--join "127.0.0.1:gossip": the port must be 1..65535`},
		{[]string{"server", "--join", "127.0.0.1:99999"}, `--join "127.0.0.1:99999": the port must be 1..65535`},
		{[]string{"server", "--advertise", "0.0.0.0:7400"}, `--advertise "0.0.0.0:7400" is an all-interfaces address`},
		{[]string{"server", "--advertise", ":7400"}, `--advertise ":7400" is an all-interfaces address`},
		{[]string{"server", "--advertise", "127.0.0.1:0"}, `--advertise "127.0.0.1:0": the port must be 1..65535`},
		{[]string{"server", "--listen", "127.0.0.1:7400", "--http", "127.0.0.1:7400"}, `--listen "127.0.0.1:7400" and --http "127.0.0.1:7400" take the same TCP port`},
		{[]string{"server", "--gossip-advertise", "127.0.0.1:0"}, `--gossip-advertise "127.0.0.1:0": the port must be 1..65535`},
		// Gossip metadata that is not UTF-8 crashed the server as it started (no member, itself
		// included, decodes it), after it had written its identity to --data.
		{[]string{"server", "--zone", "z\xff"}, `--zone "z\xff" is not valid UTF-8`},
		{[]string{"server", "--node", "n\xff"}, `--node "n\xff" is not valid UTF-8`},
		{[]string{"server", "--node", "n1 "}, `--node "n1 " begins or ends with a space`},
		{[]string{"server", "--node", "n\n1"}, `--node "n\n1" has a control character at byte 1`},
		{[]string{"server", "--gossip-advertise", "[::]:7401"}, `--gossip-advertise "[::]:7401" is an all-interfaces address`},
		{[]string{"server", "--stream-cache", "0"}, "--stream-cache 0 must be at least 1"},
		{[]string{"server", "--max-subscriptions", "0"}, "--max-subscriptions 0 must be at least 1"},
		{[]string{"server", "--max-long-polls", "0"}, "--max-long-polls 0 must be at least 1"},
		{[]string{"server", "--max-append-pipelines", "0"}, "--max-append-pipelines 0 must be at least 1"},
		{[]string{"server", "--gossip-key-file", "/does/not/exist"}, "cannot read --gossip-key-file"},
		{[]string{"server", "--procs", "-1"}, "--procs must be 0 (twice the CPUs) or more"},
		{[]string{"dev", "--procs", "-2"}, "--procs must be 0 (twice the CPUs) or more"},
		// GOMAXPROCS 100000 ended the process with "fatal error: thread exhaustion".
		{[]string{"server", "--procs", "100000"}, "--procs must be at most 4096, got 100000"},
		{[]string{"dev", "--procs", "4097"}, "--procs must be at most 4096, got 4097"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, nil, "", tc.args...)
			if code != exitUsage || !strings.Contains(errOut, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, exitUsage, tc.msg)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "shoal: ") || strings.Contains(errOut, "Usage:") || out != "" {
				t.Fatalf("want one line on stderr and nothing on stdout, got stderr %q stdout %q", errOut, out)
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	code, out, _ := runCLI(t, nil, "", "version")
	if code != 0 || !strings.HasPrefix(out, "shoal ") || !strings.Contains(out, "go1") {
		t.Fatalf("version: %d %q", code, out)
	}
	code, out, _ = runCLI(t, nil, "", "--help")
	if code != 0 || !strings.Contains(out, "append") || !strings.Contains(out, "bench") {
		t.Fatalf("help: %d %q", code, out)
	}
}

// Each flag's help gives its default once: --node's, which is not a fixed value, in words;
// a client command's --server and TLS files, taken from the environment, as the value.
func TestServerHelpDefaults(t *testing.T) {
	env := map[string]string{"SHOAL_SERVER": "db1:7400", "SHOAL_TLS_CA": "ca.pem"}
	code, out, _ := runCLI(t, env, "", "server", "--help")
	if code != exitOK {
		t.Fatalf("server --help: exit %d", code)
	}
	_, status, _ := runCLI(t, env, "", "cluster", "status", "--help")
	for _, line := range strings.Split(out+status, "\n") {
		if n := strings.Count(line, "default"); n > 1 {
			t.Errorf("%d defaults in %q", n, line)
		}
	}
	if !strings.Contains(status, `from $SHOAL_SERVER when set (default "db1:7400")`) {
		t.Errorf("cluster status --help, $SHOAL_SERVER set:\n%s", status)
	}
	for _, want := range []string{"1..4096, fixed afterwards (default 32)", "1..7 (a cluster with fewer nodes or zones runs under-replicated) (default 3)"} {
		if !strings.Contains(out, want) {
			t.Errorf("server --help lacks %q:\n%s", want, out)
		}
	}
}

func TestParseExpected(t *testing.T) {
	for _, tc := range []struct {
		in       string
		noStream bool
		want     client.ExpectedVersion
		err      bool
	}{
		{"any", true, client.Any, false},
		{"", true, client.Any, false},
		{"no-stream", true, client.NoStream, false},
		{"no-stream", false, client.Any, true},
		{"exists", false, client.StreamExists, false},
		{"EXISTS", true, client.StreamExists, false},
		{"0", true, client.Exact(0), false},
		{"42", false, client.Exact(42), false},
		{"-1", true, client.Any, true},
		{"1.5", true, client.Any, true},
		{"latest", true, client.Any, true},
	} {
		refusedBy := "delete"
		if tc.noStream {
			refusedBy = ""
		}
		got, err := parseExpected(tc.in, refusedBy)
		var ue *usageError
		if tc.err != (err != nil) || (err != nil && !errors.As(err, &ue)) || (!tc.err && got != tc.want) {
			t.Errorf("parseExpected(%q, %v) = %v, %v", tc.in, tc.noStream, got, err)
		}
	}
}

func TestParseData(t *testing.T) {
	dir := t.TempDir()
	jsonFile := filepath.Join(dir, "e.json")
	binFile := filepath.Join(dir, "e.bin")
	if err := os.WriteFile(jsonFile, []byte(`{"a": [1, 2]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(binFile, []byte{0, 1, 2, 0xff}, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		arg, stdin string
		want       string
		json, err  bool
	}{
		{arg: "", want: ""},
		{arg: `{"k":1}`, want: `{"k":1}`, json: true},
		{arg: `[1,2]`, want: `[1,2]`, json: true},
		{arg: `"text"`, want: `"text"`, json: true},
		{arg: `{"k":`, err: true},
		{arg: `plain words`, err: true},
		{arg: "@" + jsonFile, want: `{"a": [1, 2]}`, json: true},
		{arg: "@" + binFile, want: "\x00\x01\x02\xff"},
		{arg: "@" + filepath.Join(dir, "missing"), err: true},
		{arg: "@", err: true},
		{arg: "-", stdin: `{"from":"stdin"}`, want: `{"from":"stdin"}`, json: true},
		{arg: "-", stdin: "not json", want: "not json"},
	} {
		p, err := parseData("--data", tc.arg, strings.NewReader(tc.stdin))
		var ue *usageError
		if tc.err {
			if err == nil || !errors.As(err, &ue) {
				t.Errorf("parseData(%q) = %q, %v; want a usage error", tc.arg, p.bytes, err)
			}
			continue
		}
		if err != nil || string(p.bytes) != tc.want || p.json != tc.json {
			t.Errorf("parseData(%q) = %q json=%v, %v; want %q json=%v", tc.arg, p.bytes, p.json, err, tc.want, tc.json)
		}
	}
}

func TestParseFrom(t *testing.T) {
	for _, tc := range []struct {
		in       string
		backward bool
		want     readFrom
		err      bool
	}{
		{"", false, readFrom{}, false},
		{"", true, readFrom{end: true}, false},
		{"start", true, readFrom{}, false},
		{"end", false, readFrom{end: true}, false},
		{"7", false, readFrom{version: 7}, false},
		{"x", false, readFrom{}, true},
	} {
		got, err := parseFrom(tc.in, tc.backward)
		if tc.err != (err != nil) || got != tc.want {
			t.Errorf("parseFrom(%q, %v) = %+v, %v", tc.in, tc.backward, got, err)
		}
	}
}

func TestGossipKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw := strings.Repeat("k!", 16) // not base64
	if k, err := readGossipKey(write("raw", raw+"\n")); err != nil || string(k) != raw {
		t.Fatalf("raw key: %q %v", k, err)
	}
	if k, err := readGossipKey(write("b64", "MDEyMzQ1Njc4OWFiY2RlZg==\n")); err != nil || string(k) != "0123456789abcdef" {
		t.Fatalf("base64 key: %q %v", k, err)
	}
	if _, err := readGossipKey(write("short", "abc")); err == nil {
		t.Fatal("a 3-byte key must be refused")
	}
}

func TestDevNodeLayout(t *testing.T) {
	c := devNode("d", 2, 3, true)
	if c.Listen != "127.0.0.1:7420" || c.Gossip != "127.0.0.1:7421" || c.HTTP != "127.0.0.1:7482" ||
		c.Zone != "z3" || c.DataDir != filepath.Join("d", "node-2") || len(c.Join) != 1 || c.Join[0] != "127.0.0.1:7401" {
		t.Fatalf("node 2: %+v", c)
	}
	c = devNode("d", 0, 2, true)
	if len(c.Join) != 0 || c.Replication != 2 || c.Zone != "z1" {
		t.Fatalf("node 0: %+v", c)
	}
	// The highest node's ports stay clear of node 0's HTTP port.
	c = devNode("d", maxDevNodes-1, maxDevNodes, true)
	if c.Listen >= "127.0.0.1:7480" || c.HTTP != "127.0.0.1:7487" {
		t.Fatalf("node %d: %+v", maxDevNodes-1, c)
	}
}

func TestServerProcs(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(old)

	if got, _ := serverProcs(3); got != 3 {
		t.Fatalf("--procs 3: GOMAXPROCS %d", got)
	}
	runtime.GOMAXPROCS(old)
	t.Setenv("GOMAXPROCS", strconv.Itoa(old))
	if got, _ := serverProcs(0); got != old {
		t.Fatalf("with $GOMAXPROCS=%d: GOMAXPROCS %d, want it left alone", old, got)
	}
	t.Setenv("GOMAXPROCS", "")
	if got, _ := serverProcs(0); got != 2*old {
		t.Fatalf("default: GOMAXPROCS %d, want twice %d", got, old)
	}
}

// The node table shows a node's state with its flags, and the JSON carries them as fields.
func TestClusterStatusNodeStates(t *testing.T) {
	st := &shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 1, Replication: 3},
		Nodes: []*shoalv1.NodeInfo{
			{Id: 1, Name: "n1", Alive: true},
			{Id: 2, Name: "n2", Alive: true, Stopping: true},
			{Id: 3, Name: "n3", Alive: false, Decommissioning: true, Replicas: 1}, // a voter of shard 0
			{Id: 4, Name: "n4", Alive: true, Decommissioning: true, Replicas: 1},
			{Id: 5, Name: "n5", Alive: true, Decommissioning: true}, // holds nothing: may be stopped
			// drained, then stopped: its last gossip said it was stopping
			{Id: 6, Name: "n6", Alive: false, Decommissioning: true, Stopping: true},
		},
		Shards: []*shoalv1.ShardInfo{{Shard: 0, LeaderId: 1, Voters: []uint64{1, 2, 3}}},
	}}
	s := clusterstatus.New(st)
	var out strings.Builder
	if err := writeTables(&out, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"alive,stopping", "dead,decommissioning", "alive,decommissioning", "alive,drained", "dead,drained "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Count(out.String(), "stopping") != 1 {
		t.Errorf("only n2 is stopping:\n%s", out.String())
	}
	if !s.Nodes[1].Stopping || s.Nodes[0].Stopping || s.Nodes[2].Stopping || s.Nodes[5].Stopping {
		t.Errorf("stopping flags %v %v %v %v, want false true false false", s.Nodes[0].Stopping, s.Nodes[1].Stopping, s.Nodes[2].Stopping, s.Nodes[5].Stopping)
	}
	if !s.Nodes[4].Drained || !s.Nodes[5].Drained || s.Nodes[2].Drained || s.Nodes[3].Drained {
		t.Errorf("drained flags of n3..n6 %v %v %v %v, want false false true true", s.Nodes[2].Drained, s.Nodes[3].Drained, s.Nodes[4].Drained, s.Nodes[5].Drained)
	}
}

// A decommissioning node that no other node can relieve is explained under the node table;
// one that can be relieved, or is down, is not.
func TestClusterStatusStalledDrain(t *testing.T) {
	status := func(nodes ...*shoalv1.NodeInfo) *clusterstatus.Status {
		return clusterstatus.New(&shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
			Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 4, Replication: 3}, Nodes: nodes}})
	}
	n1 := &shoalv1.NodeInfo{Id: 1, Name: "n1", Alive: true, Replicas: 4}
	n2 := &shoalv1.NodeInfo{Id: 2, Name: "n2", Alive: true, Replicas: 4}
	n3 := &shoalv1.NodeInfo{Id: 3, Name: "n3", Alive: true, Decommissioning: true, Replicas: 4}
	n4 := &shoalv1.NodeInfo{Id: 4, Name: "n4", Alive: true}

	s := status(n1, n2, n3)
	var out strings.Builder
	if err := writeTables(&out, s); err != nil {
		t.Fatal(err)
	}
	want := "note: n3 is decommissioning but still holds 4 replicas, which no other node can take yet: " +
		"2 other nodes alive for replication 3; start a node to finish the drain"
	if len(s.Notes) != 1 || !strings.Contains(out.String(), want) {
		t.Errorf("notes %q; table:\n%s", s.Notes, out.String())
	}
	if notes := status(n1, n2, n3, n4).Notes; len(notes) != 0 {
		t.Errorf("a fourth node can take the replicas, yet: %q", notes)
	}
	down := &shoalv1.NodeInfo{Id: 3, Name: "n3", Decommissioning: true, Replicas: 4}
	if notes := status(n1, n2, down).Notes; len(notes) != 0 {
		t.Errorf("a decommissioning node that is down waits for its return or its removal, yet: %q", notes)
	}
}

// noLeader is the status a node answers for a shard without a leader (leader 0), or with
// another leader.
func noLeader(t *testing.T, shard uint32, leader uint64) error {
	t.Helper()
	msg := fmt.Sprintf("shard %d has no leader (quorum lost?)", shard)
	if leader != 0 {
		msg = fmt.Sprintf("node 1 is not the leader of shard %d", shard)
	}
	st, err := status.New(codes.Unavailable, msg).WithDetails(&shoalv1.NotLeader{Shard: shard, LeaderId: leader})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// An error about a TLS file that came from $SHOAL_TLS_* names the variable, not only the path:
// nothing on the command line mentions the file.
func TestTLSFileFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"missing CA file", map[string]string{"SHOAL_TLS_CA": dir + "/nope.crt"}, nil,
			[]string{"reading the CA file", "--tls-ca is $SHOAL_TLS_CA (" + dir + "/nope.crt)"}},
		{"certificate without its key", map[string]string{"SHOAL_TLS_CERT": dir + "/app.crt"}, nil,
			[]string{"give both or neither", "--tls-cert is $SHOAL_TLS_CERT"}},
		{"flag over the variable", map[string]string{"SHOAL_TLS_CA": dir + "/env.crt"}, []string{"--tls-ca", dir + "/flag.crt"},
			[]string{"reading the CA file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// --server: a command that took the files would fail to reach a server.
			args := append([]string{"read", "s", "--server", "127.0.0.1:1"}, tc.args...)
			code, _, errOut := runCLI(t, tc.env, "", args...)
			if code != exitUsage {
				t.Fatalf("exit %d, stderr %q; want %d", code, errOut, exitUsage)
			}
			for _, want := range tc.want {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr %q lacks %q", errOut, want)
				}
			}
			if tc.args != nil && strings.Contains(errOut, "$SHOAL_TLS_CA") {
				t.Errorf("stderr %q names $SHOAL_TLS_CA, which the flag overrode", errOut)
			}
		})
	}
}

// configConflict is an error of node.Start for a flag that contradicts the data directory.
type configConflict string

func (e configConflict) Error() string        { return string(e) }
func (e configConflict) Is(target error) bool { return target == node.ErrConfigConflict }

// TestServerFlagAtWrongPort: --server pointed at a node's HTTP port (HTTP/1, as the tour's
// 7480) says so, at once (client.ErrNotGRPC); at a port that closes every connection
// unanswered (its gossip port) it says to check that the address is a node's gRPC address,
// and not that TLS may be missing (a TLS handshake tells it is not a TLS server; TestTLS's
// "plaintext" is told that its server is one).
func TestServerFlagAtWrongPort(t *testing.T) {
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(httpLis)
	defer srv.Close()
	closing, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer closing.Close()
	go func() {
		for {
			c, err := closing.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Run("group", func(t *testing.T) {
		for name, addr := range map[string]string{"http": httpLis.Addr().String(), "closing": closing.Addr().String()} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				want := "check that it is a shoal node's gRPC address"
				if name == "http" {
					want = addr + " answers HTTP/1.1, not gRPC: --server (or $SHOAL_SERVER) takes a node's gRPC address"
				}
				code, _, errOut := runCLI(t, nil, "", "read", "s", "--server", addr)
				if code != exitError || !strings.Contains(errOut, want) || strings.Contains(errOut, "TLS") {
					t.Errorf("--server %s: exit %d, %q, want %q", addr, code, errOut, want)
				}
			})
		}
	})
}

// TestDevFreshAfterFailedStart: a `shoal dev` whose node 0 failed to start (its port taken)
// after writing its identity still creates the cluster at its next start, with the dev
// cluster's replication: it took the leftover directory for an existing cluster, and node 0
// created one with the default replication of three whatever --nodes.
func TestDevFreshAfterFailedStart(t *testing.T) {
	dir := t.TempDir()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := devNode(dir, 0, 1, devFresh(dir))
	cfg.Listen, cfg.Gossip, cfg.HTTP = taken.Addr().String(), testaddr.Gossip(t), "127.0.0.1:0"
	if n, err := node.Start(context.Background(), cfg); err == nil {
		n.Close()
		t.Fatal("node 0 started on a taken port")
	}
	if _, err := os.Stat(filepath.Join(dir, "node-0")); err != nil {
		t.Fatalf("the failed start left nothing behind (%v): the test shows nothing", err)
	}
	if !devFresh(dir) {
		t.Fatal("a dev directory whose node 0 never created the cluster is taken for an existing cluster")
	}
	cfg = devNode(dir, 0, 1, devFresh(dir))
	if cfg.Replication != 1 {
		t.Fatalf("node 0 of a one-node dev cluster creates it with replication %d", cfg.Replication)
	}
	cfg.Listen, cfg.Gossip, cfg.HTTP = "127.0.0.1:0", testaddr.Gossip(t), "127.0.0.1:0"
	n, err := node.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	if devFresh(dir) {
		t.Fatal("a dev directory holding a cluster is taken for a new one")
	}
}

// startDevNodes starts the first n nodes of a dev cluster in dir, as shoal dev lays them out
// but on free ports, before (if set) preparing each one's config; the caller closes them.
func startDevNodes(t *testing.T, dir string, n int, before func(i int, cfg *node.Config)) []*node.Node {
	t.Helper()
	seed := testaddr.Gossip(t)
	var started []*node.Node
	for i := range n {
		cfg := devNode(dir, i, n, devFresh(dir))
		cfg.Listen, cfg.Gossip, cfg.HTTP = "127.0.0.1:0", testaddr.Gossip(t), "127.0.0.1:0"
		if i == 0 {
			cfg.Gossip = seed
		} else {
			cfg.Join = []string{seed}
		}
		if before != nil {
			before(i, &cfg)
		}
		nd, err := node.Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		started = append(started, nd)
	}
	return started
}

// TestDevRefusesFewerNodes: a dev cluster of two nodes restarted with --nodes 1 would leave
// node-1, holding replicas, down and the shards without quorum: it is refused, naming the
// node and the --nodes that runs it.
func TestDevRefusesFewerNodes(t *testing.T) {
	dir := t.TempDir()
	started := startDevNodes(t, dir, 2, nil)
	deadline := time.Now().Add(30 * time.Second)
	for len(started[1].Groups()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("node-1 was given no replica in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range started {
		n.Close()
	}
	if left, need := devLeftOut(dir, 2); len(left) > 0 {
		t.Fatalf("--nodes 2 leaves out %v (need %d)", left, need)
	}
	code, out, errOut := runCLI(t, nil, "", "dev", "--data", dir, "--nodes", "1")
	want := fmt.Sprintf("--data %s: node-1 of its dev cluster, beyond --nodes 1, still holds replicas", dir)
	if code != exitUsage || !strings.Contains(errOut, want) || !strings.Contains(errOut, "Run with --nodes 2") || out != "" {
		t.Fatalf("dev --nodes 1 over two nodes: exit %d, stderr %q, stdout %q; want %d and %q", code, errOut, out, exitUsage, want)
	}
	// At replication 2 a drain to one node cannot finish: the factor goes down first.
	if want := "to shrink the cluster, first lower the replication factor to 1 (shoal cluster set-replication 1; it is 2, " +
		"more than the nodes left), then decommission node-1 (shoal node decommission NAME), then wait until 'cluster status' " +
		"shows node-1 holding 0 replicas"; !strings.Contains(errOut, want) {
		t.Fatalf("dev --nodes 1 over two nodes at replication 2: stderr %q, want %q", errOut, want)
	}
	// Decommissioned (the flag file node decommission leaves), stopped before it deleted its
	// replicas: told to let it.
	if err := os.WriteFile(filepath.Join(dir, "node-1", "decommissioning"), []byte("decommissioning requested\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCLI(t, nil, "", "dev", "--data", dir, "--nodes", "1")
	if want := "first lower the replication factor to 1 (shoal cluster set-replication 1; it is 2, more than the nodes left), " +
		"then wait until 'cluster status' shows node-1 holding 0 replicas"; code != exitUsage || !strings.Contains(errOut, want) {
		t.Fatalf("dev --nodes 1 over a decommissioned node-1: exit %d, stderr %q; want %q", code, errOut, want)
	}
}

// TestNoLeaderForLong: the CLI's explanation of a shard without quorum carries the whole of
// how long the server says its replicas have known no leader, in both of the server's forms
// (node's leaderlessError, its duration rounded to 10 ms), however long: a shard down for
// over a minute was said to have been leaderless for "1m".
func TestNoLeaderForLong(t *testing.T) {
	for _, d := range []time.Duration{4600 * time.Millisecond, 850 * time.Millisecond,
		65200 * time.Millisecond, 2*time.Hour + 3*time.Minute + 10*time.Millisecond, 2 * time.Hour} {
		for _, who := range []string{"this node's replica has", "the shard's replicas that answered have"} {
			msg := fmt.Sprintf("shard 3 has no leader (quorum lost?): %s known no leader for %v, longer than an election takes: "+
				"the shard lost its quorum (too few of its voters are up and in touch), or its replicas are cut off from them",
				who, d.Round(10*time.Millisecond))
			st, err := status.New(codes.Unavailable, msg).WithDetails(&shoalv1.NotLeader{Shard: 3})
			if err != nil {
				t.Fatal(err)
			}
			_, got := explain((&app{}).unreachable(&client.UnavailableError{Err: st.Err()}, "h:1"))
			if want := fmt.Sprintf(" known no leader for %v: ", d.Round(10*time.Millisecond)); !strings.Contains(got, want) {
				t.Errorf("%s for %v: %q, want it to contain %q", who, d, got, want)
			}
		}
	}
}

// TestNoLeaderNotOverclaimed: the server answers a shard at once when the replicas it reached
// (its own replica, or those that answered its topology request) have known no leader for
// longer than an election takes, and says that the shard lost its quorum or those replicas are
// cut off from the others: a node cut off from the shard's other replicas gives the same
// answer while they lead it on the other side of the cut. The CLI says no more than that.
func TestNoLeaderNotOverclaimed(t *testing.T) {
	msg := "shard 3 has no leader (quorum lost?): this node's replica has known no leader for 4.6s, longer than an election takes: " +
		"the shard lost its quorum (too few of its voters are up and in touch), or its replicas are cut off from them"
	st, err := status.New(codes.Unavailable, msg).WithDetails(&shoalv1.NotLeader{Shard: 3})
	if err != nil {
		t.Fatal(err)
	}
	_, got := explain((&app{}).unreachable(&client.UnavailableError{Err: st.Err()}, "h:1"))
	if strings.Contains(got, "it lost its quorum,") || !strings.Contains(got, "or those replicas are cut off from the others") {
		t.Fatalf("%q: says the shard lost its quorum, which the server did not tell apart from its replicas cut off from the others", got)
	}
}

// TestInvokedAs: shoal dev's "try:" line runs the binary as the user did (bin/shoal from the
// README's tour), or as "shoal" when it was found on the PATH.
func TestInvokedAs(t *testing.T) {
	for arg0, want := range map[string]string{
		"shoal":             "shoal",
		"":                  "shoal",
		"bin/shoal":         "bin/shoal",
		"./shoal":           "./shoal",
		"/usr/bin/shoal":    "/usr/bin/shoal",
		"../main/bin/shoal": "../main/bin/shoal",
	} {
		if got := invokedAs(arg0); got != want {
			t.Errorf("invokedAs(%q) = %q, want %q", arg0, got, want)
		}
	}
}

// TestDevBannerNamesDecommissioning: a dev node brought back by a larger --nodes after a
// decommission stays decommissioning, which made it look merely idle: the banner says so and
// how to recommission it, running the binary as it was invoked.
func TestDevBannerNamesDecommissioning(t *testing.T) {
	dir := t.TempDir()
	started := startDevNodes(t, dir, 2, func(i int, cfg *node.Config) {
		if i == 0 {
			return
		}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cfg.DataDir, "decommissioning"), []byte("decommissioning requested\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	for _, n := range started {
		defer n.Close()
	}
	var out strings.Builder
	devBanner(&out, dir, started, 2, false, "bin/shoal")
	want := fmt.Sprintf("node-1 is being decommissioned (since an earlier run): placement moves its replicas away and gives it none; "+
		"to give it its share again: bin/shoal node recommission node-1 --server %s\n", started[0].Addr())
	if !strings.Contains(out.String(), want) || strings.Contains(out.String(), "node-0 is being") ||
		!strings.Contains(out.String(), "try: bin/shoal append hello-1") {
		t.Fatalf("banner:\n%s\nwant it to contain:\n%s", out.String(), want)
	}
}

// TestExitOnSecondSignal: once a stop began, the next SIGTERM ends the process at once with
// 143, as the signal would, after saying so (it exited without a word). Run in a child
// process, which sends itself the signal.
func TestExitOnSecondSignal(t *testing.T) {
	if os.Getenv("SHOAL_TEST_SECOND_SIGNAL") == "1" {
		exitOnSecondSignal(func(sig os.Signal) { fmt.Println("said:", sig) })
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(10 * time.Second) // ended by the handler
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestExitOnSecondSignal$")
	cmd.Env = append(os.Environ(), "SHOAL_TEST_SECOND_SIGNAL=1")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 143 || !strings.Contains(string(out), "said: terminated") {
		t.Fatalf("child: %v, output %q; want exit 143 after saying so", err, out)
	}
}

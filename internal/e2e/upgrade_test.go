package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/shard"
)

// TestRollingUpgrade starts three servers of an older version (the binary named by
// $SHOAL_E2E_OLD_BIN; `make upgrade-test` builds one from a commit that predates shard
// formats, or from UPGRADE_FROM), whose highest shard format is $SHOAL_E2E_OLD_FORMAT
// (default 1), keeps writers running while it replaces the servers one at a time with this
// version, deletes a stream on each mixed-version cluster, and checks that:
//   - the older cluster raises its shards to its own format, and no shard is raised past it
//     while a node of the older version holds a replica;
//   - every shard reaches this version's format once the last node runs it, after which a
//     delete takes a position in its shard's log;
//   - every acknowledged event is there exactly once, and the replicas of every shard end
//     identical, deletes included.
func TestRollingUpgrade(t *testing.T) {
	old := os.Getenv("SHOAL_E2E_OLD_BIN")
	if old == "" {
		t.Skip("set SHOAL_E2E_OLD_BIN to an older shoal binary (make upgrade-test)")
	}
	oldFormat := shard.Format1
	if v := os.Getenv("SHOAL_E2E_OLD_FORMAT"); v != "" {
		f, err := strconv.ParseUint(v, 10, 64)
		// An older version of this format (MaxFormat) raises nothing: the upgrade then checks
		// what else changed between the versions (messages between nodes, storage).
		if err != nil || f < shard.Format1 || f > shard.MaxFormat {
			t.Fatalf("SHOAL_E2E_OLD_FORMAT=%q: want %d..%d, the older version's highest shard format", v, shard.Format1, shard.MaxFormat)
		}
		oldFormat = f
	}
	// Versions from 67d1c65 on change the replication factor of a running cluster: with one of
	// them the refusal checked below does not happen.
	help, err := exec.Command(old, "cluster", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cluster --help: %v\n%s", old, err, help)
	}
	oldSetsReplication := strings.Contains(string(help), "set-replication")
	seed := testSeed(t)
	const shards = 4
	cl := &cluster{t: t, shards: shards}
	first := newServer(t, "n1", "z1", nil, "--shards", fmt.Sprint(shards), "--replication", "3")
	cl.servers = append(cl.servers, first)
	for i := 2; i <= 3; i++ {
		cl.servers = append(cl.servers, newServer(t, fmt.Sprintf("n%d", i), fmt.Sprintf("z%d", i), []string{first.gossip}))
	}
	for _, s := range cl.servers {
		s.bin = old
		s.start()
		s.waitReady(30 * time.Second)
	}
	c := cl.dial()
	cl.waitReplicated(c, 60*time.Second)

	// Subscriptions to every shard across the upgrade: polling the older servers, which do not
	// know subscriptions, then live on the new ones.
	subs := subscribeShards(c, shards)
	ld := startLoad(c, seed, fmt.Sprintf("up-%d", seed%1000), 6, 6)
	defer ld.stop()
	ld.l.waitAcks(t, 100, 20*time.Second, "on the older version")
	formats := func() map[uint32]uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		out := map[uint32]uint64{}
		for _, s := range st.GetTopology().GetShards() {
			out[s.GetShard()] = s.GetFormat()
		}
		return out
	}
	waitFormat := func(want uint64, timeout time.Duration) {
		deadline := time.Now().Add(timeout)
		for {
			low := ""
			for sh, f := range formats() {
				if f != want {
					low = fmt.Sprintf("shard %d at format %d", sh, f)
				}
			}
			if low == "" {
				t.Logf("every shard at format %d", want)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("want every shard at format %d, but %s after %v%s", want, low, timeout, cl.tails())
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	if oldFormat > shard.Format1 {
		waitFormat(oldFormat, 30*time.Second)
	}
	// A delete with nodes of both versions (at the older version's format on either).
	mixedDelete := func(tag string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		name := "mixed-" + tag
		if _, err := c.Append(ctx, name, client.NoStream, client.Event{Type: "T", Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, name, client.Exact(0)); err != nil {
			t.Fatal(err)
		}
		if oldFormat < shard.Format6 {
			// Nor can a retention policy be set: every shard has a replica on each node.
			err := c.SetRetention(ctx, client.RetentionPolicy{Prefix: "mixed-", KeepLast: 1})
			if !errors.Is(err, client.ErrShardFormat) {
				t.Fatalf("retention policy with nodes of both versions: %v, want ErrShardFormat", err)
			}
		}
		if oldFormat >= shard.Format4 {
			return
		}
		// A truncation is refused while a shard may have a replica on the older version, which
		// would stop at the command (or does not know the call at all).
		name = "mixed-trunc-" + tag
		if _, err := c.Append(ctx, name, client.NoStream, client.Event{Type: "T"}, client.Event{Type: "T"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Truncate(ctx, name, 1, client.Any); !errors.Is(err, client.ErrShardFormat) {
			t.Fatalf("truncate with nodes of both versions: %v, want ErrShardFormat", err)
		}
	}
	for i, s := range cl.servers {
		mixedDelete(s.name)
		s.stop()
		s.bin = ""
		s.start()
		s.waitReady(60 * time.Second)
		cl.waitReplicated(c, 60*time.Second)
		ld.l.waitAcks(t, 100, 30*time.Second, fmt.Sprintf("after upgrading %s", s.name))
		if i < len(cl.servers)-1 {
			time.Sleep(3 * time.Second) // three placement rounds, in which a raise would happen
			for sh, f := range formats() {
				if f > oldFormat {
					t.Fatalf("shard %d raised to format %d while %d node(s) still run the older version (format %d)", sh, f, len(cl.servers)-1-i, oldFormat)
				}
			}
			t.Logf("%s upgraded: every shard still at format %d or lower (a lower one reported by an older leader)", s.name, oldFormat)
			if oldSetsReplication {
				continue
			}
			// A change of the replication factor waits for every node: the node just upgraded
			// refuses it, naming one of an older version (which would not know the call).
			conn, err := grpc.NewClient(s.grpcAddr, grpcopt.DialOptions()...)
			if err != nil {
				t.Fatal(err)
			}
			rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err = shoalv1.NewClusterClient(conn).SetReplication(rctx, &shoalv1.SetReplicationRequest{Replication: 2})
			rcancel()
			conn.Close()
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "which does not follow a change") {
				t.Fatalf("set-replication through upgraded %s with nodes of both versions: %v, want a refusal naming an older one", s.name, err)
			}
		}
	}
	waitFormat(shard.MaxFormat, 30*time.Second)
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	if ch, err := c.SetReplication(rctx, 3); err != nil || ch.Changed || ch.Replication != 3 {
		t.Fatalf("set-replication 3 once every node is upgraded: %+v, %v; want accepted, nothing to change", ch, err)
	}
	rcancel()

	// Deletes now take positions: one per shard, visible with include_deletes.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deleted := map[uint32]bool{}
	for i := 0; len(deleted) < shards && i < 1000; i++ {
		name := fmt.Sprintf("upgraded-%d", i)
		res, err := c.Append(ctx, name, client.NoStream, client.Event{Type: "T", Data: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if deleted[res.Shard] {
			continue
		}
		if err := c.Delete(ctx, name, client.Exact(0)); err != nil {
			t.Fatal(err)
		}
		deleted[res.Shard] = true
	}
	if !ld.finish(t) {
		t.Log(cl.tails())
		return
	}
	verify(t, c, ld.l)
	subs.verify(t, c)

	// And truncations work: one per shard, whose replicas are compared below (after the
	// subscriptions' check, which compares what they got with the log as it is now).
	tctx, tcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer tcancel()
	truncated := map[uint32]bool{}
	for i := 0; len(truncated) < shards && i < 1000; i++ {
		name := fmt.Sprintf("upgraded-trunc-%d", i)
		first := client.Event{ID: uuid.New(), Type: "T"}
		res, err := c.Append(tctx, name, client.NoStream, first, client.Event{Type: "T"}, client.Event{Type: "T"})
		if err != nil {
			t.Fatal(err)
		}
		if truncated[res.Shard] {
			continue
		}
		if start, err := c.Truncate(tctx, name, 2, client.Exact(2)); err != nil || start != 2 {
			t.Fatalf("truncate after the upgrade: start %d, %v; want 2", start, err)
		}
		// At this version's format the truncation is marked: a read that needs the history
		// whole from before it is refused.
		for _, err := range c.Read(tctx, name, client.WholeHistory()) {
			if !errors.Is(err, client.ErrHistoryTruncated) {
				t.Fatalf("whole history read of %s after the upgrade's truncation: %v, want ErrHistoryTruncated", name, err)
			}
			break
		}
		// And the truncated events' IDs are forgotten (format 7): the first event appended again
		// is a new event, not a duplicate.
		if again, err := c.Append(tctx, name, client.Any, first); err != nil || again.Duplicate || again.FirstVersion != 3 {
			t.Fatalf("a truncated event's ID appended again after the upgrade: %+v, %v; want a new event at version 3", again, err)
		}
		truncated[res.Shard] = true
	}

	// And a retention policy can be set, in every shard.
	if err := c.SetRetention(tctx, client.RetentionPolicy{Prefix: "upgraded-ret-", KeepLast: 1}); err != nil {
		t.Fatalf("retention policy after the upgrade: %v", err)
	}
	if ps, err := c.RetentionPolicies(tctx); err != nil || len(ps) != 1 || ps[0].Shards != uint32(shards) {
		t.Fatalf("retention policies after the upgrade: %+v, %v; want one in all %d shards", ps, err, shards)
	}

	// The older version's client (its CLI and load generator, built on its client package)
	// against the upgraded cluster: an application not rebuilt yet keeps working, and what it
	// writes reads back through either client.
	oldClient(t, old, cl.servers[0].grpcAddr, c)

	// Every shard's replicas identical, deletes included, with one delete per shard at least.
	conns := make([]*grpc.ClientConn, len(cl.servers))
	for i, s := range cl.servers {
		conn, err := grpc.NewClient(s.grpcAddr, grpcopt.DialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns[i] = conn
	}
	deadline := time.Now().Add(30 * time.Second)
	for sh := range uint32(shards) {
		for {
			why := ""
			var ref []record
			for i, conn := range conns {
				log, err := readLocalShard(ctx, conn, sh, true)
				switch {
				case err != nil:
					why = err.Error()
				case i == 0:
					ref = log
				default:
					if d := diffLogs(ref, log); d != "" {
						why = fmt.Sprintf("%s and %s differ: %s", cl.servers[0].name, cl.servers[i].name, d)
					}
				}
				if why != "" {
					break
				}
			}
			if why == "" {
				dels := 0
				for _, e := range ref {
					if e.deletion != shoalv1.Deletion_DELETION_NONE {
						dels++
					}
				}
				if dels == 0 {
					why = "no delete in the log"
				} else {
					t.Logf("shard %d: %d entries identical on every replica, %d deletes", sh, len(ref), dels)
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("shard %d: %s%s", sh, why, cl.tails())
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// oldClient runs the older version's CLI at addr, a node of the upgraded cluster: an append,
// one of c's after it at the next version, a read of both by the older CLI, and three seconds
// of its load generator with exact expected versions, which must fail nothing.
func oldClient(t *testing.T, old, addr string, c *client.Client) {
	t.Helper()
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(old, append(args, "--server", addr)...).CombinedOutput()
		if err != nil {
			t.Fatalf("the older version's shoal %s against the upgraded cluster: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("append", "old-client", "--type", "OldWrote", "--data", `{"v":1}`, "--expected", "no-stream")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Append(ctx, "old-client", client.Exact(0), client.Event{Type: "NewWrote", Data: []byte(`{"v":2}`)}); err != nil {
		t.Fatalf("appending after the older client's event: %v", err)
	}
	if out := run("read", "old-client", "--json"); !strings.Contains(out, `"OldWrote"`) || !strings.Contains(out, `"NewWrote"`) {
		t.Fatalf("the older version's read of old-client: %s; want both events", out)
	}
	report := filepath.Join(t.TempDir(), "old-bench.json")
	run("bench", "append", "--duration", "3s", "--warmup", "0s", "--streams", "200", "--concurrency", "8",
		"--expected", "exact", "--stream-prefix", "old-bench-", "--json", report)
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Ops        int64 `json:"ops"`
		Conflicts  int64 `json:"conflicts"`
		ErrorCount int64 `json:"error_count"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("the older version's bench report: %v", err)
	}
	if res.Ops == 0 || res.Conflicts != 0 || res.ErrorCount != 0 {
		t.Fatalf("the older version's bench append against the upgraded cluster: %d appends, %d conflicts, %d errors; want appends and nothing failed\n%s",
			res.Ops, res.Conflicts, res.ErrorCount, raw)
	}
	t.Logf("the older version's client against the upgraded cluster: its append and read, and %d appends of its bench with none failed", res.Ops)
}

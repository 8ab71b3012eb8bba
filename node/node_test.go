package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/buildinfo"
	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/internal/testaddr"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/ring"
	"github.com/shoaldb/shoal/shard"
)

// testConfig is a single-node config on free loopback ports in dir.
func testConfig(t testing.TB, dir string) Config {
	return Config{
		DataDir:     dir,
		Listen:      "127.0.0.1:0",
		HTTP:        "127.0.0.1:0",
		Gossip:      testaddr.Gossip(t),
		Name:        "solo",
		Zone:        "z1",
		Shards:      4,
		Replication: 1,
	}
}

func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	waitReady(t, n)
	return n
}

func waitReady(t testing.TB, n *Node) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for n.notReady() != "" {
		if time.Now().After(deadline) {
			t.Fatalf("node not ready: %s", n.notReady())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpcopt.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func events(types ...string) []*shoalv1.EventData {
	out := make([]*shoalv1.EventData, len(types))
	for i, typ := range types {
		id := uuid.New()
		out[i] = &shoalv1.EventData{Id: id[:], Type: typ, Data: []byte(`{"n":` + fmt.Sprint(i) + `}`),
			ContentType: "application/json"}
	}
	return out
}

func anyVersion() *shoalv1.ExpectedVersion { return &shoalv1.ExpectedVersion{} }
func exact(v uint64) *shoalv1.ExpectedVersion {
	return &shoalv1.ExpectedVersion{Kind: shoalv1.ExpectedVersion_KIND_EXACT, Version: v}
}
func noStream() *shoalv1.ExpectedVersion {
	return &shoalv1.ExpectedVersion{Kind: shoalv1.ExpectedVersion_KIND_NO_STREAM}
}

func readAll(ctx context.Context, c shoalv1.StreamsClient, req *shoalv1.ReadRequest) ([]*shoalv1.RecordedEvent, error) {
	s, err := c.Read(ctx, req)
	if err != nil {
		return nil, err
	}
	return recvEvents(s)
}

// readShardAll reads a ReadShard to its end.
func readShardAll(ctx context.Context, c shoalv1.StreamsClient, req *shoalv1.ReadShardRequest) ([]*shoalv1.RecordedEvent, error) {
	s, err := c.ReadShard(ctx, req)
	if err != nil {
		return nil, err
	}
	return recvEvents(s)
}

// eventPage is a page of a Read or a ReadShard.
type eventPage interface {
	GetEvents() []*shoalv1.RecordedEvent
}

// recvEvents receives the events of a read's pages until it ends.
func recvEvents[R eventPage](s interface{ Recv() (R, error) }) ([]*shoalv1.RecordedEvent, error) {
	var out []*shoalv1.RecordedEvent
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, r.GetEvents()...)
	}
}

// detail asserts err is a status with code and returns its single detail.
func detail[T proto.Message](t *testing.T, err error, code codes.Code) T {
	t.Helper()
	var zero T
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("want %v, got %v", code, err)
	}
	for _, d := range st.Details() {
		if v, ok := d.(T); ok {
			return v
		}
	}
	t.Fatalf("status %v has no %T detail (details %v)", st, zero, st.Details())
	return zero
}

func TestAppendReadDelete(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	req := &shoalv1.AppendRequest{Stream: "order-1", Expected: noStream(), Events: events("Created", "Paid", "Shipped")}
	r, err := c.Append(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if r.FirstVersion != 0 || r.LastVersion != 2 || r.Duplicate {
		t.Fatalf("append: %v", r)
	}
	// The same append again is a duplicate with the original versions.
	r2, err := c.Append(ctx, req)
	if err != nil || !r2.Duplicate || r2.FirstVersion != 0 || r2.LastVersion != 2 || r2.Position != r.Position {
		t.Fatalf("duplicate append: %v, %v", r2, err)
	}
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "order-1", Expected: exact(2), Events: events("Delivered")}); err != nil {
		t.Fatal(err)
	}

	got, err := readAll(ctx, c, &shoalv1.ReadRequest{Stream: "order-1"})
	if err != nil || len(got) != 4 {
		t.Fatalf("read: %d events, %v", len(got), err)
	}
	for i, e := range got {
		if e.Version != uint64(i) || e.Stream != "order-1" || e.Shard != r.Shard || e.CreatedUnixNano == 0 || len(e.Id) != 16 {
			t.Fatalf("event %d: %v", i, e)
		}
	}
	if got[0].Type != "Created" || got[3].Type != "Delivered" || string(got[1].Data) != `{"n":1}` {
		t.Fatalf("events: %v", got)
	}
	back, err := readAll(ctx, c, &shoalv1.ReadRequest{Stream: "order-1", FromEnd: true, Backward: true, Count: 2, AllowStale: true})
	if err != nil || len(back) != 2 || back[0].Version != 3 || back[1].Version != 2 {
		t.Fatalf("backward read: %v, %v", back, err)
	}

	// ReadShard sees the stream's events in position order.
	rs, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: r.Shard})
	if err != nil {
		t.Fatal(err)
	}
	var shardEvents int
	var next uint64
	for {
		p, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		shardEvents += len(p.Events)
		next = p.NextPosition
	}
	if shardEvents != 4 || next != 4 {
		t.Fatalf("read shard: %d events, next %d", shardEvents, next)
	}

	// Soft delete, then the stream reads as not found; appending continues after it.
	if _, err := c.Delete(ctx, &shoalv1.DeleteRequest{Stream: "order-1", Expected: exact(3)}); err != nil {
		t.Fatal(err)
	}
	_, err = readAll(ctx, c, &shoalv1.ReadRequest{Stream: "order-1"})
	if d := detail[*shoalv1.StreamNotFound](t, err, codes.NotFound); d.Stream != "order-1" {
		t.Fatalf("not found detail: %v", d)
	}
	r3, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "order-1", Expected: noStream(), Events: events("Reopened")})
	if err != nil || r3.FirstVersion != 4 {
		t.Fatalf("append after soft delete: %v, %v", r3, err)
	}
	// Tombstone: gone forever.
	if _, err := c.Delete(ctx, &shoalv1.DeleteRequest{Stream: "order-1", Expected: anyVersion(), Tombstone: true}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Append(ctx, &shoalv1.AppendRequest{Stream: "order-1", Expected: anyVersion(), Events: events("X")})
	detail[*shoalv1.StreamDeleted](t, err, codes.NotFound)
	_, err = readAll(ctx, c, &shoalv1.ReadRequest{Stream: "order-1"})
	detail[*shoalv1.StreamDeleted](t, err, codes.NotFound)
}

func TestPaging(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	types := make([]string, 600)
	for i := range types {
		types[i] = "T"
	}
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "big", Events: events(types...)}); err != nil {
		t.Fatal(err)
	}
	s, err := c.Read(ctx, &shoalv1.ReadRequest{Stream: "big"})
	if err != nil {
		t.Fatal(err)
	}
	var pages, total int
	for {
		p, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) > pageEvents {
			t.Fatalf("page of %d events", len(p.Events))
		}
		pages++
		total += len(p.Events)
	}
	if total != 600 || pages != 3 {
		t.Fatalf("%d events in %d pages", total, pages)
	}
}

func TestStatusDetails(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := events("A", "B")
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: first}); err != nil {
		t.Fatal(err)
	}

	t.Run("wrong expected version", func(t *testing.T) {
		_, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Expected: exact(7), Events: events("C")})
		d := detail[*shoalv1.WrongExpectedVersion](t, err, codes.FailedPrecondition)
		if d.Stream != "s" || !d.StreamExists || d.ActualVersion != 1 || d.Expected.GetVersion() != 7 ||
			d.Expected.GetKind() != shoalv1.ExpectedVersion_KIND_EXACT {
			t.Fatalf("detail: %v", d)
		}
		_, err = c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Expected: noStream(), Events: events("C")})
		detail[*shoalv1.WrongExpectedVersion](t, err, codes.FailedPrecondition)
	})
	t.Run("wrong expected version of a soft-deleted stream", func(t *testing.T) {
		// The detail names the version that continues the stream (EXACT of its last one).
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "gone", Events: events("A", "B", "C")}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Delete(ctx, &shoalv1.DeleteRequest{Stream: "gone", Expected: anyVersion()}); err != nil {
			t.Fatal(err)
		}
		_, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "gone", Expected: exact(0), Events: events("D")})
		d := detail[*shoalv1.WrongExpectedVersion](t, err, codes.FailedPrecondition)
		if d.StreamExists || !d.StreamDeleted || d.ActualVersion != 2 {
			t.Fatalf("detail: %v, want a soft-deleted stream at version 2", d)
		}
		r, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "gone", Expected: exact(d.ActualVersion), Events: events("D")})
		if err != nil || r.FirstVersion != 3 {
			t.Fatalf("append expecting the version the detail named: %v, %v; want version 3", r, err)
		}
		// A tombstoned stream is no soft-deleted one: nothing continues it.
		waitFormat(ctx, t, n) // truncation needs format 4
		if _, err := c.Delete(ctx, &shoalv1.DeleteRequest{Stream: "gone", Expected: anyVersion(), Tombstone: true}); err != nil {
			t.Fatal(err)
		}
		_, err = c.Truncate(ctx, &shoalv1.TruncateRequest{Stream: "gone", Before: 1, Expected: exact(0)})
		if d := detail[*shoalv1.WrongExpectedVersion](t, err, codes.FailedPrecondition); d.StreamDeleted || d.StreamExists {
			t.Fatalf("truncate of a tombstoned stream: detail %v, want neither existing nor soft-deleted", d)
		}
	})
	t.Run("invalid stream name", func(t *testing.T) {
		_, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "$system", Events: events("C")})
		if d := detail[*shoalv1.InvalidField](t, err, codes.InvalidArgument); d.Field != "stream" {
			t.Fatalf("detail: %v", d)
		}
		_, err = readAll(ctx, c, &shoalv1.ReadRequest{Stream: strings.Repeat("x", 513)})
		if d := detail[*shoalv1.InvalidField](t, err, codes.InvalidArgument); d.Field != "stream" || d.Limit == "" {
			t.Fatalf("detail: %v", d)
		}
	})
	t.Run("invalid event", func(t *testing.T) {
		_, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: []*shoalv1.EventData{{Id: []byte{1, 2}, Type: "T"}}})
		if d := detail[*shoalv1.InvalidField](t, err, codes.InvalidArgument); d.Field != "events[0].id" || d.Limit == "" {
			t.Fatalf("detail: %v", d)
		}
		ev := events("T", "")
		_, err = c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: ev})
		if d := detail[*shoalv1.InvalidField](t, err, codes.InvalidArgument); !strings.HasPrefix(d.Field, "events[1]") {
			t.Fatalf("detail: %v", d)
		}
		_, err = c.Append(ctx, &shoalv1.AppendRequest{Stream: "s"})
		detail[*shoalv1.InvalidField](t, err, codes.InvalidArgument)
		_, err = c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Expected: &shoalv1.ExpectedVersion{Kind: 9}, Events: events("T")})
		if d := detail[*shoalv1.InvalidField](t, err, codes.InvalidArgument); d.Field != "expected.kind" {
			t.Fatalf("detail: %v", d)
		}
	})
	// A version is a condition only with KIND_EXACT: one given with another kind (proto3's
	// default kind is ANY, so a caller that forgets the kind sends exactly that) was ignored,
	// and the append or delete ran with no check at all.
	t.Run("version without exact", func(t *testing.T) {
		before, err := readAll(ctx, c, &shoalv1.ReadRequest{Stream: "s"})
		if err != nil {
			t.Fatal(err)
		}
		for _, kind := range []shoalv1.ExpectedVersion_Kind{shoalv1.ExpectedVersion_KIND_ANY,
			shoalv1.ExpectedVersion_KIND_NO_STREAM, shoalv1.ExpectedVersion_KIND_EXISTS} {
			exp := &shoalv1.ExpectedVersion{Kind: kind, Version: 7}
			_, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Expected: exp, Events: events("T")})
			if d := detail[*shoalv1.InvalidField](t, err, codes.InvalidArgument); d.Field != "expected.version" || d.Limit == "" {
				t.Fatalf("append, %v with version 7: %v", kind, d)
			}
			if kind != shoalv1.ExpectedVersion_KIND_NO_STREAM {
				_, err = c.Delete(ctx, &shoalv1.DeleteRequest{Stream: "s", Expected: exp})
				if d := detail[*shoalv1.InvalidField](t, err, codes.InvalidArgument); d.Field != "expected.version" {
					t.Fatalf("delete, %v with version 7: %v", kind, d)
				}
			}
		}
		if after, err := readAll(ctx, c, &shoalv1.ReadRequest{Stream: "s"}); err != nil || len(after) != len(before) {
			t.Fatalf("stream s after the refusals: %d events, %v; want the %d before", len(after), err, len(before))
		}
	})
	t.Run("invalid delete", func(t *testing.T) {
		_, err := c.Delete(ctx, &shoalv1.DeleteRequest{Stream: "s", Expected: noStream()})
		detail[*shoalv1.InvalidField](t, err, codes.InvalidArgument)
	})
	t.Run("id conflict", func(t *testing.T) {
		partial := []*shoalv1.EventData{first[0], events("New")[0]}
		_, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: partial})
		d := detail[*shoalv1.IDConflict](t, err, codes.AlreadyExists)
		if d.Stream != "s" || len(d.Id) != 16 {
			t.Fatalf("detail: %v", d)
		}
	})
	t.Run("not found", func(t *testing.T) {
		_, err := readAll(ctx, c, &shoalv1.ReadRequest{Stream: "absent"})
		detail[*shoalv1.StreamNotFound](t, err, codes.NotFound)
		_, err = c.Delete(ctx, &shoalv1.DeleteRequest{Stream: "absent", Expected: anyVersion()})
		detail[*shoalv1.StreamNotFound](t, err, codes.NotFound)
	})
	t.Run("bad shard", func(t *testing.T) {
		s, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: 99})
		if err == nil {
			_, err = s.Recv()
		}
		detail[*shoalv1.InvalidField](t, err, codes.InvalidArgument)
	})
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTPAndCluster(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	conn := dial(t, n.Addr())
	c := shoalv1.NewStreamsClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "m", Events: events("A")}); err != nil {
		t.Fatal(err)
	}
	base := "http://" + n.HTTPAddr()
	if code, _ := httpGet(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d %s", code, body)
	}
	code, body := httpGet(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics %d", code)
	}
	for _, want := range []string{`shoal_appends_total{result="ok"} 1`, "shoal_events_appended_total 1",
		"shoal_append_duration_seconds_bucket", "shoal_pebble_memtable_bytes", "shoal_pebble_l0_sublevels",
		"shoal_pebble_disk_usage_bytes", "shoal_pebble_wal_bytes_written_total", "shoal_pebble_flushed_bytes_total",
		"shoal_pebble_compacted_bytes_total", "shoal_pebble_wal_fsyncs_total", "shoal_pebble_block_cache_bytes ", `shoal_shard_leader_known{shard="0"} 1`, "shoal_shard_under_replicated",
		`shoal_shard_commands_applied_total{result="append",shard=`, "shoal_shard_events_appended_total", "shoal_shard_stream_cache_lookups_total",
		"shoal_cluster_shards 4", `shoal_shard_follower_lag_entries{shard="0"} 0`, "shoal_ready 1",
		"shoal_data_dir_free_bytes ", "shoal_data_dir_size_bytes ",
		fmt.Sprintf(`shoal_node_info{node=%q,node_id="%d",version=`, n.Name(), n.ID()),
		"go_goroutines", "process_"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := httpGet(t, base+"/debug/pprof/"); code != 200 {
		t.Fatalf("pprof %d", code)
	}

	cl := shoalv1.NewClusterClient(conn)
	st, err := cl.Status(ctx, &shoalv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	top := st.Topology
	if st.NodeId != n.ID() || len(top.Shards) != 4 || len(top.Nodes) != 1 || top.Settings.Shards != 4 {
		t.Fatalf("status: %v", st)
	}
	for _, s := range top.Shards {
		if s.LeaderId != n.ID() || s.Unavailable || s.UnderReplicated || len(s.Voters) != 1 {
			t.Fatalf("shard: %v", s)
		}
	}
	if nd := top.Nodes[0]; !nd.Alive || nd.ShardsLed != 4 || nd.Replicas != 4 || nd.Name != "solo" || nd.Zone != "z1" {
		t.Fatalf("node: %v", nd)
	}
	set, err := cl.Settings(ctx, &shoalv1.SettingsRequest{})
	if err != nil || set.ClusterId != n.Settings().ClusterID || set.Shards != 4 || set.Replication != 1 {
		t.Fatalf("settings: %v, %v", set, err)
	}
	_, err = cl.Decommission(ctx, &shoalv1.DecommissionRequest{Node: "nobody"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("decommission unknown: %v", err)
	}
	if _, err := cl.Decommission(ctx, &shoalv1.DecommissionRequest{Node: "solo"}); err != nil {
		t.Fatal(err)
	}
	if !n.gossip().Self().Decommissioning || !n.dir.decommissioning() {
		t.Fatal("decommissioning flag not set")
	}
	// Recommission clears the flag on disk and in gossip; repeated, it says nothing changed.
	for _, want := range []bool{true, false} {
		r, err := cl.Recommission(ctx, &shoalv1.RecommissionRequest{Node: "solo"})
		if err != nil || r.WasDecommissioning != want {
			t.Fatalf("recommission: %v, %v; want was_decommissioning %v", r, err, want)
		}
		if n.gossip().Self().Decommissioning || n.dir.decommissioning() {
			t.Fatal("decommissioning flag still set")
		}
	}
	if _, err := cl.Recommission(ctx, &shoalv1.RecommissionRequest{Node: "nobody"}); status.Code(err) != codes.NotFound {
		t.Fatalf("recommission unknown: %v", err)
	}
	if _, err := filepath.Glob(filepath.Join(n.cfg.DataDir, "*.tmp*")); err != nil {
		t.Fatal(err)
	}
}

func TestNoLeaderIsUnavailable(t *testing.T) {
	t.Parallel()
	n := startNode(t, testConfig(t, t.TempDir()))
	ctx := context.Background()
	start := time.Now()
	// Shard 99 has no group anywhere: no leader will ever appear.
	_, _, err := n.write(ctx, 99, true, nil, nil)
	if took := time.Since(start); took < n.noLeaderWait() || took > n.noLeaderWait()+2*time.Second {
		t.Fatalf("answered after %v", took)
	}
	var nl *NoLeaderError
	if !errors.As(err, &nl) || nl.Shard != 99 || !errors.Is(err, ErrNoLeader) {
		t.Fatalf("want NoLeaderError, got %v", err)
	}
	st := n.toStatus(err, "s", 99)
	d := detail[*shoalv1.NotLeader](t, st, codes.Unavailable)
	if d.Shard != 99 || d.LeaderId != 0 || !strings.Contains(st.Error(), "shard 99 has no leader (quorum lost?)") {
		t.Fatalf("status %v detail %v", st, d)
	}
	// A known leader that is not this node (a stale hop) maps to NotLeader with its address.
	st = n.toStatus(&replica.NotLeaderError{Shard: 3, Leader: n.ID()}, "s", 3)
	if d := detail[*shoalv1.NotLeader](t, st, codes.Unavailable); d.LeaderAddr != n.Addr() || d.LeaderId != n.ID() {
		t.Fatalf("detail %v", d)
	}
	// Readiness explains itself.
	if code, _ := httpGet(t, "http://"+n.HTTPAddr()+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d", code)
	}
	n.Close()
	if r := n.notReady(); r == "" {
		t.Fatal("ready after close")
	}
}

// A retry whose events two appends wrote, with another stream's event between them in the
// shard log, is a duplicate; its answer gives the first event's position and, in
// last_position, the last one's, so that a reader waiting for the batch (read-your-writes)
// waits long enough.
func TestDuplicateAcrossAppendsPositions(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shards := n.Settings().Shards
	other := ""
	for i := 0; other == ""; i++ {
		if s := fmt.Sprintf("other-%d", i); ring.ShardOf(s, shards) == ring.ShardOf("order-1", shards) {
			other = s
		}
	}
	first, second := events("Placed"), events("Paid")
	r1, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "order-1", Expected: noStream(), Events: first})
	if err != nil || r1.LastPosition != r1.Position {
		t.Fatalf("first append: %v, %v", r1, err)
	}
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: other, Expected: noStream(), Events: events("X")}); err != nil {
		t.Fatal(err)
	}
	r2, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "order-1", Expected: exact(0), Events: second})
	if err != nil || r2.Position != r1.Position+2 {
		t.Fatalf("second append: %v, %v", r2, err)
	}
	dup, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "order-1", Expected: anyVersion(), Events: append(first, second...)})
	if err != nil || !dup.Duplicate || dup.FirstVersion != 0 || dup.LastVersion != 1 ||
		dup.Position != r1.Position || dup.LastPosition != r2.Position {
		t.Fatalf("duplicate of both appends: %v, %v (positions %d and %d)", dup, err, r1.Position, r2.Position)
	}
}

// A node whose name a live member already has (another node ID: another data directory) is
// refused at once when it joins, with an error naming that member; gossip keeps one member per
// name, so it would otherwise start unseen by the cluster.
func TestDuplicateNameRefused(t *testing.T) {
	t.Parallel()
	first := startNode(t, testConfig(t, t.TempDir()))
	cfg := testConfig(t, t.TempDir()) // also named "solo"
	cfg.Join = []string{first.cfg.Gossip}
	cfg.JoinTimeout = 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := Start(ctx, cfg)
	if !errors.Is(err, membership.ErrNameTaken) || time.Since(start) > 10*time.Second {
		t.Fatalf("joining under a taken name: %v after %v", err, time.Since(start).Round(time.Millisecond))
	}
	t.Log(err)
	// Under another name a node joins (from the refused one's data directory too:
	// TestRenamedAfterNameTaken).
	cfg.Name, cfg.DataDir, cfg.Gossip = "solo-2", t.TempDir(), testaddr.Gossip(t)
	second := startNode(t, cfg)
	if got := len(second.Members()); got != 2 {
		t.Fatalf("the second node sees %d members, want 2", got)
	}
}

// A node of a cluster whose name a new member took while it was down (a replacement started
// under the name on an empty data directory) is refused at its restart, and told that its
// directory keeps the name: another --node does not start it, moving the directory away does.
func TestReplacedNodeRestartRefused(t *testing.T) {
	t.Parallel()
	seed := testConfig(t, t.TempDir())
	seed.Name = "seed"
	first := startNode(t, seed)
	old := testConfig(t, t.TempDir()) // named "solo"
	old.Join = []string{first.cfg.Gossip}
	startNode(t, old).Close() // leaves gossip: its name is free
	replacement := testConfig(t, t.TempDir())
	replacement.Join = []string{first.cfg.Gossip}
	startNode(t, replacement)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Start(ctx, old)
	if !errors.Is(err, membership.ErrNameTaken) || !strings.Contains(err.Error(), "move it away and start on an empty one") {
		t.Fatalf("restarting the replaced node: %v", err)
	}
	t.Log(err)
}

// A write whose outcome is unknown is answered UNKNOWN whatever its cause's code (a forwarded
// call's INTERNAL or DEADLINE_EXCEEDED would otherwise pass through), and answers that refused a
// forwarded call before it ran (no connection, a node starting or shutting down, a not-leader
// answer) do not make its outcome unknown.
func TestOutcomeUnknownAnswers(t *testing.T) {
	n := &Node{}
	for _, code := range []codes.Code{codes.Internal, codes.DeadlineExceeded, codes.Canceled, codes.Unavailable} {
		err := n.toStatus(&OutcomeUnknownError{Shard: 3, Cause: status.Error(code, "cause")}, "s", 3)
		if status.Code(err) != codes.Unknown {
			t.Errorf("outcome unknown caused by %s: answered %s", code, status.Code(err))
		}
	}
	starting := status.Errorf(codes.Unavailable, "node n2 %s (joining its cluster, reopening its shards); try another node", startingMsg)
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{starting, false},
		{status.Error(codes.Unavailable, shuttingDownMsg), false},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), false},
		{withDetails(codes.Unavailable, "not the leader", &shoalv1.NotLeader{Shard: 3, LeaderId: 2}), false},
		{status.Error(codes.FailedPrecondition, "wrong expected version"), false},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), true},
		{status.Error(codes.DeadlineExceeded, "deadline"), true},
		{status.Error(codes.Unknown, "outcome unknown"), true},
	} {
		if got := mayHaveArrived(tc.err); got != tc.want {
			t.Errorf("mayHaveArrived(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestDecommissionRecommissionRace: a Decommission and a Recommission at once leave the data
// directory and gossip agreeing (the flag file written by one, gossip last set by the other
// gave a node that drains again at its next restart).
func TestDecommissionRecommissionRace(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	for i := range 500 {
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := n.Decommission(); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			if _, err := n.Recommission(); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		if file, gossiped := n.dir.decommissioning(), n.gossip().Self().Decommissioning; file != gossiped {
			t.Fatalf("round %d: the data directory says decommissioning %v, gossip %v", i, file, gossiped)
		}
	}
}

// TestLongMetadataRefusedFirst: a node whose gossip metadata fits alone but not with the
// cluster's settings (long advertised names) is refused by Validate, before anything is
// written: it failed once cluster.json and groups.json were written, and then, with its
// identity stored under the long name, refused the shorter one.
func TestLongMetadataRefusedFirst(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	base := membership.Meta{NodeID: 1 << 63, Name: cfg.Name, Zone: cfg.Zone, HTTPAddr: "127.0.0.1:65535",
		Version: buildinfo.Version, ShardFormat: shard.MaxFormat}
	// An advertised host that leaves the metadata 25 bytes short of the limit without the
	// cluster's ID (36 bytes) and settings.
	host := "a"
	for {
		m := base
		m.GRPCAddr = host + ".example:7400"
		b, err := membership.EncodeMeta(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) >= membership.MaxMetaSize-25 {
			break
		}
		host += "a"
	}
	cfg.Advertise = host + ".example:7400"
	_, err := Start(context.Background(), cfg)
	if !errors.Is(err, membership.ErrMetaTooLong) || !strings.Contains(err.Error(), "config: Advertise") {
		t.Fatalf("Start with a %d-byte advertised address: %v", len(cfg.Advertise), err)
	}
	t.Log(err)
	for _, f := range []string{identityFile, clusterFile, groupsFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the refusal: %v", f, err)
		}
	}
	if !errors.Is(cfg.Validate(), membership.ErrMetaTooLong) {
		t.Fatalf("Validate passed the config Start refused")
	}
}

// TestJoinSeedPortRefused: a --join seed whose port memberlist cannot parse (empty, a service
// name) is refused by Validate, as one out of range is: memberlist takes only a decimal port,
// and the join would fail, or be retried for good, only once tried.
func TestJoinSeedPortRefused(t *testing.T) {
	for _, seed := range []string{"127.0.0.1:", "127.0.0.1:http", "[::1]:"} {
		if err := (Config{Join: []string{seed}}).Validate(); err == nil {
			t.Errorf("Join %q: Validate passed it; memberlist refuses its port at join", seed)
		}
	}
	for _, seed := range []string{"127.0.0.1", "127.0.0.1:7946", "seed.example", "n1/127.0.0.1:7946"} {
		if err := (Config{Join: []string{seed}}).Validate(); err != nil {
			t.Errorf("Join %q: %v", seed, err)
		}
	}
}

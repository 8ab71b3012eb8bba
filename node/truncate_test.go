package node_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// TestTruncate runs three nodes of this version, every shard replicated three ways at the
// latest format: a truncation through a node that does not lead the shard removes the
// stream's first events on every replica, from stream reads and from the shard log, keeps the
// versions going, keeps the IDs (a retried append is a duplicate), and refuses what it must.
func TestTruncate(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c, _ := startPlacementCluster(t, 3)
	waitPlaced(t, c, "replication 3", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, []string{c.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testnode.WaitMaxFormat(t, cl, placementWait)

	const stream = "order-7"
	sh := ring.ShardOf(stream, placementShards)
	evs := make([]client.Event, 6)
	for i := range evs {
		evs[i] = client.Event{ID: uuid.Must(uuid.NewV7()), Type: "Step", Data: []byte(fmt.Sprintf(`{"n":%d}`, i))}
	}
	if _, err := cl.Append(ctx, stream, client.NoStream, evs[:4]...); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Append(ctx, stream, client.Exact(3), evs[4:]...); err != nil {
		t.Fatal(err)
	}

	// Refusals write nothing.
	if _, err := cl.Truncate(ctx, stream, 3, client.Exact(4)); !errors.Is(err, client.ErrWrongExpectedVersion) {
		t.Fatalf("truncate expecting version 4 of a stream at 5: %v, want ErrWrongExpectedVersion", err)
	}
	if _, err := cl.Truncate(ctx, "absent-stream", 3, client.Any); !errors.Is(err, client.ErrStreamNotFound) {
		t.Fatalf("truncate of an absent stream: %v, want ErrStreamNotFound", err)
	}
	if _, err := cl.Truncate(ctx, stream, 3, client.NoStream); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("truncate expecting no stream: %v, want ErrInvalidArgument", err)
	}

	start, err := cl.Truncate(ctx, stream, 3, client.Exact(5))
	if err != nil || start != 3 {
		t.Fatalf("truncate before 3: start %d, %v; want 3", start, err)
	}
	versions := func(opts ...client.ReadOption) []uint64 {
		var out []uint64
		for e, err := range cl.Read(ctx, stream, opts...) {
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e.Version)
		}
		return out
	}
	if got := fmt.Sprint(versions()); got != "[3 4 5]" {
		t.Fatalf("read after truncating before 3: versions %s, want [3 4 5]", got)
	}
	// A read that needs the history whole is refused below the truncation, with the facts,
	// subscriptions too; from the start on it reads the same.
	for _, opts := range [][]client.ReadOption{{client.WholeHistory()}, {client.WholeHistory(), client.FromVersion(2), client.Follow()}} {
		var hte *client.HistoryTruncatedError
		for _, err := range cl.Read(ctx, stream, opts...) {
			if !errors.As(err, &hte) || hte.Stream != stream || hte.Start != 3 {
				t.Fatalf("read of the whole history from below the truncation: %v, want ErrHistoryTruncated at 3", err)
			}
		}
		if hte == nil {
			t.Fatal("read of the whole history from below the truncation: no error")
		}
	}
	if got := fmt.Sprint(versions(client.WholeHistory(), client.FromVersion(3))); got != "[3 4 5]" {
		t.Fatalf("read of the whole history from the truncation: versions %s, want [3 4 5]", got)
	}
	for _, err := range cl.Read(ctx, stream, client.WholeHistory(), client.FromEnd(), client.Backward()) {
		if !errors.Is(err, client.ErrInvalidArgument) {
			t.Fatalf("whole history read backwards: %v, want ErrInvalidArgument", err)
		}
	}
	raw, err := shoalv1.NewStreamsClient(c.Dial(t, 0)).Read(ctx, &shoalv1.ReadRequest{Stream: stream, Backward: true, WholeHistory: true})
	if err == nil {
		_, err = raw.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("whole_history read backwards, sent as such: %v, want INVALID_ARGUMENT", err)
	}
	// The truncated events' IDs are forgotten (shard format 7): the first append again, with
	// expected version no-stream, is refused as a wrong expected version, not a duplicate; its
	// last event, still stored, keeps its ID known (an ID conflict with expected version any).
	_, err = cl.Append(ctx, stream, client.NoStream, evs[:3]...)
	if !errors.Is(err, client.ErrWrongExpectedVersion) {
		t.Fatalf("first append's truncated events repeated after the truncation: %v, want ErrWrongExpectedVersion", err)
	}
	if _, err := cl.Append(ctx, stream, client.Any, evs[:4]...); !errors.Is(err, client.ErrIDConflict) {
		t.Fatalf("first append repeated after the truncation, one of its events stored: %v, want ErrIDConflict", err)
	}

	// Every replica, read on its own (stale), lost the same events from its shard log.
	for i := range c.Nodes {
		conn := c.Dial(t, i)
		testnode.WaitFor(t, 15*time.Second, fmt.Sprintf("node %d's replica", i+1), func() string {
			log, err := readShardStale(ctx, conn, sh)
			if err != nil {
				return err.Error()
			}
			var got []uint64
			for _, e := range log {
				if e.GetStream() == stream {
					got = append(got, e.GetVersion())
				}
			}
			if fmt.Sprint(got) != "[3 4 5]" {
				return fmt.Sprintf("versions %v in the shard log", got)
			}
			return ""
		})
	}

	// A live stream keeps its last event; the versions go on after it.
	if start, err = cl.Truncate(ctx, stream, math.MaxUint64, client.StreamExists); err != nil || start != 5 {
		t.Fatalf("truncate of everything: start %d, %v; want 5 (the last event stays)", start, err)
	}
	if start, err = cl.Truncate(ctx, stream, math.MaxUint64, client.StreamExists); err != nil || start != 5 {
		t.Fatalf("the same truncate again: start %d, %v; want 5", start, err)
	}
	next, err := cl.Append(ctx, stream, client.Exact(5), client.Event{Type: "Step", Data: []byte("{}")})
	if err != nil || next.FirstVersion != 6 {
		t.Fatalf("append after truncating: %+v, %v; want version 6", next, err)
	}
	if got := fmt.Sprint(versions()); got != "[5 6]" {
		t.Fatalf("read at the end: versions %s, want [5 6]", got)
	}
}

// TestTruncateBeforeFormat4: a shard not yet raised to format 4 (here: no placement round has
// run to raise it) refuses a truncation with FAILED_PRECONDITION and the SHARD_FORMAT reason,
// which the client returns as ErrShardFormat, without proposing it: a replica of a version
// without the command would stop at it. The stream keeps every event.
func TestTruncateBeforeFormat4(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a node")
	}
	c := testnode.Start(t, 1, testnode.Options{Shards: 1, Replication: 1, Configure: func(_ int, cfg *node.Config) {
		cfg.PlacementInterval = time.Hour // the shard stays at the format it was created at
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, []string{c.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Append(ctx, "s", client.NoStream, client.Event{Type: "A"}, client.Event{Type: "B"}); err != nil {
		t.Fatal(err)
	}
	_, err = cl.Truncate(ctx, "s", 1, client.Any)
	if !errors.Is(err, client.ErrShardFormat) {
		t.Fatalf("truncate of a shard below format 4: %v, want ErrShardFormat", err)
	}
	t.Log(err)
	n := 0
	for _, err := range cl.Read(ctx, "s") {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d events after the refused truncate, want 2", n)
	}
}

// TestReadShardAcrossLongTruncation: a shard read over more truncated events than one
// shard read skips at a time (4096) goes on past them, plain or following, rather than end
// there as if at the end of the log, or wait there for new events.
func TestReadShardAcrossLongTruncation(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a node")
	}
	c := testnode.Start(t, 1, testnode.Options{Shards: 1, Replication: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, []string{c.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testnode.WaitMaxFormat(t, cl, 30*time.Second)
	batch := make([]client.Event, 100)
	for i := range 50 {
		for j := range batch {
			batch[j] = client.Event{Type: "Step"}
		}
		exp := client.NoStream
		if i > 0 {
			exp = client.Exact(uint64(i*100) - 1)
		}
		if _, err := cl.Append(ctx, "long", exp, batch...); err != nil {
			t.Fatal(err)
		}
	}
	if start, err := cl.Truncate(ctx, "long", math.MaxUint64, client.Exact(4999)); err != nil || start != 4999 {
		t.Fatalf("truncate: start %d, %v", start, err)
	}
	after, err := cl.Append(ctx, "after", client.NoStream, client.Event{Type: "Step"})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("[long@4999 after@0 pos=%d]", after.Position)
	read := func(opts ...client.ReadOption) string {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var got []string
		for e, err := range cl.ReadShard(rctx, 0, 0, 0, opts...) {
			if err != nil {
				t.Fatal(err)
			}
			s := fmt.Sprintf("%s@%d", e.Stream, e.Version)
			if e.Stream == "after" {
				s += fmt.Sprintf(" pos=%d", e.Position)
			}
			if got = append(got, s); len(got) == 2 {
				break
			}
		}
		return fmt.Sprint(got)
	}
	if got := read(); got != want {
		t.Fatalf("ReadShard from 0: %s, want %s", got, want)
	}
	if got := read(client.Follow()); got != want {
		t.Fatalf("ReadShard from 0, following: %s, want %s", got, want)
	}
}

// TestTruncateForgetsEveryID: a truncation of more events than one raft entry's truncation
// forgets the IDs of is proposed in steps, so that every removed event's ID entry goes (shard
// format 7): 69,999 forgotten of 70,000 events, where one entry forgets 65,536.
func TestTruncateForgetsEveryID(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a node")
	}
	reg := prometheus.NewRegistry()
	c := testnode.Start(t, 1, testnode.Options{Shards: 1, Replication: 1, Configure: func(_ int, cfg *node.Config) {
		cfg.Registry = reg
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, c.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testnode.WaitMaxFormat(t, cl, 30*time.Second)
	const events = 70000
	evs := make([]client.Event, 1000)
	for sent := 0; sent < events; sent += len(evs) {
		for i := range evs {
			evs[i] = client.Event{ID: uuid.Must(uuid.NewV7()), Type: "Tick"}
		}
		if _, err := cl.Append(ctx, "ticks", client.Any, evs...); err != nil {
			t.Fatal(err)
		}
	}
	if start, err := cl.Truncate(ctx, "ticks", math.MaxUint64, client.Exact(events-1)); err != nil || start != events-1 {
		t.Fatalf("truncate all but the last of %d events: start %d, %v", events, start, err)
	}
	if got := metricSum(t, []*prometheus.Registry{reg}, "shoal_shard_event_ids_forgotten_total", ""); got != events-1 {
		t.Fatalf("%v event IDs forgotten, want %d", got, events-1)
	}
}

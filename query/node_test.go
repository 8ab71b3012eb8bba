package query

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
)

// TestProjectionOverNode builds a read model from a real node's four shards,
// stops and restarts the projection twice while events keep arriving, and
// checks that every event was applied exactly once.
func TestProjectionOverNode(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	c := testnode.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	dir := t.TempDir()

	var appended []client.RecordedEvent // what we expect, by ID
	want := map[uint32]uint64{}         // last position per shard
	appendSome := func(n int) {
		for range n {
			stream := fmt.Sprintf("order-%d", rng.IntN(25))
			if rng.IntN(5) == 0 {
				stream = fmt.Sprintf("audit-%d", rng.IntN(3)) // filtered out
			}
			evs := make([]client.Event, 1+rng.IntN(6))
			for i := range evs {
				evs[i] = client.Event{Type: "Placed", Data: []byte{byte(i)}}
			}
			res, err := c.Append(ctx, stream, client.Any, evs...)
			if err != nil {
				t.Fatal(err)
			}
			want[res.Shard] = max(want[res.Shard], res.Position+uint64(len(evs))-1)
		}
	}
	cfg := Config{Name: "orders", Client: c, Handler: HandlerFunc(countingHandler), Dir: dir,
		StreamPrefix: "order-", PageSize: 16, Concurrency: 2, PollMin: 2 * time.Millisecond, PollMax: 20 * time.Millisecond}
	for round := range 3 {
		appendSome(15)
		p, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Run(runCtx) }()
		if round == 1 {
			appendSome(10) // while running
		}
		for s, pos := range want {
			if err := p.WaitFor(ctx, s, pos); err != nil {
				t.Fatalf("round %d: wait shard %d pos %d: %v (checkpoint %v)", round, s, pos, err, p.Checkpoint())
			}
		}
		stop()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}

	p, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	shards := map[uint32]bool{}
	handled, skipped := 0, 0
	for s := range uint32(4) {
		next := uint64(0)
		for ev, err := range c.ReadShard(ctx, s, 0, 0) {
			if err != nil {
				t.Fatal(err)
			}
			// WaitForAppend relies on one position per event.
			if ev.Position != next {
				t.Fatalf("shard %d: position %d after %d", s, ev.Position, next-1)
			}
			next++
			appended = append(appended, ev)
		}
		if cp := p.Checkpoint(); cp[s] != next {
			t.Fatalf("checkpoint %v, shard %d ends at %d", cp, s, next)
		}
	}
	for _, ev := range appended {
		v, err := p.Get([]byte("n/" + ev.ID.String()))
		if ev.Stream[:6] != "order-" {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("filtered %s handled", ev.Stream)
			}
			skipped++
			continue
		}
		if err != nil || binary.BigEndian.Uint64(v) != 1 {
			t.Fatalf("event %s (%s@%d): count %x err %v", ev.ID, ev.Stream, ev.Version, v, err)
		}
		shards[ev.Shard] = true
		handled++
	}
	if len(shards) < 2 || handled == 0 || skipped == 0 {
		t.Fatalf("weak test: %d shards, %d handled, %d skipped", len(shards), handled, skipped)
	}
	t.Logf("%d events over %d shards applied exactly once, %d filtered", handled, len(shards), skipped)
}

// TestProjectionDeletesOverNode: once the node raised its shards to format 2, a projection
// with Config.Deletes sees each delete at its position, one without does not, and both
// checkpoints pass deletes at the end of a shard's log.
func TestProjectionDeletesOverNode(t *testing.T) {
	c := testnode.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	testnode.WaitMaxFormat(t, c, 20*time.Second)
	ev := client.Event{Type: "Placed", Data: []byte("{}")}
	for _, s := range []string{"order-1", "order-2"} {
		if _, err := c.Append(ctx, s, client.NoStream, ev, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Delete(ctx, "order-1", client.Exact(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "order-1", client.Exact(1), ev); err != nil {
		t.Fatal(err)
	}
	// Both streams are in shard 1 of 4: the tombstone ends its log.
	var tomb client.DeleteResult
	if err := c.Delete(ctx, "order-2", client.Any, client.Tombstone(), client.DeleteResultTo(&tomb)); err != nil {
		t.Fatal(err)
	}
	if !tomb.Logged || tomb.Shard != 1 {
		t.Fatalf("tombstone result %+v: want a logged delete in shard 1", tomb)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}

	seen := func(deletes bool) []string {
		var got []string
		h := HandlerFunc(func(_ context.Context, _ *Batch, ev client.RecordedEvent) error {
			got = append(got, fmt.Sprintf("%s@%d:%v", ev.Stream, ev.Version, ev.Deletion))
			return nil
		})
		p, err := Open(Config{Name: "deletes", Client: c, Handler: h, Dir: t.TempDir(), Deletes: deletes,
			PollMin: 2 * time.Millisecond, PollMax: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Run(runCtx) }()
		// The tombstone ends its shard's log: waiting for it is waiting for the whole shard.
		if err := p.WaitForDelete(ctx, tomb); err != nil {
			t.Fatalf("WaitForDelete(%+v): %v (checkpoint %v)", tomb, err, p.Checkpoint())
		}
		if cp := p.Checkpoint(); cp[tomb.Shard] != tomb.Position+1 {
			t.Fatalf("after WaitForDelete: checkpoint %v, want shard %d at %d", cp, tomb.Shard, tomb.Position+1)
		}
		for _, s := range st.GetTopology().GetShards() {
			if s.GetLastPosition() > 0 {
				if err := p.WaitFor(ctx, s.GetShard(), s.GetLastPosition()-1); err != nil {
					t.Fatalf("shard %d to position %d: %v (checkpoint %v)", s.GetShard(), s.GetLastPosition(), err, p.Checkpoint())
				}
			}
		}
		stop()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}
		return got
	}
	// Order within each stream (the two streams may share a shard or not).
	perStream := func(got []string, stream string) []string {
		var out []string
		for _, g := range got {
			if len(g) > len(stream) && g[:len(stream)+1] == stream+"@" {
				out = append(out, g)
			}
		}
		return out
	}
	with := seen(true)
	if got, want := fmt.Sprint(perStream(with, "order-1")), "[order-1@0:event order-1@1:event order-1@1:soft delete order-1@2:event]"; got != want {
		t.Errorf("with deletes, order-1: %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(perStream(with, "order-2")), "[order-2@0:event order-2@1:event order-2@1:tombstone]"; got != want {
		t.Errorf("with deletes, order-2: %s, want %s", got, want)
	}
	without := seen(false)
	if got, want := fmt.Sprint(perStream(without, "order-2")), "[order-2@0:event order-2@1:event]"; got != want {
		t.Errorf("without deletes, order-2: %s, want %s", got, want)
	}
	if len(without) != 5 {
		t.Errorf("without deletes: %v, want the 5 events", without)
	}
}

// TestProjectionLongPolls checks that a caught-up projection learns of a new event from its
// long poll, not at its next poll: with a poll of 30 s, an event appended to an idle shard
// reaches the handler within seconds.
func TestProjectionLongPolls(t *testing.T) {
	c := testnode.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	cfg := Config{Name: "live", Client: c, Handler: HandlerFunc(countingHandler), Dir: t.TempDir(),
		PollMin: 30 * time.Second, PollMax: 30 * time.Second}
	p, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()

	first, err := c.Append(ctx, "live-1", client.Any, client.Event{Type: "Placed"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitForAppend(ctx, first); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		time.Sleep(100 * time.Millisecond) // every shard idle, in its long poll
		res, err := c.Append(ctx, fmt.Sprint("live-", i), client.Any, client.Event{Type: "Placed"})
		if err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		err = p.WaitForAppend(wctx, res)
		wcancel()
		if err != nil {
			t.Fatalf("event %d did not reach the projection within 10 s of a 30 s poll: %v", i, err)
		}
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
}

// TestProjectionFiltersOnServer: a projection's StreamPrefix and EventTypes are applied by the
// server, so the events it does not want are not sent; its checkpoint still moves past them,
// so waiting for an append it filters out ends.
func TestProjectionFiltersOnServer(t *testing.T) {
	c := testnode.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var handled []string
	h := HandlerFunc(func(_ context.Context, _ *Batch, ev client.RecordedEvent) error {
		handled = append(handled, ev.Stream+":"+ev.Type)
		return nil
	})
	p, err := Open(Config{Name: "filtered", Client: c, Handler: h, Dir: t.TempDir(),
		StreamPrefix: "order-", EventTypes: []string{"Placed"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()

	for i, a := range []struct{ stream, typ string }{
		{"order-1", "Placed"}, {"audit-1", "Placed"}, {"order-1", "Paid"}, {"order-2", "Placed"}, {"audit-2", "Logged"},
	} {
		res, err := c.Append(ctx, a.stream, client.Any, client.Event{Type: a.typ})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitForAppend(ctx, res); err != nil {
			t.Fatalf("append %d (%s %s): %v (checkpoint %v)", i, a.stream, a.typ, err, p.Checkpoint())
		}
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	slices.Sort(handled)
	if got := fmt.Sprint(handled); got != "[order-1:Placed order-2:Placed]" {
		t.Fatalf("handled %s", got)
	}
	if n := testutil.ToFloat64(p.metrics.skipped); n != 0 {
		t.Fatalf("%v events were sent to the projection and skipped by it, want 0 (filtered by the server)", n)
	}
}

// TestRunEndsWhenClientClosed: once the projection's client is closed every read fails with
// client.ErrClosed for good, and Run returns it instead of retrying until its context ends.
func TestRunEndsWhenClientClosed(t *testing.T) {
	cl := testnode.Start(t, 1, testnode.Options{Shards: 4, Replication: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, []string{cl.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Open(Config{Name: "closed", Client: c, Handler: HandlerFunc(countingHandler), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	res, err := c.Append(ctx, "x-1", client.Any, client.Event{Type: "T"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitForAppend(ctx, res); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-done; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Run = %v after its client was closed, want client.ErrClosed", err)
	}
}

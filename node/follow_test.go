package node_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/ring"
)

// collect ranges over seq in a goroutine and sends what it yields on the returned channel,
// which closes when seq ends.
func collect(seq func(func(client.RecordedEvent, error) bool)) <-chan followed {
	ch := make(chan followed, 1024)
	go func() {
		defer close(ch)
		for ev, err := range seq {
			ch <- followed{ev, err}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

type followed struct {
	ev  client.RecordedEvent
	err error
}

// next returns what ch yields next, failing t after timeout.
func next(t *testing.T, ch <-chan followed, timeout time.Duration) followed {
	t.Helper()
	select {
	case f, ok := <-ch:
		if !ok {
			t.Fatal("the subscription ended")
		}
		return f
	case <-time.After(timeout):
		t.Fatalf("nothing from the subscription in %v", timeout)
	}
	panic("unreachable")
}

// quiet checks that ch yields nothing for d.
func quiet(t *testing.T, ch <-chan followed, d time.Duration) {
	t.Helper()
	select {
	case f := <-ch:
		t.Fatalf("the subscription yielded %+v, want nothing", f)
	case <-time.After(d):
	}
}

func appendOne(t *testing.T, c *client.Client, stream, typ string) client.AppendResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Append(ctx, stream, client.Any, client.Event{Type: typ, Data: []byte(typ)})
	if err != nil {
		t.Fatalf("append %s to %s: %v", typ, stream, err)
	}
	return res
}

// TestFollowStream subscribes to streams: one that does not exist yet, from the end of one
// that does, across a soft delete, and up to a tombstone, which ends the subscription.
func TestFollowStream(t *testing.T) {
	c := testnode.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A stream that does not exist yet is waited for.
	sub := collect(c.Read(ctx, "later", client.Follow()))
	quiet(t, sub, 300*time.Millisecond)
	for i := range 3 {
		appendOne(t, c, "later", fmt.Sprint("e", i))
		if f := next(t, sub, 5*time.Second); f.err != nil || f.ev.Version != uint64(i) || f.ev.Type != fmt.Sprint("e", i) {
			t.Fatalf("event %d: got %+v", i, f)
		}
	}

	// From the end: only what is appended after the subscription started.
	fromEnd := collect(c.Read(ctx, "later", client.Follow(), client.FromEnd()))
	quiet(t, fromEnd, 300*time.Millisecond)
	appendOne(t, c, "later", "e3")
	for _, ch := range []<-chan followed{sub, fromEnd} {
		if f := next(t, ch, 5*time.Second); f.err != nil || f.ev.Version != 3 {
			t.Fatalf("after e3: got %+v", f)
		}
	}

	// A soft delete hides nothing a subscriber already has; the stream goes on after it.
	if err := c.Delete(ctx, "later", client.Exact(3)); err != nil {
		t.Fatal(err)
	}
	quiet(t, sub, 200*time.Millisecond)
	appendOne(t, c, "later", "e4")
	if f := next(t, sub, 5*time.Second); f.err != nil || f.ev.Version != 4 || f.ev.Type != "e4" {
		t.Fatalf("after the soft delete: got %+v", f)
	}
	if f := next(t, fromEnd, 5*time.Second); f.err != nil || f.ev.Version != 4 {
		t.Fatalf("after the soft delete, from the end: got %+v", f)
	}

	// A tombstone ends it.
	if err := c.Delete(ctx, "later", client.Any, client.Tombstone()); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan followed{sub, fromEnd} {
		if f := next(t, ch, 5*time.Second); !errors.Is(f.err, client.ErrStreamDeleted) {
			t.Fatalf("after the tombstone: got %+v, want ErrStreamDeleted", f)
		}
	}
	// A subscription to a tombstoned stream fails at once.
	for _, err := range c.Read(ctx, "later", client.Follow()) {
		if !errors.Is(err, client.ErrStreamDeleted) {
			t.Fatalf("subscribing to a tombstoned stream: %v", err)
		}
		break
	}

	// Breaking out of the loop ends the subscription.
	appendOne(t, c, "other", "x")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range c.Read(ctx, "other", client.Follow()) {
			break
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("breaking out did not end the subscription")
	}
}

// TestFollowRefusals checks the options a subscription does not take.
func TestFollowRefusals(t *testing.T) {
	c := testnode.Client(t)
	ctx := context.Background()
	for name, opts := range map[string][]client.ReadOption{
		"backward": {client.Follow(), client.Backward()},
		"count":    {client.Follow(), client.Count(3)},
	} {
		for _, err := range c.Read(ctx, "s", opts...) {
			var inv *client.InvalidArgumentError
			if !errors.As(err, &inv) || inv.Field != "Follow" {
				t.Errorf("%s: %v, want an invalid Follow", name, err)
			}
			break
		}
	}
	for name, seq := range map[string]func(func(client.RecordedEvent, error) bool){
		"count":         c.ReadShard(ctx, 0, 0, 5, client.Follow()),
		"wait+follow":   c.ReadShard(ctx, 0, 0, 0, client.Follow(), client.Wait(time.Second)),
		"wait too long": c.ReadShard(ctx, 0, 0, 0, client.Wait(2*client.MaxWait)),
		"long prefix":   c.ReadShard(ctx, 0, 0, 0, client.StreamPrefix(strings.Repeat("p", 513))),
		"empty type":    c.ReadShard(ctx, 0, 0, 0, client.EventTypes("A", "")),
	} {
		for _, err := range seq {
			if !errors.Is(err, client.ErrInvalidArgument) {
				t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
			}
			break
		}
	}
}

// TestFollowShard subscribes to a shard's log, deletes included, and long-polls it.
func TestFollowShard(t *testing.T) {
	t.Parallel()
	c := testnode.Client(t)
	testnode.WaitMaxFormat(t, c, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	first := appendOne(t, c, "a", "a0")
	shard := first.Shard
	sub := collect(c.ReadShard(ctx, shard, 0, 0, client.Follow(), client.IncludeDeletes()))
	if f := next(t, sub, 5*time.Second); f.err != nil || f.ev.Stream != "a" || f.ev.Position != first.Position {
		t.Fatalf("first: got %+v", f)
	}
	// Streams of the same shard, and a delete.
	var streams []string
	for i := 0; len(streams) < 3; i++ {
		name := fmt.Sprint("s", i)
		if ring.ShardOf(name, 4) == shard {
			streams = append(streams, name)
		}
	}
	want := []string{}
	for _, s := range streams {
		appendOne(t, c, s, "x")
		want = append(want, s)
	}
	var del client.DeleteResult
	if err := c.Delete(ctx, streams[0], client.Any, client.DeleteResultTo(&del)); err != nil {
		t.Fatal(err)
	}
	pos := first.Position
	for i, s := range want {
		f := next(t, sub, 5*time.Second)
		if f.err != nil || f.ev.Stream != s || f.ev.Position <= pos || f.ev.Deletion != client.NotDeleted {
			t.Fatalf("event %d: got %+v, want one of %s after position %d", i, f, s, pos)
		}
		pos = f.ev.Position
	}
	if f := next(t, sub, 5*time.Second); f.err != nil || f.ev.Deletion != client.SoftDeleted || f.ev.Position != del.Position {
		t.Fatalf("the delete: got %+v, want a soft delete at %d", f, del.Position)
	}

	// A long poll that skips deletes waits past them.
	start := time.Now()
	for ev, err := range c.ReadShard(ctx, shard, del.Position, 0, client.Wait(300*time.Millisecond)) {
		t.Fatalf("a long poll over a skipped delete yielded %+v, %v", ev, err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("a long poll over a skipped delete returned after %v, before its wait", took)
	}
	// A long poll whose filter matches nothing still moves the resume point to the end.
	var resume atomic.Uint64
	for ev, err := range c.ReadShard(ctx, shard, 0, 0, client.Wait(200*time.Millisecond), client.StreamPrefix("zzz"), client.ResumeAt(&resume)) {
		t.Fatalf("a filter that matches nothing yielded %+v, %v", ev, err)
	}
	if r := resume.Load(); r != del.Position+1 {
		t.Fatalf("resume at %d after a filtered long poll, want the log's end %d", r, del.Position+1)
	}
	// A long poll whose filter skips a run of entries longer than a page reads on to the
	// wanted one at once (it waited on the shard between pages).
	skipFrom := del.Position + 1
	for i := range 300 {
		appendOne(t, c, streams[i%len(streams)], "skipped")
	}
	wanted := appendOne(t, c, streams[0], "wanted")
	start = time.Now()
	var found []client.RecordedEvent
	for ev, err := range c.ReadShard(ctx, shard, skipFrom, 0, client.Wait(10*time.Second), client.EventTypes("wanted")) {
		if err != nil {
			t.Fatal(err)
		}
		found = append(found, ev)
	}
	if took := time.Since(start); len(found) != 1 || found[0].Position != wanted.Position || took > 800*time.Millisecond {
		t.Fatalf("a long poll past 300 skipped entries: %d events in %v, want the wanted one at once", len(found), took)
	}
	end := wanted.Position + 1
	for i := range 301 { // the unfiltered subscription gets them all
		if f := next(t, sub, 5*time.Second); f.err != nil {
			t.Fatalf("subscription, entry %d of the run: %v", i, f.err)
		}
	}

	// From the end: only what comes next; with a type filter, only that type.
	fromEnd := collect(c.ReadShard(ctx, shard, 0, 0, client.Follow(), client.FromEnd()))
	onlyLate := collect(c.ReadShard(ctx, shard, 0, 0, client.Follow(), client.EventTypes("late")))

	// A long poll at the end returns nothing after its wait, or the next entry as soon as
	// it is appended.
	start = time.Now()
	for ev, err := range c.ReadShard(ctx, shard, end, 0, client.Wait(300*time.Millisecond)) {
		t.Fatalf("an empty long poll yielded %+v, %v", ev, err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("an empty long poll returned after %v, before its wait", took)
	}
	lateErr := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		_, err := c.Append(ctx, streams[1], client.Any, client.Event{Type: "late"})
		lateErr <- err
	}()
	// A subscriber may see the event before its writer has the acknowledgement: wait for it.
	defer func() {
		if err := <-lateErr; err != nil {
			t.Errorf("append late: %v", err)
		}
	}()
	var got []client.RecordedEvent
	for ev, err := range c.ReadShard(ctx, shard, end, 0, client.Wait(10*time.Second)) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	if len(got) != 1 || got[0].Type != "late" {
		t.Fatalf("the long poll returned %+v, want the late event", got)
	}
	for _, ch := range []<-chan followed{sub, fromEnd, onlyLate} {
		if f := next(t, ch, 5*time.Second); f.err != nil || f.ev.Type != "late" {
			t.Fatalf("the subscription after the long poll: got %+v", f)
		}
	}
}

// TestFollowAcrossFailover subscribes to a shard's log, linearizably and stale, while
// writers append to it, then closes the node leading the shard. Every subscriber must yield
// the shard's log exactly: every acknowledged event, once, in position order, nothing else.
func TestFollowAcrossFailover(t *testing.T) {
	t.Parallel()
	seed := testSeed(t)
	c, regs := startFailoverCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addrs := c.Addrs()
	cl, err := client.Dial(ctx, addrs, client.WithRetry(client.RetryPolicy{MaxElapsed: 1500 * time.Millisecond, AttemptTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	const shard = 1
	var streams []string
	for i := 0; len(streams) < 8; i++ {
		if name := fmt.Sprintf("fl-%d-%d", seed%1000, i); ring.ShardOf(name, failoverShards) == shard {
			streams = append(streams, name)
		}
	}
	// The subscribers keep the default retry policy (the writers' is short, so that they
	// resend appends caught by the failover themselves).
	subc, err := client.Dial(ctx, addrs)
	if err != nil {
		t.Fatal(err)
	}
	defer subc.Close()
	subs := map[string]<-chan followed{
		"linearizable": collect(subc.ReadShard(ctx, shard, 0, 0, client.Follow())),
		"stale":        collect(subc.ReadShard(ctx, shard, 0, 0, client.Follow(), client.Stale())),
		"stream":       collect(subc.Read(ctx, streams[0], client.Follow())),
	}

	var (
		stop    atomic.Bool
		mu      sync.Mutex
		acked   = map[uuid.UUID]bool{}
		failure error
		wg      sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for !stop.Load() {
				ev := client.Event{ID: seededUUID(rng), Type: "Followed"}
				if _, _, err := appendResolved(ctx, cl, streams[rng.IntN(len(streams))], client.Any, []client.Event{ev}); err != nil {
					mu.Lock()
					failure = err
					mu.Unlock()
					return
				}
				mu.Lock()
				acked[ev.ID] = true
				mu.Unlock()
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	testnode.WaitFor(t, 20*time.Second, "appends before the failover", func() string {
		if n := count(); n < 100 {
			return fmt.Sprintf("%d acknowledged", n)
		}
		return ""
	})
	leader := shardLeader(t, c, shard)
	t.Logf("closing node %d, the shard's leader, after %d appends", leader+1, count())
	c.Stop(t, leader)
	before := count()
	testnode.WaitFor(t, 20*time.Second, "appends after the failover", func() string {
		if n := count() - before; n < 100 {
			return fmt.Sprintf("%d acknowledged", n)
		}
		return ""
	})
	stop.Store(true)
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}

	survivors := map[string]*grpc.ClientConn{}
	for i := range c.Nodes {
		if i != leader {
			survivors[fmt.Sprint("n", i+1)] = c.Dial(t, i)
		}
	}
	log := waitReplicasEqual(t, shard, len(acked), survivors)
	for _, ev := range log {
		if !acked[uuid.UUID(ev.Id)] {
			t.Fatalf("the log holds an event never acknowledged: %v", ev)
		}
	}
	for name, sub := range subs {
		i := 0
		for _, want := range log {
			if name == "stream" && want.Stream != streams[0] {
				continue
			}
			f := next(t, sub, 10*time.Second)
			if f.err != nil {
				t.Fatalf("%s: event %d: %v", name, i, f.err)
			}
			if f.ev.ID != uuid.UUID(want.Id) || f.ev.Position != want.Position {
				t.Fatalf("%s: event %d is %s at %d, want %x at %d", name, i, f.ev.ID, f.ev.Position, want.Id, want.Position)
			}
			i++
		}
		quiet(t, sub, 100*time.Millisecond)
		t.Logf("%s: %d events, as in the log", name, i)
	}

	// The survivors serve the three subscriptions now, and count them ended once cancelled.
	sum := func(name, label string) (v float64) {
		for i, reg := range regs {
			if i != leader {
				v += counterValue(t, reg, name, label)
			}
		}
		return v
	}
	if s, st := sum("shoal_subscriptions", "shard"), sum("shoal_subscriptions", "stream"); s != 2 || st != 1 {
		t.Fatalf("shoal_subscriptions: shard %v stream %v, want 2 and 1", s, st)
	}
	cancel()
	testnode.WaitFor(t, 5*time.Second, "subscriptions ended", func() string {
		open := sum("shoal_subscriptions", "shard") + sum("shoal_subscriptions", "stream")
		if ended := sum("shoal_subscriptions_ended_total", "caller"); open != 0 || ended < 3 {
			return fmt.Sprintf("%v open, %v ended by their caller", open, ended)
		}
		return ""
	})
}

// TestFollowEndsWhenReplicaRemoved: a subscription served by a replica that placement removes
// from its group (here by a decommission) ends as soon as the replica applied its removal, not
// seconds later when the node deletes it, so that its client moves on without a pause.
func TestFollowEndsWhenReplicaRemoved(t *testing.T) {
	t.Parallel()
	c, regs := startPlacementCluster(t, 4)
	waitPlaced(t, c, "initial placement", nil)
	drained := c.Nodes[0]
	var shard uint32
	found := false
	for id, s := range c.Shards() {
		if slices.Contains(s.Voters, drained.ID()) {
			shard, found = id, true
			break
		}
	}
	if !found {
		t.Fatal("the first node holds no replica")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Served by the drained node's own replica (stale), through a plain gRPC stream.
	rs, err := shoalv1.NewStreamsClient(c.Dial(t, 0)).ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: shard, Follow: true, AllowStale: true})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := rs.Recv(); err != nil || !p.CaughtUp {
		t.Fatalf("first page %v, %v; want caught up", p, err)
	}
	if _, err := shoalv1.NewClusterClient(c.Dial(t, 1)).Decommission(ctx, &shoalv1.DecommissionRequest{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err = rs.Recv()
		if err != nil {
			break
		}
	}
	held := slices.ContainsFunc(drained.Groups(), func(g *replica.Group) bool { return g.Shard() == shard })
	if status.Code(err) != codes.Unavailable || !held {
		t.Fatalf("the subscription ended with %v; the node still held the replica: %v (want UNAVAILABLE before the replica's deletion)", err, held)
	}
	if n := counterValue(t, regs[0], "shoal_subscriptions_ended_total", "replica_gone"); n != 1 {
		t.Fatalf("shoal_subscriptions_ended_total{reason=replica_gone} = %v, want 1", n)
	}
}

// TestReadAll reads every shard's log at once, then subscribes to all of them from the end
// with a type filter.
func TestReadAll(t *testing.T) {
	c := testnode.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	want := map[uuid.UUID]bool{}
	for i := range 40 {
		appendOne(t, c, fmt.Sprint("all-", i%10), "Placed")
	}
	cp := make([]uint64, 4)
	for ev, err := range c.ReadAll(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Position != cp[ev.Shard] {
			t.Fatalf("shard %d: position %d after %d (a gap, a repeat or disorder)", ev.Shard, ev.Position, cp[ev.Shard])
		}
		cp[ev.Shard] = ev.Position + 1
		want[ev.ID] = true
	}
	if len(want) != 40 {
		t.Fatalf("ReadAll yielded %d events, want 40", len(want))
	}
	// Resuming from the checkpoint yields nothing more.
	for ev, err := range c.ReadAll(ctx, cp) {
		t.Fatalf("resumed at the end: %+v, %v", ev, err)
	}

	// A cancelled read says so: it did not reach the end of every log.
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	n, last := 0, error(nil)
	for _, err := range c.ReadAll(cctx, nil) {
		if n++; n == 5 {
			ccancel()
		}
		last = err
	}
	if !errors.Is(last, context.Canceled) {
		t.Fatalf("a ReadAll cancelled after 5 of 40 events ended with %v, want context.Canceled", last)
	}

	// A subscription from the end, filtered, keeping its resume positions.
	resume := make([]atomic.Uint64, 4)
	sub := collect(c.ReadAll(ctx, nil, client.Follow(), client.FromEnd(), client.EventTypes("Shipped"), client.ResumeAllAt(resume)))
	quiet(t, sub, 300*time.Millisecond)
	for i := range 8 {
		appendOne(t, c, fmt.Sprint("all-", i), "Placed")
		appendOne(t, c, fmt.Sprint("all-", i), "Shipped")
	}
	got := map[string]bool{}
	for range 8 {
		f := next(t, sub, 5*time.Second)
		if f.err != nil || f.ev.Type != "Shipped" {
			t.Fatalf("got %+v, want a Shipped event", f)
		}
		got[f.ev.Stream] = true
	}
	quiet(t, sub, 200*time.Millisecond)
	if len(got) != 8 {
		t.Fatalf("Shipped events of %d streams, want 8", len(got))
	}
	// The positions pass the Placed events the filter skipped (heartbeats carry them).
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	testnode.WaitFor(t, 5*time.Second, "resume positions at every shard's end", func() string {
		for _, sh := range st.GetTopology().GetShards() {
			if r := resume[sh.GetShard()].Load(); r != sh.GetLastPosition() {
				return fmt.Sprintf("shard %d: resume at %d, end %d", sh.GetShard(), r, sh.GetLastPosition())
			}
		}
		return ""
	})
}

// TestFollowRelayed: a subscription sent to a node that holds no replica of its shard is
// forwarded and relayed: it catches up, stays live past the forward watch's wait, and
// delivers what is appended later.
func TestFollowRelayed(t *testing.T) {
	t.Parallel()
	c, regs := startPlacementCluster(t, 4)
	waitPlaced(t, c, "initial placement", nil)
	// A node and a shard it holds no replica of.
	via, shard := -1, uint32(0)
	for id, s := range c.Shards() {
		for i, n := range c.Nodes {
			if !slices.Contains(s.Voters, n.ID()) {
				via, shard = i, id
			}
		}
		if via >= 0 {
			break
		}
	}
	if via < 0 {
		t.Fatal("every node holds every shard")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, []string{c.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var stream string
	for i := 0; stream == ""; i++ {
		if name := fmt.Sprint("relay-", i); ring.ShardOf(name, placementShards) == shard {
			stream = name
		}
	}
	first := appendOne(t, cl, stream, "before")
	rs, err := shoalv1.NewStreamsClient(c.Dial(t, via)).ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: shard, Follow: true, FromPosition: first.Position})
	if err != nil {
		t.Fatal(err)
	}
	recv := func(want string) {
		t.Helper()
		for {
			p, err := rs.Recv()
			if err != nil {
				t.Fatalf("waiting for %s: %v", want, err)
			}
			for _, ev := range p.Events {
				if ev.Type != want {
					t.Fatalf("got %s, want %s", ev.Type, want)
				}
				return
			}
		}
	}
	recv("before")
	time.Sleep(time.Second) // past the forward watch's 300 ms: a live subscription is quiet
	appendOne(t, cl, stream, "after")
	recv("after")
	if n := counterValue(t, regs[via], "shoal_forwarded_requests_total", "read"); n != 1 {
		t.Fatalf("node %d forwarded %v reads, want the subscription", via+1, n)
	}
}

// TestReadAllResumeOnlyPastHandled: ResumeAllAt passes only entries the loop body got, when
// the body breaks out and when the subscription's context is cancelled: each shard's read
// counted an entry as handled when it stopped while handing it over, or when the loop's end
// swallowed it, and a consumer restarting from that checkpoint lost it.
func TestReadAllResumeOnlyPastHandled(t *testing.T) {
	c := testnode.Client(t)
	for i := range 200 {
		appendOne(t, c, fmt.Sprint("ra-", i%20), "E")
	}
	shards, err := c.Shards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, stop := range []string{"break", "cancel"} {
		bad := 0
		for round := range 50 {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			resume := make([]atomic.Uint64, shards)
			yielded := make([]uint64, shards) // past the last entry the loop body got, per shard
			opts := []client.ReadOption{client.ResumeAllAt(resume)}
			if stop == "cancel" {
				opts = append(opts, client.Follow())
			}
			n := 0
			for ev, err := range c.ReadAll(ctx, nil, opts...) {
				if err != nil {
					break // the context's, once cancelled
				}
				yielded[ev.Shard] = ev.Position + 1
				if n++; n == 3 {
					if stop == "break" {
						break
					}
					cancel() // and range on to the end
				}
			}
			cancel()
			for s := range resume {
				if r := resume[s].Load(); r > yielded[s] {
					if bad++; bad <= 3 {
						t.Errorf("%s, round %d: shard %d resumes at %d, past entries [%d, %d) the loop body never got",
							stop, round, s, r, yielded[s], r)
					}
				}
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d of %d shard checkpoints passed entries never handled", stop, bad, 50*shards)
		}
	}
}

// TestFollowFromEndOfAbsentStream: a subscription from the end of a stream that does not exist
// yet starts at its first event, whatever from_version says (from_end overrides it): the
// server waited for from_version instead, and so did the client's Read given FromVersion
// before FromEnd, which sent that version along.
func TestFollowFromEndOfAbsentStream(t *testing.T) {
	cl := testnode.Start(t, 1, testnode.Options{Shards: 4, Replication: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, []string{cl.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	rs, err := shoalv1.NewStreamsClient(cl.Dial(t, 0)).Read(ctx, &shoalv1.ReadRequest{Stream: "absent", FromVersion: 5, FromEnd: true, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := rs.Recv(); err != nil || !p.CaughtUp || p.NextVersion != 0 {
		t.Fatalf("first page %v, %v; want caught up at version 0", p, err)
	}
	sub := collect(c.Read(ctx, "absent", client.FromVersion(5), client.FromEnd(), client.Follow()))
	quiet(t, sub, 300*time.Millisecond)
	appendOne(t, c, "absent", "e0")
	if f := next(t, sub, 5*time.Second); f.err != nil || f.ev.Version != 0 {
		t.Fatalf("got %+v, want the stream's first event", f)
	}
	if p, err := rs.Recv(); err != nil || len(p.Events) != 1 || p.Events[0].Version != 0 {
		t.Fatalf("raw subscription: %v, %v; want the stream's first event", p, err)
	}
}

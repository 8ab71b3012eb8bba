package client

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/ring"
)

// The tests of routing: leader moves, redirects, hung nodes, the watch, the node table.

// An attempt sent to a leader that hangs (it neither answers nor breaks the connection) is
// abandoned once the topology names another leader for the shard, and the call goes there,
// with no attempt timeout set: without the watch it would wait for the caller's deadline.
func TestLeaderMovedDuringAttempt(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	n1, n2 := fc.nodes[0], fc.nodes[1]
	hung := make(chan struct{})
	n1.setFault(func(ctx context.Context, m string, k int) error {
		if m == "Append" {
			close(hung)
			<-ctx.Done() // the node hangs until the client gives up on it
			return ctx.Err()
		}
		return nil
	})
	go func() {
		<-hung
		time.Sleep(2 * leaderWatchAfter)
		fc.setLeader(2) // the other node won the election
	}()
	start := time.Now()
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Append took %v", took)
	}
	if a, b := n1.count("Append"), n2.count("Append"); a != 1 || b != 1 {
		t.Fatalf("Append calls: node1 %d, node2 %d; want 1, 1", a, b)
	}
	if s := c.Stats(); s.LeaderMoves != 1 {
		t.Fatalf("stats = %+v, want one leader move", s)
	}
	ids := append(appendIDs(n1), appendIDs(n2)...)
	if len(ids) != 2 || ids[0][0] != ids[1][0] {
		t.Fatalf("event IDs of the two attempts: %v, want the same", ids)
	}
}

// A slow leader that still leads is not abandoned: the watch only acts on a new leader.
func TestSlowLeaderNotAbandoned(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	n1 := fc.nodes[0]
	n1.setFault(func(ctx context.Context, m string, k int) error {
		if m == "Append" {
			time.Sleep(3 * leaderWatchAfter)
		}
		return nil
	})
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if s := c.Stats(); s.LeaderMoves != 0 || s.Retries != 0 {
		t.Fatalf("stats = %+v, want no leader move and no retry", s)
	}
	if s := c.Stats(); s.TopologyRefreshes < 2 {
		t.Errorf("%d topology refreshes; the watch should have asked for one", s.TopologyRefreshes)
	}
	if n := fc.nodes[1].count("Topology"); n < 1 {
		t.Errorf("node 2 was asked for the topology %d times; the watch's refresh asks the slow node last", n)
	}
}

// hangOn is a fault that makes a node hang on method (it neither answers nor breaks the
// connection) until the client gives up on the call.
func hangOn(method string) func(ctx context.Context, m string, k int) error {
	return func(ctx context.Context, m string, k int) error {
		if m == method {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
}

// An attempt that went to a node other than the topology's leader (on a hint from an older
// not-leader answer, or with the leader's breaker open) is also abandoned when that node
// hangs: a topology fetched after the attempt started names another leader.
func TestHintedNodeHangs(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	n1, n2 := fc.nodes[0], fc.nodes[1]
	fc.setLeader(2)
	if _, err := c.Topology(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	n1.setFault(hangOn("Append"))
	c.setHint(ring.ShardOf("s", 4), n1.addr, "") // a not-leader answer named node 1
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if a, b := n1.count("Append"), n2.count("Append"); a != 1 || b != 1 {
		t.Fatalf("Append calls: node1 %d, node2 %d; want 1, 1", a, b)
	}
	if s := c.Stats(); s.LeaderMoves != 1 {
		t.Fatalf("stats = %+v, want one leader move", s)
	}
}

// A waiting attempt asks for a topology refresh every leaderWatchEvery, not at every
// topology installed (each refresh installs one, which would make them back to back).
func TestWatchRefreshRate(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	const wait = 3 * time.Second
	fc.nodes[0].setFault(func(ctx context.Context, m string, k int) error {
		if m == "Append" {
			time.Sleep(wait) // slow, still the leader
		}
		return nil
	})
	before := c.Stats().TopologyRefreshes
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatal(err)
	}
	got := c.Stats().TopologyRefreshes - before
	want := uint64((wait - leaderWatchAfter) / leaderWatchEvery)
	if got > want+2 {
		t.Errorf("%d topology refreshes during one %v append, want about %d (one per %v)", got, wait, want, leaderWatchEvery)
	}
}

// A delete is not idempotent (a second run of one that took effect finds no stream), so an
// attempt waiting on its node is not abandoned when the topology names a new leader: the node
// answers in the end, and the delete happens once, there.
func TestDeleteNotAbandonedForNewLeader(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	if _, err := c.Append(ctx, "s", NoStream, Event{Type: "A"}); err != nil {
		t.Fatal(err)
	}
	n1, n2 := fc.nodes[0], fc.nodes[1]
	n1.setFault(func(ctx context.Context, m string, k int) error {
		if m == "Delete" {
			fc.setLeader(2)                  // the topology will name another leader ...
			time.Sleep(4 * leaderWatchAfter) // ... while this node is slow to answer
		}
		return nil
	})
	if err := c.Delete(ctx, "s", Any); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if a, b := n1.count("Delete"), n2.count("Delete"); a != 1 || b != 0 {
		t.Fatalf("Delete calls: node1 %d, node2 %d; want 1, 0", a, b)
	}
	if s := c.Stats(); s.LeaderMoves != 0 {
		t.Fatalf("stats = %+v, want no leader move", s)
	}
}

// Leader moves are retries like any other: a call whose leader keeps moving while its
// attempts hang gives up with ErrUnavailable once RetryPolicy.MaxElapsed has passed, instead
// of following the leader until the caller's deadline.
func TestLeaderMovesBoundedByMaxElapsed(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	p := fastRetry()
	p.MaxElapsed = time.Second
	c := dial(t, fc, WithRetry(p))
	fc.nodes[0].setFault(hangOn("Append"))
	fc.nodes[1].setFault(hangOn("Append"))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for id := uint64(2); ; id = 3 - id {
			select {
			case <-stop:
				return
			case <-time.After(2 * leaderWatchAfter):
				fc.setLeader(id)
			}
		}
	}()
	start := time.Now()
	_, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Append gave up after %v; MaxElapsed is %v", took, p.MaxElapsed)
	}
	if s := c.Stats(); s.LeaderMoves < 1 {
		t.Errorf("stats = %+v, want leader moves", s)
	}
}

func TestNotLeaderRedirect(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	n1, n2 := fc.nodes[0], fc.nodes[1]
	n1.setFault(func(ctx context.Context, m string, k int) error {
		if m == "Append" {
			fc.setLeader(2) // leadership moved; node 1 knows where
			return notLeader(n2)
		}
		return nil
	})
	ctx := testCtx(t)
	if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if a, b := n1.count("Append"), n2.count("Append"); a != 1 || b != 1 {
		t.Fatalf("Append calls: node1 %d, node2 %d; want 1, 1", a, b)
	}
	if s := c.Stats(); s.Redirects != 1 || s.Retries != 1 {
		t.Fatalf("stats = %+v", s)
	}
	// Later appends go straight to the new leader.
	for range 3 {
		if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); err != nil {
			t.Fatal(err)
		}
	}
	if a := n1.count("Append"); a != 1 {
		t.Fatalf("node1 saw %d appends after the redirect, want none more", a-1)
	}
}

// laggingElection is five nodes of which node 2 just won an election at term 2 over node 1,
// which answers appends with a not-leader naming node 2; every other node, node 1 included,
// still names node 1 at term 1. The client dialled before the election.
func laggingElection(t *testing.T) (*fakeCluster, *Client) {
	t.Helper()
	fc := newFakeCluster(t, 5, 4)
	fc.term = 1
	c := dial(t, fc)
	n1, n2 := fc.nodes[0], fc.nodes[1]
	fc.mu.Lock()
	fc.leader, fc.term = 2, 2
	fc.mu.Unlock()
	for _, n := range append([]*fakeNode{n1}, fc.nodes[2:]...) { // node 2 knows it won; the others lag
		n.mu.Lock()
		n.lag = &[2]uint64{1, 1}
		n.mu.Unlock()
	}
	n1.setFault(func(ctx context.Context, m string, k int) error {
		if m == "Append" {
			return notLeader(n2)
		}
		return nil
	})
	return fc, c
}

// TestLaggingTopologyKeepsRedirect: a topology from a node that has not heard of the election
// yet (it names the old leader, at the old term), fetched after a not-leader answer named the
// new leader, does not send the calls back to the old leader, which refused them.
func TestLaggingTopologyKeepsRedirect(t *testing.T) {
	fc, c := laggingElection(t)
	n1 := fc.nodes[0]
	c.rr.Store(1) // refreshes ask nodes 3, 4, 5 and 1 first, in turn, then node 2
	ctx := testCtx(t)
	for range 10 {
		if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * minRefreshGap) // the refresh the redirect asked for lands
	}
	if a := n1.count("Append"); a != 1 {
		t.Errorf("node 1, the old leader, got %d appends, want 1: lagging topologies undid the redirect (%+v)", a, c.Stats())
	}
}

// TestLaggingTopologyKeepsSlowHintedLeader: an append sent to the leader a not-leader answer
// named, which takes longer than leaderWatchAfter to answer, is not abandoned for a topology
// from a node that has not heard of the election yet (it names the old leader, which refused
// the append, at the old term): such a topology does not undo the hint either
// (TestLaggingTopologyKeepsRedirect). It was: the attempt moved to the old leader, which
// redirected it back, again and again while the refreshes came from lagging nodes, each
// attempt on the new leader abandoned (and maybe applied).
func TestLaggingTopologyKeepsSlowHintedLeader(t *testing.T) {
	fc, c := laggingElection(t)
	n1, n2 := fc.nodes[0], fc.nodes[1]
	n2.setFault(func(ctx context.Context, m string, k int) error {
		if m == "Append" { // slow, for longer than the watch waits
			select {
			case <-time.After(4 * leaderWatchAfter):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	c.rr.Store(1) // refreshes ask nodes 3, 4, 5 and 1 first, in turn, then node 2
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatal(err)
	}
	if a, b, s := n1.count("Append"), n2.count("Append"), c.Stats(); a != 1 || b != 1 || s.LeaderMoves != 0 {
		t.Errorf("Append calls: node 1 %d, node 2 %d, want 1, 1; stats %+v, want no leader move", a, b, s)
	}
}

func TestNotLeaderWithoutAddressBacksOff(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	fc.nodes[0].setFault(failFirst("Append", 2, statusWith(codes.Unavailable, "fake: election", &shoalv1.NotLeader{})))
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Redirects != 0 || s.Retries != 2 {
		t.Fatalf("stats = %+v", s)
	}
}

// A topology refresh whose first node hangs asks the next one too, and installs its
// answer without waiting for the hung node (whose fetch the refresh then cancels, rather
// than the fetch timing out).
func TestRefreshPassesHungNode(t *testing.T) {
	fc := newFakeCluster(t, 3, 4)
	c := dial(t, fc)
	before := c.topo.Load()
	hungEnd := make(chan error, 1)
	var once sync.Once
	for _, n := range fc.nodes {
		n.setFault(func(ctx context.Context, m string, k int) error {
			if m != "Topology" {
				return nil
			}
			first := false
			once.Do(func() { first = true })
			if !first {
				return nil
			}
			<-ctx.Done()
			hungEnd <- ctx.Err()
			return ctx.Err()
		})
	}
	if err := c.refreshTopology(testCtx(t), ""); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if c.topo.Load() == before {
		t.Fatal("the refresh installed no topology")
	}
	if err := <-hungEnd; !errors.Is(err, context.Canceled) {
		t.Fatalf("the hung node's fetch ended with %v, want it cancelled once another answered", err)
	}
}

// TestDepartedNodesForgotten: a node that left the cluster (no topology names it) is dropped
// from the client's node table, its connection closed, once no call holds it; a seed stays.
func TestDepartedNodesForgotten(t *testing.T) {
	fc := newFakeCluster(t, 3, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	n3 := fc.nodes[2]
	if _, err := c.NodeStatus(ctx, n3.addr); err != nil {
		t.Fatal(err)
	}
	c2, err := Dial(ctx, []string{fc.nodes[0].addr}, WithRetry(fastRetry()))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.NodeStatus(ctx, n3.addr); err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.nodes = fc.nodes[:2] // node 3 left the cluster
	fc.mu.Unlock()
	for _, c := range []*Client{c, c2} {
		if _, err := c.Topology(ctx); err != nil {
			t.Fatal(err)
		}
	}
	has := func(c *Client, addr string) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.mu.nodes[addr]
		return ok
	}
	if !has(c, n3.addr) {
		t.Errorf("node 3, a seed, was dropped from the node table")
	}
	if has(c2, n3.addr) {
		t.Errorf("node 3 left the cluster and is still in the node table of a client it is no seed of")
	}
	if _, err := c2.NodeStatus(ctx, n3.addr); err != nil { // asked by address, it is dialled again
		t.Errorf("NodeStatus of the departed node: %v", err)
	}
}

// TestCloseEndsCallOnForgottenNode: a node dropped from the node table while a call holds it
// (a subscription served by a node that left the topology) is still closed by Close: calls in
// flight fail with ErrClosed, and no connection outlives the client.
func TestCloseEndsCallOnForgottenNode(t *testing.T) {
	fc := newFakeCluster(t, 3, 4)
	fc.setLeader(3)
	n3 := fc.nodes[2]
	served := make(chan struct{}, 1)
	n3.mu.Lock()
	n3.follow = func(req *shoalv1.ReadRequest, srv grpc.ServerStreamingServer[shoalv1.ReadResponse]) error {
		select {
		case served <- struct{}{}:
		default:
		}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if err := srv.Send(&shoalv1.ReadResponse{CaughtUp: true, NextVersion: req.FromVersion}); err != nil {
				return err
			}
			select {
			case <-srv.Context().Done():
				return srv.Context().Err()
			case <-tick.C:
			}
		}
	}
	n3.mu.Unlock()
	ctx := testCtx(t)
	c, err := Dial(ctx, []string{fc.nodes[0].addr}, WithRetry(fastRetry()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan error, 1)
	go func() {
		var last error
		for _, err := range c.Read(rctx, "s", Follow()) {
			if err != nil {
				last = err
			}
		}
		ended <- last
	}()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription did not reach node 3")
	}
	fc.mu.Lock()
	fc.nodes = fc.nodes[:2] // node 3 left the topology, its subscription still served
	fc.leader = 1
	fc.mu.Unlock()
	if _, err := c.Topology(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("the subscription ended with %v, want ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close left a subscription on a node dropped from the node table running, its connection open")
	}
}

// TestLaggingTopologyKeepsLeaderConnection: a topology from a node that has not heard of the
// shard's leader (a member that joined since: listed without addresses) at a term before the
// client's keeps the client's leader (install); the node table keeps that leader's node too,
// rather than closing its connection and dialling it again, a new breaker with it, for the
// next call, at each such refresh.
func TestLaggingTopologyKeepsLeaderConnection(t *testing.T) {
	fc := newFakeCluster(t, 3, 1)
	fc.mu.Lock()
	fc.leader, fc.term = 3, 2
	fc.mu.Unlock()
	ctx := testCtx(t)
	c, err := Dial(ctx, []string{fc.nodes[0].addr}, WithRetry(fastRetry()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Append(ctx, "s", Any, Event{Type: "e"}); err != nil {
		t.Fatal(err)
	}
	n3 := fc.nodes[2].addr
	c.mu.Lock()
	before := c.mu.nodes[n3]
	c.mu.Unlock()
	if before == nil {
		t.Fatal("the leader is not in the node table after an append")
	}
	n1 := fc.nodes[0]
	n1.mu.Lock()
	n1.lag = &[2]uint64{1, 1}
	n1.unheard = map[uint64]bool{3: true}
	n1.mu.Unlock()
	nd, err := c.node(n1.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.fetchTopology(ctx, nd); err != nil {
		t.Fatal(err)
	}
	if l := c.topo.Load().leader[0]; l != n3 {
		t.Fatalf("the lagging topology's leader is %q, want the client's, node 3 (%s), kept", l, n3)
	}
	c.mu.Lock()
	after := c.mu.nodes[n3]
	c.mu.Unlock()
	if after != before {
		t.Fatalf("the leader the installed topology routes to was dropped from the node table (its connection closed, to be dialled again)")
	}
}

// TestStaleReadsPreferTheClientsZone: with WithZone, a stale read's candidates start with the
// shard's voters in the client's zone (each of them first about as often as the other), then its
// other voters, a stopping voter last; without it, or for a linearizable read, nothing changes.
func TestStaleReadsPreferTheClientsZone(t *testing.T) {
	resp := &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{Shards: 1},
		Nodes: []*shoalv1.NodeInfo{
			{Id: 1, Zone: "a", GrpcAddr: "n1:1", Alive: true},
			{Id: 2, Zone: "b", GrpcAddr: "n2:1", Alive: true},
			{Id: 3, Zone: "a", GrpcAddr: "n3:1", Alive: true},
			{Id: 4, Zone: "c", GrpcAddr: "n4:1", Alive: true},
			{Id: 5, Zone: "a", GrpcAddr: "n5:1", Alive: true, Stopping: true},
		},
		Shards: []*shoalv1.ShardInfo{{Shard: 0, LeaderId: 2, Voters: []uint64{1, 2, 3, 4, 5}}},
	}
	topo, err := newTopology(resp, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	inZone := &Client{opts: options{zone: "a"}}
	first := map[string]int{}
	for range 200 {
		got := inZone.shardCandidates(topo, 0, true)
		if !slices.Contains([]string{"n1:1", "n3:1"}, got[0]) || !slices.Contains([]string{"n1:1", "n3:1"}, got[1]) ||
			!slices.Contains([]string{"n2:1", "n4:1"}, got[2]) || !slices.Contains([]string{"n2:1", "n4:1"}, got[3]) || got[4] != "n5:1" {
			t.Fatalf("stale candidates in zone a: %v", got)
		}
		first[got[0]]++
	}
	if first["n1:1"] < 50 || first["n3:1"] < 50 {
		t.Fatalf("first candidates over 200 reads: %v, want both voters of zone a about as often", first)
	}
	if got := inZone.shardCandidates(topo, 0, false); got[0] != "n2:1" {
		t.Fatalf("linearizable candidates in zone a: %v, want the leader first", got)
	}
	elsewhere := &Client{opts: options{zone: "d"}} // no voter there: every voter alike
	seen := map[string]bool{}
	for range 200 {
		seen[elsewhere.shardCandidates(topo, 0, true)[0]] = true
	}
	if len(seen) != 4 {
		t.Fatalf("first stale candidates in zone d: %v, want each voter not stopping", seen)
	}

	// A live node without a zone at the address of a dead one in zone a (a node replaced at its
	// address) is not in zone a.
	shared, err := newTopology(&shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{Shards: 1},
		Nodes:    []*shoalv1.NodeInfo{{Id: 1, GrpcAddr: "x:1", Alive: true}, {Id: 2, Zone: "a", GrpcAddr: "x:1"}},
	}, time.Now())
	if err != nil || shared.zone["x:1"] != "" {
		t.Fatalf("zone of a live node without one, sharing a dead node's address: %q, %v", shared.zone["x:1"], err)
	}
}

package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

func event(typ string) *shoalv1.EventData {
	id := uuid.New()
	return &shoalv1.EventData{Id: id[:], Type: typ, Data: []byte("x")}
}

func readCount(t *testing.T, ctx context.Context, c shoalv1.StreamsClient, req *shoalv1.ReadRequest) int {
	t.Helper()
	s, err := c.Read(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("read %s: %v", req.Stream, err)
		}
		n += len(r.Events)
	}
}

// readAllErr reads a whole stream page by page and returns how many events came before the
// error that ended it (nil at the end of the stream).
func readAllErr(ctx context.Context, c shoalv1.StreamsClient, req *shoalv1.ReadRequest) (int, error) {
	s, err := c.Read(ctx, req)
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n += len(r.Events)
	}
}

// counterValue returns the value of the counter (or gauge) of family name in reg whose one
// label has the given value (0 when there is none yet).
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// TestThreeNodes forms a cluster by gossip, checks the merged topology, and
// sends requests to nodes that hold no replica: they are forwarded to the
// leader. It then replicates one shard to all three nodes, checks a
// follower forwards too, and that the shard answers UNAVAILABLE once it lost
// its quorum while the other shards keep serving.
func TestThreeNodes(t *testing.T) {
	t.Parallel()
	c := testnode.Start(t, 3, testnode.Options{Shards: 4, Replication: 3, Configure: noPlacement})
	first := c.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for i, n := range c.Nodes {
		if n.Settings() != first.Settings() {
			t.Fatalf("node %d settings %v, first %v", i, n.Settings(), first.Settings())
		}
	}

	// Topology from a node that holds nothing: every shard led by the first.
	top, err := shoalv1.NewClusterClient(c.Dial(t, 2)).Topology(ctx, &shoalv1.TopologyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Nodes) != 3 || len(top.Shards) != 4 {
		t.Fatalf("topology: %v", top)
	}
	for _, s := range top.Shards {
		if s.LeaderId != first.ID() || !s.UnderReplicated || s.Unavailable {
			t.Fatalf("shard %v", s)
		}
	}
	for _, nd := range top.Nodes {
		if !nd.Alive {
			t.Fatalf("node %v not alive", nd)
		}
		if nd.Id == first.ID() && nd.ShardsLed != 4 {
			t.Fatalf("first node leads %d shards", nd.ShardsLed)
		}
	}

	// Forwarded append and read through the second node.
	s2 := shoalv1.NewStreamsClient(c.Dial(t, 1))
	r, err := s2.Append(ctx, &shoalv1.AppendRequest{Stream: "fwd", Events: []*shoalv1.EventData{event("A"), event("B")}})
	if err != nil {
		t.Fatal(err)
	}
	if r.LastVersion != 1 {
		t.Fatalf("append: %v", r)
	}
	if got := readCount(t, ctx, shoalv1.NewStreamsClient(c.Dial(t, 2)), &shoalv1.ReadRequest{Stream: "fwd"}); got != 2 {
		t.Fatalf("forwarded read: %d events", got)
	}
	rs, err := shoalv1.NewStreamsClient(c.Dial(t, 2)).ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: r.Shard})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := rs.Recv(); err != nil || len(p.Events) != 2 || p.NextPosition != 2 {
		t.Fatalf("forwarded read shard: %v, %v", p, err)
	}
	// Errors come back through the forwarder with their details.
	_, err = s2.Append(ctx, &shoalv1.AppendRequest{Stream: "fwd",
		Expected: &shoalv1.ExpectedVersion{Kind: shoalv1.ExpectedVersion_KIND_EXACT, Version: 9}, Events: []*shoalv1.EventData{event("C")}})
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || len(st.Details()) != 1 {
		t.Fatalf("forwarded error: %v", err)
	}

	// Decommission is forwarded to the named node, which persists and gossips it.
	cl := shoalv1.NewClusterClient(c.Dial(t, 0))
	if _, err := cl.Decommission(ctx, &shoalv1.DecommissionRequest{Node: "n3"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "decommissioning gossiped", func() bool {
		for _, m := range first.Members() {
			if m.Name == "n3" {
				return m.Decommissioning
			}
		}
		return false
	})
	for _, want := range first.DesiredReplicas() {
		if slices.Contains(want, c.Nodes[2].ID()) || len(want) != 2 {
			t.Fatalf("desired replicas %v include the decommissioning node or miss one", want)
		}
	}
	if _, err := cl.Decommission(ctx, &shoalv1.DecommissionRequest{Node: "n9"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown node: %v", err)
	}
	// No name, or one longer than a node's may be, is refused as such (not "no node named"
	// with the name echoed whole).
	for _, name := range []string{"", strings.Repeat("n", node.MaxNameLen+1)} {
		_, err := cl.Decommission(ctx, &shoalv1.DecommissionRequest{Node: name})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "node is") || len(st.Message()) > 200 {
			t.Fatalf("decommission of a node named %d bytes: %v, want InvalidArgument", len(name), err)
		}
		if _, err := cl.Recommission(ctx, &shoalv1.RecommissionRequest{Node: name}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("recommission of a node named %d bytes: %v, want InvalidArgument", len(name), err)
		}
	}

	// A request that already made its hops is answered NotLeader, naming the leader.
	hopCtx := metadata.AppendToOutgoingContext(ctx, "shoal-hops", "2")
	_, err = s2.Append(hopCtx, &shoalv1.AppendRequest{Stream: "fwd", Events: []*shoalv1.EventData{event("C")}})
	st, _ := status.FromError(err)
	var nl *shoalv1.NotLeader
	for _, d := range st.Details() {
		nl, _ = d.(*shoalv1.NotLeader)
	}
	if st.Code() != codes.Unavailable || nl == nil || nl.LeaderId != first.ID() || nl.LeaderAddr != first.Addr() {
		t.Fatalf("not leader: %v (detail %v)", err, nl)
	}

}

// TestReplicatedShardQuorumLoss replicates one shard to all three nodes (what
// placement will do), checks that a follower forwards writes and serves
// stale reads, then stops both followers: the shard answers UNAVAILABLE
// within seconds while the other shards keep serving.
func TestReplicatedShardQuorumLoss(t *testing.T) {
	t.Parallel()
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry(), prometheus.NewRegistry()}
	c := testnode.Start(t, 3, testnode.Options{Shards: 4, Replication: 3, Configure: func(i int, cfg *node.Config) {
		noPlacement(i, cfg)
		cfg.Registry = regs[i]
	}})
	first := c.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s2 := shoalv1.NewStreamsClient(c.Dial(t, 1))
	if _, err := s2.Append(ctx, &shoalv1.AppendRequest{Stream: "fwd", Events: []*shoalv1.EventData{event("A"), event("B")}}); err != nil {
		t.Fatal(err)
	}
	sh := ring.ShardOf("fwd", first.Settings().Shards)
	g, ok := first.Host().Group(sh)
	if !ok {
		t.Fatal("no group")
	}
	for _, n := range c.Nodes[1:] {
		if err := g.AddLearner(ctx, n.ID()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "learner caught up", func() bool {
			_, ok := n.Host().Group(sh)
			return ok && g.Status().Progress[n.ID()].Match >= g.Status().Commit
		})
		time.Sleep(100 * time.Millisecond)
		// A joining replica replays the log from index 1, the bootstrap conf change (voters
		// {first}) included: that must not mark it removed.
		if lg, _ := n.Host().Group(sh); lg.Status().Removed {
			t.Fatalf("learner %d marked itself removed after catching up", n.ID())
		}
		// Refused for now if the group quiesced since the learner caught up (the leader does
		// not know yet whether the learner is active); a retry passes, as placement's would.
		testnode.WaitFor(t, 10*time.Second, "learner promoted", func() string {
			if err := g.PromoteLearner(ctx, n.ID()); err != nil {
				return err.Error()
			}
			return ""
		})
	}
	if v := g.Status().Voters; len(v) != 3 {
		t.Fatalf("voters %v", v)
	}
	// A follower forwards writes to the leader and serves stale reads itself.
	if _, err := s2.Append(ctx, &shoalv1.AppendRequest{Stream: "fwd", Events: []*shoalv1.EventData{event("C")}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "follower applied", func() bool {
		return readCount(t, ctx, s2, &shoalv1.ReadRequest{Stream: "fwd", AllowStale: true}) == 3
	})
	// A stale read bounded to five seconds is served by the follower, not forwarded: its
	// leader's appends, and once the group is idle its quiesce heartbeats (every second),
	// keep it current.
	forwardedReads := func() float64 { return counterValue(t, regs[1], "shoal_forwarded_requests_total", "read") }
	before := forwardedReads()
	if n := readCount(t, ctx, s2, &shoalv1.ReadRequest{Stream: "fwd", AllowStale: true, MaxStalenessMs: 5000}); n != 3 {
		t.Fatalf("bounded stale read on the follower: %d events, want 3", n)
	}
	if after := forwardedReads(); after != before {
		t.Fatalf("bounded stale read on a follower in touch with its leader was forwarded (%v -> %v forwarded reads)", before, after)
	}
	// A bound without allow_stale is refused, naming the field.
	_, err := readAllErr(ctx, s2, &shoalv1.ReadRequest{Stream: "fwd", MaxStalenessMs: 1000})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "max_staleness_ms") {
		t.Fatalf("max_staleness_ms without allow_stale: %v, want INVALID_ARGUMENT naming the field", err)
	}

	// Lose the quorum of that shard: stop both followers.
	c.Stop(t, 1)
	c.Stop(t, 2)
	s1 := shoalv1.NewStreamsClient(c.Dial(t, 0))
	start := time.Now()
	_, err = s1.Append(ctx, &shoalv1.AppendRequest{Stream: "fwd", Events: []*shoalv1.EventData{event("D")}})
	took := time.Since(start)
	// The leader may take the append before CheckQuorum deposes it: in its log, it may yet
	// commit (were the leader elected again with it), so that answer is UNKNOWN. Once the
	// shard has no leader, an append is refused before anything is proposed.
	if c := status.Code(err); c != codes.Unavailable && c != codes.Unknown || !strings.Contains(err.Error(), "no leader") {
		t.Fatalf("append without quorum: %v", err)
	}
	if _, err := s1.Append(ctx, &shoalv1.AppendRequest{Stream: "fwd", Events: []*shoalv1.EventData{event("D")}}); status.Code(err) != codes.Unavailable ||
		!strings.Contains(err.Error(), "no leader") {
		t.Fatalf("append to a shard without a leader: %v, want UNAVAILABLE naming no leader", err)
	}
	if took > 15*time.Second {
		t.Fatalf("unavailable took %v", took)
	}
	t.Logf("no-quorum append answered in %v: %v", took, err)
	// The surviving replica still serves stale reads of what it holds; bounded ones it refuses
	// once it has gone a second without a leader (it led the shard itself until CheckQuorum
	// made it step down).
	if n, err := readAllErr(ctx, s1, &shoalv1.ReadRequest{Stream: "fwd", AllowStale: true}); n != 3 || err != nil {
		t.Fatalf("stale read without quorum: %d events, %v; want 3", n, err)
	}
	waitFor(t, "a bounded stale read refused without quorum", func() bool {
		_, err := readAllErr(ctx, s1, &shoalv1.ReadRequest{Stream: "fwd", AllowStale: true, MaxStalenessMs: 1000})
		return status.Code(err) == codes.Unavailable
	})
	// Other shards keep serving.
	for i := 0; i < 50; i++ {
		name := "other-" + uuid.NewString()
		if ring.ShardOf(name, first.Settings().Shards) == sh {
			continue
		}
		if _, err := s1.Append(ctx, &shoalv1.AppendRequest{Stream: name, Events: []*shoalv1.EventData{event("E")}}); err != nil {
			t.Fatalf("other shard: %v", err)
		}
		break
	}
}

// TestLeaderlessShards: a shard that lost its quorum is led by no node, so the placement gauges,
// which leaders report, miss it; each of its replicas counts it in shoal_leaderless_shards
// (and shoal_shard_leaderless) instead, and stops once a leader is back.
func TestLeaderlessShards(t *testing.T) {
	t.Parallel()
	const shards = 2
	c, regs := startReplicatedCluster(t, shards, nil)
	// leaderless returns node i's shoal_leaderless_shards and its shards whose
	// shoal_shard_leaderless is 1.
	leaderless := func(reg *prometheus.Registry) (float64, []string) {
		regs := []*prometheus.Registry{reg}
		var per []string
		for _, m := range gatherSeries(t, regs, "shoal_shard_leaderless") {
			if m.GetGauge().GetValue() == 1 {
				per = append(per, m.GetLabel()[0].GetValue())
			}
		}
		return metricSum(t, regs, "shoal_leaderless_shards", ""), per
	}
	none := func(regs ...*prometheus.Registry) func() string {
		return func() string {
			for i, r := range regs {
				if n, per := leaderless(r); n != 0 || len(per) != 0 {
					return fmt.Sprintf("registry %d: %v leaderless shards %v", i, n, per)
				}
			}
			return ""
		}
	}
	testnode.WaitFor(t, 10*time.Second, "no leaderless shard while every shard has its quorum", none(regs...))

	// Every shard has its three voters on the three nodes: stopping two loses every quorum.
	c.Stop(t, 1)
	c.Stop(t, 2)
	testnode.WaitFor(t, 30*time.Second, "the survivor counts every shard leaderless", func() string {
		if n, per := leaderless(regs[0]); n != shards || len(per) != shards {
			return fmt.Sprintf("%v leaderless shards %v, want %d", n, per, shards)
		}
		return ""
	})
	if led := c.Shards(); len(led) != 0 {
		t.Fatalf("shards without quorum have a leader: %v", led)
	}

	// Back with their data, the two nodes restore every quorum.
	back := []*prometheus.Registry{regs[0]}
	for _, i := range []int{1, 2} {
		cfg := c.Configs[i]
		cfg.Registry = prometheus.NewRegistry()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		n, err := node.Start(ctx, cfg)
		cancel()
		if err != nil {
			t.Fatalf("restarting n%d: %v", i+1, err)
		}
		t.Cleanup(func() { n.Close() })
		back = append(back, cfg.Registry)
	}
	testnode.WaitFor(t, 30*time.Second, "no leaderless shard once the quorums are back", none(back...))
}

func TestJoinTimeout(t *testing.T) {
	t.Parallel()
	// The seed is a gossip member that never joined a cluster (no cluster ID).
	seedAddr := testnode.FreeGossipAddr(t)
	seed, err := membership.Start(membership.Config{Name: "seed", Bind: seedAddr,
		Meta: membership.Meta{NodeID: 7, GRPCAddr: "127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	cfg := node.Config{
		DataDir: t.TempDir(), Listen: "127.0.0.1:0", DisableHTTP: true, Gossip: testnode.FreeGossipAddr(t),
		Name: "lonely", Join: []string{seedAddr}, JoinTimeout: 500 * time.Millisecond,
	}
	_, err = node.Start(context.Background(), cfg)
	if !errors.Is(err, node.ErrJoinTimeout) {
		t.Fatalf("want ErrJoinTimeout, got %v", err)
	}
	t.Log(err)
	// The refused start released the data directory.
	cfg.Join, cfg.Gossip = nil, testnode.FreeGossipAddr(t)
	n, err := node.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
}

// A node serves gRPC from before it has joined its cluster (peers' raft traffic must reach
// it), but its client-facing calls need membership and its reopened shards: until it has
// started, they are answered UNAVAILABLE, saying so, where a topology request used to crash
// the process (a restarted node that a client asked for the topology at once).
func TestCallsWhileStarting(t *testing.T) {
	t.Parallel()
	grpcAddr := testnode.FreeGossipAddr(t) // a free TCP port
	cfg := node.Config{
		DataDir: t.TempDir(), Listen: grpcAddr, DisableHTTP: true, Gossip: testnode.FreeGossipAddr(t),
		Name: "starting", Join: []string{testnode.FreeGossipAddr(t)}, JoinTimeout: 3 * time.Second,
	}
	done := make(chan error, 1)
	go func() {
		n, err := node.Start(context.Background(), cfg)
		if err == nil {
			n.Close()
		}
		done <- err
	}()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cc, sc := shoalv1.NewClusterClient(conn), shoalv1.NewStreamsClient(conn)
	calls := map[string]func(context.Context) error{
		"Topology": func(ctx context.Context) error {
			_, err := cc.Topology(ctx, &shoalv1.TopologyRequest{LocalOnly: true})
			return err
		},
		"Status": func(ctx context.Context) error { _, err := cc.Status(ctx, &shoalv1.StatusRequest{}); return err },
		"Append": func(ctx context.Context) error {
			_, err := sc.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: []*shoalv1.EventData{event("E")}})
			return err
		},
	}
	testnode.WaitFor(t, 5*time.Second, "the starting node's gRPC listener", func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := calls["Topology"](ctx); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "is starting") {
			return fmt.Sprintf("Topology: %v", err)
		}
		return ""
	})
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := call(ctx)
		cancel()
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "node starting is starting") {
			t.Errorf("%s while starting: %v, want UNAVAILABLE saying the node is starting", name, err)
		}
	}
	if err := <-done; !errors.Is(err, node.ErrJoinTimeout) {
		t.Fatalf("Start: %v, want ErrJoinTimeout (its seed never answers)", err)
	}
}

// TestJoinRetriesSeeds starts a new node before its seed, as Compose or
// systemd may: the joiner retries until the seed's gossip answers, then
// joins its cluster. A seed that never answers ends in ErrJoinTimeout naming
// the seed.
func TestJoinRetriesSeeds(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	seedAddr := testnode.FreeGossipAddr(t)
	joiner := node.Config{
		DataDir: filepath.Join(root, "joiner"), Listen: "127.0.0.1:0", DisableHTTP: true,
		Gossip: testnode.FreeGossipAddr(t), Name: "joiner", Zone: "z2",
		Join: []string{seedAddr}, JoinTimeout: 30 * time.Second,
	}
	type result struct {
		n   *node.Node
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := node.Start(context.Background(), joiner)
		done <- result{n, err}
	}()

	time.Sleep(time.Second) // the joiner has missed the seed at least once
	select {
	case r := <-done:
		t.Fatalf("the joiner returned before its seed started: %v", r.err)
	default:
	}
	seed, err := node.Start(context.Background(), node.Config{
		DataDir: filepath.Join(root, "seed"), Listen: "127.0.0.1:0", DisableHTTP: true,
		Gossip: seedAddr, Name: "seed", Zone: "z1", Shards: 2, Replication: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the joiner did not join within 30s of its seed starting")
	}
	if r.err != nil {
		t.Fatalf("joiner: %v", r.err)
	}
	defer r.n.Close()
	if r.n.Settings() != seed.Settings() {
		t.Fatalf("joiner settings %v, seed %v", r.n.Settings(), seed.Settings())
	}

	// Nothing ever answers at this address.
	lonely := node.Config{
		DataDir: filepath.Join(root, "lonely"), Listen: "127.0.0.1:0", DisableHTTP: true,
		Gossip: testnode.FreeGossipAddr(t), Name: "lonely",
		Join: []string{"127.0.0.1:1"}, JoinTimeout: time.Second,
	}
	_, err = node.Start(context.Background(), lonely)
	if !errors.Is(err, node.ErrJoinTimeout) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("want ErrJoinTimeout naming the seed, got %v", err)
	}
	t.Log(err)
}

// noPlacement keeps the topology static: these tests move replicas by hand.
func noPlacement(_ int, cfg *node.Config) { cfg.PlacementInterval = -1 }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStatusNamesUnheardReplica: nodes restarted while a member is down never hear of it in
// gossip, yet it holds replicas of their shards. Their topology lists it, dead, under the name
// and zone it last had (members.json), not as a bare ID in the shards' voters only.
func TestStatusNamesUnheardReplica(t *testing.T) {
	t.Parallel()
	c := testnode.Start(t, 3, testnode.Options{Shards: 2})
	down := c.Nodes[2].ID()
	testnode.WaitFor(t, 20*time.Second, "every shard on three voters", func() string {
		for id, s := range c.Shards() {
			if len(s.Voters) != 3 {
				return fmt.Sprintf("shard %d: voters %v", id, s.Voters)
			}
		}
		return ""
	})
	c.Stop(t, 2)
	c.Stop(t, 0)
	c.Stop(t, 1)
	back := make([]*node.Node, 2)
	errs := make(chan error, 2)
	for i := range back {
		go func() {
			cfg := c.Configs[i]
			cfg.Registry = prometheus.NewRegistry()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			nd, err := node.Start(ctx, cfg)
			back[i] = nd
			errs <- err
		}()
	}
	for range back {
		if err := <-errs; err != nil {
			t.Fatalf("restarting: %v", err)
		}
	}
	for _, nd := range back {
		t.Cleanup(func() { nd.Close() })
	}
	for _, m := range back[0].Members() {
		if m.NodeID == down {
			t.Fatalf("the restarted node knows the down member from gossip (%+v): the test shows nothing", m)
		}
	}
	var info *shoalv1.NodeInfo
	testnode.WaitFor(t, 20*time.Second, "the down member in the topology", func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		topo := back[0].Topology(ctx)
		for _, ni := range topo.GetNodes() {
			if ni.GetId() == down {
				info = ni
				return ""
			}
		}
		return fmt.Sprintf("nodes %v", topo.GetNodes())
	})
	if info.GetName() != "n3" || info.GetZone() != "z3" || info.GetAlive() || info.GetReplicas() != 2 || info.GetGrpcAddr() != "" {
		t.Fatalf("the down member is listed as %v; want n3 in z3, dead, holding 2 replicas, without addresses", info)
	}
}

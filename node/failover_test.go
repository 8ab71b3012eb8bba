package node_test

// Failover tests: three in-process nodes (zones z1..z3) on loopback with real
// gRPC, real Pebble in temp directories and placement on. They check the
// DESIGN.md §1 contract across a node loss: no acknowledged append is lost
// or duplicated, versions stay dense, the surviving replicas agree, and a
// replica that fell behind the leader's compacted log catches up by
// snapshot. Seeds are printed; SHOAL_TEST_SEED replays one.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/internal/testaddr"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

const (
	failoverShards  = 4
	failoverWriters = 16
	failoverStreams = 64 // writer w owns streams w, w+16, w+32, w+48
	// failoverAfterClose is how many appends must be acknowledged after the
	// leader node closed before the writers stop.
	failoverAfterClose = 150
	// failoverRetain is the raft log retention of the lagging-replica test.
	failoverRetain = 50
)

// testSeed returns SHOAL_TEST_SEED or a fresh seed, and logs it.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SHOAL_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SHOAL_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with SHOAL_TEST_SEED=%d)", seed, seed)
	return seed
}

// startFailoverCluster starts three nodes with placement on and waits until
// every shard has three voters in three zones, no learners, and the ring's
// preferred leader, which hears from all of them.
func startFailoverCluster(t *testing.T, configure func(i int, cfg *node.Config)) (*testnode.Cluster, []*prometheus.Registry) {
	t.Helper()
	return startReplicatedCluster(t, failoverShards, configure)
}

// startReplicatedCluster is startFailoverCluster with shards shards.
func startReplicatedCluster(t testing.TB, shards int, configure func(i int, cfg *node.Config)) (*testnode.Cluster, []*prometheus.Registry) {
	t.Helper()
	regs := make([]*prometheus.Registry, 3)
	c := testnode.Start(t, 3, testnode.Options{Shards: shards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			cfg.PlacementInterval = 100 * time.Millisecond
			cfg.DisableHTTP = true
			regs[i] = prometheus.NewRegistry()
			cfg.Registry = regs[i]
			if configure != nil {
				configure(i, cfg)
			}
		}})
	check := threeVotersInZones(c)
	testnode.WaitFor(t, 25*time.Second, "three voters per shard", func() string {
		state := c.Shards()
		for id := uint32(0); id < uint32(shards); id++ {
			s, ok := state[id]
			switch {
			case !ok:
				return fmt.Sprintf("shard %d has no leader", id)
			case len(s.Learners) > 0 || len(s.Inactive) > 0:
				return s.String()
			}
			if msg := check(s); msg != "" {
				return s.String() + ": " + msg
			}
		}
		return ""
	})
	// Leaders settle on the ring's preferred replicas, so that placement's
	// leader balancing does not move them while a test looks.
	testnode.WaitFor(t, 25*time.Second, "leader balance", func() string {
		desired := c.Nodes[0].DesiredReplicas()
		for id, s := range c.Shards() {
			if s.Leader != desired[id][0] {
				return fmt.Sprintf("%v: preferred leader %d", s, desired[id][0])
			}
		}
		return ""
	})
	return c, regs
}

// shardLeader returns the index of the node that leads shard, waiting for an election if one
// is under way (a balanced cluster under load may hold one at any time).
func shardLeader(t testing.TB, c *testnode.Cluster, shard uint32) int {
	t.Helper()
	leader := -1
	testnode.WaitFor(t, 15*time.Second, fmt.Sprintf("a leader of shard %d", shard), func() string {
		s, ok := c.Shards()[shard]
		if !ok {
			return "none"
		}
		leader = c.Index(s.Leader)
		return ""
	})
	return leader
}

// seededUUID draws a version-4 UUID from rng.
func seededUUID(rng *rand.Rand) uuid.UUID {
	var u uuid.UUID
	for i := range u {
		u[i] = byte(rng.Uint32())
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// appendResolved appends evs to stream with the given expectation and, while
// the outcome is unknown (unavailable, timed out), resends the very same
// events with the same expectation until the cluster answers definitely or
// ctx ends. The idempotency rule turns a resend of an append that did
// commit into its original result.
func appendResolved(ctx context.Context, cl *client.Client, stream string, exp client.ExpectedVersion,
	evs []client.Event) (res client.AppendResult, resends int, err error) {
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err = cl.Append(actx, stream, exp, evs...)
		cancel()
		if err == nil {
			return res, resends, nil
		}
		unknown := errors.Is(err, client.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
		if !unknown || ctx.Err() != nil {
			return res, resends, err
		}
		resends++
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// readShardStale reads shard's whole log from the node behind conn, served by
// its local replica (allow_stale), or forwarded when it holds none.
func readShardStale(ctx context.Context, conn *grpc.ClientConn, shard uint32) ([]*shoalv1.RecordedEvent, error) {
	return readShardReq(ctx, conn, &shoalv1.ReadShardRequest{Shard: shard, AllowStale: true})
}

// readShardLocal reads shard's whole log from the node behind conn's own replica (local_only:
// never forwarded; FAILED_PRECONDITION when the node holds none).
func readShardLocal(ctx context.Context, conn *grpc.ClientConn, shard uint32) ([]*shoalv1.RecordedEvent, error) {
	return readShardReq(ctx, conn, &shoalv1.ReadShardRequest{Shard: shard, AllowStale: true, LocalOnly: true})
}

func readShardReq(ctx context.Context, conn *grpc.ClientConn, req *shoalv1.ReadShardRequest) ([]*shoalv1.RecordedEvent, error) {
	rs, err := shoalv1.NewStreamsClient(conn).ReadShard(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*shoalv1.RecordedEvent
	for {
		p, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, p.Events...)
	}
}

// diffLogs describes the first difference between two shard logs, "" when
// they are identical event for event.
func diffLogs(a, b []*shoalv1.RecordedEvent) string {
	for i := range min(len(a), len(b)) {
		if !proto.Equal(a[i], b[i]) {
			return fmt.Sprintf("event %d differs: %v vs %v", i, a[i], b[i])
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("%d vs %d events", len(a), len(b))
	}
	return ""
}

// waitReplicasEqual waits until the replicas of shard on the nodes behind conns,
// each read from the node's own copy (readShardLocal: a node without one never
// passes), hold identical logs of want events, and returns that log.
func waitReplicasEqual(t *testing.T, shard uint32, want int, conns map[string]*grpc.ClientConn) []*shoalv1.RecordedEvent {
	t.Helper()
	var log []*shoalv1.RecordedEvent
	testnode.WaitFor(t, 15*time.Second, fmt.Sprintf("replicas of shard %d converge", shard), func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var first []*shoalv1.RecordedEvent
		firstName := ""
		for name, conn := range conns {
			got, err := readShardLocal(ctx, conn, shard)
			if err != nil {
				return fmt.Sprintf("local read of %s: %v", name, err)
			}
			if len(got) != want {
				return fmt.Sprintf("%s holds %d events, want %d", name, len(got), want)
			}
			if first == nil {
				first, firstName = got, name
				continue
			}
			if d := diffLogs(first, got); d != "" {
				return fmt.Sprintf("%s vs %s: %s", firstName, name, d)
			}
		}
		log = first
		return ""
	})
	return log
}

// ownedStream is one stream a writer appends to and what was acknowledged.
type ownedStream struct {
	name string
	ids  []uuid.UUID // acknowledged event IDs, in version order
	// content, when set, gives the type and data the writer wrote at a version, which
	// checkAcknowledged compares with what it reads.
	content func(version uint64) (typ string, data []byte)
}

// failoverContent is the type and data TestFailoverUnderLoad's writers give the event at
// version v of a stream: known from the version, so that what is read can be checked.
func failoverContent(v uint64) (string, []byte) {
	return "Failover", []byte(strconv.FormatUint(v, 10))
}

// TestFailoverUnderLoad closes the node that leads the most shards while 16
// writers append with exact expected versions, then checks that every
// acknowledged event is there exactly once at dense versions and that the
// two surviving replicas of every shard are identical.
func TestFailoverUnderLoad(t *testing.T) {
	t.Parallel()
	seed := testSeed(t)
	c, _ := startFailoverCluster(t, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addrs := c.Addrs()
	// A short client retry budget: appends caught by the failover surface as
	// unknown outcomes, which the writers resend themselves.
	cl, err := client.Dial(ctx, addrs, client.WithRetry(client.RetryPolicy{MaxElapsed: 1500 * time.Millisecond, AttemptTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	streams := make([]*ownedStream, failoverStreams)
	for i := range streams {
		streams[i] = &ownedStream{name: fmt.Sprintf("fo-%d-%d", seed%1000, i), content: failoverContent}
	}

	var (
		stop       atomic.Bool
		acked      atomic.Int64 // appends acknowledged
		afterClose atomic.Int64 // appends started after Close returned and acknowledged
		closedAt   atomic.Int64 // unix nanos when Close started; 0 before
		closeDone  atomic.Bool
		resends    atomic.Int64
		duplicates atomic.Int64 // acknowledgements that were idempotent replays
		mu         sync.Mutex
		ledByDead  map[uint32]bool              // shards the closed node led
		firstAck   = map[uint32]time.Duration{} // shard -> Close start to first ack
		failures   []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
		stop.Store(true)
	}

	var wg sync.WaitGroup
	for w := range failoverWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			var owned []*ownedStream
			for i := w; i < failoverStreams; i += failoverWriters {
				owned = append(owned, streams[i])
			}
			for !stop.Load() {
				st := owned[rng.IntN(len(owned))]
				evs := make([]client.Event, 1+rng.IntN(3))
				for i := range evs {
					typ, data := failoverContent(uint64(len(st.ids) + i))
					evs[i] = client.Event{ID: seededUUID(rng), Type: typ, Data: data}
				}
				exp := client.NoStream
				if len(st.ids) > 0 {
					exp = client.Exact(uint64(len(st.ids) - 1))
				}
				startedAfterClose := closeDone.Load()
				res, n, err := appendResolved(ctx, cl, st.name, exp, evs)
				resends.Add(int64(n))
				if err != nil {
					fail("writer %d: append to %s expecting %v (%d resends): %v", w, st.name, exp, n, err)
					return
				}
				next := uint64(len(st.ids))
				if res.FirstVersion != next || res.LastVersion != next+uint64(len(evs))-1 {
					fail("writer %d: append to %s expecting %v got versions %d..%d, want %d..%d (duplicate %v)",
						w, st.name, exp, res.FirstVersion, res.LastVersion, next, next+uint64(len(evs))-1, res.Duplicate)
					return
				}
				for _, ev := range evs {
					st.ids = append(st.ids, ev.ID)
				}
				if res.Duplicate {
					duplicates.Add(1)
				}
				acked.Add(1)
				if startedAfterClose {
					afterClose.Add(1)
					since := time.Since(time.Unix(0, closedAt.Load()))
					mu.Lock()
					if _, seen := firstAck[res.Shard]; !seen && ledByDead[res.Shard] {
						firstAck[res.Shard] = since
					}
					mu.Unlock()
				}
			}
		}()
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()
	stopWriters := func() {
		stop.Store(true)
		select {
		case <-writersDone:
		case <-time.After(20 * time.Second):
			t.Fatalf("writers did not finish within 20s of stopping (an append never resolved)")
		}
	}

	// Load first, then close the node leading the most shards.
	testnode.WaitFor(t, 15*time.Second, "load before the failover", func() string {
		if n := acked.Load(); n < 100 {
			return fmt.Sprintf("%d appends acknowledged", n)
		}
		return ""
	})
	victimID, victimLed := c.BusiestLeader()
	victim := c.Index(victimID)
	mu.Lock()
	ledByDead = map[uint32]bool{}
	for _, id := range victimLed {
		ledByDead[id] = true
	}
	mu.Unlock()
	before := acked.Load()
	start := time.Now()
	closedAt.Store(start.UnixNano())
	c.Stop(t, victim)
	closeDone.Store(true)
	t.Logf("closed n%d (leader of shards %v) after %d acknowledged appends; Close took %v",
		victim+1, victimLed, before, time.Since(start).Round(time.Millisecond))

	deadline := time.Now().Add(25 * time.Second)
	for {
		mu.Lock()
		recovered, failed := len(firstAck) == len(ledByDead), len(failures) > 0
		mu.Unlock()
		if failed || recovered && afterClose.Load() >= failoverAfterClose {
			break
		}
		if time.Now().After(deadline) {
			stopWriters()
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("after 25s: %d appends acknowledged since Close, shards led by the closed node that acknowledged one: %v of %v; failures %v",
				afterClose.Load(), firstAck, victimLed, failures)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopWriters()
	if len(failures) > 0 {
		t.Fatalf("%d writer failures, first: %s", len(failures), failures[0])
	}
	firstAny := time.Duration(-1)
	for shard, d := range firstAck {
		t.Logf("shard %d (led by the closed node): first acknowledged append %v after Close", shard, d.Round(time.Millisecond))
		if firstAny < 0 || d < firstAny {
			firstAny = d
		}
	}
	st := cl.Stats()
	t.Logf("failover: first acknowledged append on a shard of the closed node %v after Close; %d appends total, %d after Close, %d resends of unknown outcomes, %d answered as duplicates; client retries %d redirects %d",
		firstAny.Round(time.Millisecond), acked.Load(), afterClose.Load(), resends.Load(), duplicates.Load(), st.Retries, st.Redirects)

	// Every acknowledged event exactly once, at dense versions, with the type
	// and data written (linearizable reads through the client), and nothing else.
	checkAcknowledged(ctx, t, cl, streams)
	type ackedAt struct {
		stream  string
		version uint64
	}
	perShard := map[uint32]map[uuid.UUID]ackedAt{}
	for _, s := range streams {
		sh := ring.ShardOf(s.name, failoverShards)
		if perShard[sh] == nil {
			perShard[sh] = map[uuid.UUID]ackedAt{}
		}
		for v, id := range s.ids {
			perShard[sh][id] = ackedAt{s.name, uint64(v)}
		}
	}

	// The two surviving replicas of every shard are identical and hold
	// exactly the acknowledged events, at their versions with the type and
	// data written, at dense positions.
	conns := map[string]*grpc.ClientConn{}
	for i := range c.Nodes {
		if c.Running(i) {
			conns[fmt.Sprintf("n%d", i+1)] = c.Dial(t, i)
		}
	}
	for sh := uint32(0); sh < failoverShards; sh++ {
		log := waitReplicasEqual(t, sh, len(perShard[sh]), conns)
		seen := map[uuid.UUID]bool{}
		for i, ev := range log {
			id, _ := uuid.FromBytes(ev.Id)
			at, ok := perShard[sh][id]
			typ, data := failoverContent(at.version)
			if ev.Position != uint64(i) || !ok || at != (ackedAt{ev.Stream, ev.Version}) || seen[id] ||
				ev.Type != typ || !bytes.Equal(ev.Data, data) {
				t.Fatalf("shard %d position %d: %v (acknowledged %v at %s@%d with type %s data %q, seen before %v)",
					sh, i, ev, ok, at.stream, at.version, typ, data, seen[id])
			}
			seen[id] = true
		}
	}
}

// checkAcknowledged reads every stream through cl (linearizable) and checks that it holds
// exactly the events acknowledged to it, in order, at dense versions, with the type and data
// written where the stream says what they were (ownedStream.content); it returns their count.
func checkAcknowledged(ctx context.Context, t *testing.T, cl *client.Client, streams []*ownedStream) int {
	t.Helper()
	total := 0
	for _, s := range streams {
		var got []uuid.UUID
		for ev, err := range cl.Read(ctx, s.name) {
			if errors.Is(err, client.ErrStreamNotFound) && len(s.ids) == 0 {
				break
			}
			if err != nil {
				t.Fatalf("read %s: %v", s.name, err)
			}
			if ev.Version != uint64(len(got)) {
				t.Fatalf("%s: version %d at index %d (not dense)", s.name, ev.Version, len(got))
			}
			if s.content != nil {
				if typ, data := s.content(ev.Version); ev.Type != typ || !bytes.Equal(ev.Data, data) {
					t.Fatalf("%s@%d: type %s data %q, written type %s data %q", s.name, ev.Version, ev.Type, ev.Data, typ, data)
				}
			}
			got = append(got, ev.ID)
		}
		if !slices.Equal(got, s.ids) {
			t.Fatalf("%s: read %d events, acknowledged %d; first difference at %d", s.name, len(got), len(s.ids), firstDiff(got, s.ids))
		}
		total += len(s.ids)
	}
	return total
}

func firstDiff(a, b []uuid.UUID) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestLaggingReplicaCatchesUpBySnapshot closes a follower, appends enough to
// one shard that its leader compacts the log past the follower's position,
// restarts the follower on its data directory, and checks it catches up by
// an installed snapshot to a copy identical to the leader's.
func TestLaggingReplicaCatchesUpBySnapshot(t *testing.T) {
	t.Parallel()
	seed := testSeed(t)
	c, regs := startFailoverCluster(t, func(_ int, cfg *node.Config) {
		cfg.RaftLogRetainEntries = failoverRetain
		// The lagging node restarts on its gRPC address: one the kernel handed out for ":0"
		// is ephemeral, and may be another socket's (an outgoing connection of a test running
		// alongside) by then, failing the restart with "address already in use" (testaddr).
		cfg.Listen = testaddr.Gossip(t)
	})
	rng := rand.New(rand.NewPCG(seed, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sh := uint32(rng.IntN(failoverShards))
	// The shard may be between leaders, or replacing a replica, at this moment.
	leader, lag := -1, -1
	testnode.WaitFor(t, 20*time.Second, "a leader and a follower", func() string {
		s, ok := c.Shards()[sh]
		if !ok {
			return fmt.Sprintf("shard %d has no leader", sh)
		}
		leader = c.Index(s.Leader)
		for _, v := range s.Voters {
			if v != s.Leader {
				lag = c.Index(v)
				return ""
			}
		}
		return s.String()
	})
	lagNode := c.Nodes[lag]
	addr := lagNode.Addr()
	t.Logf("shard %d: leader n%d, lagging follower n%d", sh, leader+1, lag+1)
	sentBefore := metricSum(t, regs[leader:leader+1], "shoal_replica_snapshots_sent_total", "")
	c.Stop(t, lag)

	var live []string
	for i, n := range c.Nodes {
		if c.Running(i) {
			live = append(live, n.Addr())
		}
	}
	cl, err := client.Dial(ctx, live)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Single-event appends, one raft entry each, to streams of that shard.
	var names []string
	for i := 0; len(names) < 8; i++ {
		if name := fmt.Sprintf("lag-%d-%d", seed%1000, i); ring.ShardOf(name, failoverShards) == sh {
			names = append(names, name)
		}
	}
	const appends = 8 * failoverRetain
	for i := range appends {
		ev := client.Event{ID: seededUUID(rng), Type: "Lag", Data: []byte(strconv.Itoa(i))}
		if _, _, err := appendResolved(ctx, cl, names[i%len(names)], client.Any, []client.Event{ev}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	g, ok := c.Nodes[leader].Host().Group(sh)
	if !ok {
		t.Fatal("leader lost its group")
	}
	st := g.Status()
	match := st.Progress[lagNode.ID()].Match
	t.Logf("leader applied %d, lagging follower's match %d, retention %d", st.Applied, match, failoverRetain)
	if st.Applied < match+2*failoverRetain {
		t.Fatalf("follower not behind the retained log: applied %d match %d", st.Applied, match)
	}

	// Restart on the same data directory and gRPC address, with a fresh
	// registry so its counters start at zero. A partial snapshot file, as a
	// crash mid-receive leaves, is removed at start.
	cfg := c.Configs[lag]
	snapDir := filepath.Join(cfg.DataDir, "snapshots")
	if err := os.WriteFile(filepath.Join(snapDir, "snap-partial.sst"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Listen = addr
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	restarted, err := node.Start(sctx, cfg)
	scancel()
	if err != nil {
		t.Fatalf("restarting n%d: %v", lag+1, err)
	}
	t.Cleanup(func() { restarted.Close() })
	if restarted.ID() != lagNode.ID() {
		t.Fatalf("restarted with ID %d, was %d", restarted.ID(), lagNode.ID())
	}

	testnode.WaitFor(t, 20*time.Second, "snapshot installed on the restarted node", func() string {
		if n := metricSum(t, []*prometheus.Registry{reg}, "shoal_replica_snapshots_received_total", ""); n < 1 {
			return fmt.Sprintf("snapshots received %v", n)
		}
		return ""
	})
	sent := metricSum(t, regs[leader:leader+1], "shoal_replica_snapshots_sent_total", "") - sentBefore
	conn, err := grpc.NewClient(addr, grpcopt.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	log := waitReplicasEqual(t, sh, appends, map[string]*grpc.ClientConn{
		fmt.Sprintf("leader n%d", leader+1): c.Dial(t, leader), fmt.Sprintf("restarted n%d", lag+1): conn})
	t.Logf("restarted replica holds %d events identical to the leader's; leader sent %v snapshot(s)", len(log), sent)
	if sent < 1 {
		t.Errorf("the leader's snapshots_sent counter did not move (%v)", sent)
	}
	rg, ok := restarted.Host().Group(sh)
	if !ok {
		t.Fatal("restarted node has no group for the shard")
	}
	testnode.WaitFor(t, 10*time.Second, "restarted replica applied the leader's commit", func() string {
		if a, c := rg.Status().Applied, g.Status().Commit; a < c {
			return fmt.Sprintf("applied %d < leader commit %d", a, c)
		}
		return ""
	})
	// Neither the leftover nor the received snapshot's sstables stay behind.
	testnode.WaitFor(t, 10*time.Second, "empty snapshot directory", func() string {
		if left, err := os.ReadDir(snapDir); err != nil || len(left) != 0 {
			return fmt.Sprintf("snapshot directory holds %v (%v)", left, err)
		}
		return ""
	})
}

// TestForwardToDeadLeader: a follower that forwards appends to a leader that just went away
// answers UNAVAILABLE with a NotLeader detail — the shard has no leader that answers — not a
// plain UNAVAILABLE, which clients read as the follower itself failing (and count against its
// circuit breaker, as they did against every node at once after a leader's kill -9).
func TestForwardToDeadLeader(t *testing.T) {
	t.Parallel()
	c, _ := startFailoverCluster(t, nil)
	leader, led := c.BusiestLeader()
	li := c.Index(leader)
	fi := (li + 1) % len(c.Nodes)
	var stream string
	for k := 0; stream == ""; k++ {
		if s := fmt.Sprintf("fwd-dead-%d", k); ring.ShardOf(s, failoverShards) == led[0] {
			stream = s
		}
	}
	w := shoalv1.NewStreamsClient(c.Dial(t, fi))
	var (
		stop      atomic.Bool
		mu        sync.Mutex
		plain     []string
		afterStop int
	)
	stopped := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			id := uuid.New()
			_, err := w.Append(ctx, &shoalv1.AppendRequest{Stream: stream,
				Events: []*shoalv1.EventData{{Id: id[:], Type: "E", Data: []byte("x")}}})
			cancel()
			mu.Lock()
			select {
			case <-stopped:
				if err == nil {
					afterStop++
				}
			default:
			}
			if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && len(st.Details()) == 0 {
				plain = append(plain, st.Message())
			}
			mu.Unlock()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	c.Stop(t, li)
	close(stopped)
	testnode.WaitFor(t, 15*time.Second, "appends through the follower after the leader stopped", func() string {
		mu.Lock()
		defer mu.Unlock()
		if afterStop < 20 {
			return fmt.Sprintf("%d acknowledged", afterStop)
		}
		return ""
	})
	stop.Store(true)
	<-done
	if len(plain) > 0 {
		t.Fatalf("%d answers were a plain UNAVAILABLE, e.g. %q", len(plain), plain[0])
	}
}

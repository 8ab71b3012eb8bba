package node_test

// Partition test: three in-process nodes (zones z1..z3) on loopback with real
// gRPC and real Pebble, whose peer links (raft transport and forwarding) go
// through an in-test network that can cut them. Gossip is not cut: the
// isolated node stays "alive", so placement does not move replicas and the
// test sees raft's own behaviour (CheckQuorum, PreVote).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// linkCutError is a dial across a cut link. It is a timeout, as a dial to a node whose
// packets are dropped times out: the transport's probe takes the node for down
// (ReportPeerDown), as it does across a real partition.
type linkCutError struct {
	from int
	addr string
}

func (e *linkCutError) Error() string {
	return fmt.Sprintf("partition test: link cut: %d -> %s: i/o timeout", e.from, e.addr)
}
func (e *linkCutError) Timeout() bool   { return true }
func (e *linkCutError) Temporary() bool { return true }

// testNet routes the dials of endpoints 0..n-1 and can cut links between
// them. Endpoints are identified by index; a dial's target is mapped to an
// endpoint through the registered addresses.
type testNet struct {
	mu    sync.Mutex
	addrs map[string]int         // dial address -> endpoint
	cut   map[[2]int]bool        // from -> to links that refuse dials
	conns map[*testConn]struct{} // open conns
}

type testConn struct {
	net.Conn
	nw       *testNet
	from     int
	addr     string
	closeOne sync.Once
}

func (c *testConn) Close() error {
	c.closeOne.Do(func() {
		c.nw.mu.Lock()
		delete(c.nw.conns, c)
		c.nw.mu.Unlock()
	})
	return c.Conn.Close()
}

func newTestNet() *testNet {
	return &testNet{addrs: map[string]int{}, cut: map[[2]int]bool{}, conns: map[*testConn]struct{}{}}
}

// register maps addr to endpoint i.
func (nw *testNet) register(addr string, i int) {
	nw.mu.Lock()
	nw.addrs[addr] = i
	nw.mu.Unlock()
}

// isCut reports whether from may not reach addr; nw.mu held.
func (nw *testNet) isCut(from int, addr string) bool {
	to, ok := nw.addrs[addr]
	return ok && nw.cut[[2]int{from, to}]
}

// dialer returns endpoint from's dial function.
func (nw *testNet) dialer(from int) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		nw.mu.Lock()
		refused := nw.isCut(from, addr)
		nw.mu.Unlock()
		if refused {
			return nil, &linkCutError{from: from, addr: addr}
		}
		var d net.Dialer
		raw, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		c := &testConn{Conn: raw, nw: nw, from: from, addr: addr}
		nw.mu.Lock()
		refused = nw.isCut(from, addr) // cut while dialling
		if !refused {
			nw.conns[c] = struct{}{}
		}
		nw.mu.Unlock()
		if refused {
			raw.Close()
			return nil, &linkCutError{from: from, addr: addr}
		}
		return c, nil
	}
}

// isolate cuts every link between endpoint i and the others, both ways, and
// closes the open conns crossing the cut.
func (nw *testNet) isolate(i int, others []int) {
	for _, o := range others {
		nw.cutLink(i, o)
	}
}

// cutLink cuts the link between endpoints a and b, both ways, and closes the
// open conns crossing it.
func (nw *testNet) cutLink(a, b int) {
	nw.mu.Lock()
	nw.cut[[2]int{a, b}] = true
	nw.cut[[2]int{b, a}] = true
	var crossing []*testConn
	for c := range nw.conns {
		if nw.isCut(c.from, c.addr) {
			crossing = append(crossing, c)
		}
	}
	nw.mu.Unlock()
	for _, c := range crossing {
		c.Close()
	}
}

// heal restores every link.
func (nw *testNet) heal() {
	nw.mu.Lock()
	clear(nw.cut)
	nw.mu.Unlock()
}

// TestMinorityPartitionStopsWrites cuts the node leading the most shards off
// from the other two (and from the test's client) and checks: the majority
// elects leaders for every shard and keeps acknowledging appends; the
// isolated node steps down (CheckQuorum) and answers appends sent to it
// UNAVAILABLE without writing anything; after healing, it catches up to
// replicas identical to the majority's and no acknowledged append is lost.
func TestMinorityPartitionStopsWrites(t *testing.T) {
	t.Parallel()
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	nw := newTestNet()
	c, _ := startFailoverCluster(t, func(i int, cfg *node.Config) { cfg.PeerDialer = nw.dialer(i) })
	const clientEP = 3 // the test client's endpoint
	for i, n := range c.Nodes {
		nw.register(n.Addr(), i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	w := newShardWriter(fmt.Sprintf("part-%d", seed%1000), rng)
	dialClient := func(addrs []string) *client.Client {
		t.Helper()
		cl, err := client.Dial(ctx, addrs,
			client.WithRetry(client.RetryPolicy{MaxElapsed: 1500 * time.Millisecond, AttemptTimeout: time.Second}),
			client.WithDialOptions(grpc.WithContextDialer(nw.dialer(clientEP))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	w.appendAll(t, ctx, dialClient([]string{c.Nodes[0].Addr(), c.Nodes[1].Addr(), c.Nodes[2].Addr()}), "before", 4)

	// Isolate the node leading the most shards.
	victimID, victimLed := c.BusiestLeader()
	victim := c.Index(victimID)
	var majority []int
	var majorityAddrs []string
	for i, n := range c.Nodes {
		if i != victim {
			majority = append(majority, i)
			majorityAddrs = append(majorityAddrs, n.Addr())
		}
	}
	// The test's own links to every node, never cut.
	conns := map[string]*grpc.ClientConn{}
	for i := range c.Nodes {
		conns[fmt.Sprintf("n%d", i+1)] = c.Dial(t, i)
	}
	victimConn := conns[fmt.Sprintf("n%d", victim+1)]
	// A follower learns that its last entries committed with the leader's next append or
	// heartbeat (up to a tick later): wait until every replica applied everything
	// acknowledged, so that a change seen after the cut can only be a write accepted while cut
	// off.
	for sh, n := range w.ackedPerShard() {
		waitReplicasEqual(t, uint32(sh), n, conns)
	}
	before := shardApplied(c.Nodes[victim])
	start := time.Now()
	nw.isolate(victim, append(slices.Clone(majority), clientEP))
	t.Logf("isolated n%d (leader of shards %v) from n%d and n%d", victim+1, victimLed, majority[0]+1, majority[1]+1)

	testnode.WaitFor(t, 10*time.Second, "a majority leader for every shard", func() string {
		for sh := uint32(0); sh < failoverShards; sh++ {
			if majorityLeader(c, majority, sh) == 0 {
				return fmt.Sprintf("shard %d has no leader among the majority", sh)
			}
		}
		return ""
	})
	t.Logf("every shard led by the majority %v after the cut", time.Since(start).Round(time.Millisecond))
	testnode.WaitFor(t, 10*time.Second, "the isolated node steps down", func() string {
		for _, g := range c.Nodes[victim].Groups() {
			if st := g.Status(); g.IsLeader() || st.Leader == victimID {
				return fmt.Sprintf("shard %d: isolated node still leads (term %d)", st.Shard, st.Term)
			}
		}
		return ""
	})
	t.Logf("isolated node led no group %v after the cut", time.Since(start).Round(time.Millisecond))

	// The majority keeps acknowledging appends on every shard.
	mcl := dialClient(majorityAddrs)
	w.appendAll(t, ctx, mcl, "partitioned", 5)

	// Stale reads on the isolated node: unbounded, its replicas still serve what they hold (a
	// shard that lost its quorum stays readable); bounded, they refuse once they have not
	// heard from a leader for longer than the bound, and so does the node, which cannot reach
	// the leader either.
	const maxStale = time.Second
	testnode.WaitFor(t, 10*time.Second, "the isolated node's replicas go without a leader's word", func() string {
		for _, g := range c.Nodes[victim].Groups() {
			if since, ok := g.SinceCurrent(); ok && since <= maxStale {
				return fmt.Sprintf("shard %d was current with its leader %v ago", g.Shard(), since)
			}
		}
		return ""
	})
	for sh := range uint32(failoverShards) {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		evs, err := readShardStale(rctx, victimConn, sh)
		if err != nil {
			t.Fatalf("shard %d: unbounded stale read on the isolated node: %v", sh, err)
		}
		bounded, err := shoalv1.NewStreamsClient(victimConn).ReadShard(rctx, &shoalv1.ReadShardRequest{
			Shard: sh, AllowStale: true, MaxStalenessMs: uint32(maxStale.Milliseconds())})
		if err == nil {
			_, err = bounded.Recv()
		}
		rcancel()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("shard %d: stale read bounded to %v on the isolated node: %v; want UNAVAILABLE (the unbounded one read %d events)",
				sh, maxStale, err, len(evs))
		}
	}
	t.Logf("on the isolated node, unbounded stale reads served its replicas and reads bounded to %v answered UNAVAILABLE", maxStale)

	// Appends sent to the isolated node fail UNAVAILABLE, on every shard.
	rawStreams := make([]string, failoverShards)
	rawIDs := map[uuid.UUID]bool{}
	for i, n := 0, 0; n < failoverShards; i++ {
		name := fmt.Sprintf("part-raw-%d-%d", seed%1000, i)
		if sh := ring.ShardOf(name, failoverShards); rawStreams[sh] == "" {
			rawStreams[sh] = name
			n++
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, failoverShards)
	took := make([]time.Duration, failoverShards)
	for sh, st := range rawStreams {
		id := seededUUID(rng)
		rawIDs[id] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			defer rcancel()
			t0 := time.Now()
			_, errs[sh] = shoalv1.NewStreamsClient(victimConn).Append(rctx, &shoalv1.AppendRequest{
				Stream: st, Events: []*shoalv1.EventData{{Id: id[:], Type: "Raw", Data: []byte("must not commit")}}})
			took[sh] = time.Since(t0)
		}()
	}
	wg.Wait()
	for sh, err := range errs {
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("shard %d: append on the isolated node: %v (code %v, after %v), want UNAVAILABLE",
				sh, err, status.Code(err), took[sh])
		}
	}
	t.Logf("appends on the isolated node answered UNAVAILABLE after %v (e.g. %v)", slices.Max(took).Round(time.Millisecond), errs[0])
	if after := shardApplied(c.Nodes[victim]); !slices.Equal(before, after) {
		t.Fatalf("the isolated node applied entries while cut off: applied indexes %v -> %v", before, after)
	}

	// Heal: the isolated node catches up to identical replicas, serves
	// writes again, and nothing acknowledged is lost.
	nw.heal()
	healed := time.Now()
	for sh, names := range w.byShard {
		ev := client.Event{ID: seededUUID(rng), Type: "Partition", Data: []byte("healed")}
		req := &shoalv1.AppendRequest{Stream: names[0], Events: []*shoalv1.EventData{{Id: ev.ID[:], Type: ev.Type, Data: ev.Data}}}
		var res *shoalv1.AppendResponse
		testnode.WaitFor(t, 15*time.Second, fmt.Sprintf("shard %d: append on the healed node", sh), func() string {
			actx, acancel := context.WithTimeout(ctx, 5*time.Second)
			defer acancel()
			var err error
			if res, err = shoalv1.NewStreamsClient(victimConn).Append(actx, req); err != nil {
				return err.Error() // resending the same event ID is idempotent
			}
			return ""
		})
		w.acked[names[0]] = append(w.acked[names[0]], ackedEvent{ev, res.FirstVersion})
	}
	t.Logf("the healed node acknowledged appends on every shard %v after healing", time.Since(healed).Round(time.Millisecond))
	for sh, n := range w.ackedPerShard() {
		log := waitReplicasEqual(t, uint32(sh), n, conns)
		for _, ev := range log {
			id, _ := uuid.FromBytes(ev.Id)
			if rawIDs[id] {
				t.Fatalf("shard %d holds the event appended on the isolated node: %v", sh, ev)
			}
		}
	}
	t.Logf("replicas identical %v after healing", time.Since(healed).Round(time.Millisecond))
	for _, st := range rawStreams {
		for _, err := range mcl.Read(ctx, st) {
			if !errors.Is(err, client.ErrStreamNotFound) {
				t.Fatalf("stream %s appended on the isolated node: read %v, want not found", st, err)
			}
			break
		}
	}
	w.checkAcked(t, ctx, mcl)
}

// shardWriter appends to two streams of every shard and remembers what was
// acknowledged on each.
type shardWriter struct {
	rng     *rand.Rand
	byShard [][]string              // shard -> its two streams
	acked   map[string][]ackedEvent // stream -> acknowledged events, in order
}

// ackedEvent is an event as written and the version its append was acknowledged at.
type ackedEvent struct {
	client.Event
	version uint64
}

func newShardWriter(prefix string, rng *rand.Rand) *shardWriter {
	w := &shardWriter{rng: rng, byShard: make([][]string, failoverShards), acked: map[string][]ackedEvent{}}
	for i, full := 0, 0; full < failoverShards; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		sh := ring.ShardOf(name, failoverShards)
		if len(w.byShard[sh]) == 2 {
			continue
		}
		if w.byShard[sh] = append(w.byShard[sh], name); len(w.byShard[sh]) == 2 {
			full++
		}
	}
	return w
}

// appendAll appends perShard events to every shard, alternating between its two streams,
// each resent until acknowledged (appendResolved) and failing the test after 10 s. It
// returns the longest an append took.
func (w *shardWriter) appendAll(t *testing.T, ctx context.Context, cl *client.Client, round string, perShard int) time.Duration {
	t.Helper()
	var slowest time.Duration
	for sh := range w.byShard {
		for k := range perShard {
			st := w.byShard[sh][k%2]
			ev := client.Event{ID: seededUUID(w.rng), Type: "Partition", Data: []byte(round + "-" + strconv.Itoa(k))}
			actx, acancel := context.WithTimeout(ctx, 10*time.Second)
			start := time.Now()
			res, resends, err := appendResolved(actx, cl, st, client.Any, []client.Event{ev})
			slowest = max(slowest, time.Since(start))
			acancel()
			if err != nil {
				t.Fatalf("%s: append to %s (shard %d, %d resends): %v", round, st, sh, resends, err)
			}
			w.acked[st] = append(w.acked[st], ackedEvent{ev, res.FirstVersion})
		}
	}
	return slowest
}

// ackedPerShard returns how many events were acknowledged on each shard.
func (w *shardWriter) ackedPerShard() []int {
	n := make([]int, failoverShards)
	for sh, names := range w.byShard {
		for _, st := range names {
			n[sh] += len(w.acked[st])
		}
	}
	return n
}

// checkAcked reads every stream through cl and fails unless it holds exactly the
// acknowledged events, in order, each at the version its append was acknowledged at (dense
// from 0), with the type and data written.
func (w *shardWriter) checkAcked(t *testing.T, ctx context.Context, cl *client.Client) {
	t.Helper()
	for _, names := range w.byShard {
		for _, st := range names {
			acked := w.acked[st]
			n := 0
			for ev, err := range cl.Read(ctx, st) {
				if err != nil {
					t.Fatalf("read %s: %v", st, err)
				}
				if n >= len(acked) {
					t.Fatalf("%s: event %v beyond the %d acknowledged", st, ev, len(acked))
				}
				if a := acked[n]; ev.Version != uint64(n) || ev.Version != a.version || ev.ID != a.ID ||
					ev.Type != a.Type || !bytes.Equal(ev.Data, a.Data) {
					t.Fatalf("%s index %d: read %s@%d type %s data %q, acknowledged %s@%d type %s data %q",
						st, n, ev.ID, ev.Version, ev.Type, ev.Data, a.ID, a.version, a.Type, a.Data)
				}
				n++
			}
			if n != len(acked) {
				t.Fatalf("%s: read %d events, acknowledged %d", st, n, len(acked))
			}
		}
	}
}

// majorityLeader returns the ID of the node among majority that leads shard
// by its own group's status, 0 when none does.
func majorityLeader(c *testnode.Cluster, majority []int, shard uint32) uint64 {
	for _, i := range majority {
		g, ok := c.Nodes[i].Host().Group(shard)
		if ok && g.IsLeader() && g.Status().Leader == c.Nodes[i].ID() {
			return c.Nodes[i].ID()
		}
	}
	return 0
}

// shardApplied returns the applied raft index of every shard's replica on n (0 for a shard
// it holds no replica of).
func shardApplied(n *node.Node) []uint64 {
	out := make([]uint64, failoverShards)
	for _, g := range n.Groups() {
		out[g.Shard()] = g.Status().Applied
	}
	return out
}

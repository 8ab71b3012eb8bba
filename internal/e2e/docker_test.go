package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
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
	"github.com/shoaldb/shoal/internal/testaddr"
)

// TestDockerPartition runs writers (exact expected versions, idempotent retries) and a
// subscription to every shard against three containers, and cuts their network under the
// load:
//
//  1. The node leading the most shards loses both its peers, while clients still reach it.
//     The other two elect leaders for its shards and writes go on; the cut-off node, asked
//     directly, acknowledges no append (it cannot reach a quorum) and still serves stale
//     reads of its replica.
//  2. After healing, the link between two nodes fails while both still reach the third (a
//     partial partition, where raft without PreVote and CheckQuorum can lose its leader
//     again and again): writes go on.
//
// After healing again, every acknowledged append is present exactly once with dense
// versions, the three replicas of every shard are identical, the subscriptions yielded
// every shard's log exactly, and placement is back at three voters per shard.
func TestDockerPartition(t *testing.T) {
	skipWithoutDocker(t)
	seed := testSeed(t)
	const shards = 8
	dc := startDockerCluster(t, shards)
	c, subs, ld := dc.underLoad(seed, "e2e-dk")

	// 1. Cut the busiest leader off from both peers.
	iso, _, led, _ := dc.busiest(c)
	var others []*dockerNode
	for _, n := range dc.nodes {
		if n != iso {
			others = append(others, n)
		}
	}
	t.Logf("cutting %s (leads %d of %d shards) off from %s and %s after %d acknowledged appends",
		iso.name, led, shards, others[0].name, others[1].name, ld.l.count())
	dc.cut(iso, others[0])
	dc.cut(iso, others[1])
	resumed := ld.l.waitAcks(t, 200, 45*time.Second, "after cutting off a node")
	t.Logf("200 appends acknowledged %v after the cut", resumed.Round(time.Millisecond))

	// The cut-off node, asked directly (a plain gRPC call, which the client library would
	// route to the new leaders, reachable from here): it acknowledges no append, since it
	// reaches no quorum, and still serves stale reads of its replicas.
	conn, err := grpc.NewClient(iso.grpcAddr(), grpcopt.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	probe := uuid.New()
	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	res, err := shoalv1.NewStreamsClient(conn).Append(actx, &shoalv1.AppendRequest{
		Stream: fmt.Sprintf("e2e-dk-probe-%d", seed%1000), Expected: &shoalv1.ExpectedVersion{},
		Events: []*shoalv1.EventData{{Id: probe[:], Type: "e2e.Probe", Data: []byte(`{}`)}}})
	cancel()
	if err == nil {
		t.Fatalf("a node cut off from both peers acknowledged an append (shard %d, version %d)", res.GetShard(), res.GetFirstVersion())
	}
	// Unknown is the answer when the node still took itself for a shard's leader as the probe
	// came (CheckQuorum has not yet deposed it): its proposal was in its own log when it lost
	// the leadership, so it cannot say the append was not applied, and says so.
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded &&
		(c != codes.Unknown || !strings.Contains(err.Error(), "may or may not have been applied")) {
		t.Fatalf("the cut-off node answered an append with %v, want Unavailable (no quorum), a deadline or an unknown outcome", err)
	}
	t.Logf("the cut-off node refused an append: %v", err)
	stale := 0
	for sh := range uint32(shards) {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := readLocalShard(rctx, conn, sh, false)
		cancel()
		if err != nil {
			t.Fatalf("a stale read of shard %d from the cut-off node: %v", sh, err)
		}
		stale += len(got)
	}
	if stale == 0 {
		t.Fatal("stale reads of every shard from the cut-off node returned nothing; events were written before the cut")
	}
	t.Logf("the cut-off node served stale reads of every shard (%d events)", stale)

	dc.heal()
	t.Logf("every node holds the others alive and hears every shard's leader %v after healing", dc.waitHealed().Round(time.Millisecond))
	ld.l.waitAcks(t, 200, 30*time.Second, "after healing")
	waitReplicated(t, c, shards, 60*time.Second, dc.tails)

	// 2. A partial partition: two nodes lose their link, both still reach the third. First
	// placement hands the leaderships it moved off the isolated node back (leader balance),
	// so that the elections counted below are the cut's.
	t.Logf("leaderships balanced again %v after healing", dc.waitBalanced(30*time.Second).Round(time.Millisecond))
	terms, moved, cutAt := dc.terms(c), dc.transfers(), time.Now()
	t.Logf("cutting the link between %s and %s", others[0].name, others[1].name)
	dc.cut(others[0], others[1])
	dc.keepWriting(ld, 4*time.Second, "during the partial partition")
	// Each node, asked for the topology, names a leader for every shard: the two cut apart
	// do not hear each other's leaders, but the third does.
	for _, n := range dc.nodes {
		conn, err := grpc.NewClient(n.grpcAddr(), grpcopt.DialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := shoalv1.NewClusterClient(conn).Status(sctx, &shoalv1.StatusRequest{})
		cancel()
		conn.Close()
		if err != nil {
			t.Fatalf("cluster status from %s during the partial partition: %v", n.name, err)
		}
		for _, s := range st.GetTopology().GetShards() {
			if s.GetLeaderId() == 0 || s.GetUnavailable() {
				t.Errorf("%s's topology during the partial partition: shard %d has no leader (term %d)", n.name, s.GetShard(), s.GetTerm())
			}
		}
	}
	dc.keepWriting(ld, 4*time.Second, "during the partial partition")
	dc.tookEffect("the partial partition", others[0], others[1])
	if n := dc.elections(c, terms); n > 0 {
		t.Logf("partial partition: %d elections in 8 s, %d of them leader-balancing transfers (placement's, after the first phase's heal); the nodes' logs since the cut:%s",
			n, dc.transfers()-moved, dc.logsSince(cutAt, "leading shard", "term advanced", "down", "lapse", "transfer", "dead", "suspect"))
	} else {
		t.Logf("partial partition: no election in 8 s")
	}
	dc.heal()
	t.Logf("every node holds the others alive and hears every shard's leader %v after healing", dc.waitHealed().Round(time.Millisecond))
	ld.l.waitAcks(t, 200, 30*time.Second, "after healing the partial partition")

	// 3. One way: the busiest leader stops hearing one of its followers, which still hears
	// it; then that follower stops hearing the leader, which still hears it.
	lead, _, _, _ := dc.busiest(c)
	var follower *dockerNode
	for _, n := range dc.nodes {
		if n != lead {
			follower = n
			break
		}
	}
	terms = dc.terms(c)
	t.Logf("%s drops what %s sends it", lead.name, follower.name)
	dc.drop(lead, follower)
	dc.keepWriting(ld, 8*time.Second, "while the leader did not hear a follower")
	dc.tookEffect(fmt.Sprintf("%s dropping what %s sends", lead.name, follower.name), lead)
	t.Logf("%d elections in 8 s", dc.elections(c, terms))
	dc.heal()
	dc.waitHealed()
	ld.l.waitAcks(t, 200, 30*time.Second, "after healing")
	terms = dc.terms(c)
	t.Logf("%s drops what %s sends it", follower.name, lead.name)
	dc.drop(follower, lead)
	dc.keepWriting(ld, 8*time.Second, "while a follower did not hear the leader")
	dc.tookEffect(fmt.Sprintf("%s dropping what %s sends", follower.name, lead.name), follower)
	t.Logf("%d elections in 8 s", dc.elections(c, terms))
	dc.heal()
	dc.waitHealed()
	ld.l.waitAcks(t, 200, 30*time.Second, "after healing the one-way cuts")

	if dc.verifyLoad(c, ld, subs) {
		waitReplicated(t, c, shards, 60*time.Second, dc.tails)
	}
}

// TestDockerCompose brings up deploy/docker-compose.yml as shipped (the image of this
// tree, a free /24 and free host ports through its variables), waits for three voters per
// shard, appends and reads back through n1's published port, and stops one node: the
// cluster keeps taking writes, and the stopped node is back once started again.
func TestDockerCompose(t *testing.T) {
	skipWithoutDocker(t)
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatal("SHOAL_DOCKER is set but docker-compose is not installed")
	}
	tag := image(t)
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(strings.TrimSpace(string(out)), "deploy", "docker-compose.yml")
	project := composeProject()
	ports := testaddr.Ports(t, 2)
	env := append(os.Environ(), "SHOAL_IMAGE="+tag, fmt.Sprintf("SHOAL_PORT=%d", ports[0]), fmt.Sprintf("SHOAL_HTTP_PORT=%d", ports[1]))
	compose := func(args ...string) (string, error) {
		cmd := exec.Command("docker-compose", append([]string{"-p", project, "-f", file}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	var up, net string
	base := env
	for attempt := 0; ; attempt++ { // a /24 no other network of this host uses
		net = fmt.Sprintf("10.214.%d", 1+rand.IntN(254))
		env = append(base[:len(base):len(base)], "SHOAL_NET="+net)
		up, err = compose("up", "-d")
		if err == nil {
			break
		}
		compose("down", "-v")
		if attempt == 10 || !strings.Contains(up, "overlap") {
			t.Fatalf("docker-compose up: %v\n%s", err, up)
		}
	}
	t.Cleanup(func() {
		if out, err := compose("down", "-v", "-t", "5"); err != nil {
			t.Logf("docker-compose down: %v\n%s", err, out)
		}
	})
	tails := func() string {
		out, _ := compose("logs", "--tail", "40")
		return "\n" + out
	}

	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	c, err := client.Dial(context.Background(), []string{addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, took := waitReplicated(t, c, 32, 120*time.Second, tails)
	t.Logf("32 shards with 3 voters each %v after docker-compose up", took.Round(time.Millisecond))
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]))
	if err != nil {
		t.Fatalf("n1's published HTTP port: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("n1's /readyz on its published port: %d", resp.StatusCode)
	}
	// The profiler answers the host (--pprof on: requests reach the container from the bridge).
	if resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/cmdline", ports[1])); err != nil {
		t.Fatalf("n1's profiler on its published port: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("n1's /debug/pprof/cmdline on its published port: %d", resp.StatusCode)
	}

	appendRead := func(stream string, n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := range n {
			expected := client.NoStream
			if i > 0 {
				expected = client.Exact(uint64(i - 1))
			}
			if _, err := c.Append(ctx, stream, expected, client.Event{Type: "e2e.Composed", Data: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
				t.Fatalf("append %d to %s: %v%s", i, stream, err, tails())
			}
		}
		got := 0
		for ev, err := range c.Read(ctx, stream) {
			if err != nil {
				t.Fatalf("reading %s: %v", stream, err)
			}
			if ev.Version != uint64(got) {
				t.Fatalf("%s: version %d at %d", stream, ev.Version, got)
			}
			got++
		}
		if got != n {
			t.Fatalf("%s: read %d events, appended %d", stream, got, n)
		}
	}
	for i := range 16 {
		appendRead(fmt.Sprintf("compose-%d", i), 5)
	}

	if out, err := compose("stop", "-t", "10", "n3"); err != nil {
		t.Fatalf("docker-compose stop n3: %v\n%s", err, out)
	}
	for i := range 16 {
		appendRead(fmt.Sprintf("compose-down-%d", i), 5)
	}
	if out, err := compose("start", "n3"); err != nil {
		t.Fatalf("docker-compose start n3: %v\n%s", err, out)
	}
	// n3 catches up: the three replicas of every shard end identical, with all 160 events.
	start := time.Now()
	var addrs []string
	for i := 11; i <= 13; i++ {
		addrs = append(addrs, fmt.Sprintf("%s.%d:7400", net, i))
	}
	waitIdentical(t, []string{"n1", "n2", "n3"}, addrs, 32, 160, 60*time.Second, tails)
	t.Logf("n3 stopped and started again: its replicas identical to the others' %v after the start", time.Since(start).Round(time.Millisecond))
}

// TestDockerChaos runs the load of TestDockerPartition for $SHOAL_DOCKER_CHAOS (a duration;
// `make docker-chaos`) while a seeded schedule applies one fault at a time to the three
// containers, each for 2 to 6 s with 1 to 3 s of calm after it: a node cut off from both
// peers, two nodes cut apart, one direction of a link dropped, a node killed (SIGKILL) and
// started again, a node paused (cgroup freezer) and resumed, the replication factor changed
// (to 2, or with more nodes up to one replica per node) and set back. After every fault the load
// must make progress again; at the end every acknowledged append is present exactly once,
// the replicas are identical, the subscriptions yielded every shard's log exactly, and
// placement is back at three voters per shard.
func TestDockerChaos(t *testing.T) {
	skipWithoutDocker(t)
	d, err := time.ParseDuration(os.Getenv("SHOAL_DOCKER_CHAOS"))
	if err != nil || d <= 0 {
		t.Skip("set SHOAL_DOCKER_CHAOS to a duration (make docker-chaos)")
	}
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0xc4a05))
	const shards = 8
	nodes, longest := 3, 6000
	var extra []string
	if v := os.Getenv("SHOAL_DOCKER_CHAOS_NODES"); v != "" {
		// More nodes than replicas: faults last up to 12 s, past a 6 s --dead-after, so that
		// replicas are replaced while a node is away and placed back when it returns.
		if nodes, err = strconv.Atoi(v); err != nil || nodes < 3 {
			t.Fatalf("SHOAL_DOCKER_CHAOS_NODES=%q: want 3 or more", v)
		}
		if nodes > 3 {
			longest, extra = 12000, []string{"--dead-after", "6s"}
		}
	}
	dc := startDockerNodes(t, nodes, shards, extra...)
	c, subs, ld := dc.underLoad(seed, "e2e-chaos")

	pick := func() *dockerNode { return dc.nodes[rng.IntN(len(dc.nodes))] }
	other := func(n *dockerNode) *dockerNode {
		for {
			if o := pick(); o != n {
				return o
			}
		}
	}
	counts := map[string]int{}
	netFaults, netFaultsSeen := 0, 0 // network faults, and those that dropped a packet
	for end := time.Now().Add(d); time.Now().Before(end); {
		hold := time.Duration(2000+rng.IntN(longest-2000)) * time.Millisecond
		a := pick()
		var what string
		var restore func()
		switch rng.IntN(6) {
		case 0:
			what = fmt.Sprintf("%s cut off", a.name)
			for _, o := range dc.nodes {
				if o != a {
					dc.cut(a, o)
				}
			}
			restore = dc.heal
		case 1:
			b := other(a)
			what = fmt.Sprintf("%s and %s cut apart", a.name, b.name)
			dc.cut(a, b)
			restore = dc.heal
		case 2:
			b := other(a)
			what = fmt.Sprintf("%s drops what %s sends", a.name, b.name)
			dc.drop(a, b)
			restore = dc.heal
		case 3:
			what = fmt.Sprintf("%s killed", a.name)
			run(t, "docker", "kill", "-s", "KILL", a.container)
			restore = func() {
				run(t, "docker", "start", a.container)
				dc.waitReady(a, 60*time.Second)
			}
		case 4:
			what = fmt.Sprintf("%s paused", a.name)
			run(t, "docker", "pause", a.container)
			restore = func() { run(t, "docker", "unpause", a.container) }
		case 5:
			// Each shard's leader moves replicas to the factor and back, under load: one
			// replica fewer, or, with more nodes than replicas, up to one per node.
			r := 2
			if nodes > 3 && rng.IntN(2) == 0 {
				r = 4 + rng.IntN(min(nodes, 5)-3)
			}
			what = fmt.Sprintf("replication set to %d", r)
			setReplication(t, c, r)
			restore = func() { setReplication(t, c, 3) }
		}
		kind := strings.Fields(what)[len(strings.Fields(what))-1]
		if strings.HasPrefix(what, "replication") {
			kind = "replication"
		}
		counts[kind]++
		before := ld.l.count()
		time.Sleep(hold)
		if net := strings.Contains(what, "cut") || strings.Contains(what, "drops"); net {
			// A network fault on idle links may drop nothing in its hold; every one of them
			// dropping nothing means the cuts do not work.
			var n uint64
			for _, nd := range dc.nodes {
				n += dc.dropped(nd)
			}
			netFaults++
			if n > 0 {
				netFaultsSeen++
			}
		}
		restore()
		took := ld.l.waitAcks(t, 100, 30*time.Second, "after "+what)
		t.Logf("%-28s for %v: %d appends acknowledged meanwhile; 100 more %v after the end",
			what, hold.Round(100*time.Millisecond), ld.l.count()-before, took.Round(time.Millisecond))
		time.Sleep(time.Duration(1000+rng.IntN(2000)) * time.Millisecond)
	}
	t.Logf("faults: %v; %d of the %d network faults dropped packets", counts, netFaultsSeen, netFaults)
	if netFaults > 0 && netFaultsSeen == 0 {
		t.Fatalf("none of the %d network faults dropped a packet: the cuts did not take effect", netFaults)
	}
	dc.waitHealed()
	if dc.verifyLoad(c, ld, subs) {
		waitReplicated(t, c, shards, 60*time.Second, dc.tails)
		dc.waitReplicasPlaced(c, 60*time.Second)
	}
}

// setReplication sets the cluster's replication factor to r, trying again for up to 30 s while
// the request is refused (a member that does not answer the gossip sync yet, just after a fault).
func setReplication(t *testing.T, c *client.Client, r int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.SetReplication(ctx, r)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("set the replication factor to %d: %v", r, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestDockerLongPartition: four nodes in four zones (replication 3, --dead-after 8s). Under
// load, the node leading the most shards is cut off from the others for longer than
// --dead-after: the others replace its replicas among themselves, and every shard is back
// at three voters without it while it is still cut off. Once the network heals, it returns:
// placement gives it its share of replicas again (the ring's), it drops the stale replicas
// of shards that moved away, and nothing acknowledged is lost.
func TestDockerLongPartition(t *testing.T) {
	skipWithoutDocker(t)
	seed := testSeed(t)
	const shards = 8
	dc := startDockerNodes(t, 4, shards, "--dead-after", "8s")
	c, subs, ld := dc.underLoad(seed, "e2e-lp")

	iso, id, led, topo := dc.busiest(c)
	held := replicasOf(topo, id, false)
	t.Logf("cutting %s (leads %d, holds %d of %d shards) off from the others", iso.name, led, held, shards)
	for _, n := range dc.nodes {
		if n != iso {
			dc.cut(iso, n)
		}
	}
	start := time.Now()
	for {
		st, err := c.Status(context.Background())
		if err == nil {
			ok, why := replicated(st.GetTopology(), shards, 3)
			if n := replicasOf(st.GetTopology(), id, false); n > 0 {
				ok, why = false, fmt.Sprintf("%d shards still have %s as a voter", n, iso.name)
			}
			if ok {
				break
			}
			if time.Since(start) > 60*time.Second {
				t.Fatalf("the cut-off node's replicas not replaced 60 s after the cut: %s%s", why, dc.tails())
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("every shard back at 3 voters without %s %v after the cut (--dead-after 8s)", iso.name, time.Since(start).Round(time.Millisecond))
	ld.l.waitAcks(t, 200, 30*time.Second, "with the node replaced")

	dc.heal()
	healed := time.Now()
	for {
		st, err := c.Status(context.Background())
		if err == nil {
			ok, why := replicated(st.GetTopology(), shards, 3)
			n := replicasOf(st.GetTopology(), id, false)
			if ok && n > 0 {
				t.Logf("%s holds %d of %d shards again, %v after the heal", iso.name, n, shards, time.Since(healed).Round(time.Millisecond))
				break
			}
			if time.Since(healed) > 90*time.Second {
				t.Fatalf("%s holds %d shards 90 s after the heal: %s%s", iso.name, n, why, dc.tails())
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	ld.l.waitAcks(t, 200, 30*time.Second, "after the heal")
	if dc.verifyLoad(c, ld, subs) {
		// The returning node dropped the replicas of shards it no longer holds.
		dc.waitReplicasPlaced(c, 60*time.Second)
		dc.waitHealed()
	}
}

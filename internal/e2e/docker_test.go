package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// The tests in this file run shoal servers in containers of the image deploy/Dockerfile
// builds, on a private Docker network, and cut that network with iptables inside the
// containers' network namespaces: real packets dropped between real hosts, which the
// in-process tests can only imitate with a fault-injecting transport. They run when
// SHOAL_DOCKER is set (`make docker-test`) and need Docker and root (nsenter, iptables).

// dockerUID is the user the image runs as (deploy/Dockerfile); bind-mounted data
// directories are given to it.
const dockerUID = 65532

var dockerImage struct {
	once sync.Once
	tag  string
	err  error
}

// skipWithoutDocker skips t unless SHOAL_DOCKER is set, and fails it when Docker is asked
// for but cannot run containers.
func skipWithoutDocker(t *testing.T) {
	t.Helper()
	if os.Getenv("SHOAL_DOCKER") == "" {
		t.Skip("containers: set SHOAL_DOCKER=1 (make docker-test)")
	}
	if testing.Short() {
		t.Skip("containers")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("SHOAL_DOCKER is set but the Docker engine does not answer: %v\n%s", err, out)
	}
	sweepLeftovers()
}

// pidLabel labels what a test creates with the test binary's PID, for sweepLeftovers.
func pidLabel() string { return fmt.Sprintf("shoal-e2e-pid=%d", os.Getpid()) }

var sweepOnce sync.Once

// sweepLeftovers removes the containers and networks of earlier test binaries that ended
// without their cleanups (a -timeout panic skips them): those labelled with a PID that no
// longer runs.
func sweepLeftovers() {
	sweepOnce.Do(func() {
		for _, ls := range [][]string{{"container", "ls", "-a"}, {"network", "ls"}} { // containers first
			kind := ls[0]
			out, err := exec.Command("docker", append(ls, "--filter", "label=shoal-e2e",
				"--format", `{{.ID}} {{.Label "shoal-e2e-pid"}}`)...).Output()
			if err != nil {
				continue
			}
			for line := range strings.Lines(string(out)) {
				f := strings.Fields(line)
				if len(f) != 2 {
					continue
				}
				if pid, err := strconv.Atoi(f[1]); err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) != nil {
					exec.Command("docker", kind, "rm", "-f", f[0]).Run()
				}
			}
		}
	})
}

// image builds the static binary and the image from deploy/Dockerfile once per test
// binary, tagged shoal:e2e-PID; TestMain removes it.
func image(t *testing.T) string {
	t.Helper()
	dockerImage.once.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
		if err != nil {
			dockerImage.err = fmt.Errorf("finding the module root: %w", err)
			return
		}
		root := strings.TrimSpace(string(out))
		ctxDir, err := os.MkdirTemp("", "shoal-e2e-image")
		if err != nil {
			dockerImage.err = err
			return
		}
		defer os.RemoveAll(ctxDir)
		if err := os.Mkdir(filepath.Join(ctxDir, "data"), 0o755); err != nil {
			dockerImage.err = err
			return
		}
		build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctxDir, "shoal"), "github.com/shoaldb/shoal/cmd/shoal")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			dockerImage.err = fmt.Errorf("building the static binary: %w\n%s", err, out)
			return
		}
		tag := fmt.Sprintf("shoal:e2e-%d", os.Getpid())
		if out, err := exec.Command("docker", "build", "-q", "-f", filepath.Join(root, "deploy", "Dockerfile"), "-t", tag, ctxDir).CombinedOutput(); err != nil {
			dockerImage.err = fmt.Errorf("docker build: %w\n%s", err, out)
			return
		}
		dockerImage.tag = tag
	})
	if dockerImage.err != nil {
		t.Fatal(dockerImage.err)
	}
	return dockerImage.tag
}

// removeImage removes the image built by image, if any (TestMain).
func removeImage() {
	if dockerImage.tag != "" {
		exec.Command("docker", "rmi", "-f", dockerImage.tag).Run()
	}
}

// run runs a command and returns its trimmed output, failing t on an error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// dockerNode is one `shoal server` in a container with a fixed address on the test's
// network; the test reaches it at that address from the host.
type dockerNode struct {
	name, zone, ip string
	container      string
}

func (n *dockerNode) grpcAddr() string { return n.ip + ":7400" }
func (n *dockerNode) httpAddr() string { return n.ip + ":7480" }

// dockerCluster is three (or more) nodes in zones z1..zN on a network of their own: n1
// creates the cluster (replication 3), the others join its gossip address.
type dockerCluster struct {
	t       *testing.T
	network string
	nodes   []*dockerNode
	shards  int
}

// startDockerCluster creates the network and starts the three containers, each with a
// data directory of the test bind-mounted at /data, and waits until each is ready.
func startDockerCluster(t *testing.T, shards int) *dockerCluster {
	t.Helper()
	return startDockerNodes(t, 3, shards)
}

// startDockerNodes is startDockerCluster with n nodes in zones z1..zn; extra goes to every
// node's command line.
func startDockerNodes(t *testing.T, nodes, shards int, extra ...string) *dockerCluster {
	t.Helper()
	tag := image(t)
	id := fmt.Sprintf("shoal-e2e-%d-%d", os.Getpid(), rand.IntN(1_000_000))
	dc := &dockerCluster{t: t, network: id, shards: shards}
	var prefix string
	for attempt := 0; ; attempt++ { // a /24 no other network of this host uses
		prefix = fmt.Sprintf("10.213.%d", 1+rand.IntN(254))
		out, err := exec.Command("docker", "network", "create", "--label", "shoal-e2e=1", "--label", pidLabel(),
			"--subnet", prefix+".0/24", id).CombinedOutput()
		if err == nil {
			break
		}
		if attempt == 20 {
			t.Fatalf("docker network create: %v\n%s", err, out)
		}
	}
	t.Cleanup(func() { exec.Command("docker", "network", "rm", id).Run() })
	for i := 1; i <= nodes; i++ {
		n := &dockerNode{name: fmt.Sprintf("n%d", i), zone: fmt.Sprintf("z%d", i),
			ip: fmt.Sprintf("%s.%d", prefix, 10+i), container: fmt.Sprintf("%s-n%d", id, i)}
		dir := filepath.Join(t.TempDir(), n.name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, dockerUID, dockerUID); err != nil {
			t.Fatalf("giving the data directory to the image's user: %v", err)
		}
		args := []string{"run", "-d", "--name", n.container, "--label", "shoal-e2e=1", "--label", pidLabel(),
			"--network", id, "--ip", n.ip, "--hostname", n.name, "-v", dir + ":/data", tag,
			"server", "--data", "/data", "--node", n.name, "--zone", n.zone,
			"--listen", "0.0.0.0:7400", "--advertise", n.grpcAddr(),
			"--gossip", "0.0.0.0:7401", "--gossip-advertise", n.ip + ":7401",
			"--http", "0.0.0.0:7480"}
		args = append(args, extra...)
		if i == 1 {
			args = append(args, "--shards", fmt.Sprint(shards), "--replication", "3")
		} else {
			args = append(args, "--join", dc.nodes[0].ip+":7401")
		}
		t.Cleanup(func() {
			if dir := os.Getenv("SHOAL_E2E_LOGDIR"); dir != "" { // kept after the test, as for processes
				dir = filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
				os.MkdirAll(dir, 0o755)
				if out, err := exec.Command("docker", "logs", n.container).CombinedOutput(); err == nil {
					os.WriteFile(filepath.Join(dir, n.name+".log"), out, 0o644)
				}
			}
			exec.Command("docker", "rm", "-f", n.container).Run()
		})
		run(t, "docker", args...)
		dc.nodes = append(dc.nodes, n)
	}
	for _, n := range dc.nodes {
		dc.waitReady(n, 60*time.Second)
	}
	return dc
}

func (dc *dockerCluster) addrs() []string {
	var out []string
	for _, n := range dc.nodes {
		out = append(out, n.grpcAddr())
	}
	return out
}

func (dc *dockerCluster) byID(topo *shoalv1.TopologyResponse, id uint64) *dockerNode {
	name := nodeNames(topo)[id]
	for _, n := range dc.nodes {
		if n.name == name {
			return n
		}
	}
	dc.t.Fatalf("no container for node %d (%q)", id, name)
	return nil
}

// waitReady polls the node's /readyz until it answers 200.
func (dc *dockerCluster) waitReady(n *dockerNode, timeout time.Duration) {
	dc.t.Helper()
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	var last string
	for time.Now().Before(deadline) {
		resp, err := hc.Get("http://" + n.httpAddr() + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	dc.t.Fatalf("%s not ready after %v: %s%s", n.name, timeout, last, dc.tails())
}

// tails returns the end of every container's log, for failure messages.
func (dc *dockerCluster) tails() string {
	var b strings.Builder
	for _, n := range dc.nodes {
		out, _ := exec.Command("docker", "logs", "--tail", "40", n.container).CombinedOutput()
		fmt.Fprintf(&b, "\n===== %s log tail =====\n%s", n.name, out)
	}
	return b.String()
}

// iptables runs iptables in n's network namespace (the host's binary; the image has none).
func (dc *dockerCluster) iptables(n *dockerNode, args ...string) {
	dc.t.Helper()
	pid := run(dc.t, "docker", "inspect", "-f", "{{.State.Pid}}", n.container)
	run(dc.t, "nsenter", append([]string{"-t", pid, "-n", "iptables"}, args...)...)
}

// cut drops every packet between a and b, both ways, as they arrive: senders see no error
// and no refusal, as when a link fails (dropping them on the way out would fail the
// sender's system calls at once). The host, and with it the test's clients, still reaches
// both.
func (dc *dockerCluster) cut(a, b *dockerNode) {
	dc.t.Helper()
	dc.drop(a, b)
	dc.drop(b, a)
}

// drop makes n drop every packet from the node from.
func (dc *dockerCluster) drop(n, from *dockerNode) {
	dc.t.Helper()
	dc.iptables(n, "-A", "INPUT", "-s", from.ip, "-j", "DROP")
}

// heal removes every cut.
func (dc *dockerCluster) heal() {
	dc.t.Helper()
	for _, n := range dc.nodes {
		dc.iptables(n, "-F", "INPUT")
	}
}

// keepWriting checks, for d, that the load gets appends acknowledged in every second; the
// first second after a cut is not counted, as shards that lost their leader elect another.
func (dc *dockerCluster) keepWriting(ld *load, d time.Duration, what string) {
	dc.t.Helper()
	time.Sleep(time.Second)
	for end := time.Now().Add(d - time.Second); time.Now().Before(end); {
		before := ld.l.count()
		time.Sleep(time.Second)
		if ld.l.count() == before {
			dc.t.Fatalf("%s: no append acknowledged for a second (%d acknowledged before)%s", what, before, dc.tails())
		}
	}
}

// healLimit bounds how long after a cut is healed every node may still hold another dead
// or fail to hear a shard's leader: about a second for gossip to sync with members it held
// dead (membership's reconnect loop; memberlist alone took up to its 10 s push/pull
// interval) and a second for the peers' connections to be dialled again.
const healLimit = 8 * time.Second

// waitHealed waits until every node holds every other alive and hears the leader of every
// shard it holds a replica of (shoal_shard_leader_known and shoal_replica_groups on its
// /metrics), and returns how long that took; it fails after healLimit.
func (dc *dockerCluster) waitHealed() time.Duration {
	dc.t.Helper()
	start := time.Now()
	for _, n := range dc.nodes {
		conn, err := grpc.NewClient(n.grpcAddr(), grpcopt.DialOptions()...)
		if err != nil {
			dc.t.Fatal(err)
		}
		defer conn.Close()
		for {
			why := ""
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := shoalv1.NewClusterClient(conn).Status(ctx, &shoalv1.StatusRequest{})
			cancel()
			if err != nil {
				why = err.Error()
			} else {
				for _, m := range st.GetTopology().GetNodes() {
					if !m.GetAlive() {
						why += fmt.Sprintf(" holds %s dead;", m.GetName())
					}
				}
			}
			known, err1 := scrape(n.httpAddr(), "shoal_shard_leader_known")
			held, err2 := scrape(n.httpAddr(), "shoal_replica_groups")
			if err := errors.Join(err1, err2); err != nil || known != held {
				why += fmt.Sprintf(" hears the leaders of %v of the %v shards it holds (%v)", known, held, err)
			}
			if why == "" {
				break
			}
			if time.Since(start) > healLimit {
				dc.t.Fatalf("%s %v after healing:%s%s", n.name, healLimit, why, dc.tails())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// terms returns every shard's term in the cluster's topology.
func (dc *dockerCluster) terms(c *client.Client) map[uint32]uint64 {
	dc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		dc.t.Fatalf("cluster status: %v", err)
	}
	out := map[uint32]uint64{}
	for _, s := range st.GetTopology().GetShards() {
		out[s.GetShard()] = s.GetTerm()
	}
	return out
}

// elections returns how many terms the shards went through since before.
func (dc *dockerCluster) elections(c *client.Client, before map[uint32]uint64) int {
	dc.t.Helper()
	n := 0
	for sh, term := range dc.terms(c) {
		if term > before[sh] {
			n += int(term - before[sh])
		}
	}
	return n
}

// scrape returns the sum of the samples of metric name on the /metrics page at addr.
func scrape(addr, name string) (float64, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest)
		var v float64
		if _, err := fmt.Sscan(f[len(f)-1], &v); err != nil {
			return 0, fmt.Errorf("%s: %q: %w", name, line, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		return 0, fmt.Errorf("no %s on %s/metrics", name, addr)
	}
	return sum, nil
}

func (dc *dockerCluster) waitIdentical(want int, timeout time.Duration) time.Duration {
	dc.t.Helper()
	var names []string
	for _, n := range dc.nodes {
		names = append(names, n.name)
	}
	return waitIdentical(dc.t, names, dc.addrs(), dc.shards, want, timeout, dc.tails)
}

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
	c, err := client.Dial(context.Background(), dc.addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	topo, took := waitReplicated(t, c, shards, 90*time.Second, dc.tails)
	t.Logf("every shard has 3 voters and a leader after %v", took.Round(time.Millisecond))

	subs := subscribeShards(c, shards)
	ld := startLoad(c, seed, fmt.Sprintf("e2e-dk-%d", seed%1000), 12, 8)
	defer ld.stop()
	ld.l.waitAcks(t, 200, 30*time.Second, "before the partition")

	// 1. Cut the busiest leader off from both peers.
	if st, err := c.Status(context.Background()); err == nil {
		topo = st.GetTopology()
	}
	id, led := busiestLeader(topo)
	iso := dc.byID(topo, id)
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
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("the cut-off node answered an append with %v, want Unavailable (no quorum) or a deadline", err)
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

	// 2. A partial partition: two nodes lose their link, both still reach the third.
	terms := dc.terms(c)
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
	t.Logf("partial partition: %d elections in 8 s", dc.elections(c, terms))
	dc.heal()
	t.Logf("every node holds the others alive and hears every shard's leader %v after healing", dc.waitHealed().Round(time.Millisecond))
	ld.l.waitAcks(t, 200, 30*time.Second, "after healing the partial partition")

	// 3. One way: the busiest leader stops hearing one of its followers, which still hears
	// it; then that follower stops hearing the leader, which still hears it.
	if st, err := c.Status(context.Background()); err == nil {
		topo = st.GetTopology()
	}
	id, _ = busiestLeader(topo)
	lead := dc.byID(topo, id)
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
	t.Logf("%d elections in 8 s", dc.elections(c, terms))
	dc.heal()
	dc.waitHealed()
	ld.l.waitAcks(t, 200, 30*time.Second, "after healing")
	terms = dc.terms(c)
	t.Logf("%s drops what %s sends it", follower.name, lead.name)
	dc.drop(follower, lead)
	dc.keepWriting(ld, 8*time.Second, "while a follower did not hear the leader")
	t.Logf("%d elections in 8 s", dc.elections(c, terms))
	dc.heal()
	dc.waitHealed()
	ld.l.waitAcks(t, 200, 30*time.Second, "after healing the one-way cuts")

	if !ld.finish(t) {
		t.Log(dc.tails())
		return
	}
	verify(t, c, ld.l)
	if t.Failed() {
		t.Log(dc.tails())
		return
	}
	caught := dc.waitIdentical(ld.l.acks, 60*time.Second)
	t.Logf("replicas identical %v after the writers stopped", caught.Round(time.Millisecond))
	subs.verify(t, c)
	waitReplicated(t, c, shards, 60*time.Second, dc.tails)
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
	project := fmt.Sprintf("shoale2e%d", rand.IntN(1_000_000))
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
// started again, a node paused (cgroup freezer) and resumed. After every fault the load
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
	c, err := client.Dial(context.Background(), dc.addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitReplicated(t, c, shards, 90*time.Second, dc.tails)
	subs := subscribeShards(c, shards)
	ld := startLoad(c, seed, fmt.Sprintf("e2e-chaos-%d", seed%1000), 12, 8)
	defer ld.stop()
	ld.l.waitAcks(t, 200, 30*time.Second, "before the faults")

	pick := func() *dockerNode { return dc.nodes[rng.IntN(len(dc.nodes))] }
	other := func(n *dockerNode) *dockerNode {
		for {
			if o := pick(); o != n {
				return o
			}
		}
	}
	counts := map[string]int{}
	for end := time.Now().Add(d); time.Now().Before(end); {
		hold := time.Duration(2000+rng.IntN(longest-2000)) * time.Millisecond
		a := pick()
		var what string
		var restore func()
		switch rng.IntN(5) {
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
		}
		counts[strings.Fields(what)[len(strings.Fields(what))-1]]++
		before := ld.l.count()
		time.Sleep(hold)
		restore()
		took := ld.l.waitAcks(t, 100, 30*time.Second, "after "+what)
		t.Logf("%-28s for %v: %d appends acknowledged meanwhile; 100 more %v after the end",
			what, hold.Round(100*time.Millisecond), ld.l.count()-before, took.Round(time.Millisecond))
		time.Sleep(time.Duration(1000+rng.IntN(2000)) * time.Millisecond)
	}
	t.Logf("faults: %v", counts)
	dc.waitHealed()
	if !ld.finish(t) {
		t.Log(dc.tails())
		return
	}
	verify(t, c, ld.l)
	if t.Failed() {
		t.Log(dc.tails())
		return
	}
	dc.waitIdentical(ld.l.acks, 60*time.Second)
	subs.verify(t, c)
	waitReplicated(t, c, shards, 60*time.Second, dc.tails)
	dc.waitReplicasPlaced(c, 60*time.Second)
}

// waitReplicasPlaced waits until every node holds exactly the replicas the shards'
// configurations name it in (shoal_replica_groups): stale replicas of shards that moved away
// are gone.
func (dc *dockerCluster) waitReplicasPlaced(c *client.Client, timeout time.Duration) {
	dc.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := c.Status(context.Background())
		if err != nil {
			dc.t.Fatal(err)
		}
		why := ""
		for _, n := range dc.nodes {
			var id uint64
			for _, m := range st.GetTopology().GetNodes() {
				if m.GetName() == n.name {
					id = m.GetId()
				}
			}
			want := 0
			for _, s := range st.GetTopology().GetShards() {
				if slices.Contains(s.GetVoters(), id) || slices.Contains(s.GetLearners(), id) {
					want++
				}
			}
			if v, err := scrape(n.httpAddr(), "shoal_replica_groups"); err != nil || int(v) != want {
				why += fmt.Sprintf(" %s holds %v replicas (%v), the configurations name it in %d;", n.name, v, err, want)
			}
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			dc.t.Fatalf("replicas not where the configurations say %v after the faults:%s%s", timeout, why, dc.tails())
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
	c, err := client.Dial(context.Background(), dc.addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	topo, took := waitReplicated(t, c, shards, 90*time.Second, dc.tails)
	t.Logf("every shard has 3 voters and a leader after %v", took.Round(time.Millisecond))
	subs := subscribeShards(c, shards)
	ld := startLoad(c, seed, fmt.Sprintf("e2e-lp-%d", seed%1000), 12, 8)
	defer ld.stop()
	ld.l.waitAcks(t, 200, 30*time.Second, "before the partition")

	if st, err := c.Status(context.Background()); err == nil {
		topo = st.GetTopology()
	}
	id, led := busiestLeader(topo)
	iso := dc.byID(topo, id)
	held := 0
	for _, s := range topo.GetShards() {
		if slices.Contains(s.GetVoters(), id) {
			held++
		}
	}
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
			for _, s := range st.GetTopology().GetShards() {
				if slices.Contains(s.GetVoters(), id) {
					ok, why = false, fmt.Sprintf("shard %d still has %s as a voter", s.GetShard(), iso.name)
				}
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
			n := 0
			for _, s := range st.GetTopology().GetShards() {
				if slices.Contains(s.GetVoters(), id) {
					n++
				}
			}
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
	if !ld.finish(t) {
		t.Log(dc.tails())
		return
	}
	verify(t, c, ld.l)
	if t.Failed() {
		t.Log(dc.tails())
		return
	}
	dc.waitIdentical(ld.l.acks, 60*time.Second)
	subs.verify(t, c)
	// The returning node dropped the replicas of shards it no longer holds.
	dc.waitReplicasPlaced(c, 60*time.Second)
	dc.waitHealed()
}

package e2e

import (
	"context"
	"errors"
	"fmt"
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

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/grpcopt"
)

// The tests of docker_test.go run shoal servers in containers of the image deploy/Dockerfile
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

// sweepLeftovers removes the containers, networks and compose volumes of earlier test binaries that ended
// without their cleanups (a -timeout panic skips them): those labelled with a PID that no
// longer runs.
func sweepLeftovers() {
	sweepOnce.Do(func() {
		for _, kind := range []string{"container", "network", "volume"} { // containers first
			sweepLabelled(kind, "shoal-e2e-pid", func(v string) (int, bool) {
				pid, err := strconv.Atoi(v)
				return pid, err == nil
			})
			// TestDockerCompose's projects (composeProject), whose containers, networks and
			// volumes docker-compose labels with the project's name.
			sweepLabelled(kind, "com.docker.compose.project", composeProjectPID)
		}
	})
}

// sweepLabelled removes the docker objects of a kind (container, network, volume) that carry
// label, when pidOf finds in its value the PID of a test binary that no longer runs.
func sweepLabelled(kind, label string, pidOf func(string) (int, bool)) {
	args, id := []string{kind, "ls"}, "{{.ID}}"
	switch kind {
	case "container":
		args = append(args, "-a")
	case "volume":
		id = "{{.Name}}"
	}
	out, err := exec.Command("docker", append(args, "--filter", "label="+label,
		"--format", id+` {{.Label "`+label+`"}}`)...).Output()
	if err != nil {
		return
	}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		if pid, ok := pidOf(f[1]); ok && pid != os.Getpid() && syscall.Kill(pid, 0) != nil {
			exec.Command("docker", kind, "rm", "-f", f[0]).Run()
		}
	}
}

// composeProject names a docker-compose project of this test binary: shoale2e<pid>x<n>, so
// that sweepLeftovers can tell one that a killed binary left behind.
func composeProject() string {
	return fmt.Sprintf("shoale2e%dx%d", os.Getpid(), rand.IntN(1_000_000))
}

// composeProjectPID returns the PID in a composeProject name.
func composeProjectPID(project string) (int, bool) {
	rest, ok := strings.CutPrefix(project, "shoale2e")
	if !ok {
		return 0, false
	}
	digits, _, ok := strings.Cut(rest, "x")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	return pid, err == nil
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
	if last, ok := pollReady(n.httpAddr(), timeout); !ok {
		dc.t.Fatalf("%s not ready after %v: %s%s", n.name, timeout, last, dc.tails())
	}
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

// logsSince returns every container's log lines since t that contain any of words.
func (dc *dockerCluster) logsSince(t time.Time, words ...string) string {
	var b strings.Builder
	for _, n := range dc.nodes {
		out, _ := exec.Command("docker", "logs", "--since", t.Format(time.RFC3339Nano), n.container).CombinedOutput()
		fmt.Fprintf(&b, "\n===== %s =====", n.name)
		for line := range strings.Lines(string(out)) {
			for _, w := range words {
				if strings.Contains(line, w) {
					b.WriteString("\n" + strings.TrimRight(line, "\n"))
					break
				}
			}
		}
	}
	return b.String()
}

// iptables runs iptables in n's network namespace (the host's binary; the image has none)
// and returns its output.
func (dc *dockerCluster) iptables(n *dockerNode, args ...string) string {
	dc.t.Helper()
	pid := run(dc.t, "docker", "inspect", "-f", "{{.State.Pid}}", n.container)
	return run(dc.t, "nsenter", append([]string{"-t", pid, "-n", "iptables"}, args...)...)
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

// dropped returns how many packets n's cuts (its INPUT chain's DROP rules) have dropped
// since they were made: a cut that dropped none did not take effect, and the test that made
// it showed nothing.
func (dc *dockerCluster) dropped(n *dockerNode) uint64 {
	dc.t.Helper()
	out := dc.iptables(n, "-L", "INPUT", "-v", "-n", "-x")
	var total uint64
	for _, line := range strings.Split(out, "\n") {
		// pkts bytes target prot opt in out source destination
		if f := strings.Fields(line); len(f) >= 3 && f[2] == "DROP" {
			p, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				dc.t.Fatalf("iptables -L INPUT on %s: %q: %v", n.name, line, err)
			}
			total += p
		}
	}
	return total
}

// tookEffect fails the test unless the cuts on nodes have dropped a packet: what ran during
// them then ran with a network that worked, and showed nothing of a cut.
func (dc *dockerCluster) tookEffect(what string, nodes ...*dockerNode) {
	dc.t.Helper()
	var total uint64
	for _, n := range nodes {
		total += dc.dropped(n)
	}
	if total == 0 {
		dc.t.Fatalf("%s: no packet was dropped (iptables INPUT rules on %d nodes): the cut did not take effect", what, len(nodes))
	}
	dc.t.Logf("%s: %d packets dropped", what, total)
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

// transfers returns the leadership transfers the nodes' placement loops made, for leader
// balance (shoal_placement_steps_total{kind="transfer"}, summed): each is a new term.
func (dc *dockerCluster) transfers() int {
	dc.t.Helper()
	n := 0.0
	for _, nd := range dc.nodes {
		v, err := scrapeLabeled(nd.httpAddr(), "shoal_placement_steps_total", "kind", "transfer")
		if err != nil {
			dc.t.Fatal(err)
		}
		n += v
	}
	return int(n)
}

// waitBalanced waits until the nodes' placement loops made no leader-balancing transfer for
// 5 s (a group must be stable 3 s before one), at most timeout, and returns how long it took.
func (dc *dockerCluster) waitBalanced(timeout time.Duration) time.Duration {
	dc.t.Helper()
	start := time.Now()
	for last := dc.transfers(); time.Since(start) < timeout; {
		time.Sleep(5 * time.Second)
		now := dc.transfers()
		if now == last {
			break
		}
		last = now
	}
	return time.Since(start)
}

// scrape returns the sum of the samples of metric name on the /metrics page at addr.
func scrape(addr, name string) (float64, error) {
	return scrapeLabeled(addr, name, "", "")
}

// scrapeLabeled is scrape of the samples whose label is value (every sample for label "").
func scrapeLabeled(addr, name, label, value string) (float64, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("%s/metrics: %w", addr, err)
	}
	mf, ok := families[name]
	if !ok {
		return 0, fmt.Errorf("no %s on %s/metrics", name, addr)
	}
	var sum float64
	for _, m := range mf.GetMetric() {
		if label == "" || slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == label && l.GetValue() == value }) {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
		}
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
			want := replicasOf(st.GetTopology(), id, true)
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

// underLoad dials the cluster, waits for three voters and a leader per shard, subscribes to
// every shard and starts the writers (12, each with 8 streams named after prefix); it
// returns once 200 appends are acknowledged.
func (dc *dockerCluster) underLoad(seed uint64, prefix string) (*client.Client, *shardSubs, *load) {
	t := dc.t
	t.Helper()
	c, err := client.Dial(context.Background(), dc.addrs())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_, took := waitReplicated(t, c, dc.shards, 90*time.Second, dc.tails)
	t.Logf("every shard has 3 voters and a leader after %v", took.Round(time.Millisecond))
	subs := subscribeShards(c, dc.shards)
	ld := startLoad(c, seed, fmt.Sprintf("%s-%d", prefix, seed%1000), 12, 8)
	t.Cleanup(ld.stop)
	ld.l.waitAcks(t, 200, 30*time.Second, "with the load started")
	return c, subs, ld
}

// busiest returns the node leading the most shards in the cluster's current topology, its
// ID, and how many shards it leads.
func (dc *dockerCluster) busiest(c *client.Client) (*dockerNode, uint64, int, *shoalv1.TopologyResponse) {
	dc.t.Helper()
	st, err := c.Status(context.Background())
	if err != nil {
		dc.t.Fatalf("cluster status: %v", err)
	}
	topo := st.GetTopology()
	id, led := busiestLeader(topo)
	return dc.byID(topo, id), id, led, topo
}

// verifyLoad stops the writers and checks what they were told: every acknowledged append
// present exactly once with dense versions, every replica identical, every subscription the
// exact shard log. It returns false, with the nodes' logs, when a check failed.
func (dc *dockerCluster) verifyLoad(c *client.Client, ld *load, subs *shardSubs) bool {
	t := dc.t
	t.Helper()
	if !ld.finish(t) {
		t.Log(dc.tails())
		return false
	}
	verify(t, c, ld.l)
	if t.Failed() {
		t.Log(dc.tails())
		return false
	}
	caught := dc.waitIdentical(ld.l.acks, 60*time.Second)
	t.Logf("replicas identical %v after the writers stopped", caught.Round(time.Millisecond))
	subs.verify(t, c)
	return !t.Failed()
}

// replicasOf counts the shards of topo whose voters (and, with learners, learners) include id.
func replicasOf(topo *shoalv1.TopologyResponse, id uint64, learners bool) int {
	n := 0
	for _, s := range topo.GetShards() {
		if slices.Contains(s.GetVoters(), id) || learners && slices.Contains(s.GetLearners(), id) {
			n++
		}
	}
	return n
}

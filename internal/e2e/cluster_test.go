package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/grpcopt"
)

// cluster is three (or more) real server processes in zones z1..zN; the
// first creates the cluster, the others join its gossip address.
type cluster struct {
	t       *testing.T
	servers []*server
	shards  int
}

// startCluster starts n processes and waits until each is ready.
func startCluster(t *testing.T, n, shards int) *cluster {
	t.Helper()
	cl := &cluster{t: t, shards: shards}
	first := newServer(t, "n1", "z1", nil, "--shards", fmt.Sprint(shards), "--replication", "3")
	cl.servers = append(cl.servers, first)
	for i := 2; i <= n; i++ {
		cl.servers = append(cl.servers, newServer(t, fmt.Sprintf("n%d", i), fmt.Sprintf("z%d", i), []string{first.gossip}))
	}
	for _, s := range cl.servers {
		s.start()
		s.waitReady(30 * time.Second)
	}
	return cl
}

func (cl *cluster) addrs() []string {
	var out []string
	for _, s := range cl.servers {
		out = append(out, s.grpcAddr)
	}
	return out
}

// byName returns the server named name, or nil.
// dial returns a client of the cluster's servers, closed when the test ends.
func (cl *cluster) dial(opts ...client.Option) *client.Client {
	cl.t.Helper()
	c, err := client.Dial(context.Background(), cl.addrs(), opts...)
	if err != nil {
		cl.t.Fatal(err)
	}
	cl.t.Cleanup(func() { c.Close() })
	return c
}

func (cl *cluster) byName(name string) *server {
	for _, s := range cl.servers {
		if s.name == name {
			return s
		}
	}
	return nil
}

// tails returns every server's log tail, for failure messages.
func (cl *cluster) tails() string {
	var b strings.Builder
	for _, s := range cl.servers {
		fmt.Fprintf(&b, "\n===== %s log tail =====\n%s", s.name, s.tail())
	}
	return b.String()
}

// replicated reports whether every shard has a leader, exactly want voters,
// no learners, and is not under-replicated; else it says what is missing.
func replicated(topo *shoalv1.TopologyResponse, shards, want int) (bool, string) {
	if len(topo.GetShards()) != shards {
		return false, fmt.Sprintf("%d shards in the topology, want %d", len(topo.GetShards()), shards)
	}
	var bad []string
	for _, s := range topo.GetShards() {
		if s.GetLeaderId() == 0 || s.GetUnderReplicated() || s.GetUnavailable() || len(s.GetVoters()) != want || len(s.GetLearners()) > 0 {
			bad = append(bad, fmt.Sprintf("shard %d: leader %d voters %v learners %v under_replicated %v unavailable %v",
				s.GetShard(), s.GetLeaderId(), s.GetVoters(), s.GetLearners(), s.GetUnderReplicated(), s.GetUnavailable()))
		}
	}
	return len(bad) == 0, strings.Join(bad, "; ")
}

// waitReplicated polls Cluster.Status through c until every shard has 3
// voters and a leader, and returns the topology and how long it took.
func (cl *cluster) waitReplicated(c *client.Client, timeout time.Duration) (*shoalv1.TopologyResponse, time.Duration) {
	cl.t.Helper()
	return waitReplicated(cl.t, c, cl.shards, timeout, cl.tails)
}

// waitReplicated is cluster.waitReplicated for any cluster of shards shards; tails gives
// the nodes' logs for a failure message.
func waitReplicated(t *testing.T, c *client.Client, shards int, timeout time.Duration, tails func() string) (*shoalv1.TopologyResponse, time.Duration) {
	t.Helper()
	start := time.Now()
	var why string
	for time.Since(start) < timeout {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := c.Status(ctx)
		cancel()
		if err != nil {
			why = err.Error()
		} else if ok, w := replicated(st.GetTopology(), shards, 3); ok {
			return st.GetTopology(), time.Since(start)
		} else {
			why = w
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("placement did not converge to 3 voters and a leader per shard within %v: %s%s", timeout, why, tails())
	return nil, 0
}

// nodeNames maps node IDs to names.
func nodeNames(topo *shoalv1.TopologyResponse) map[uint64]string {
	m := map[uint64]string{}
	for _, n := range topo.GetNodes() {
		m[n.GetId()] = n.GetName()
	}
	return m
}

// busiestLeader returns the node leading the most shards in topo (the lowest ID of a tie)
// and how many it leads.
func busiestLeader(topo *shoalv1.TopologyResponse) (id uint64, n int) {
	led := map[uint64]int{}
	for _, s := range topo.GetShards() {
		led[s.GetLeaderId()]++
	}
	for l, k := range led {
		if l != 0 && (k > n || k == n && l < id) {
			id, n = l, k
		}
	}
	return id, n
}

// record is one event of a shard log, as compared across replicas.
type record struct {
	stream   string
	version  uint64
	id       []byte
	position uint64
	typ      string
	data     []byte
	deletion shoalv1.Deletion
}

func (r record) equal(o record) bool {
	return r.stream == o.stream && r.version == o.version && bytes.Equal(r.id, o.id) &&
		r.position == o.position && r.typ == o.typ && bytes.Equal(r.data, o.data) && r.deletion == o.deletion
}

func (r record) String() string {
	return fmt.Sprintf("pos %d %s@%d id %x type %s data %q %v", r.position, r.stream, r.version, r.id, r.typ, r.data, r.deletion)
}

// readLocalShard reads a whole shard log (with deletes, the deletes too) from the node at
// conn's own replica (local_only: never forwarded; FAILED_PRECONDITION if it holds none).
func readLocalShard(ctx context.Context, conn *grpc.ClientConn, shard uint32, deletes bool) ([]record, error) {
	rs, err := shoalv1.NewStreamsClient(conn).ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: shard, AllowStale: true,
		IncludeDeletes: deletes, LocalOnly: true})
	if err != nil {
		return nil, err
	}
	var out []record
	for {
		page, err := rs.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		for _, e := range page.GetEvents() {
			out = append(out, record{e.GetStream(), e.GetVersion(), e.GetId(), e.GetPosition(), e.GetType(), e.GetData(), e.GetDeletion()})
		}
	}
}

// diffLogs describes the first difference between two shard logs, or "".
func diffLogs(a, b []record) string {
	for i := range min(len(a), len(b)) {
		if !a[i].equal(b[i]) {
			return fmt.Sprintf("entry %d differs: %v vs %v", i, a[i], b[i])
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("%d vs %d entries", len(a), len(b))
	}
	return ""
}

// waitReplicasIdentical reads every shard's log from each of its voters' own replica until
// all of them hold identical logs, which also hold want events in total, or fails after
// timeout.
func (cl *cluster) waitReplicasIdentical(want int, timeout time.Duration) time.Duration {
	cl.t.Helper()
	var names, addrs []string
	for _, s := range cl.servers {
		names, addrs = append(names, s.name), append(addrs, s.grpcAddr)
	}
	return waitIdentical(cl.t, names, addrs, cl.shards, want, timeout, cl.tails)
}

// waitIdentical is waitReplicasIdentical for the nodes named names at addrs; tails gives
// their logs for a failure message. Each round reads the topology, then every shard from each
// of its voters (local_only reads, never forwarded): a shard must have a voter on as many of
// the nodes as the replication factor asks (or on all of them, if fewer), each of them one of
// names, and their logs must be equal.
func waitIdentical(t *testing.T, names, addrs []string, shards, want int, timeout time.Duration, tails func() string) time.Duration {
	t.Helper()
	conns := make(map[string]*grpc.ClientConn, len(addrs))
	for i, addr := range addrs {
		conn, err := grpc.NewClient(addr, grpcopt.DialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns[names[i]] = conn
	}
	start := time.Now()
	var why string
	for {
		why = ""
		var total, compared int
		topo, err := anyTopology(names, conns)
		if err != nil {
			why = err.Error()
		}
		nameOf := map[uint64]string{}
		for _, n := range topo.GetNodes() {
			nameOf[n.GetId()] = n.GetName()
		}
		repl := min(int(topo.GetSettings().GetReplication()), len(names))
		for _, si := range topo.GetShards() {
			if why != "" {
				break
			}
			sh := si.GetShard()
			if len(si.GetVoters()) < repl {
				why = fmt.Sprintf("shard %d has %d voters, want %d", sh, len(si.GetVoters()), repl)
				break
			}
			var ref []record
			var refName string
			for _, id := range si.GetVoters() {
				name := nameOf[id]
				conn, ok := conns[name]
				if !ok {
					why = fmt.Sprintf("shard %d: voter %d (%q) is none of %v", sh, id, name, names)
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				got, err := readLocalShard(ctx, conn, sh, false)
				cancel()
				if err != nil {
					why = fmt.Sprintf("shard %d on %s: %v", sh, name, err)
					break
				}
				compared++
				if refName == "" {
					ref, refName = got, name
					total += len(got)
					continue
				}
				if d := diffLogs(ref, got); d != "" {
					why = fmt.Sprintf("shard %d: %s and %s differ: %s", sh, refName, name, d)
					break
				}
			}
		}
		if why == "" && len(topo.GetShards()) != shards {
			why = fmt.Sprintf("the topology lists %d shards, want %d", len(topo.GetShards()), shards)
		}
		if why == "" && total != want {
			why = fmt.Sprintf("the replicas agree on %d events, %d were written", total, want)
		}
		if why == "" {
			t.Logf("all %d shards identical on their voters (%d replicas read, %d events)", shards, compared, total)
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("replicas not identical after %v: %s%s", timeout, why, tails())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// anyTopology returns the cluster's topology as the first of the nodes that answers sees it.
func anyTopology(names []string, conns map[string]*grpc.ClientConn) (*shoalv1.TopologyResponse, error) {
	var errs []error
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		topo, err := shoalv1.NewClusterClient(conns[name]).Topology(ctx, &shoalv1.TopologyRequest{})
		cancel()
		if err == nil {
			return topo, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	}
	return nil, fmt.Errorf("no node answered the topology: %w", errors.Join(errs...))
}

// TestClusterKill9UnderLoad runs writers against a three-node cluster
// (replication 3), SIGKILLs the node leading the most shards mid-load, keeps
// writing through the failover, restarts the node, and checks that every
// acknowledged event is present exactly once with dense versions and that
// the three replicas of every shard end byte-for-byte identical.
func TestClusterKill9UnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	seed := testSeed(t)
	const shards = 8
	cl := startCluster(t, 3, shards)

	c := cl.dial()
	topo, took := cl.waitReplicated(c, 60*time.Second)
	t.Logf("every shard has 3 voters and a leader after %v", took.Round(time.Millisecond))

	subs := subscribeShards(c, shards) // every shard's log, across the kill and the restart
	ld := startLoad(c, seed, fmt.Sprintf("e2e-cl-%d", seed%1000), 12, 8)
	defer ld.stop()
	ld.l.waitAcks(t, 200, 20*time.Second, "before the kill")
	time.Sleep(time.Second)

	// The victim: the node leading the most shards, as the cluster sees it now.
	if st, err := c.Status(context.Background()); err == nil {
		topo = st.GetTopology()
	}
	victimID, led := busiestLeader(topo)
	victim := cl.byName(nodeNames(topo)[victimID])
	if victim == nil {
		t.Fatalf("no server for the leader %d of %d shards", victimID, led)
	}
	t.Logf("kill -9 %s (leads %d of %d shards) after %d acknowledged appends", victim.name, led, shards, ld.l.count())
	victim.kill()
	resumed := ld.l.waitAcks(t, 200, 30*time.Second, "after the kill")
	t.Logf("200 appends acknowledged %v after the kill", resumed.Round(time.Millisecond))
	time.Sleep(time.Second)

	// The victim restarts with its original command line: a node that
	// created the cluster (no --join) finds its peers again from the
	// addresses it stored while they were alive.
	victim.start()
	victim.waitReady(30 * time.Second)
	ld.l.waitAcks(t, 200, 20*time.Second, "after the restart")
	time.Sleep(time.Second)
	if !ld.finish(t) {
		t.Log(cl.tails())
		return
	}
	verify(t, c, ld.l)
	if t.Failed() {
		t.Log(cl.tails())
		return
	}
	caught := cl.waitReplicasIdentical(ld.l.acks, 30*time.Second)
	t.Logf("replicas identical %v after the writers stopped", caught.Round(time.Millisecond))
	subs.verify(t, c)
	cl.waitReplicated(c, 30*time.Second)
}

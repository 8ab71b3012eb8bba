package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/internal/testcert"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/internal/tlsfiles"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// TestClusterTLS runs three nodes with mutual TLS, the nodes' certificates
// from one CA and the clients' from another: raft traffic and forwarded
// requests between the nodes, and clients with a certificate from the client
// CA, work; a plaintext client, a client without a certificate or with one of
// an unknown CA are refused, and so is a client certificate calling the
// peers' Raft service or Decommission. A fourth node joins after the logs
// were compacted and catches up by snapshots, streamed over TLS.
func TestClusterTLS(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ca := testcert.NewAuthority(t, t.TempDir())
	clientCA := testcert.NewAuthority(t, t.TempDir())
	configure := func(name string, cfg *node.Config) {
		placementConfig(cfg)
		cfg.RaftLogRetainEntries = 5 // compacted early: a node that joins later needs snapshots
		f := ca.Issue(t, name, "127.0.0.1")
		f.ClientCA = clientCA.CAFile
		tc, err := f.Server()
		if err != nil {
			t.Fatal(err)
		}
		cfg.ServerTLS, cfg.PeerTLS, cfg.PeerCAs = tc.Server, tc.Peer, tc.PeerCAs
	}
	c := testnode.Start(t, 3, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) { configure(fmt.Sprintf("n%d", i+1), cfg) }})
	// Every shard reaches three voters: learners were added, caught up and
	// promoted over the TLS peer connections.
	waitPlaced(t, c, "replication 3 over TLS", nil)

	app := clientCA.Issue(t, "app", "app.example")
	app.CA = ca.CAFile // servers are verified against the nodes' CA
	appCfg, err := app.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Plain gRPC to one node: appends to shards it does not lead are
	// forwarded to their leaders over TLS.
	conn, err := grpc.NewClient(c.Nodes[1].Addr(), append(grpcopt.DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(appCfg)))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sc := shoalv1.NewStreamsClient(conn)
	forwarded := 0
	led := map[uint32]bool{}
	for _, g := range c.Nodes[1].Groups() {
		if st := g.Status(); st.Leader == c.Nodes[1].ID() {
			led[st.Shard] = true
		}
	}
	for i := range 32 {
		stream := fmt.Sprintf("tls-%d", i)
		if !led[ring.ShardOf(stream, placementShards)] {
			forwarded++
		}
		id := uuid.New()
		if _, err := sc.Append(ctx, &shoalv1.AppendRequest{Stream: stream,
			Expected: &shoalv1.ExpectedVersion{Kind: shoalv1.ExpectedVersion_KIND_NO_STREAM},
			Events:   []*shoalv1.EventData{{Id: id[:], Type: "T", Data: []byte("x")}}}); err != nil {
			t.Fatalf("append %s through node 2: %v", stream, err)
		}
	}
	if forwarded == 0 {
		t.Fatal("no append was forwarded: the test proves nothing about forwarding over TLS")
	}

	// The Go client over TLS, reading what was written.
	cl, err := client.Dial(ctx, []string{c.Nodes[0].Addr()}, client.WithTLS(appCfg))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 32 {
		evs, err := cl.ReadPage(ctx, fmt.Sprintf("tls-%d", i))
		if err != nil || len(evs) != 1 {
			t.Fatalf("read tls-%d: %d events, %v", i, len(evs), err)
		}
	}

	// More entries than the logs keep, then a fourth node: its replicas start from snapshots.
	for i := range 200 {
		if _, err := cl.Append(ctx, fmt.Sprintf("tls-more-%d", i), client.NoStream, client.Event{Type: "T", Data: []byte("y")}); err != nil {
			t.Fatal(err)
		}
	}
	reg4 := prometheus.NewRegistry()
	n4 := c.Add(t, func(cfg *node.Config) {
		configure("n4", cfg)
		cfg.Registry = reg4
	})
	waitInRing(t, c, n4)
	waitPlaced(t, c, "a fourth node's share, over TLS", nil)
	received := 0.0
	for _, m := range gatherSeries(t, []*prometheus.Registry{reg4}, "shoal_transport_snapshots_received_total") {
		for _, l := range m.GetLabel() {
			if l.GetName() == "result" && l.GetValue() == "ok" {
				received += m.GetCounter().GetValue()
			}
		}
	}
	if received == 0 {
		t.Fatal("the fourth node received no snapshot: the test did not exercise snapshots over TLS")
	}

	refused := func(what string, opts ...grpc.DialOption) {
		t.Helper()
		conn, err := grpc.NewClient(c.Nodes[0].Addr(), append(grpcopt.DialOptions(), opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err = shoalv1.NewClusterClient(conn).Topology(cctx, &shoalv1.TopologyRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("%s: Topology answered %v, want UNAVAILABLE", what, err)
		}
		t.Logf("%s: %v", what, err)
	}
	refused("plaintext client")
	noCert, err := tlsfiles.Files{CA: ca.CAFile}.Client()
	if err != nil {
		t.Fatal(err)
	}
	refused("client without a certificate", grpc.WithTransportCredentials(credentials.NewTLS(noCert)))
	other := testcert.NewAuthority(t, t.TempDir())
	foreign := other.Issue(t, "intruder", "127.0.0.1")
	foreign.CA = ca.CAFile
	intruder, err := foreign.Client()
	if err != nil {
		t.Fatal(err)
	}
	refused("client with another CA's certificate", grpc.WithTransportCredentials(credentials.NewTLS(intruder)))

	// A client certificate is not a peer's: the Raft service, Decommission, SetReplication and Backup refuse it.
	rs, err := shoalv1.NewRaftClient(conn).Send(ctx)
	if err == nil {
		err = rs.Send(&shoalv1.RaftBatch{From: 12345, To: c.Nodes[1].ID(), ClusterId: c.Nodes[1].Settings().ClusterID})
		// A stream the server already ended answers Send with io.EOF; its status comes with
		// the receive.
		if err == nil || errors.Is(err, io.EOF) {
			_, err = rs.CloseAndRecv()
		}
	}
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "is for the cluster's nodes") {
		t.Fatalf("raft batch with a client certificate: %v, want PERMISSION_DENIED", err)
	}
	if _, err := shoalv1.NewClusterClient(conn).Decommission(ctx, &shoalv1.DecommissionRequest{Node: "n3"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Decommission with a client certificate: %v, want PERMISSION_DENIED", err)
	}
	if _, err := shoalv1.NewClusterClient(conn).SetReplication(ctx, &shoalv1.SetReplicationRequest{Replication: 1}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("SetReplication with a client certificate: %v, want PERMISSION_DENIED", err)
	}
	if _, err := shoalv1.NewClusterClient(conn).Backup(ctx, &shoalv1.BackupRequest{Node: "n2", Name: "b1"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Backup with a client certificate: %v, want PERMISSION_DENIED", err)
	}
	if r := c.Nodes[1].Settings().Replication; r != 3 {
		t.Fatalf("replication %d after a refused change, want 3", r)
	}

	// A certificate of the nodes' CA that names another host than a node's (an operator's)
	// may call the Raft service, but not as that node: its votes and acknowledgements would
	// count as the node's.
	ops := ca.Issue(t, "ops", "ops.example")
	opsCfg, err := ops.Client()
	if err != nil {
		t.Fatal(err)
	}
	oconn, err := grpc.NewClient(c.Nodes[0].Addr(), append(grpcopt.DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(opsCfg)))...)
	if err != nil {
		t.Fatal(err)
	}
	defer oconn.Close()
	n1, n2 := c.Nodes[0].ID(), c.Nodes[1].ID()
	hb, err := proto.Marshal(&raftpb.Message{Type: new(raftpb.MsgHeartbeat), From: new(n2), To: new(n1)})
	if err != nil {
		t.Fatal(err)
	}
	rs, err = shoalv1.NewRaftClient(oconn).Send(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&shoalv1.RaftBatch{From: n2, To: n1, Shards: []uint32{0}, Messages: [][]byte{hb}}); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if _, err := rs.CloseAndRecv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("raft batch sent as node %d with a certificate for ops.example: %v, want PERMISSION_DENIED", n2, err)
	}
	// Nor as a node no member knows: its terms would depose leaders, its appends be taken.
	const madeUp = 424242
	hb, err = proto.Marshal(&raftpb.Message{Type: new(raftpb.MsgHeartbeat), From: new(uint64(madeUp)), To: new(n1), Term: new(uint64(1 << 40))})
	if err != nil {
		t.Fatal(err)
	}
	if rs, err = shoalv1.NewRaftClient(oconn).Send(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&shoalv1.RaftBatch{From: madeUp, To: n1, Shards: []uint32{0}, Messages: [][]byte{hb}}); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if _, err := rs.CloseAndRecv(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not a known member") {
		t.Fatalf("raft batch sent as unknown node %d: %v, want UNAVAILABLE, not a known member", madeUp, err)
	}
}

// TestConsoleOffWithTLS: a node that serves TLS serves no console (its HTTP port would answer
// what its gRPC port refuses without a certificate), and says why; /metrics stays.
func TestConsoleOffWithTLS(t *testing.T) {
	ca := testcert.NewAuthority(t, t.TempDir())
	c := testnode.Start(t, 1, testnode.Options{Shards: 2, Replication: 1, Configure: func(i int, cfg *node.Config) {
		tc, err := ca.Issue(t, "n1", "127.0.0.1").Server()
		if err != nil {
			t.Fatal(err)
		}
		cfg.ServerTLS, cfg.PeerTLS, cfg.PeerCAs = tc.Server, tc.Peer, tc.PeerCAs
	}})
	base := "http://" + c.Nodes[0].HTTPAddr()
	for path, want := range map[string]int{"/console/": 403, "/console/stream?name=a": 403, "/metrics": 200} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || want == 403 && !strings.Contains(string(body), "serves no console") {
			t.Errorf("%s: %d, want %d:\n%s", path, resp.StatusCode, want, body)
		}
	}
}

package node

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/membership"
)

// startingMsg marks startingErr's answers, which peerStarting looks for.
const startingMsg = "is starting"

// peerStartingTimeout bounds peerStarting's question.
const peerStartingTimeout = 500 * time.Millisecond

// peerStarting reports whether the node at addr answers that it is still starting
// (startingErr). Such a node must not be handed a shard's leadership yet: it would lead a
// group while refusing its clients until it has joined its cluster, which after a quick
// restart its peers cannot yet see in gossip (they still see its previous run alive). A peer
// that does not answer is not taken for starting: raft decides, as before.
func (n *Node) peerStarting(ctx context.Context, addr string) bool {
	return startingAnswer(n.askPeer(ctx, addr))
}

// startingAnswer reports whether err is a node's answer that it is still starting
// (startingErr): it answered, and will serve in a moment.
func startingAnswer(err error) bool {
	return status.Code(err) == codes.Unavailable && strings.Contains(status.Convert(err).Message(), startingMsg)
}

// askPeer asks the node at addr for the cluster's settings over the peer connection raft
// uses, within peerStartingTimeout: nil when it answered.
func (n *Node) askPeer(ctx context.Context, addr string) error {
	conn, err := n.peers.get(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, peerStartingTimeout)
	defer cancel()
	_, err = shoalv1.NewClusterClient(conn).Settings(ctx, &shoalv1.SettingsRequest{})
	return err
}

// startingErr is the answer to a client-facing call (the Streams and Cluster services) that
// arrives while the node is starting: gRPC serves from before membership has started and the
// groups are reopened (raft traffic from peers must flow meanwhile), and those calls need
// both. Nil once the node has started, and for the Raft service.
func (n *Node) startingErr(method string) error {
	if n.started.Load() || method == "/shoal.v1.Cluster/RaftPoints" { // a restore's check, answered from the stored state
		return nil
	}
	for _, svc := range []string{shoalv1.Streams_ServiceDesc.ServiceName, shoalv1.Cluster_ServiceDesc.ServiceName} {
		if strings.HasPrefix(method, "/"+svc+"/") {
			return status.Errorf(codes.Unavailable, "node %s %s (joining its cluster, reopening its shards); try another node", n.dir.id.Name, startingMsg)
		}
	}
	return nil
}

func (n *Node) gateUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := n.peersOnly(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	if err := n.otherCluster(ctx); err != nil {
		return nil, err
	}
	if err := n.startingErr(info.FullMethod); err != nil {
		return nil, err
	}
	if !raftMethod(info.FullMethod) {
		n.calls.n.Add(1)
		defer n.calls.n.Add(-1)
	}
	return handler(ctx, req)
}

func (n *Node) gateStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := n.peersOnly(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	if err := n.otherCluster(ss.Context()); err != nil {
		return err
	}
	if err := n.startingErr(info.FullMethod); err != nil {
		return err
	}
	if !raftMethod(info.FullMethod) {
		n.calls.n.Add(1)
		defer n.calls.n.Add(-1)
	}
	return handler(srv, ss)
}

// otherCluster refuses a call whose shoalv1.ClusterIDHeader names another cluster than this
// node's (FailedPrecondition, with an ErrorInfo naming both). Calls forwarded by a node name its
// cluster too (forwardContext); those of earlier versions carry no header.
func (n *Node) otherCluster(ctx context.Context) error {
	want := metadata.ValueFromIncomingContext(ctx, shoalv1.ClusterIDHeader) // copies no other key
	if len(want) == 0 || want[0] == "" {
		return nil
	}
	s := n.settings.Load()
	if s == nil || s.ClusterID == want[0] {
		return nil
	}
	return shoalv1.WrongClusterError(fmt.Sprintf("node %s belongs to cluster %s, not %s, which the client dialled: "+
		"the cluster at this address was re-created, or this address now serves another cluster; dial again",
		n.dir.id.Name, s.ClusterID, want[0]), s.ClusterID, want[0])
}

// peerMethod reports the methods only the cluster's nodes may call: the Raft service, and
// Decommission, Recommission, SetReplication and Backup, an operator's acts (a backup writes a
// copy of the node's data directory to its disk).
func peerMethod(method string) bool {
	switch method {
	case "/shoal.v1.Cluster/Decommission", "/shoal.v1.Cluster/Recommission", "/shoal.v1.Cluster/SetReplication",
		"/shoal.v1.Cluster/Backup", "/shoal.v1.Cluster/RaftPoints":
		return true
	}
	return raftMethod(method)
}

// raftMethod reports whether method is the Raft service's, which carries the peers' raft
// messages and snapshots.
func raftMethod(method string) bool { return strings.HasPrefix(method, "/shoal.v1.Raft/") }

// peersOnly refuses a peer method (peerMethod) to a caller whose TLS certificate does not
// verify against Config.PeerCAs, when set.
func (n *Node) peersOnly(ctx context.Context, method string) error {
	if n.cfg.PeerCAs == nil || !peerMethod(method) {
		return nil
	}
	var certs []*x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			certs = info.State.PeerCertificates
		}
	}
	if len(certs) == 0 {
		return status.Errorf(codes.PermissionDenied, "%s is for the cluster's nodes: the caller presented no certificate; "+
			"call it with a certificate from the nodes' CA (--tls-ca)", method)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: n.cfg.PeerCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return status.Errorf(codes.PermissionDenied, "%s is for the cluster's nodes: the caller's certificate (%s) is not from the nodes' CA (%v); "+
			"call it with a certificate from the nodes' CA (--tls-ca), as an operator would", method, certs[0].Subject, err)
	}
	return nil
}

// startingPeers asks the alive members but this node, in parallel, whether they are still
// starting (peerStarting), and returns those that are.
func (n *Node) startingPeers(ctx context.Context, members []membership.Member) map[uint64]bool {
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		out = map[uint64]bool{}
	)
	for _, m := range members {
		if !m.Alive || m.GRPCAddr == "" || m.NodeID == n.ID() {
			continue
		}
		wg.Go(func() {
			if n.peerStarting(ctx, m.GRPCAddr) {
				mu.Lock()
				out[m.NodeID] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// recreateFakeAt replaces fc's only node by the node of a new cluster (ID id, shards shards)
// listening at the same address, a cluster re-created on the same hosts. Like a shoal node, it
// refuses a call naming another cluster (shoalv1.ClusterIDHeader); olderServer leaves that
// out, as a node of an earlier version would.
func recreateFakeAt(t *testing.T, fc *fakeCluster, id string, shards uint32, olderServer bool) *fakeCluster {
	addr := fc.nodes[0].addr
	fc.nodes[0].srv.Stop()
	nc := &fakeCluster{t: t, id: id, shards: shards, leader: 1, streams: map[string][]*shoalv1.RecordedEvent{}, pos: map[uint32]uint64{}, pages: 10}
	var lis net.Listener
	var err error
	for range 50 {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	check := func(ctx context.Context) error {
		md, _ := metadata.FromIncomingContext(ctx)
		if v := md.Get(shoalv1.ClusterIDHeader); !olderServer && len(v) > 0 && v[0] != id {
			return errWrongCluster(&node{addr: addr}, id, v[0])
		}
		return nil
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}))
	n := &fakeNode{c: nc, id: 7, addr: addr, srv: srv, calls: map[string]int{}}
	shoalv1.RegisterStreamsServer(n.srv, n)
	shoalv1.RegisterClusterServer(n.srv, n)
	go n.srv.Serve(lis)
	t.Cleanup(n.srv.Stop)
	nc.nodes = []*fakeNode{n}
	return nc
}

// A client keeps to the cluster it dialled: after the cluster at its addresses was re-created
// (another cluster ID, another shard count), it neither installs the new cluster's topology
// nor has its calls served there; they fail with ErrWrongCluster.
func TestClientRefusesAnotherCluster(t *testing.T) {
	for _, older := range []bool{false, true} {
		name := map[bool]string{false: "node refuses", true: "older node: the client refuses its topology"}[older]
		t.Run(name, func(t *testing.T) {
			fc := newFakeCluster(t, 1, 4)
			c := dial(t, fc)
			seed(t, c, "s", 3)
			recreateFakeAt(t, fc, "another", 8, older)
			if _, err := c.Topology(testCtx(t)); !errors.Is(err, ErrWrongCluster) {
				t.Fatalf("topology from the re-created cluster: %v, want ErrWrongCluster", err)
			}
			if n, _ := c.Shards(testCtx(t)); n != 4 {
				t.Fatalf("the client took the re-created cluster's %d shards for its cluster's 4", n)
			}
			// Nor its status, asked of any node or of that one.
			if _, err := c.Status(testCtx(t)); !errors.Is(err, ErrWrongCluster) {
				t.Fatalf("status from the re-created cluster: %v, want ErrWrongCluster", err)
			}
			if _, err := c.NodeStatus(testCtx(t), fc.nodes[0].addr); !errors.Is(err, ErrWrongCluster) {
				t.Fatalf("node status from the re-created cluster: %v, want ErrWrongCluster", err)
			}
			if older {
				return // an older node serves what reaches it: the client can only refuse its topology
			}
			if _, err := c.Append(testCtx(t), "s", Exact(2), Event{Type: "A"}); !errors.Is(err, ErrWrongCluster) {
				t.Fatalf("append on the re-created cluster: %v, want ErrWrongCluster", err)
			}
		})
	}
}

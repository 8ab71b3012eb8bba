package transport_test

import (
	"net"

	"google.golang.org/grpc"

	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/replica/transport"
)

// Example wires a transport into a node: one gRPC server for peers and
// clients, the host as the handler, gossip-backed address resolution.
func Example() {
	// host comes from replica.NewHost(replica.Config{Transport: tr, ...});
	// addresses from membership.
	var host *replica.Host
	addrs := map[uint64]string{2: "10.0.0.2:7400", 3: "10.0.0.3:7400"}

	tr := transport.New(transport.Config{
		NodeID:    1,
		ClusterID: func() string { return "4f6c…" },
		Resolve: func(id uint64) (string, bool) {
			a, ok := addrs[id]
			return a, ok
		},
	})
	defer tr.Close()
	if host != nil {
		tr.SetHandler(host)
	}

	srv := grpc.NewServer(grpcopt.ServerOptions()...)
	tr.Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()

	// The host's loop calls tr.Send(msgs) and tr.SendSnapshot(m).
}

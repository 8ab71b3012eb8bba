package grpcopt_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shoaldb/shoal/internal/grpcopt"
)

func TestRoundTrip(t *testing.T) {
	if grpcopt.KeepaliveMinTime >= grpcopt.KeepaliveTime {
		t.Fatalf("server would refuse client pings: min %v >= time %v", grpcopt.KeepaliveMinTime, grpcopt.KeepaliveTime)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpcopt.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	defer srv.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), grpcopt.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.GetStatus().String(), "SERVING") {
		t.Fatalf("status %v", resp.GetStatus())
	}
	// Fresh slices: appending must not alias.
	a, b := grpcopt.DialOptions(), grpcopt.DialOptions()
	_ = append(a[:1], grpc.WithUserAgent("x"))
	if len(b) != len(a) {
		t.Fatal("length differs")
	}
}

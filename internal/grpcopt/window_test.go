package grpcopt_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shoaldb/shoal/internal/grpcopt"
)

// A shoal server announces its fixed receive windows and sends no ping when data arrives:
// gRPC's own window sizing sends one for nearly every data frame over a short round trip,
// a write and a read more on both ends for each raft batch and append message. Nodes far
// apart (ServerWindows of a long round trip) get larger windows.
func TestServerWindowsFixed(t *testing.T) {
	for _, c := range []struct {
		name         string
		opts         []grpc.ServerOption
		stream, conn uint32
	}{
		{"ServerOptions", nil, grpcopt.ServerStreamWindow, grpcopt.ServerConnWindow},
		{"10ms", grpcopt.ServerWindows(10 * time.Millisecond), 4 << 20, 16 << 20},
		{"50ms", grpcopt.ServerWindows(50 * time.Millisecond), 4 << 20, 16 << 20},
		{"100ms", grpcopt.ServerWindows(100 * time.Millisecond), 8 << 20, 32 << 20},
		{"250ms", grpcopt.ServerWindows(250 * time.Millisecond), grpcopt.MaxServerStreamWindow, 4 * grpcopt.MaxServerStreamWindow},
	} {
		t.Run(c.name, func(t *testing.T) {
			stream, conn := announcedWindows(t, append(grpcopt.ServerOptions(), c.opts...))
			if stream != c.stream || conn != c.conn {
				t.Fatalf("the server announced windows of %d per call and %d per connection, want %d and %d",
					stream, conn, c.stream, c.conn)
			}
		})
	}
}

// announcedWindows makes 20 calls, speaking HTTP/2 itself to see every frame, to a server with
// opts, fails if the server pings on receiving their data, and returns the windows it announced.
func announcedWindows(t *testing.T, opts []grpc.ServerOption) (stream, conn uint32) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	defer srv.Stop()

	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}

	var hdrs bytes.Buffer
	enc := hpack.NewEncoder(&hdrs)
	const calls = 20
	for i := range calls {
		id := uint32(2*i + 1)
		hdrs.Reset()
		for _, f := range []hpack.HeaderField{
			{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: "/grpc.health.v1.Health/Check"}, {Name: ":authority", Value: "shoal"},
			{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
		} {
			if err := enc.WriteField(f); err != nil {
				t.Fatal(err)
			}
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hdrs.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		// One gRPC message: not compressed, its length, an empty HealthCheckRequest.
		if err := fr.WriteData(id, true, []byte{0, 0, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
		for done := false; !done; {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if f.IsAck() {
					break
				}
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
					stream = v
				}
				if err := fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					conn = 65535 + f.Increment
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					t.Fatalf("call %d: the server sent a ping on receiving data (gRPC's window sizing is on)", i)
				}
			case *http2.HeadersFrame:
				done = f.StreamID == id && f.StreamEnded()
			}
		}
	}
	return stream, conn
}

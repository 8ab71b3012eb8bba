package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
)

// TestNodeReady: `shoal node ready` exits 0 when the node's /readyz answers 200, and 1 with
// the node's reason when it answers 503 or nothing answers.
func TestNodeReady(t *testing.T) {
	reason := ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		if reason != "" {
			http.Error(w, reason, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	}))
	addr := strings.TrimPrefix(srv.URL, "http://")
	if code, out, errOut := runCLI(t, nil, "", "node", "ready", "--http", addr); code != 0 || strings.TrimSpace(out) != "ready" {
		t.Fatalf("ready node: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	reason = "disk slow: a write took 6s"
	if code, _, errOut := runCLI(t, nil, "", "node", "ready", "--http", addr); code != exitError || !strings.Contains(errOut, "not ready: disk slow: a write took 6s") {
		t.Fatalf("node not ready: code %d, stderr %q", code, errOut)
	}
	srv.Close()
	if code, _, errOut := runCLI(t, nil, "", "node", "ready", "--http", addr); code != exitError || !strings.Contains(errOut, "did not answer") {
		t.Fatalf("no node: code %d, stderr %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, nil, "", "node", "ready", "--http", "nope"); code != exitUsage || !strings.Contains(errOut, "not host:port") {
		t.Fatalf("bad --http: code %d, stderr %q", code, errOut)
	}
	// A gRPC port given for --http: said so, not its HTTP/2 bytes.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	go g.Serve(lis)
	defer g.Stop()
	if code, _, errOut := runCLI(t, nil, "", "node", "ready", "--http", lis.Addr().String()); code != exitError || !strings.Contains(errOut, "its gRPC port?") {
		t.Fatalf("a gRPC port: code %d, stderr %q", code, errOut)
	}
}

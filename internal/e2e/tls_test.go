package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testcert"
)

// TestClusterTLS starts three `shoal server` processes with mutual TLS
// (--tls-ca, --tls-cert, --tls-key), lets placement replicate every shard
// three ways over the TLS peer connections, then appends and reads through
// the Go client and asks `shoal cluster status` with a client certificate.
func TestClusterTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const shards = 4
	ca := testcert.NewAuthority(t, t.TempDir())
	tlsArgs := func(name string) []string {
		f := ca.Issue(t, name, "127.0.0.1")
		return []string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}
	}
	cl := &cluster{t: t, shards: shards}
	first := newServer(t, "n1", "z1", nil, append(tlsArgs("n1"), "--shards", fmt.Sprint(shards), "--replication", "3")...)
	cl.servers = append(cl.servers, first)
	for i := 2; i <= 3; i++ {
		name := fmt.Sprintf("n%d", i)
		cl.servers = append(cl.servers, newServer(t, name, fmt.Sprintf("z%d", i), []string{first.gossip}, tlsArgs(name)...))
	}
	for _, s := range cl.servers {
		s.start()
		s.waitReady(30 * time.Second)
	}

	app := ca.Issue(t, "app", "app.example")
	cfg, err := app.Client()
	if err != nil {
		t.Fatal(err)
	}
	c := cl.dial(client.WithTLS(cfg))
	_, took := cl.waitReplicated(c, 60*time.Second)
	t.Logf("every shard has 3 voters and a leader after %v", took.Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 16 {
		stream := fmt.Sprintf("tls-%d", i)
		if _, err := c.Append(ctx, stream, client.NoStream, client.Event{Type: "T", Data: []byte("x")}); err != nil {
			t.Fatalf("append %s: %v", stream, err)
		}
		if evs, err := c.ReadPage(ctx, stream); err != nil || len(evs) != 1 {
			t.Fatalf("read %s: %d events, %v", stream, len(evs), err)
		}
	}

	out, err := exec.CommandContext(ctx, binPath, "cluster", "status", "--server", first.grpcAddr,
		"--tls-ca", app.CA, "--tls-cert", app.Cert, "--tls-key", app.Key).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "n3") {
		t.Fatalf("shoal cluster status over TLS: %v\n%s", err, out)
	}
}

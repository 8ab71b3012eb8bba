package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testcert"
	"github.com/shoaldb/shoal/node"
)

// TestTLS runs commands against a node that requires mutual TLS: with the
// cluster's files they work; without them, or with the wrong ones, each
// failure says what is wrong.
func TestTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	dir := t.TempDir()
	ca := testcert.NewAuthority(t, dir)
	srvFiles := ca.Issue(t, "server", "127.0.0.1")
	cfg := node.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.Gossip = "127.0.0.1:0"
	cfg.DisableHTTP = true
	cfg.Name = "tls"
	cfg.Shards, cfg.Replication = 4, 1
	tc, err := srvFiles.Server()
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerTLS, cfg.PeerTLS, cfg.PeerCAs = tc.Server, tc.Peer, tc.PeerCAs
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })

	t.Run("commands", func(t *testing.T) { tlsCommands(t, n.Addr(), dir, ca) })

	// A server certificate that does not name the address dialed.
	wrongName := ca.Issue(t, "wrong-name", "db.example")
	tc2, err := wrongName.Server()
	if err != nil {
		t.Fatal(err)
	}
	cfg2 := cfg
	cfg2.DataDir, cfg2.Name = t.TempDir(), "tls-2"
	cfg2.ServerTLS, cfg2.PeerTLS, cfg2.PeerCAs = tc2.Server, tc2.Peer, tc2.PeerCAs
	n2, err := node.Start(ctx, cfg2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n2.Close() })
	app := ca.Issue(t, "app", "app.example")
	code, _, errOut := runCLI(t, map[string]string{"SHOAL_SERVER": n2.Addr()}, "",
		"read", "s-1", "--tls-ca", app.CA, "--tls-cert", app.Cert, "--tls-key", app.Key)
	if code != exitError || !strings.Contains(errOut, "does not name that address") {
		t.Fatalf("wrong server name: exit %d, stderr %q", code, errOut)
	}

	// A server that accepts connections and never answers (hung, or not shoal).
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	code, _, errOut = runCLI(t, map[string]string{"SHOAL_SERVER": lis.Addr().String()}, "",
		"read", "s-1", "--tls-ca", app.CA, "--tls-cert", app.Cert, "--tls-key", app.Key)
	if code != exitError || !strings.Contains(errOut, "did not finish a TLS handshake in time") {
		t.Fatalf("silent server: exit %d, stderr %q", code, errOut)
	}
}

func tlsCommands(t *testing.T, addr, dir string, ca *testcert.Authority) {
	app := ca.Issue(t, "app", "app.example")
	other := testcert.NewAuthority(t, t.TempDir()).Issue(t, "other", "127.0.0.1")
	far := ca.Issue(t, "far", "db.example")
	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		code  int
		inErr string
	}{
		{"files from the environment", map[string]string{"SHOAL_TLS_CA": app.CA, "SHOAL_TLS_CERT": app.Cert, "SHOAL_TLS_KEY": app.Key},
			[]string{"append", "s-1", "--type", "T"}, exitOK, ""},
		{"files from flags", nil,
			[]string{"append", "s-2", "--type", "T", "--tls-ca", app.CA, "--tls-cert", app.Cert, "--tls-key", app.Key}, exitOK, ""},
		{"cluster status", nil,
			[]string{"cluster", "status", "--tls-ca", app.CA, "--tls-cert", app.Cert, "--tls-key", app.Key}, exitOK, ""},
		{"plaintext", nil, []string{"read", "s-1"}, exitError, "uses TLS: pass --tls-ca, --tls-cert and --tls-key"},
		{"no client certificate", nil, []string{"read", "s-1", "--tls-ca", app.CA}, exitError, "requires a client certificate"},
		{"client certificate of another CA", nil,
			[]string{"read", "s-1", "--tls-ca", app.CA, "--tls-cert", other.Cert, "--tls-key", other.Key}, exitError,
			"does not accept the client certificate"},
		{"server not signed by the CA", nil,
			[]string{"read", "s-1", "--tls-ca", other.CA, "--tls-cert", app.Cert, "--tls-key", app.Key}, exitError,
			"is not signed by the CA in --tls-ca"},
		{"certificate without its key", nil, []string{"read", "s-1", "--tls-cert", app.Cert}, exitUsage, "give both or neither"},
		{"missing CA file", nil, []string{"read", "s-1", "--tls-ca", dir + "/nope.crt"}, exitUsage, "reading the CA file"},
		{"bench embedded with TLS", nil, []string{"bench", "append", "--embedded", "--tls-ca", app.CA}, exitUsage, "leave out the --tls-* flags"},
		{"dev has no TLS", nil, []string{"dev", "--tls-ca", app.CA}, exitUsage, "unknown flag: --tls-ca"},
		// $SHOAL_TLS_* are the client commands' defaults; a server takes its files from its flags only.
		{"server ignores $SHOAL_TLS_*", map[string]string{"SHOAL_TLS_CA": dir + "/nope.crt"},
			[]string{"server", "--listen", "nope"}, exitUsage, "--listen"},
		{"server without a CA", nil, []string{"server", "--tls-cert", app.Cert, "--tls-key", app.Key}, exitUsage,
			"a server needs --tls-ca, --tls-cert and --tls-key together"},
		{"server with --console-data", nil, []string{"server", "--data", dir + "/never", "--console-data",
			"--tls-ca", app.CA, "--tls-cert", app.Cert, "--tls-key", app.Key}, exitUsage, "--console-data cannot go with TLS"},
		{"server certificate not naming its host", nil, []string{"server", "--data", dir + "/never", "--listen", "127.0.0.1:0",
			"--tls-ca", far.CA, "--tls-cert", far.Cert, "--tls-key", far.Key}, exitUsage, "does not name 127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // the failures take the CLI's dial retry (5 s) each
			env := map[string]string{"SHOAL_SERVER": addr}
			for k, v := range tc.env {
				env[k] = v
			}
			code, _, errOut := runCLI(t, env, "", tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.inErr) {
				t.Fatalf("shoal %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.inErr)
			}
		})
	}
}

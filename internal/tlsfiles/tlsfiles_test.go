package tlsfiles_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/shoaldb/shoal/internal/testcert"
	"github.com/shoaldb/shoal/internal/tlsfiles"
)

// handshake connects a client with cfg to a server with srv over loopback
// and returns the common name of the certificate the client saw, or the
// first error of either side.
func handshake(t *testing.T, srv, cfg *tls.Config) (string, error) {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	served := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		if err := c.(*tls.Conn).Handshake(); err != nil {
			served <- err
			return
		}
		_, err = c.Write([]byte("ok"))
		served <- err
	}()
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	c, err := tls.Dial("tcp", lis.Addr().String(), cfg)
	if err != nil {
		<-served
		return "", err
	}
	defer c.Close()
	// With TLS 1.3 a refused client certificate surfaces at the first read.
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		<-served
		return "", err
	}
	if err := <-served; err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewAuthority(t, dir)
	n1 := ca.Issue(t, "n1", "127.0.0.1")
	n2 := ca.Issue(t, "n2", "127.0.0.1")
	tc1, err := n1.Server()
	if err != nil {
		t.Fatal(err)
	}
	tc2, err := n2.Server()
	if err != nil {
		t.Fatal(err)
	}
	srv, peer := tc1.Server, tc2.Peer

	t.Run("peer", func(t *testing.T) {
		if cn, err := handshake(t, srv, peer); err != nil || cn != "n1" {
			t.Fatalf("peer handshake: %q, %v; want n1", cn, err)
		}
	})
	t.Run("client with a certificate", func(t *testing.T) {
		cfg, err := ca.Issue(t, "app", "app.example").Client()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(t, srv, cfg); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("client without a certificate is refused", func(t *testing.T) {
		cfg, err := tlsfiles.Files{CA: ca.CAFile}.Client()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(t, srv, cfg); err == nil || !strings.Contains(err.Error(), "certificate required") {
			t.Fatalf("handshake without a client certificate: %v, want certificate required", err)
		}
	})
	t.Run("certificate of another authority is refused", func(t *testing.T) {
		other := testcert.NewAuthority(t, t.TempDir())
		f := other.Issue(t, "x", "127.0.0.1")
		f.CA = ca.CAFile // trusts the server, presents a certificate the server does not trust
		cfg, err := f.Client()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(t, srv, cfg); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
			t.Fatalf("handshake with a foreign client certificate: %v, want unknown certificate authority", err)
		}
	})
	t.Run("server of another authority is refused", func(t *testing.T) {
		other := testcert.NewAuthority(t, t.TempDir())
		otc, err := other.Issue(t, "o", "127.0.0.1").Server()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(t, otc.Server, peer); err == nil || !strings.Contains(err.Error(), "unknown authority") {
			t.Fatalf("handshake with a foreign server: %v, want an unknown authority", err)
		}
	})
}

// TestClientCA: with a separate client CA, the server accepts clients of either CA, and only
// the nodes' CA makes a caller a peer.
func TestClientCA(t *testing.T) {
	ca := testcert.NewAuthority(t, t.TempDir())
	clientCA := testcert.NewAuthority(t, t.TempDir())
	n1 := ca.Issue(t, "n1", "127.0.0.1")
	n1.ClientCA = clientCA.CAFile
	tc, err := n1.Server()
	if err != nil {
		t.Fatal(err)
	}
	app := clientCA.Issue(t, "app", "app.example")
	app.CA = ca.CAFile
	cfg, err := app.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, tc.Server, cfg); err != nil {
		t.Fatalf("client of the client CA: %v", err)
	}
	if _, err := handshake(t, tc.Server, tc.Peer); err != nil {
		t.Fatalf("peer: %v", err)
	}
	verify := func(f tlsfiles.Files) error {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		_, err = leaf.Verify(x509.VerifyOptions{Roots: tc.PeerCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err
	}
	if err := verify(n1); err != nil {
		t.Fatalf("a node's certificate is not a peer's: %v", err)
	}
	if err := verify(app); err == nil {
		t.Fatal("a client's certificate verifies as a peer's")
	}
}

// TestReloadLogged: a rotation that does not load is logged once and keeps the old pair.
func TestReloadLogged(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewAuthority(t, dir)
	n1 := ca.Issue(t, "n1", "127.0.0.1")
	var logs strings.Builder
	n1.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	tc, err := n1.Server()
	if err != nil {
		t.Fatal(err)
	}
	ca.IssueTo(t, dir+"/other.crt", n1.Key, "other", "127.0.0.1") // a new key; n1.crt no longer matches it
	for range 3 {
		if cn, err := handshake(t, tc.Server, tc.Peer); err != nil || cn != "n1" {
			t.Fatalf("mid-rotation: %q, %v", cn, err)
		}
	}
	if n := strings.Count(logs.String(), "does not load"); n != 1 {
		t.Fatalf("%d reload failures logged, want 1:\n%s", n, logs.String())
	}
	ca.IssueTo(t, n1.Cert, n1.Key, "n1-rotated", "127.0.0.1")
	if cn, err := handshake(t, tc.Server, tc.Peer); err != nil || cn != "n1-rotated" {
		t.Fatalf("after rotation: %q, %v", cn, err)
	}
	if !strings.Contains(logs.String(), "key pair reloaded") {
		t.Fatalf("reload not logged:\n%s", logs.String())
	}
}

// TestNodeCertificateChecked: a server refuses a node certificate its peers and clients would
// refuse (another CA, one use only, not naming its host), at start and on a reload.
func TestNodeCertificateChecked(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewAuthority(t, dir)
	other := testcert.NewAuthority(t, t.TempDir())
	for _, tc := range []struct {
		name   string
		files  tlsfiles.Files
		substr string
	}{
		{"another CA", other.Issue(t, "x", "127.0.0.1"), "does not verify against --tls-ca"},
		{"serverAuth only", ca.IssueUsages(t, "srv", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, "127.0.0.1"), "for clientAuth"},
		{"clientAuth only", ca.IssueUsages(t, "cli", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, "127.0.0.1"), "for serverAuth"},
		{"another host", ca.Issue(t, "far", "db.example"), "does not name 127.0.0.1"},
	} {
		f := tc.files
		f.CA, f.Host = ca.CAFile, "127.0.0.1"
		if _, err := f.Server(); err == nil || !strings.Contains(err.Error(), tc.substr) {
			t.Errorf("%s: Server() = %v, want an error containing %q", tc.name, err, tc.substr)
		}
	}

	// A reload to a certificate that does not name the host keeps the previous pair.
	n1 := ca.Issue(t, "n1", "127.0.0.1")
	n1.Host = "127.0.0.1"
	var logs strings.Builder
	n1.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	tc, err := n1.Server()
	if err != nil {
		t.Fatal(err)
	}
	ca.IssueTo(t, n1.Cert, n1.Key, "renamed", "db.example")
	if cn, err := handshake(t, tc.Server, tc.Peer); err != nil || cn != "n1" {
		t.Fatalf("after a reload to a certificate of another host: %q, %v; want the previous pair", cn, err)
	}
	if !strings.Contains(logs.String(), "is not valid for this node") {
		t.Fatalf("refused reload not logged:\n%s", logs.String())
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewAuthority(t, dir)
	n1 := ca.Issue(t, "n1", "127.0.0.1")
	tc, err := n1.Server()
	if err != nil {
		t.Fatal(err)
	}
	srv, peer := tc.Server, tc.Peer
	if cn, err := handshake(t, srv, peer); err != nil || cn != "n1" {
		t.Fatalf("before rotation: %q, %v", cn, err)
	}

	// A key without its certificate (half a rotation) keeps the old pair.
	ca.IssueTo(t, dir+"/half.crt", n1.Key, "half", "127.0.0.1")
	if cn, err := handshake(t, srv, peer); err != nil || cn != "n1" {
		t.Fatalf("mid-rotation: %q, %v; want the old pair", cn, err)
	}
	// The whole pair replaced: the next handshake presents it.
	ca.IssueTo(t, n1.Cert, n1.Key, "n1-rotated", "127.0.0.1")
	if cn, err := handshake(t, srv, peer); err != nil || cn != "n1-rotated" {
		t.Fatalf("after rotation: %q, %v; want n1-rotated", cn, err)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewAuthority(t, dir)
	n1 := ca.Issue(t, "n1", "127.0.0.1")
	junk := dir + "/junk.pem"
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		err    func() error
		substr string
	}{
		{"server without CA", func() error { _, err := tlsfiles.Files{Cert: n1.Cert, Key: n1.Key}.Server(); return err }, "--tls-ca, --tls-cert and --tls-key together"},
		{"server without key", func() error { _, err := tlsfiles.Files{CA: n1.CA, Cert: n1.Cert}.Server(); return err }, "--tls-ca, --tls-cert and --tls-key together"},
		{"client cert without key", func() error { _, err := tlsfiles.Files{Cert: n1.Cert}.Client(); return err }, "give both or neither"},
		{"CA missing", func() error { _, err := tlsfiles.Files{CA: dir + "/nope.crt"}.Client(); return err }, "reading the CA file"},
		{"client CA on a client", func() error { _, err := tlsfiles.Files{CA: n1.CA, ClientCA: n1.CA}.Client(); return err }, "is a server's"},
		{"client CA not PEM", func() error {
			_, err := tlsfiles.Files{CA: n1.CA, ClientCA: junk, Cert: n1.Cert, Key: n1.Key}.Server()
			return err
		}, "client CA file"},
		{"CA not PEM", func() error { _, err := tlsfiles.Files{CA: junk}.Client(); return err }, "holds no PEM certificate"},
		{"key does not match", func() error {
			_, err := tlsfiles.Files{CA: n1.CA, Cert: n1.Cert, Key: ca.Issue(t, "n2", "127.0.0.1").Key}.Server()
			return err
		}, "loading the key pair"},
	} {
		err := tc.err()
		if err == nil || !strings.Contains(err.Error(), tc.substr) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.substr)
		}
	}
}

package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

func selfSignedCert(t *testing.T) (tls.Certificate, *x509.Certificate) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, c
}

func tlsFakeServer(t *testing.T, n *fakeNode, cert tls.Certificate) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	shoalv1.RegisterStreamsServer(srv, n)
	shoalv1.RegisterClusterServer(srv, n)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// One seed with a certificate the client does not trust (a node whose certificate rotation
// went wrong) does not make Dial fail when another seed is fine: a TLS refusal ends a call
// only when a node refuses it a second time.
func TestOneBadCertificateSeedDoesNotFailDial(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	good, goodX := selfSignedCert(t)
	bad, _ := selfSignedCert(t) // self-signed by another key: untrusted
	goodAddr := tlsFakeServer(t, fc.nodes[0], good)
	badAddr := tlsFakeServer(t, fc.nodes[0], bad)
	pool := x509.NewCertPool()
	pool.AddCert(goodX)
	c, err := Dial(testCtx(t), []string{badAddr, goodAddr}, WithTLS(&tls.Config{RootCAs: pool}), WithRetry(fastRetry()))
	if c != nil {
		c.Close()
	}
	if err != nil {
		t.Fatalf("Dial([bad-cert seed, good seed]) = %v; want the good seed used", err)
	}
}

// Two seeds of three refusing the handshake: the third is tried before the call ends.
func TestTwoBadCertificateSeedsThenGood(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	good, goodX := selfSignedCert(t)
	bad, _ := selfSignedCert(t)
	bad2, _ := selfSignedCert(t)
	goodAddr := tlsFakeServer(t, fc.nodes[0], good)
	badAddr := tlsFakeServer(t, fc.nodes[0], bad)
	bad2Addr := tlsFakeServer(t, fc.nodes[0], bad2)
	pool := x509.NewCertPool()
	pool.AddCert(goodX)
	c, err := Dial(testCtx(t), []string{badAddr, bad2Addr, goodAddr}, WithTLS(&tls.Config{RootCAs: pool}), WithRetry(fastRetry()))
	if c != nil {
		c.Close()
	}
	if err != nil {
		t.Fatalf("Dial([bad, bad, good]) = %v; want the good seed used", err)
	}
}

// Without retries (MaxElapsed < 0) a refusal still ends the call with ErrTLSHandshake, not a
// plain UNAVAILABLE: the refusal's second asking is not a retry.
func TestTLSRefusalWithoutRetries(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	bad, _ := selfSignedCert(t)
	_, goodX := selfSignedCert(t)
	badAddr := tlsFakeServer(t, fc.nodes[0], bad)
	pool := x509.NewCertPool()
	pool.AddCert(goodX)
	c, err := Dial(testCtx(t), []string{badAddr}, WithTLS(&tls.Config{RootCAs: pool}), WithRetry(RetryPolicy{MaxElapsed: -1}))
	if c != nil {
		c.Close()
	}
	if !errors.Is(err, ErrTLSHandshake) {
		t.Fatalf("Dial(bad seed, no retries) = %v; want ErrTLSHandshake", err)
	}
}

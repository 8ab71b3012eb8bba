// Package testcert issues certificates for tests: a throwaway certificate
// authority and key pairs it signs, written as PEM files.
//
// Usage:
//
//	ca := testcert.NewAuthority(t, t.TempDir())
//	files := ca.Issue(t, "n1", "127.0.0.1") // tlsfiles.Files{CA, Cert, Key}
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/tlsfiles"
)

// Authority is a certificate authority whose certificate is in CAFile.
type Authority struct {
	CAFile string
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
}

// NewAuthority creates an authority and writes its certificate to dir/ca.crt.
func NewAuthority(t testing.TB, dir string) *Authority {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "shoal test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	a := &Authority{CAFile: filepath.Join(dir, "ca.crt"), dir: dir, cert: cert, key: key}
	writePEM(t, a.CAFile, "CERTIFICATE", der)
	return a
}

// Issue signs a key pair named name for hosts (IP addresses or DNS names),
// usable by servers and clients alike, writes it to dir/name.crt and
// dir/name.key, and returns the three file names.
func (a *Authority) Issue(t testing.TB, name string, hosts ...string) tlsfiles.Files {
	t.Helper()
	f := tlsfiles.Files{CA: a.CAFile, Cert: filepath.Join(a.dir, name+".crt"), Key: filepath.Join(a.dir, name+".key")}
	a.IssueTo(t, f.Cert, f.Key, name, hosts...)
	return f
}

// IssueTo is Issue writing to the given files (replacing them).
func (a *Authority) IssueTo(t testing.TB, certFile, keyFile, name string, hosts ...string) {
	t.Helper()
	a.issue(t, certFile, keyFile, name, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, hosts)
}

// IssueUsages is Issue with the given extended key usages only.
func (a *Authority) IssueUsages(t testing.TB, name string, usages []x509.ExtKeyUsage, hosts ...string) tlsfiles.Files {
	t.Helper()
	f := tlsfiles.Files{CA: a.CAFile, Cert: filepath.Join(a.dir, name+".crt"), Key: filepath.Join(a.dir, name+".key")}
	a.issue(t, f.Cert, f.Key, name, usages, hosts)
	return f
}

func (a *Authority) issue(t testing.TB, certFile, keyFile, name string, usages []x509.ExtKeyUsage, hosts []string) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyFile, "PRIVATE KEY", kb)
	writePEM(t, certFile, "CERTIFICATE", der)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writePEM replaces name by renaming a complete temporary file over it, so
// a reader never sees half a file.
func writePEM(t testing.TB, name, typ string, der []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

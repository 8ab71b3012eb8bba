// Package tlsfiles builds the TLS configurations of shoal's servers and
// clients from PEM files, as the CLI's --tls-ca, --tls-cert and --tls-key
// flags name them.
//
// A server uses mutual TLS: it presents its certificate and accepts only
// callers whose certificate the CA signed, whether they are peers (raft,
// forwarded requests) or clients. The same key pair serves as the client
// certificate when the node dials its peers. A client verifies the server
// against the CA (or the system's roots without one) and presents its own
// certificate when given one.
//
// The key pair is read again when its files change, at the next handshake,
// so certificates can be rotated without a restart: replace the key file,
// then the certificate file (or both at once by renaming). A pair that does
// not load (a half-written file, a certificate that does not match its key)
// leaves the previous one in use and is tried again at the next handshake.
// The CA is read once, at start.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
)

// Files names the PEM files of one side of a connection. Empty fields are
// absent files.
type Files struct {
	CA   string // certificates of the authority that signs servers' and clients' certificates
	Cert string // this side's certificate chain
	Key  string // this side's private key
}

// IsZero reports whether no file is named: plaintext gRPC.
func (f Files) IsZero() bool { return f == Files{} }

// Server returns the configuration a node listens with (mutual TLS) and the
// one it dials its peers with. It needs all three files.
func (f Files) Server() (server, peer *tls.Config, err error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, nil, errors.New("tls: a server needs --tls-ca, --tls-cert and --tls-key together " +
			"(mutual TLS: the CA verifies peers and clients)")
	}
	pool, err := loadPool(f.CA)
	if err != nil {
		return nil, nil, err
	}
	kp, err := newKeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, nil, err
	}
	server = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get() },
		ClientCAs:      pool,
		ClientAuth:     tls.RequireAndVerifyClientCert,
	}
	peer = &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get() },
	}
	return server, peer, nil
}

// Client returns the configuration a client dials with: the CA verifies
// servers (the system's roots when CA is empty), and Cert and Key, both or
// neither, are presented to servers that ask for a certificate.
func (f Files) Client() (*tls.Config, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("tls: --tls-cert and --tls-key go together; give both or neither")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pool, err := loadPool(f.CA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if f.Cert != "" {
		kp, err := newKeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get() }
	}
	return cfg, nil
}

func loadPool(name string) (*x509.CertPool, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("tls: reading the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: the CA file %s holds no PEM certificate", name)
	}
	return pool, nil
}

// keyPair is a certificate and key loaded from files, reloaded when either
// file is replaced or its size or modification time changes.
type keyPair struct {
	certFile, keyFile string

	mu                sync.Mutex
	cur               *tls.Certificate
	certStat, keyStat os.FileInfo // of the files cur was loaded from
}

func newKeyPair(certFile, keyFile string) (*keyPair, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	return kp, nil
}

func unchanged(old, cur os.FileInfo) bool {
	return os.SameFile(old, cur) && old.Size() == cur.Size() && old.ModTime().Equal(cur.ModTime())
}

// get returns the current pair, reloading it first if its files changed. A
// reload that fails keeps the previous pair (and is tried again next time);
// only the first load's error is returned.
func (kp *keyPair) get() (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	cs, cerr := os.Stat(kp.certFile)
	ks, kerr := os.Stat(kp.keyFile)
	if kp.cur != nil && (cerr != nil || kerr != nil || (unchanged(kp.certStat, cs) && unchanged(kp.keyStat, ks))) {
		return kp.cur, nil
	}
	c, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		if kp.cur != nil {
			return kp.cur, nil
		}
		return nil, fmt.Errorf("tls: loading the key pair %s and %s: %w", kp.certFile, kp.keyFile, err)
	}
	kp.cur, kp.certStat, kp.keyStat = &c, cs, ks
	return kp.cur, nil
}

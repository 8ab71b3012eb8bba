// Package tlsfiles builds the TLS configurations of shoal's servers and
// clients from PEM files, as the CLI's --tls-ca, --tls-client-ca, --tls-cert
// and --tls-key flags name them.
//
// A server uses mutual TLS: it presents its certificate and accepts only
// callers with a certificate from a CA it trusts. The nodes' CA (CA) signs
// the nodes' certificates, and the same key pair serves as a node's client
// certificate when it dials its peers. Clients' certificates come from the
// nodes' CA too, or from a separate client CA (ClientCA); then only the
// nodes' CA makes a caller a peer (ServerConfigs.PeerCAs), so an
// application's certificate cannot speak raft. A client verifies the server
// against the CA (or the system's roots without one) and presents its own
// certificate when given one.
//
// The key pair is read again when its files' contents change, at the next
// handshake, so certificates can be rotated without a restart. A pair that
// does not load (a half-written file, a certificate that does not match its
// key) leaves the previous one in use and is logged once; it is tried again
// when the files change again. The CAs are read once, at start.
package tlsfiles

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// Files names the PEM files of one side of a connection. Empty fields are
// absent files.
type Files struct {
	CA       string // the nodes' CA: signs the nodes' certificates (and clients', without ClientCA)
	ClientCA string // a server's separate CA for clients' certificates; optional
	Cert     string // this side's certificate chain
	Key      string // this side's private key
	// Host is the host peers and clients dial a server at (its advertised address's); a
	// server's certificate must name it. Empty: not checked.
	Host string
	// Logger receives key pair reloads and their failures; nil discards them.
	Logger *slog.Logger
}

// IsZero reports whether no file is named: plaintext gRPC.
func (f Files) IsZero() bool { return f.CA == "" && f.ClientCA == "" && f.Cert == "" && f.Key == "" }

// ServerConfigs are what a node needs for mutual TLS.
type ServerConfigs struct {
	Server *tls.Config // the listener's: requires a certificate from CA or ClientCA
	Peer   *tls.Config // for dialing peers: verifies them against CA, presents the node's pair
	// PeerCAs is the nodes' CA: a caller is a peer (may call the Raft service) only if its
	// certificate verifies against it.
	PeerCAs *x509.CertPool
}

// Server returns the configurations a node listens and dials its peers
// with. It needs CA, Cert and Key; ClientCA is optional. The node's
// certificate must chain to CA, allow both uses (serverAuth, clientAuth) and
// name Host: Server refuses one that does not, and a reload keeps the
// previous pair instead of taking it.
func (f Files) Server() (ServerConfigs, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return ServerConfigs{}, errors.New("tls: a server needs --tls-ca, --tls-cert and --tls-key together " +
			"(mutual TLS: the CA verifies peers and clients)")
	}
	peers, err := loadPool(f.CA, "CA")
	if err != nil {
		return ServerConfigs{}, err
	}
	callers := peers.Clone()
	if f.ClientCA != "" {
		b, err := os.ReadFile(f.ClientCA)
		if err != nil {
			return ServerConfigs{}, fmt.Errorf("tls: reading the client CA file: %w", err)
		}
		if !callers.AppendCertsFromPEM(b) {
			return ServerConfigs{}, fmt.Errorf("tls: the client CA file %s holds no PEM certificate", f.ClientCA)
		}
	}
	kp, err := newKeyPair(f.Cert, f.Key, f.Logger, func(c *tls.Certificate) error { return nodeCertOK(c, peers, f.Host) })
	if err != nil {
		return ServerConfigs{}, err
	}
	return ServerConfigs{
		Server: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get() },
			ClientCAs:      callers,
			ClientAuth:     tls.RequireAndVerifyClientCert,
		},
		Peer: &tls.Config{
			MinVersion:           tls.VersionTLS12,
			RootCAs:              peers,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get() },
		},
		PeerCAs: peers,
	}, nil
}

// Client returns the configuration a client dials with: the CA verifies
// servers (the system's roots when CA is empty), and Cert and Key, both or
// neither, are presented to servers that ask for a certificate.
func (f Files) Client() (*tls.Config, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("tls: --tls-cert and --tls-key go together; give both or neither")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ClientCA != "" {
		return nil, errors.New("tls: --tls-client-ca is a server's; a client verifies servers against --tls-ca")
	}
	if f.CA != "" {
		pool, err := loadPool(f.CA, "CA")
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if f.Cert != "" {
		kp, err := newKeyPair(f.Cert, f.Key, f.Logger, nil)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get() }
	}
	return cfg, nil
}

// nodeCertOK checks a node's certificate as its peers and clients will: it chains to the nodes'
// CA for both uses (a node serves and dials with it), and names host.
func nodeCertOK(c *tls.Certificate, cas *x509.CertPool, host string) error {
	if len(c.Certificate) == 0 {
		return errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(ic)
		}
	}
	for _, u := range []struct {
		usage x509.ExtKeyUsage
		name  string
	}{{x509.ExtKeyUsageServerAuth, "serverAuth"}, {x509.ExtKeyUsageClientAuth, "clientAuth"}} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: cas, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u.usage}}); err != nil {
			return fmt.Errorf("the node certificate (%s) does not verify against --tls-ca for %s (a node serves and dials its peers with it): %w",
				leaf.Subject, u.name, err)
		}
	}
	if host != "" {
		if err := leaf.VerifyHostname(host); err != nil {
			return fmt.Errorf("the node certificate (%s) does not name %s, the host peers and clients dial (--advertise, else --listen): %w",
				leaf.Subject, host, err)
		}
	}
	return nil
}

func loadPool(name, what string) (*x509.CertPool, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("tls: reading the %s file: %w", what, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: the %s file %s holds no PEM certificate", what, name)
	}
	return pool, nil
}

// keyPair is a certificate and key loaded from files, reloaded when either
// file's contents change. The files are small: reading them at each
// handshake (connections are long-lived) is exact where file times are not.
type keyPair struct {
	certFile, keyFile string
	log               *slog.Logger
	check             func(*tls.Certificate) error // nil: none

	mu              sync.Mutex
	cur             *tls.Certificate
	certPEM, keyPEM []byte // what cur was loaded from
	badCert, badKey []byte // the last contents that failed to load
	unreadable      bool   // the last read failed (logged once)
}

func newKeyPair(certFile, keyFile string, log *slog.Logger, check func(*tls.Certificate) error) (*keyPair, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kp := &keyPair{certFile: certFile, keyFile: keyFile, log: log, check: check}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	return kp, nil
}

// get returns the current pair, reloading it first if its files changed. A
// reload that fails keeps the previous pair, and is logged once per change
// of the files; only the first load's error is returned.
func (kp *keyPair) get() (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	certPEM, cerr := os.ReadFile(kp.certFile)
	keyPEM, kerr := os.ReadFile(kp.keyFile)
	if err := errors.Join(cerr, kerr); err != nil {
		if kp.cur == nil {
			return nil, fmt.Errorf("tls: reading the key pair: %w", err)
		}
		if !kp.unreadable {
			kp.unreadable = true
			kp.log.Warn("tls: cannot read the key pair; the previous one stays in use", "err", err)
		}
		return kp.cur, nil
	}
	kp.unreadable = false
	if kp.cur != nil && bytes.Equal(certPEM, kp.certPEM) && bytes.Equal(keyPEM, kp.keyPEM) {
		return kp.cur, nil
	}
	if kp.cur != nil && bytes.Equal(certPEM, kp.badCert) && bytes.Equal(keyPEM, kp.badKey) {
		return kp.cur, nil // failed before; wait for the files to change again
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err == nil && kp.check != nil {
		err = kp.check(&c)
	}
	if err != nil {
		if kp.cur != nil {
			kp.badCert, kp.badKey = certPEM, keyPEM
			kp.log.Warn("tls: the changed key pair does not load or is not valid for this node; the previous one stays in use",
				"cert", kp.certFile, "key", kp.keyFile, "err", err)
			return kp.cur, nil
		}
		return nil, fmt.Errorf("tls: loading the key pair %s and %s: %w", kp.certFile, kp.keyFile, err)
	}
	if kp.cur != nil {
		kp.log.Info("tls: key pair reloaded", "cert", kp.certFile)
	}
	kp.cur, kp.certPEM, kp.keyPEM, kp.badCert, kp.badKey = &c, certPEM, keyPEM, nil, nil
	return kp.cur, nil
}

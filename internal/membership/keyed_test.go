package membership

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A node with a key whose seed is not a gossip port (an HTTP server's, as a node's --http
// given for its --gossip): memberlist takes the unencrypted answer for a seed without a key,
// and the error names both causes.
func TestKeyedJoinToHTTPPort(t *testing.T) {
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	cfg := testConfig(t, "h", 9, "c", web.Listener.Addr().String())
	cfg.SecretKey = []byte("0123456789abcdef")
	m, err := Start(cfg)
	if m != nil {
		m.Close()
	}
	if err == nil || !errors.Is(err, ErrGossipKey) || !strings.Contains(err.Error(), "or they are not gossip addresses") {
		t.Fatalf("a key towards an HTTP port: %v, want ErrGossipKey naming a wrong address as a cause", err)
	}
}

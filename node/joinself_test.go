package node

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/membership"
)

// TestJoinOnlySelfRefused: a new node whose --join names only its own gossip address (as
// given, or spelled otherwise) is refused at once, naming the mistake, where it joined
// itself, waited Config.JoinTimeout for a cluster ID and blamed the seed's node. One whose
// seeds also name a node not up yet joins it once it is.
func TestJoinOnlySelfRefused(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testConfig(t, t.TempDir())
	_, port, _ := strings.Cut(cfg.Gossip, ":")
	for _, join := range [][]string{{cfg.Gossip}, {"localhost:" + port, cfg.Gossip}} {
		cfg.Join, cfg.JoinTimeout = join, 20*time.Second
		start := time.Now()
		n, err := Start(ctx, cfg)
		if err == nil {
			n.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "only this node") || !strings.Contains(err.Error(), "without --join") || time.Since(start) > 5*time.Second {
			t.Fatalf("Start with --join %v, this node's gossip address: %v after %v", join, err, time.Since(start).Round(time.Millisecond))
		}
		t.Log(err)
	}

	// Its own address and the address of a node that starts a moment later.
	seed := testConfig(t, t.TempDir())
	seed.Name = "seed"
	cfg.Join = []string{cfg.Gossip, seed.Gossip}
	errc := make(chan error, 1)
	go func() {
		n, err := Start(ctx, cfg)
		if err == nil {
			t.Cleanup(func() { n.Close() })
		}
		errc <- err
	}()
	time.Sleep(time.Second)
	startNode(t, seed)
	if err := <-errc; err != nil {
		t.Fatalf("Start with --join naming itself and a seed that starts later: %v", err)
	}
}

// TestJoinNotGossipRefused: a new node whose --join names only addresses where something
// other than gossip answers (a node's HTTP or gRPC port) is refused at once with the hint,
// where it retried for the whole Config.JoinTimeout and then blamed the seeds for not
// answering.
func TestJoinNotGossipRefused(t *testing.T) {
	t.Parallel()
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	cfg := testConfig(t, t.TempDir())
	cfg.Join, cfg.JoinTimeout = []string{web.Listener.Addr().String()}, 30*time.Second
	n, err := Start(context.Background(), cfg)
	if err == nil {
		n.Close()
	}
	if !errors.Is(err, membership.ErrNotGossip) || errors.Is(err, ErrJoinTimeout) || !strings.Contains(err.Error(), "--http") {
		t.Fatalf("Start with --join at an HTTP port: %v, want membership.ErrNotGossip", err)
	}
	t.Log(err)
}

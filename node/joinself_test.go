package node

import (
	"context"
	"strings"
	"testing"
	"time"
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

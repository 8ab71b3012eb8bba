package node

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoaldb/shoal/internal/membership"
)

// holdStream is a gossip transport that, once armed, holds the first write on the next stream
// dialled to it (a joining node's push/pull: the seed's state) until release is closed.
type holdStream struct {
	memberlist.Transport
	streams chan net.Conn
	armed   atomic.Bool
	arrived chan struct{} // closed when the held stream comes
	release chan struct{}
}

func (h *holdStream) wrap(t memberlist.Transport) memberlist.Transport {
	h.Transport = t
	go func() {
		for c := range t.StreamCh() {
			if h.armed.CompareAndSwap(true, false) {
				c = &heldConn{Conn: c, release: h.release}
				close(h.arrived)
			}
			h.streams <- c
		}
	}()
	return h
}

func (h *holdStream) StreamCh() <-chan net.Conn { return h.streams }

type heldConn struct {
	net.Conn
	release <-chan struct{}
	once    sync.Once
}

func (c *heldConn) Write(b []byte) (int, error) {
	c.once.Do(func() { <-c.release })
	return c.Conn.Write(b)
}

// TestSameNameJoinedAtOnceRefused: of two new nodes under one name (two data directories)
// that join through a seed at the same moment, the seed answering each with its state from
// before it merged the other, one is refused naming the other, where both started: gossip keeps
// one member per name, so the seed took one and ignored the other, which ran on, unseen by the
// cluster (no replica would ever be placed on it) and taking the other's gossip for its own.
func TestSameNameJoinedAtOnceRefused(t *testing.T) {
	t.Parallel()
	hold := &holdStream{streams: make(chan net.Conn), arrived: make(chan struct{}), release: make(chan struct{})}
	seedCfg := testConfig(t, t.TempDir())
	seedCfg.Name = "seed"
	seedCfg.GossipTransport = hold.wrap
	seed := startNode(t, seedCfg)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := func(cfg Config) error {
		n, err := Start(ctx, cfg)
		if err == nil {
			t.Cleanup(func() { n.Close() })
		}
		return err
	}
	x1, x2 := testConfig(t, t.TempDir()), testConfig(t, t.TempDir())
	x1.Name, x2.Name = "x", "x"
	x1.Join, x2.Join = []string{seedCfg.Gossip}, []string{seedCfg.Gossip}
	hold.armed.Store(true)
	errs := make(chan error, 2)
	go func() { errs <- start(x1) }()
	select {
	case <-hold.arrived: // the seed has read x1's state; its answer is held
	case <-ctx.Done():
		t.Fatal("x1 never joined")
	}
	go func() { errs <- start(x2) }()
	deadline := time.Now().Add(time.Second) // x1's push/pull times out after 2 s
	for !seedHolds(seed, "x") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(hold.release) // the seed answers x1 with its state from before it merged x2
	var taken error
	for range 2 {
		err := <-errs
		switch {
		case err == nil:
		case errors.Is(err, membership.ErrNameTaken) && taken == nil:
			taken = err
		default:
			t.Fatalf("Start under a name joined at the same moment: %v", err)
		}
	}
	if taken == nil {
		t.Fatalf("both nodes named x started; the seed lists x as node %d", seedMember(seed, "x").NodeID)
	}
	t.Log(taken)
}

func seedHolds(n *Node, name string) bool { return seedMember(n, name).Alive }

func seedMember(n *Node, name string) membership.Member {
	for _, m := range n.gossip().Members() {
		if m.Name == name {
			return m
		}
	}
	return membership.Member{}
}

// TestRenamedAfterNameTaken: a new node refused for a name a live member has starts under
// another name from the same data directory, as the refusal advises, where the directory,
// holding the refused name, refused every other (its node was in no cluster yet).
func TestRenamedAfterNameTaken(t *testing.T) {
	t.Parallel()
	first := startNode(t, testConfig(t, t.TempDir()))
	cfg := testConfig(t, t.TempDir()) // also named "solo"
	cfg.Join = []string{first.cfg.Gossip}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Start(ctx, cfg); !errors.Is(err, membership.ErrNameTaken) {
		t.Fatalf("joining under a taken name: %v", err)
	}
	cfg.Name = "solo-2"
	second := startNode(t, cfg)
	if second.Name() != "solo-2" || len(second.Members()) != 2 {
		t.Fatalf("renamed node: name %q, %d members", second.Name(), len(second.Members()))
	}
	second.Close()
	// Once it belongs to the cluster, its name is fixed.
	cfg.Name = "solo-3"
	if _, err := Start(ctx, cfg); !errors.Is(err, ErrConfigConflict) {
		t.Fatalf("renaming a member of a cluster: %v", err)
	}
}

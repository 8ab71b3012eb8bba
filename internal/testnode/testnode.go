// Package testnode starts clusters of in-process shoal nodes for tests: N
// nodes on loopback with free ports, zones z1..zN, data in the test's temp
// directory, the first node creating the cluster and the others joining it
// by gossip.
//
// Usage:
//
//	c := testnode.Start(t, 3, testnode.Options{Shards: 4})
//	conn := c.Dial(t, 1) // gRPC connection to the second node
//
// Start registers cleanup with t; Close may also be called earlier.
package testnode

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/internal/testaddr"
	"github.com/shoaldb/shoal/node"
)

// Options shape the cluster. Zero values mean the defaults noted.
type Options struct {
	Shards      int // default 4
	Replication int // default 3
	// Configure, if set, adjusts node i's config before it starts.
	Configure func(i int, cfg *node.Config)
	// Verbose sends the nodes' logs to stderr (also enabled by SHOAL_TEST_LOG=1).
	Verbose bool
	// FormTimeout bounds the wait for every node to see every other alive
	// (default 20s).
	FormTimeout time.Duration
}

// Cluster is a running set of in-process nodes.
type Cluster struct {
	Nodes   []*node.Node
	Configs []node.Config

	mu     sync.Mutex
	closed []bool
}

// Start starts n nodes and waits until every node sees all n alive in gossip.
// It fails t on error.
func Start(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if opts.Shards == 0 {
		opts.Shards = 4
	}
	if opts.Replication == 0 {
		opts.Replication = 3
	}
	if opts.FormTimeout == 0 {
		opts.FormTimeout = 20 * time.Second
	}
	root := t.TempDir()
	c := &Cluster{closed: make([]bool, n)}
	t.Cleanup(c.Close)
	var seed string
	for i := range n {
		cfg := node.Config{
			DataDir:     filepath.Join(root, fmt.Sprintf("n%d", i+1)),
			Listen:      "127.0.0.1:0",
			HTTP:        "127.0.0.1:0",
			Gossip:      FreeGossipAddr(t),
			Name:        fmt.Sprintf("n%d", i+1),
			Zone:        fmt.Sprintf("z%d", i+1),
			Shards:      opts.Shards,
			Replication: opts.Replication,
			JoinTimeout: opts.FormTimeout,
		}
		if i > 0 {
			cfg.Join = []string{seed}
		} else {
			seed = cfg.Gossip
		}
		if opts.Verbose || os.Getenv("SHOAL_TEST_LOG") != "" {
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).
				With("test_node", cfg.Name)
		}
		if opts.Configure != nil {
			opts.Configure(i, &cfg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), opts.FormTimeout)
		nd, err := node.Start(ctx, cfg)
		cancel()
		if err != nil {
			t.Fatalf("testnode: starting node %d: %v", i+1, err)
		}
		c.Nodes = append(c.Nodes, nd)
		c.Configs = append(c.Configs, cfg)
	}
	c.WaitFormed(t, opts.FormTimeout)
	c.WaitReady(t, opts.FormTimeout)
	return c
}

// WaitReady waits until every running node is ready (node.Ready).
func (c *Cluster) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for i, n := range c.Nodes {
		for !c.isClosed(i) {
			err := n.Ready()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("testnode: node %d not ready: %v", i+1, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// WaitFormed waits until every running node sees every running node alive.
func (c *Cluster) WaitFormed(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		want := map[uint64]bool{}
		for i, n := range c.Nodes {
			if !c.isClosed(i) {
				want[n.ID()] = true
			}
		}
		for i, n := range c.Nodes {
			if c.isClosed(i) {
				continue
			}
			seen := 0
			for _, m := range n.Members() {
				if m.Alive && want[m.NodeID] {
					seen++
				}
			}
			if seen != len(want) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testnode: cluster did not form within %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) isClosed(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed[i]
}

// Stop closes node i (0-based).
func (c *Cluster) Stop(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	done := c.closed[i]
	c.closed[i] = true
	c.mu.Unlock()
	if !done {
		if err := c.Nodes[i].Close(); err != nil {
			t.Errorf("testnode: closing node %d: %v", i+1, err)
		}
	}
}

// Close closes every node, in reverse order.
func (c *Cluster) Close() {
	for i := len(c.Nodes) - 1; i >= 0; i-- {
		c.mu.Lock()
		done := c.closed[i]
		c.closed[i] = true
		c.mu.Unlock()
		if !done {
			c.Nodes[i].Close()
		}
	}
}

// Addrs returns the nodes' gRPC addresses, in order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// Dial returns a gRPC connection to node i, closed at the end of the test.
func (c *Cluster) Dial(t testing.TB, i int) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(c.Nodes[i].Addr(), grpcopt.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Index returns the position in Nodes of the node with raft ID id, or -1.
func (c *Cluster) Index(id uint64) int {
	for i, n := range c.Nodes {
		if n.ID() == id {
			return i
		}
	}
	return -1
}

// FreeGossipAddr returns a loopback host:port free for both TCP and UDP.
func FreeGossipAddr(t testing.TB) string { return testaddr.Gossip(t) }

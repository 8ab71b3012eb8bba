package node_test

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// gossipCut cuts nodes' gossip (UDP and TCP) off from every other node's, leaving their raft
// and client traffic alone.
type gossipCut struct {
	mu  sync.Mutex
	off map[string]bool // gossip addresses cut off
}

func (g *gossipCut) set(addr string, off bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.off == nil {
		g.off = map[string]bool{}
	}
	g.off[addr] = off
}

func (g *gossipCut) blocked(from, to string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return from != to && (g.off[from] || g.off[to])
}

// wrap returns node.Config.GossipTransport for the node gossiping on self.
func (g *gossipCut) wrap(self string) func(memberlist.Transport) memberlist.Transport {
	return func(t memberlist.Transport) memberlist.Transport { return &cutTransport{cut: g, self: self, t: t} }
}

// cutTransport implements only memberlist.Transport (memberlist adapts it), so every packet
// and connection goes through WriteTo and DialTimeout.
type cutTransport struct {
	cut  *gossipCut
	self string
	t    memberlist.Transport
}

func (c *cutTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return c.t.FinalAdvertiseAddr(ip, port)
}

func (c *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if c.cut.blocked(c.self, addr) {
		return time.Now(), nil // sent, and lost on the way
	}
	return c.t.WriteTo(b, addr)
}

func (c *cutTransport) PacketCh() <-chan *memberlist.Packet { return c.t.PacketCh() }

func (c *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if c.cut.blocked(c.self, addr) {
		return nil, fmt.Errorf("dial %s: connection refused (gossip cut)", addr)
	}
	return c.t.DialTimeout(addr, timeout)
}

func (c *cutTransport) StreamCh() <-chan net.Conn { return c.t.StreamCh() }
func (c *cutTransport) Shutdown() error           { return c.t.Shutdown() }

// TestPlacementKeepsVoterGossipLost: in a three-node cluster, one node's gossip is cut off
// (its raft traffic is not). The others hold it dead, for longer than DeadAfter, but the
// leaders of its shards still hear it: it keeps its replicas, since with no fourth node to
// take them its removal would leave every shard it votes in two voters, one failure from
// unavailable, for nothing. Appends go on through every node.
func TestPlacementKeepsVoterGossipLost(t *testing.T) {
	var cut gossipCut
	gossip := make([]string, 3)
	c := testnode.Start(t, 3, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			placementConfig(cfg)
			gossip[i] = cfg.Gossip
			cfg.GossipTransport = cut.wrap(cfg.Gossip)
		}})
	waitPlaced(t, c, "initial placement", voters(3, 0))
	const x = 2
	xID := c.Nodes[x].ID()

	cut.set(gossip[x], true)
	t.Logf("cut node %d's gossip off", x+1)
	testnode.WaitFor(t, placementWait, "the others hold the cut node dead", func() string {
		for _, i := range []int{0, 1} {
			for _, m := range c.Nodes[i].Members() {
				if m.NodeID == xID && m.Alive {
					return fmt.Sprintf("node %d holds node %d alive", i+1, x+1)
				}
			}
		}
		return ""
	})
	deadAt := time.Now()
	// DeadAfter and then some placement rounds: the cut node keeps its votes throughout.
	for time.Since(deadAt) < placementDead+20*placementInterval {
		for _, s := range c.Shards() {
			if len(s.Voters) != 3 || !slices.Contains(s.Voters, xID) {
				t.Fatalf("%v, %v after gossip held node %d dead: want its three voters kept, node %d among them",
					s, time.Since(deadAt).Round(time.Millisecond), x+1, x+1)
			}
		}
		time.Sleep(placementInterval)
	}
	for i := range c.Nodes {
		placementAppendRead(t, c, i, (i+1)%len(c.Nodes), fmt.Sprintf("gossip-cut-%d", i))
	}
}

// Package testgossip cuts gossip links between members on loopback, for tests: a Net drops the
// gossip (UDP and TCP) sent from one bind address to another while the pair is cut, or while
// either end is isolated, and leaves every other traffic (raft's, clients') alone.
package testgossip

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Net is the links between members' gossip bind addresses. The zero value has every link up.
type Net struct {
	mu  sync.Mutex
	cut map[[2]string]bool
	off map[string]bool
}

// Cut cuts (or heals) the link between a and b, both ways.
func (n *Net) Cut(a, b string, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cut == nil {
		n.cut = map[[2]string]bool{}
	}
	n.cut[[2]string{a, b}], n.cut[[2]string{b, a}] = cut, cut
}

// Isolate cuts (or heals) every link of addr.
func (n *Net) Isolate(addr string, off bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.off == nil {
		n.off = map[string]bool{}
	}
	n.off[addr] = off
}

func (n *Net) blocked(from, to string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return from != to && (n.cut[[2]string{from, to}] || n.off[from] || n.off[to])
}

// Wrap returns the transport wrapper (membership.Config.WrapTransport,
// node.Config.GossipTransport) of the member gossiping on self.
func (n *Net) Wrap(self string) func(memberlist.Transport) memberlist.Transport {
	return func(t memberlist.Transport) memberlist.Transport { return &transport{net: n, self: self, t: t} }
}

// transport is one member's side of a Net: it implements only memberlist.Transport
// (memberlist adapts it), so every packet and connection goes through WriteTo and DialTimeout.
type transport struct {
	net  *Net
	self string
	t    memberlist.Transport
}

func (l *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return l.t.FinalAdvertiseAddr(ip, port)
}

func (l *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	if l.net.blocked(l.self, addr) {
		return time.Now(), nil // sent, and lost on the way
	}
	return l.t.WriteTo(b, addr)
}

func (l *transport) PacketCh() <-chan *memberlist.Packet { return l.t.PacketCh() }

func (l *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if l.net.blocked(l.self, addr) {
		time.Sleep(timeout)
		return nil, fmt.Errorf("dial %s: i/o timeout (cut)", addr)
	}
	return l.t.DialTimeout(addr, timeout)
}

func (l *transport) StreamCh() <-chan net.Conn { return l.t.StreamCh() }
func (l *transport) Shutdown() error           { return l.t.Shutdown() }

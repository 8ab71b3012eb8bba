// Package testaddr finds free loopback addresses for tests that start real
// servers. It imports nothing of shoal, so every package's tests can use it.
package testaddr

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
)

// Gossip returns a 127.0.0.1 host:port whose port is free for both TCP and
// UDP at the time of the call, as a memberlist bind address needs.
//
// The port is drawn below the kernel's ephemeral range. A port the kernel
// handed out for ":0" and that was released is ephemeral: until the server
// binds it, the kernel may give it to any outgoing connection on the machine
// as its source port (test packages run in parallel and connect a lot), and
// the server then fails with "address already in use".
// A port is also never handed out twice in one test binary: a test may draw the addresses of
// several servers before it starts any.
func Gossip(t testing.TB) string {
	t.Helper()
	lo, hi := gossipRange()
	handedMu.Lock()
	defer handedMu.Unlock()
	for range 200 {
		port := lo + rand.IntN(hi-lo)
		if handed[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		handed[port] = true
		return addr
	}
	t.Fatalf("testaddr: no port in [%d, %d) free for both TCP and UDP", lo, hi)
	return ""
}

var (
	handedMu sync.Mutex
	handed   = map[int]bool{}
)

// gossipRange returns the ports Gossip draws from: [11000, 20000), or up to
// the start of the kernel's ephemeral range when that is lower. Ports below
// 11000 are left to the servers people run by hand (7400 and up), and the
// multi-process tests of internal/e2e draw theirs from [20000, 32000).
func gossipRange() (lo, hi int) {
	lo, hi = 11000, 20000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first, last int
		if _, err := fmt.Sscan(string(b), &first, &last); err == nil && first > lo+1000 {
			hi = min(hi, first)
		}
	}
	return lo, hi
}

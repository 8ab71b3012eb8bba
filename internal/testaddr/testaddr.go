// Package testaddr finds free loopback addresses for tests that start real
// servers. It imports nothing of shoal, so every package's tests can use it.
package testaddr

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
)

// Gossip returns a 127.0.0.1 host:port whose port is free for both TCP and
// UDP at the time of the call, as a memberlist bind address needs.
func Gossip(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Ports(t, 1)[0]))
}

// Ports returns n distinct ports on 127.0.0.1 that are free for TCP and UDP
// (a gossip port needs both) at the time of the call.
//
// They are drawn below the kernel's ephemeral range. A port the kernel handed
// out for ":0" and that was released is ephemeral: until the server binds it
// (or binds it again, after a restart), the kernel may give it to any socket
// of the test packages running alongside, an outgoing connection's source
// port included, and the server then fails with "address already in use".
// A port is also never handed out twice while the test binary runs, by this
// binary or by another one using this package (the test packages that go test
// runs in parallel): a test may draw the ports of several servers before it
// starts any, or restart a server on its port, and a port free at the draw is
// not free once another test binary bound it in between.
func Ports(t testing.TB, n int) []int {
	t.Helper()
	lo, hi := portRange()
	handedMu.Lock()
	defer handedMu.Unlock()
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("testaddr: no %d ports free for both TCP and UDP in [%d, %d)", n, lo, hi)
		}
		port := lo + rand.IntN(hi-lo)
		if handed[port] || !reserve(port) {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			l.Close()
			continue
		}
		closers = append(closers, l, u)
		ports = append(ports, port)
		handed[port] = true
	}
	return ports
}

var (
	handedMu sync.Mutex
	handed   = map[int]bool{} // ports Ports returned in this test binary
)

// portRange returns the ports Ports draws from: [11000, 32768), or up to the
// start of the kernel's ephemeral range when that is lower. Ports below 11000
// are left to the servers people run by hand (7400 and up).
func portRange() (lo, hi int) {
	lo, hi = 11000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first, last int
		if _, err := fmt.Sscan(string(b), &first, &last); err == nil && first > lo+1000 {
			hi = min(hi, first)
		}
	}
	return lo, hi
}

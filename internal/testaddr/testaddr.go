// Package testaddr finds free loopback addresses for tests that start real
// servers. It imports nothing of shoal, so every package's tests can use it.
package testaddr

import (
	"net"
	"testing"
)

// Gossip returns a 127.0.0.1 host:port whose port is free for both TCP and
// UDP at the time of the call, as a memberlist bind address needs.
func Gossip(t testing.TB) string {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return addr
	}
	t.Fatal("testaddr: no port free for both TCP and UDP")
	return ""
}

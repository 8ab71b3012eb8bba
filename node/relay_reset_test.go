package node_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// HTTP/2 frame types and flags (RFC 9113, section 6) that resetConn reads, and the error codes
// it resets streams with.
const (
	frameData      = 0x0
	frameHeaders   = 0x1
	frameRSTStream = 0x3
	flagEndStream  = 0x1

	errCodeInternal = 0x2
	errCodeCancel   = 0x8
)

// resetConn is a peer connection (plain HTTP/2, as the test nodes use) that can reset the
// streams the node dialled sends on, for the node that dialled, as a proxy between them or a
// failing connection may: gRPC answers a reset with a status of its code (CANCEL: CANCELLED,
// INTERNAL_ERROR: INTERNAL), not UNAVAILABLE. Read is called by one goroutine (gRPC's reader).
type resetConn struct {
	net.Conn
	addr string // dialled

	mu   sync.Mutex
	in   []byte          // read from Conn, not a whole frame yet
	out  []byte          // whole frames for Read
	open map[uint32]bool // streams that carried DATA and have not ended
	code uint32          // when set, the next frames read are preceded by a reset of every open stream
	done chan struct{}   // closed once armed streams were reset
}

func (c *resetConn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			c.mu.Unlock()
			return n, nil
		}
		c.mu.Unlock()
		buf := make([]byte, 32<<10)
		n, err := c.Conn.Read(buf)
		c.mu.Lock()
		c.take(buf[:n])
		empty := len(c.out) == 0
		c.mu.Unlock()
		if err != nil && empty {
			return 0, err
		}
	}
}

// take queues the whole frames of b for Read, after the resets an arming asked for; c.mu held.
func (c *resetConn) take(b []byte) {
	if c.code != 0 && len(c.open) > 0 {
		for id := range c.open {
			f := make([]byte, 13)
			f[2], f[3] = 4, frameRSTStream
			binary.BigEndian.PutUint32(f[5:], id)
			binary.BigEndian.PutUint32(f[9:], c.code)
			c.out = append(c.out, f...)
		}
		clear(c.open)
		c.code = 0
		close(c.done)
	}
	c.in = append(c.in, b...)
	for len(c.in) >= 9 {
		size := 9 + (int(c.in[0])<<16 | int(c.in[1])<<8 | int(c.in[2]))
		if len(c.in) < size {
			break
		}
		typ, flags, id := c.in[3], c.in[4], binary.BigEndian.Uint32(c.in[5:9])&0x7fffffff
		switch {
		case typ == frameRSTStream || (typ == frameData || typ == frameHeaders) && flags&flagEndStream != 0:
			delete(c.open, id)
		case typ == frameData && id != 0:
			c.open[id] = true
		}
		c.out = append(c.out, c.in[:size]...)
		c.in = c.in[size:]
	}
}

// arm has the next frames read be preceded by a reset with code of every stream open then,
// and returns a channel closed once they were; arm(0) disarms.
func (c *resetConn) arm(code uint32) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.code, c.done = code, make(chan struct{})
	return c.done
}

// resetNet wraps the peer dialers of test nodes with resetConns.
type resetNet struct {
	mu    sync.Mutex
	conns []*resetConn
}

// dialer returns a peer dialer that makes dial's connections resetConns.
func (rn *resetNet) dialer(dial func(context.Context, string) (net.Conn, error)) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		raw, err := dial(ctx, addr)
		if err != nil {
			return nil, err
		}
		c := &resetConn{Conn: raw, addr: addr, open: map[uint32]bool{}}
		rn.mu.Lock()
		rn.conns = append(rn.conns, c)
		rn.mu.Unlock()
		return c, nil
	}
}

// reset resets, with code, the streams open on the connections of other nodes to addr, and
// waits until one connection did (one with none open resets none); then it disarms the others.
func (rn *resetNet) reset(t *testing.T, addr string, code uint32) {
	t.Helper()
	rn.mu.Lock()
	var done []<-chan struct{}
	var armed []*resetConn
	for _, c := range rn.conns {
		if c.addr == addr {
			done = append(done, c.arm(code))
			armed = append(armed, c)
		}
	}
	rn.mu.Unlock()
	defer func() {
		for _, c := range armed {
			c.arm(0)
		}
	}()
	testnode.WaitFor(t, 5*time.Second, "a stream to the node reset", func() string {
		for _, d := range done {
			select {
			case <-d:
				return ""
			default:
			}
		}
		return fmt.Sprintf("%d connections armed, none reset", len(done))
	})
}

// subscriberCutFromLeader registers c's nodes on nw and dials two clients: a subscriber
// (endpoint 3 of nw) cut off from the node that leads shard, whose reads of the shard go
// through a follower, and a writer that reaches every node. It returns the leader's index.
func subscriberCutFromLeader(t *testing.T, c *testnode.Cluster, nw *testNet, shard uint32) (leader int, sub, writer *client.Client) {
	t.Helper()
	const clientEP = 3
	for i, n := range c.Nodes {
		nw.register(n.Addr(), i)
	}
	leader = shardLeader(t, c, shard)
	nw.cutLink(clientEP, leader)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var err error
	if sub, err = client.Dial(ctx, c.Addrs(), client.WithDialOptions(grpc.WithContextDialer(nw.dialer(clientEP)))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	if writer, err = client.Dial(ctx, c.Addrs()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Close() })
	return leader, sub, writer
}

// TestFollowRelayedSurvivesStreamReset: a subscription relayed by a follower to its shard's
// leader, whose stream from the leader is reset on the way (by a proxy or a connection
// failing: gRPC answers CANCELLED or INTERNAL, not UNAVAILABLE), goes on after its last event
// on the client's resubscription: the follower answered the reset's status as it came, which
// the client takes for the read's verdict, and the subscription ended with it.
func TestFollowRelayedSurvivesStreamReset(t *testing.T) {
	t.Parallel()
	nw, rn := newTestNet(), &resetNet{}
	c, _ := startFailoverCluster(t, func(i int, cfg *node.Config) { cfg.PeerDialer = rn.dialer(nw.dialer(i)) })
	const shard = 1
	// The subscriber cannot reach the leader: its subscription goes through a follower, which
	// relays it.
	leader, sc, cl := subscriberCutFromLeader(t, c, nw, shard)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		code uint32
	}{{"cancel", errCodeCancel}, {"internal", errCodeInternal}} {
		t.Run(tc.name, func(t *testing.T) {
			var stream string
			for i := 0; stream == ""; i++ {
				if name := fmt.Sprintf("reset-%s-%d", tc.name, i); ring.ShardOf(name, failoverShards) == shard {
					stream = name
				}
			}
			appendOne(t, cl, stream, "before")
			sub := collect(sc.Read(ctx, stream, client.Follow()))
			if f := next(t, sub, 10*time.Second); f.err != nil || f.ev.Type != "before" {
				t.Fatalf("first: %+v", f)
			}
			time.Sleep(1500 * time.Millisecond) // live, past a heartbeat
			rn.reset(t, c.Nodes[leader].Addr(), tc.code)
			appendOne(t, cl, stream, "after")
			if f := next(t, sub, 10*time.Second); f.err != nil || f.ev.Type != "after" {
				t.Fatalf("after the reset: got %q, %v; want the event appended", f.ev.Type, f.err)
			}
			quiet(t, sub, 100*time.Millisecond)
		})
	}
}

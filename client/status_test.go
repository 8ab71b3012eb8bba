package client

import (
	"context"
	"errors"
	"testing"
	"time"
)

// NodeStatus is answered by the node asked, every time, and by no other: when that node
// fails, the call fails rather than moving to another node (Status, which any node may
// answer, moves).
func TestNodeStatusAsksOneNode(t *testing.T) {
	fc := newFakeCluster(t, 3, 1)
	c := dial(t, fc, WithRetry(RetryPolicy{MaxElapsed: 200 * time.Millisecond, InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond}))
	ctx := testCtx(t)
	for range 2 {
		for _, n := range fc.nodes {
			st, err := c.NodeStatus(ctx, n.addr)
			if err != nil {
				t.Fatalf("NodeStatus(%s): %v", n.addr, err)
			}
			if st.GetNodeId() != n.id {
				t.Fatalf("NodeStatus(%s) answered by node %d, want %d", n.addr, st.GetNodeId(), n.id)
			}
		}
	}
	down := fc.nodes[1]
	down.setFault(func(_ context.Context, m string, _ int) error {
		if m == "Status" {
			return unavailable()
		}
		return nil
	})
	before := fc.nodes[0].count("Status") + fc.nodes[2].count("Status")
	if _, err := c.NodeStatus(ctx, down.addr); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NodeStatus of a node that does not answer = %v, want ErrUnavailable", err)
	}
	if after := fc.nodes[0].count("Status") + fc.nodes[2].count("Status"); after != before {
		t.Fatalf("NodeStatus of a node that does not answer asked the other nodes %d times", after-before)
	}
	if st, err := c.Status(ctx); err != nil || st.GetNodeId() == down.id {
		t.Fatalf("Status = %v, %v; want another node's answer", st, err)
	}
	if _, err := c.NodeStatus(ctx, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("NodeStatus without an address = %v, want ErrInvalidArgument", err)
	}
}

// SetReplication refuses a factor outside 1..7 before it sends anything, naming the range.
func TestSetReplicationRange(t *testing.T) {
	for _, r := range []int{0, -1, 8} {
		_, err := (&Client{}).SetReplication(context.Background(), r)
		var ie *InvalidArgumentError
		if !errors.As(err, &ie) || ie.Field != "replication" || ie.Limit != "1..7" {
			t.Fatalf("SetReplication(%d): %v, want an invalid argument naming 1..7", r, err)
		}
	}
}

package client

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

func (n *fakeNode) SetRetention(ctx context.Context, req *shoalv1.SetRetentionRequest) (*shoalv1.SetRetentionResponse, error) {
	if err := n.enter(ctx, "SetRetention", req); err != nil {
		return nil, err
	}
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retentionFault != nil {
		if err := c.retentionFault(req.Shard); err != nil {
			return nil, err
		}
	}
	if c.policies == nil {
		c.policies = map[uint32][]*shoalv1.RetentionPolicy{}
	}
	ps := slices.DeleteFunc(c.policies[req.Shard], func(p *shoalv1.RetentionPolicy) bool { return p.Prefix == req.Policy.Prefix })
	if !req.Remove {
		p := proto.CloneOf(req.Policy)
		p.SetUnixNano = time.Now().UnixNano()
		ps = append(ps, p)
		slices.SortFunc(ps, func(a, b *shoalv1.RetentionPolicy) int { return strings.Compare(a.Prefix, b.Prefix) })
	}
	c.policies[req.Shard] = ps
	return &shoalv1.SetRetentionResponse{Shard: req.Shard, Policies: uint32(len(ps))}, nil
}

func (n *fakeNode) Retention(ctx context.Context, req *shoalv1.RetentionRequest) (*shoalv1.RetentionResponse, error) {
	if err := n.enter(ctx, "Retention", req); err != nil {
		return nil, err
	}
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retentionReadFault != nil {
		if err := c.retentionReadFault(req.Shard); err != nil {
			return nil, err
		}
	}
	f, ok := c.formats[req.Shard]
	if !ok {
		f = retentionFormat
	}
	resp := &shoalv1.RetentionResponse{Shard: req.Shard, Format: f}
	for _, p := range c.policies[req.Shard] {
		resp.Policies = append(resp.Policies, proto.CloneOf(p))
	}
	return resp, nil
}

// TestRetentionPartial: a policy change refused by one shard reports in how many it was made
// (RetentionIncompleteError, wrapping the refusal), RetentionPolicies shows the policy in those
// only, and running the change again completes it.
func TestRetentionPartial(t *testing.T) {
	const shards = 4
	fc := newFakeCluster(t, 1, shards)
	fc.retentionFault = func(shard uint32) error {
		if shard == 2 {
			return status.Error(codes.InvalidArgument, "invalid argument: policies: shard 2 holds 64; remove one first (limit: at most 64 retention policies)")
		}
		return nil
	}
	c := dial(t, fc)
	ctx := context.Background()
	p := RetentionPolicy{Prefix: "order-", KeepLast: 3}
	err := c.SetRetention(ctx, p)
	var inc *RetentionIncompleteError
	if !errors.As(err, &inc) || inc.Done != shards-1 || inc.Shards != shards || inc.Shard != 2 || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("SetRetention refused by shard 2: %v, want a RetentionIncompleteError of 3 of 4 shards", err)
	}
	if !strings.Contains(err.Error(), "set in 3 of 4 shards") {
		t.Errorf("error %q does not say in how many shards", err)
	}
	ps, err := c.RetentionPolicies(ctx)
	if err != nil || len(ps) != 1 || ps[0].Shards != shards-1 || ps[0].Prefix != "order-" || ps[0].KeepLast != 3 {
		t.Fatalf("policies after a partial set: %+v, %v", ps, err)
	}

	fc.mu.Lock()
	fc.retentionFault = nil
	fc.mu.Unlock()
	if err := c.SetRetention(ctx, p); err != nil {
		t.Fatal(err)
	}
	// Another form of the prefix's policy in one shard: listed after the form most hold.
	fc.mu.Lock()
	fc.policies[0][0] = &shoalv1.RetentionPolicy{Prefix: "order-", KeepLast: 9, SetUnixNano: 1}
	fc.mu.Unlock()
	ps, err = c.RetentionPolicies(ctx)
	if err != nil || len(ps) != 2 || ps[0].KeepLast != 3 || ps[0].Shards != 3 || ps[1].KeepLast != 9 || ps[1].Shards != 1 ||
		!ps[1].Set.Equal(time.Unix(0, 1)) {
		t.Fatalf("policies with two forms of one prefix: %+v, %v", ps, err)
	}

	// Refused in every shard: nothing changed, and the refusal itself comes back.
	fc.mu.Lock()
	fc.retentionFault = func(uint32) error { return status.Error(codes.InvalidArgument, "no") }
	fc.mu.Unlock()
	if err := c.RemoveRetention(ctx, "order-"); errors.As(err, &inc) || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("RemoveRetention refused everywhere: %v, want the refusal", err)
	}
	// Unanswered in every shard: it may have been made anywhere.
	fc.mu.Lock()
	fc.retentionFault = func(uint32) error { return unavailable() }
	fc.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := c.RemoveRetention(sctx, "order-"); !errors.As(err, &inc) || inc.Done != 0 {
		t.Fatalf("RemoveRetention unanswered everywhere: %v, want a RetentionIncompleteError of 0 shards", err)
	}
}

// TestRetentionPoliciesUnread: shards that do not answer hide none of the others' policies,
// which come back with a RetentionUnreadError naming those shards; with no shard answering, or
// one below format 6, it fails without policies.
func TestRetentionPoliciesUnread(t *testing.T) {
	const shards = 4
	fc := newFakeCluster(t, 1, shards)
	c := dial(t, fc)
	ctx := context.Background()
	if err := c.SetRetention(ctx, RetentionPolicy{Prefix: "order-", KeepLast: 3}); err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.retentionReadFault = func(shard uint32) error {
		if shard%2 == 1 {
			return unavailable()
		}
		return nil
	}
	fc.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	ps, err := c.RetentionPolicies(sctx)
	var unread *RetentionUnreadError
	if !errors.As(err, &unread) || !slices.Equal(unread.Unread, []uint32{1, 3}) || unread.Shards != shards {
		t.Fatalf("policies with shards 1 and 3 unanswered: %v, want a RetentionUnreadError of shards 1 and 3", err)
	}
	if want := "retention policies read from 2 of 4 shards; shards 1 and 3 did not answer (their policies are not shown)"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to say %q", err, want)
	}
	if len(ps) != 1 || ps[0].Prefix != "order-" || ps[0].Shards != 2 {
		t.Fatalf("policies of the shards that answered: %+v, want order- in 2", ps)
	}

	fc.mu.Lock()
	fc.retentionReadFault = func(uint32) error { return unavailable() }
	fc.mu.Unlock()
	sctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if ps, err := c.RetentionPolicies(sctx); ps != nil || err == nil || errors.As(err, &unread) {
		t.Fatalf("policies with no shard answering: %+v, %v; want an error and none", ps, err)
	}

	fc.mu.Lock()
	fc.retentionReadFault = func(shard uint32) error {
		if shard == 3 {
			return unavailable()
		}
		return nil
	}
	fc.formats = map[uint32]uint64{1: 5}
	fc.mu.Unlock()
	sctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if ps, err := c.RetentionPolicies(sctx); ps != nil || !errors.Is(err, ErrShardFormat) {
		t.Fatalf("policies with shard 1 below format 6: %+v, %v; want ErrShardFormat", ps, err)
	}
}

func TestShardList(t *testing.T) {
	for _, tc := range []struct {
		shards []uint32
		want   string
	}{
		{[]uint32{3}, "shard 3"},
		{[]uint32{3, 7}, "shards 3 and 7"},
		{[]uint32{3, 7, 9}, "shards 3, 7 and 9"},
		{[]uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, "shards 0, 1, 2, 3, 4, 5, 6, 7 and 2 more"},
	} {
		if got := shardList(tc.shards); got != tc.want {
			t.Errorf("shardList(%v) = %q, want %q", tc.shards, got, tc.want)
		}
	}
}

// TestRetentionNeedsFormat: while a shard is below format 6, a policy change is refused with
// ErrShardFormat before any shard is changed.
func TestRetentionNeedsFormat(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	fc.formats = map[uint32]uint64{3: 5}
	c := dial(t, fc)
	err := c.SetRetention(context.Background(), RetentionPolicy{Prefix: "a", Deleted: true})
	if !errors.Is(err, ErrShardFormat) || !strings.Contains(err.Error(), "shard 3 is at format 5") {
		t.Fatalf("SetRetention with shard 3 at format 5: %v, want ErrShardFormat naming it", err)
	}
	if n := fc.nodes[0].count("SetRetention"); n != 0 {
		t.Fatalf("%d SetRetention calls made", n)
	}
}

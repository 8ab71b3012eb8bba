package node_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// TestRetentionPolicies runs three nodes whose shards' leaders apply retention policies every
// 100 ms: policies set through the client are held by every shard; each stream is truncated as
// the policy of its longest prefix says (keep-last, max-age, what deletes hid), again as it
// grows; a removed policy stops applying; a leader that fails over keeps applying them; and
// bad policies are refused by the client and the server, naming the field.
func TestRetentionPolicies(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	const shards = placementShards
	c := testnode.Start(t, 3, testnode.Options{Shards: shards, Replication: 3, Configure: func(i int, cfg *node.Config) {
		placementConfig(cfg)
		cfg.RetentionInterval = 100 * time.Millisecond
		cfg.RetentionMinAge = -1 // events just appended may go
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := client.Dial(ctx, c.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testnode.WaitMaxFormat(t, cl, 30*time.Second)
	waitPlaced(t, c, "replication 3", nil)

	// Refusals, by the client and by the server.
	for _, p := range []client.RetentionPolicy{
		{Prefix: "order-"},
		{Prefix: "$all", KeepLast: 1},
		{Prefix: "order-", MaxAge: time.Microsecond},
		{Prefix: "order-", MaxAge: -time.Hour},
		{Prefix: strings.Repeat("x", 513), KeepLast: 1},
	} {
		if err := cl.SetRetention(ctx, p); !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("SetRetention(%+v): %v, want ErrInvalidArgument", p, err)
		}
	}
	streams := shoalv1.NewStreamsClient(c.Dial(t, 0))
	for _, req := range []*shoalv1.SetRetentionRequest{
		{Shard: 0, Policy: &shoalv1.RetentionPolicy{Prefix: "a\x01", KeepLast: 1}},
		{Shard: 0, Policy: &shoalv1.RetentionPolicy{Prefix: "a"}},
		{Shard: 0, Policy: &shoalv1.RetentionPolicy{Prefix: "a", KeepLast: 1}, Remove: true},
		{Shard: shards, Policy: &shoalv1.RetentionPolicy{Prefix: "a", KeepLast: 1}},
	} {
		_, err := streams.SetRetention(ctx, req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "limit") {
			t.Errorf("SetRetention(%v): %v, want INVALID_ARGUMENT naming the limit", req, err)
		}
	}
	if ps, err := cl.RetentionPolicies(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("policies before any was set: %v, %v", ps, err)
	}

	appendN := func(stream string, n int) {
		t.Helper()
		evs := make([]client.Event, n)
		for i := range evs {
			evs[i] = client.Event{ID: uuid.Must(uuid.NewV7()), Type: "Step", Data: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		}
		if _, err := cl.Append(ctx, stream, client.Any, evs...); err != nil {
			t.Fatal(err)
		}
	}
	info := func(stream string) client.StreamInfo {
		t.Helper()
		s, err := cl.StreamInfo(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	waitFirst := func(stream string, first, hidden uint64) {
		t.Helper()
		testnode.WaitFor(t, 20*time.Second, fmt.Sprintf("%s from version %d with %d hidden events", stream, first, hidden), func() string {
			if s := info(stream); s.FirstVersion != first || s.HiddenEvents != hidden {
				return fmt.Sprintf("%s: versions %d..%d, %d hidden", stream, s.FirstVersion, s.LastVersion, s.HiddenEvents)
			}
			return ""
		})
	}
	orders := []string{"order-1", "order-2", "order-3", "order-4", "order-5", "order-6"}
	for _, s := range orders {
		appendN(s, 5)
	}
	appendN("order-vip-1", 5)
	appendN("keep-1", 5)
	appendN("cart-1", 3)
	if err := cl.Delete(ctx, "cart-1", client.Any); err != nil {
		t.Fatal(err)
	}
	// A one-off Retain's fn error ends the run: no call after it.
	enough := errors.New("enough")
	calls := 0
	err = cl.Retain(ctx, "", client.Retention{KeepLast: 1, Deleted: true, DryRun: true}, func(r client.Retained) error {
		calls++
		return enough
	})
	if !errors.Is(err, enough) || calls != 1 {
		t.Fatalf("Retain whose fn fails: %v after %d calls, want its error after 1", err, calls)
	}

	// The longer prefix first: a round between the two would otherwise apply order-'s policy
	// to order-vip-1, correctly, before order-vip-'s existed.
	for _, p := range []client.RetentionPolicy{
		{Prefix: "order-vip-", MaxAge: time.Hour},
		{Prefix: "order-", KeepLast: 2},
		{Prefix: "", Deleted: true},
	} {
		if err := cl.SetRetention(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := cl.RetentionPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`"" 0 0s true`, `"order-" 2 0s false`, `"order-vip-" 0 1h0m0s false`}
	if len(ps) != len(want) {
		t.Fatalf("policies %+v, want %v", ps, want)
	}
	for i, p := range ps {
		if got := fmt.Sprintf("%q %d %v %t", p.Prefix, p.KeepLast, p.MaxAge, p.Deleted); got != want[i] || p.Shards != shards ||
			time.Since(p.Set) > time.Minute {
			t.Errorf("policy %d: %s in %d shards set at %v, want %s in %d", i, got, p.Shards, p.Set, want[i], shards)
		}
	}

	// keep-last 2 of 5; order-vip-1 is max-age's, and nothing is an hour old; the deleted
	// stream loses what its delete hid; keep-1 has nothing to lose.
	for _, s := range orders {
		waitFirst(s, 3, 0)
	}
	testnode.WaitFor(t, 20*time.Second, "cart-1's hidden events removed", func() string {
		for s, err := range cl.ListStreams(ctx, "", client.StreamPrefix("cart-1"), client.IncludeDeletes()) {
			if err != nil {
				return err.Error()
			}
			if s.HiddenEvents != 0 {
				return fmt.Sprintf("%d hidden", s.HiddenEvents)
			}
		}
		return ""
	})
	if s := info("order-vip-1"); s.FirstVersion != 0 {
		t.Errorf("order-vip-1 truncated to %d by a policy that is not its own", s.FirstVersion)
	}
	if s := info("keep-1"); s.FirstVersion != 0 || s.LastVersion != 4 {
		t.Errorf("keep-1: versions %d..%d, want 0..4", s.FirstVersion, s.LastVersion)
	}

	// The policies go on applying as streams grow, and after their leaders fail over.
	appendN("order-1", 3)
	waitFirst("order-1", 6, 0)
	var leader uint64
	testnode.WaitFor(t, 10*time.Second, "a leader of order-2's shard", func() string {
		if leader = c.Shards()[ring.ShardOf("order-2", shards)].Leader; leader == 0 {
			return "none"
		}
		return ""
	})
	c.Stop(t, c.Index(leader))
	appendN("order-2", 4)
	waitFirst("order-2", 7, 0)

	// A shorter max-age takes all but the last event of order-vip-1.
	if err := cl.SetRetention(ctx, client.RetentionPolicy{Prefix: "order-vip-", MaxAge: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	waitFirst("order-vip-1", 4, 0)

	// Removed, order-'s policy stops applying: order-3 is then the "" policy's, which removes
	// only what deletes hid. A stream of order-3's shard that a delete hid shows a round ran.
	if err := cl.RemoveRetention(ctx, "order-"); err != nil {
		t.Fatal(err)
	}
	if err := cl.RemoveRetention(ctx, "order-"); err != nil {
		t.Fatalf("removing a removed policy: %v", err)
	}
	appendN("order-3", 4)
	marker := sameShard(t, "order-3", shards, "cart-")
	appendN(marker, 2)
	if err := cl.Delete(ctx, marker, client.Any); err != nil {
		t.Fatal(err)
	}
	testnode.WaitFor(t, 20*time.Second, marker+"'s hidden events removed", func() string {
		for s, err := range cl.ListStreams(ctx, "", client.StreamPrefix(marker), client.IncludeDeletes()) {
			if err != nil {
				return err.Error()
			}
			if s.Name == marker && s.HiddenEvents != 0 {
				return fmt.Sprintf("%d hidden", s.HiddenEvents)
			}
		}
		return ""
	})
	if s := info("order-3"); s.FirstVersion != 3 || s.LastVersion != 8 {
		t.Errorf("order-3 after its policy was removed: versions %d..%d, want 3..8", s.FirstVersion, s.LastVersion)
	}
	if ps, err := cl.RetentionPolicies(ctx); err != nil || len(ps) != 2 {
		t.Errorf("policies after a removal: %+v, %v", ps, err)
	}
}

// sameShard returns a stream name with prefix in the shard of stream.
func sameShard(t *testing.T, stream string, shards int, prefix string) string {
	t.Helper()
	want := ring.ShardOf(stream, uint32(shards))
	for i := range 10000 {
		if name := fmt.Sprintf("%s%d", prefix, i); ring.ShardOf(name, uint32(shards)) == want {
			return name
		}
	}
	t.Fatalf("no stream of prefix %s in shard %d", prefix, want)
	return ""
}

package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/ring"
)

// TestListStreams lists a three-node cluster's streams: merged across shards in name order, by
// prefix, after a name, up to a count, with and without deleted streams; each stream's state;
// one shard's listing from every node (forwarded to the leader, or stale from its own
// replica); the refusals; and, with two nodes down, a stale listing from the one left while a
// linearizable one is refused as unavailable.
func TestListStreams(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	start := time.Now() // the streams are younger than this test
	c, _ := startPlacementCluster(t, 3)
	waitPlaced(t, c, "replication 3", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, []string{c.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testnode.WaitMaxFormat(t, cl, placementWait)

	// More streams per shard than a client's page (256), so that listings go on past their
	// first pages.
	const accounts = 2200
	var live []string
	for i := range accounts {
		live = append(live, fmt.Sprintf("acct-%05d", i))
	}
	appended := make(map[string]client.AppendResult)
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan string)
	errs := make(chan error, 1)
	for range 32 {
		wg.Go(func() {
			for stream := range work {
				res, err := cl.Append(ctx, stream, client.NoStream, client.Event{Type: "Opened"})
				if err != nil {
					select {
					case errs <- fmt.Errorf("append to %s: %w", stream, err):
					default:
					}
					continue
				}
				mu.Lock()
				appended[stream] = res
				mu.Unlock()
			}
		})
	}
	for _, s := range live {
		work <- s
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	for _, s := range []string{"cart-a", "cart-b", "order-1"} {
		if _, err := cl.Append(ctx, s, client.NoStream, client.Event{Type: "A"}, client.Event{Type: "B"}, client.Event{Type: "C"}); err != nil {
			t.Fatal(err)
		}
	}
	before := time.Now()
	last, err := cl.Append(ctx, "order-1", client.Exact(2), client.Event{Type: "D"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Delete(ctx, "cart-a", client.Any); err != nil {
		t.Fatal(err)
	}
	if err := cl.Delete(ctx, "cart-b", client.Any, client.Tombstone()); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Truncate(ctx, "order-1", 2, client.Any); err != nil {
		t.Fatal(err)
	}
	live = append(live, "order-1")
	slices.Sort(live)

	list := func(after string, opts ...client.ReadOption) ([]string, []client.StreamInfo) {
		t.Helper()
		var names []string
		var infos []client.StreamInfo
		for s, err := range cl.ListStreams(ctx, after, opts...) {
			if err != nil {
				t.Fatalf("ListStreams(%q): %v", after, err)
			}
			names = append(names, s.Name)
			infos = append(infos, s)
		}
		return names, infos
	}
	names, infos := list("")
	if !slices.Equal(names, live) {
		t.Fatalf("ListStreams: %d names, want %d; first %q", len(names), len(live), names[:min(5, len(names))])
	}
	for _, s := range infos {
		want, ok := appended[s.Name]
		if !ok {
			continue
		}
		if s.State != client.StreamLive || s.FirstVersion != 0 || s.LastVersion != 0 || s.Events() != 1 ||
			s.LastPosition != want.Position || s.Shard != want.Shard || s.LastCreated.IsZero() {
			t.Fatalf("ListStreams: %+v; appended %+v", s, want)
		}
	}
	if got, _ := list("", client.StreamPrefix("acct-0100")); !slices.Equal(got, live[1000:1010]) {
		t.Fatalf("prefix acct-0100: %q", got)
	}
	if got, _ := list("acct-02195", client.StreamPrefix("acct-")); !slices.Equal(got, live[2196:2200]) {
		t.Fatalf("prefix acct- after acct-02195: %q", got)
	}
	if got, _ := list("acct-00999", client.Count(3)); !slices.Equal(got, live[1000:1003]) {
		t.Fatalf("3 after acct-00999: %q", got)
	}
	if got, _ := list("", client.StreamPrefix("cart-")); len(got) != 0 {
		t.Fatalf("live carts: %q, want none (deleted)", got)
	}
	_, carts := list("", client.StreamPrefix("cart-"), client.IncludeDeletes())
	for i, name := range []string{"cart-a", "cart-b"} {
		if len(carts) != 2 || carts[i].Name != name || carts[i].State != []client.StreamState{client.StreamDeleted, client.StreamTombstoned}[i] ||
			carts[i].FirstVersion != 3 || carts[i].LastVersion != 2 || carts[i].Events() != 0 || carts[i].HiddenEvents != 3 {
			t.Fatalf("carts with deletes: %+v", carts)
		}
	}

	info, err := cl.StreamInfo(ctx, "order-1")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != client.StreamLive || info.FirstVersion != 2 || info.LastVersion != 3 || !info.Truncated || info.Events() != 2 ||
		info.LastPosition != last.Position || info.LastCreated.Before(before.Add(-time.Second)) || info.LastCreated.After(time.Now().Add(time.Second)) {
		t.Fatalf("StreamInfo(order-1) = %+v; the last append %+v at %v", info, last, before)
	}
	if info, err := cl.StreamInfo(ctx, "cart-b"); err != nil || info.State != client.StreamTombstoned {
		t.Fatalf("StreamInfo(cart-b) = %+v, %v; want tombstoned", info, err)
	}
	// "acct-0000" is a prefix of ten streams, but no stream.
	if info, err := cl.StreamInfo(ctx, "acct-0000"); !errors.Is(err, client.ErrStreamNotFound) {
		t.Fatalf("StreamInfo(acct-0000) = %+v, %v; want ErrStreamNotFound", info, err)
	}

	// One shard's listing from every node: each forwards it to the leader or, stale, serves it
	// from its own replica once that applied everything. The server sends pages of 256.
	sh := ring.ShardOf("acct-00000", placementShards)
	var want []string
	for _, s := range live {
		if ring.ShardOf(s, placementShards) == sh {
			want = append(want, s)
		}
	}
	if len(want) <= 256 {
		t.Fatalf("shard %d holds %d streams, want more than a page", sh, len(want))
	}
	for i := range c.Nodes {
		streams := shoalv1.NewStreamsClient(c.Dial(t, i))
		shardList := func(stale bool, count uint64) (names []string, pages int, err error) {
			rs, err := streams.ListStreams(ctx, &shoalv1.ListStreamsRequest{Shard: sh, AllowStale: stale, Count: count})
			if err != nil {
				return nil, 0, err
			}
			for {
				page, err := rs.Recv()
				if err == io.EOF {
					return names, pages, nil
				}
				if err != nil {
					return nil, 0, err
				}
				pages++
				for _, s := range page.GetStreams() {
					names = append(names, s.GetName())
				}
			}
		}
		got, pages, err := shardList(false, 0)
		if err != nil || !slices.Equal(got, want) || pages != (len(want)+255)/256 {
			t.Fatalf("node %d: shard %d's listing: %d names in %d pages, %v; want %d", i+1, sh, len(got), pages, err, len(want))
		}
		if got, pages, err := shardList(false, 260); err != nil || !slices.Equal(got, want[:260]) || pages != 2 {
			t.Fatalf("node %d: 260 of shard %d's streams: %d names in %d pages, %v", i+1, sh, len(got), pages, err)
		}
		testnode.WaitFor(t, placementWait, fmt.Sprintf("node %d's stale listing of shard %d", i+1, sh), func() string {
			got, _, err := shardList(true, 0)
			if err != nil || !slices.Equal(got, want) {
				return fmt.Sprintf("%d names, %v", len(got), err)
			}
			return ""
		})
	}

	// Refusals name the field and the limit, in the client before anything is sent and in the
	// server.
	long := strings.Repeat("p", 513)
	for _, tc := range []struct {
		after string
		opts  []client.ReadOption
		field string
	}{
		{"", []client.ReadOption{client.StreamPrefix(long)}, "StreamPrefix"},
		{long, nil, "after"},
		{"\xff", nil, "after"},
	} {
		var ie *client.InvalidArgumentError
		for _, err := range cl.ListStreams(ctx, tc.after, tc.opts...) {
			if !errors.As(err, &ie) || ie.Field != tc.field {
				t.Fatalf("listing with a bad %s: %v, want an invalid argument naming it", tc.field, err)
			}
		}
		if ie == nil {
			t.Fatalf("listing with a bad %s: no error", tc.field)
		}
	}
	if err := cl.Retain(ctx, "acct-", client.Retention{}, nil); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("Retain with a policy that removes nothing: %v, want ErrInvalidArgument", err)
	}
	// Retention keeps events younger than the minimum age (Config.RetentionMinAge, a minute by
	// default): the deleted streams, just written, are not due.
	calls := 0
	err = cl.Retain(ctx, "", client.Retention{KeepLast: 1, Deleted: true, DryRun: true}, func(r client.Retained) error {
		calls++
		return nil
	})
	if err != nil || calls != 0 && time.Since(start) < 50*time.Second {
		t.Fatalf("Retain of streams younger than the minimum age: %v after %d calls, want none", err, calls)
	}
	if _, err := cl.StreamInfo(ctx, long); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("StreamInfo of a 513-byte name: %v, want ErrInvalidArgument", err)
	}
	streams := shoalv1.NewStreamsClient(c.Dial(t, 0))
	wantInvalid := func(call string, err error, field string) {
		t.Helper()
		st := status.Convert(err)
		var f *shoalv1.InvalidField
		for _, d := range st.Details() {
			if d, ok := d.(*shoalv1.InvalidField); ok {
				f = d
			}
		}
		if st.Code() != codes.InvalidArgument || f == nil || f.GetField() != field || f.GetLimit() == "" {
			t.Fatalf("%s: %v, want INVALID_ARGUMENT naming %s and its limit", call, err, field)
		}
	}
	for _, tc := range []struct {
		req   *shoalv1.ListStreamsRequest
		field string
	}{
		{&shoalv1.ListStreamsRequest{Shard: placementShards}, "shard"},
		{&shoalv1.ListStreamsRequest{Prefix: long}, "prefix"},
		{&shoalv1.ListStreamsRequest{After: long}, "after"},
		{&shoalv1.ListStreamsRequest{MaxStalenessMs: 10}, "max_staleness_ms"},
	} {
		rs, err := streams.ListStreams(ctx, tc.req)
		if err == nil {
			_, err = rs.Recv()
		}
		wantInvalid(fmt.Sprintf("ListStreams(%v)", tc.req), err, tc.field)
	}

	keep := &shoalv1.RetentionPolicy{KeepLast: 1}
	for _, tc := range []struct {
		req   *shoalv1.RetentionCutsRequest
		field string
	}{
		{&shoalv1.RetentionCutsRequest{Shard: placementShards, Policy: keep}, "shard"},
		{&shoalv1.RetentionCutsRequest{}, "policy"},
		{&shoalv1.RetentionCutsRequest{Policy: &shoalv1.RetentionPolicy{Prefix: long, KeepLast: 1}}, "prefix"},
		{&shoalv1.RetentionCutsRequest{Policy: keep, After: long}, "after"},
		{&shoalv1.RetentionCutsRequest{Policy: keep, Count: 1025}, "count"},
	} {
		_, err := streams.RetentionCuts(ctx, tc.req)
		wantInvalid(fmt.Sprintf("RetentionCuts(%v)", tc.req), err, tc.field)
	}

	// Two nodes down: no shard has a quorum. The node left serves a stale listing of what it
	// holds, and refuses a linearizable one as unavailable.
	c.Stop(t, 1)
	c.Stop(t, 2)
	if got, _ := list("", client.Stale()); !slices.Equal(got, live) {
		t.Fatalf("stale listing with two nodes down: %d names, want %d", len(got), len(live))
	}
	rs, err := streams.ListStreams(ctx, &shoalv1.ListStreamsRequest{Shard: sh})
	if err == nil {
		_, err = rs.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("linearizable listing with two nodes down: %v, want UNAVAILABLE", err)
	}
}

package node

import (
	"context"
	"testing"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// TestReadHoldsNoIteratorWhileSending: a stream read of several pages holds no Pebble iterator
// while its caller has not taken a page (it held one for the whole read: a caller that kept the
// stream open without reading kept the memtables and tables of its time), and still reads one
// state of the stream: events appended meanwhile are not in it.
func TestReadHoldsNoIteratorWhileSending(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const total = 3 * pageEvents / 2
	for range 3 {
		types := make([]string, total/3)
		for i := range types {
			types[i] = "T"
		}
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: events(types...)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.db.Flush(); err != nil { // the events in tables, whose iterators Pebble counts
		t.Fatal(err)
	}
	id, _ := n.shardOf("s")
	var got []uint64
	out := &pagesOut[shoalv1.ReadResponse]{ctx: ctx, send: func(p *shoalv1.ReadResponse) error {
		if len(got) == 0 {
			// The caller has not taken the first page yet: more is appended, and the read
			// holds no table iterator meanwhile.
			if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: events("late")}); err != nil {
				t.Error(err)
			}
			// Others' iterators (a compaction, the node's own reads) come and go: the read's
			// would stay.
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				iters := n.db.Metrics().TableIters
				if iters == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%d table iterators open while the read waits for its caller, want 0", iters)
					break
				}
			}
		}
		for _, e := range p.Events {
			got = append(got, e.Version)
		}
		return nil
	}}
	if err := n.read(&shoalv1.ReadRequest{Stream: "s"}, id, staleness{}, out); err != nil {
		t.Fatal(err)
	}
	if len(got) != total {
		t.Fatalf("read %d events, want the %d there when it began", len(got), total)
	}
	for i, v := range got {
		if v != uint64(i) {
			t.Fatalf("event %d at version %d", i, v)
		}
	}

	// Reads of several pages, each way, with and without a count (the stream now holds
	// total+1 events).
	last := uint64(total)
	for _, tc := range []struct {
		req      *shoalv1.ReadRequest
		first, n uint64
		backward bool
	}{
		{&shoalv1.ReadRequest{Stream: "s"}, 0, total + 1, false},
		{&shoalv1.ReadRequest{Stream: "s", FromVersion: 7, Count: pageEvents + 3}, 7, pageEvents + 3, false},
		{&shoalv1.ReadRequest{Stream: "s", Backward: true, FromEnd: true}, last, total + 1, true},
		{&shoalv1.ReadRequest{Stream: "s", Backward: true, FromVersion: last - 5, Count: pageEvents + 1}, last - 5, pageEvents + 1, true},
		{&shoalv1.ReadRequest{Stream: "s", WholeHistory: true, FromVersion: 2}, 2, total - 1, false},
		{&shoalv1.ReadRequest{Stream: "s", Count: pageEvents}, 0, pageEvents, false},
		{&shoalv1.ReadRequest{Stream: "s", Backward: true, FromVersion: pageEvents - 1}, pageEvents - 1, pageEvents, true}, // a full page down to version 0
	} {
		evs, err := readAll(ctx, c, tc.req)
		if err != nil || uint64(len(evs)) != tc.n {
			t.Fatalf("read %v: %d events, %v; want %d", tc.req, len(evs), err, tc.n)
		}
		for i, e := range evs {
			want := tc.first + uint64(i)
			if tc.backward {
				want = tc.first - uint64(i)
			}
			if e.Version != want {
				t.Fatalf("read %v: event %d at version %d, want %d", tc.req, i, e.Version, want)
			}
		}
	}
}

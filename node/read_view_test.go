package node

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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

// A stream read whose caller does not take a page for readViewHold releases its view, and ends
// ABORTED once the page is taken; one whose last page was slow ends as it would have.
func TestReadViewReleasedWhileCallerStalls(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.readViewHold = 100 * time.Millisecond
	n := startNode(t, cfg)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	types := make([]string, pageEvents+10)
	for i := range types {
		types[i] = "T"
	}
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: events(types...)}); err != nil {
		t.Fatal(err)
	}
	id, _ := n.shardOf("s")
	before := n.db.Metrics().Snapshots.Count
	waitReleased := func() {
		for deadline := time.Now().Add(5 * time.Second); n.db.Metrics().Snapshots.Count > before; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d snapshots open while the caller stalls, want %d", n.db.Metrics().Snapshots.Count, before)
			}
		}
	}

	pages := 0
	stalled := &pagesOut[shoalv1.ReadResponse]{ctx: ctx, send: func(*shoalv1.ReadResponse) error {
		if pages++; pages == 1 {
			if got := n.db.Metrics().Snapshots.Count; got != before+1 {
				t.Errorf("%d snapshots open while the read sends its first page, want %d", got, before+1)
			}
			waitReleased()
		}
		return nil
	}}
	err := n.read(&shoalv1.ReadRequest{Stream: "s"}, id, staleness{}, stalled)
	if status.Code(err) != codes.Aborted || pages != 1 {
		t.Fatalf("read whose caller stalled on its first page: %d pages, %v; want 1 page and ABORTED", pages, err)
	}

	// The stall on the last page: nothing more to read, so the read ends well.
	pages = 0
	last := &pagesOut[shoalv1.ReadResponse]{ctx: ctx, send: func(*shoalv1.ReadResponse) error {
		if pages++; pages == 2 {
			waitReleased()
		}
		return nil
	}}
	if err := n.read(&shoalv1.ReadRequest{Stream: "s"}, id, staleness{}, last); err != nil || pages != 2 {
		t.Fatalf("read whose caller stalled on its last page: %d pages, %v; want 2 and no error", pages, err)
	}
	waitReleased()
	// So is one whose last page is full and ends its count, forwards or backwards down to 0.
	for _, req := range []*shoalv1.ReadRequest{
		{Stream: "s", Count: pageEvents},
		{Stream: "s", Backward: true, FromVersion: pageEvents - 1},
	} {
		pages = 0
		if err := n.read(req, id, staleness{}, stalled); err != nil || pages != 1 {
			t.Fatalf("read %v whose caller stalled on its only page: %d pages, %v; want 1 and no error", req, pages, err)
		}
	}
}

// The Go client reads on after a stall that released the server's view: every event once, in
// order.
func TestClientReadsOnAfterViewReleased(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.readViewHold = 100 * time.Millisecond
	n := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, []string{n.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// More than the connection's flow-control windows hold (gRPC grows them up to 16 MiB), so
	// that the server's Send waits for the caller.
	const total, size = 1600, 24 << 10
	data := bytes.Repeat([]byte("x"), size)
	for i := 0; i < total; i += 100 {
		evs := make([]client.Event, 100)
		for j := range evs {
			evs[j] = client.Event{Type: "T", Data: data}
		}
		if _, err := cl.Append(ctx, "s", client.Any, evs...); err != nil {
			t.Fatal(err)
		}
	}
	want := uint64(0)
	for ev, err := range cl.Read(ctx, "s") {
		if err != nil {
			t.Fatalf("after %d events: %v", want, err)
		}
		if ev.Version != want {
			t.Fatalf("event at version %d, want %d", ev.Version, want)
		}
		if want == 0 {
			time.Sleep(time.Second) // the server's view is released meanwhile
		}
		want++
	}
	if want != total {
		t.Fatalf("read %d events, want %d", want, total)
	}
	if got := testutil.ToFloat64(n.metrics.reads.WithLabelValues("stream", "aborted")); got < 1 {
		t.Fatalf("no read ended aborted (the view was never released): the test stalled nothing")
	}
}

package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// TestPageBytes: a page of a stream read, a subscription or a shard read stays within pageBytes
// of payload, but for an event larger than that, which goes alone; every event comes once, in
// order.
func TestPageBytes(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// 600 KiB, 600 KiB, 1.5 MiB, then 20 events of 100 KiB.
	sizes := []int{600 << 10, 600 << 10, 3 << 19}
	for range 20 {
		sizes = append(sizes, 100<<10)
	}
	types := make([]string, len(sizes))
	for i := range sizes {
		types[i] = fmt.Sprint("E", i)
	}
	evs := events(types...)
	for i, size := range sizes {
		evs[i].Data = make([]byte, size)
	}
	resp, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "paged", Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	shard := resp.Shard
	check := func(what string, pages [][]*shoalv1.RecordedEvent) {
		t.Helper()
		var types []string
		for i, p := range pages {
			size := 0
			for _, e := range p {
				size += len(e.Data) + len(e.Metadata) + len(e.Type) + len(e.Stream) + len(e.ContentType) + 64
				types = append(types, e.Type)
			}
			if len(p) > 1 && size > pageBytes {
				t.Errorf("%s: page %d holds %d events of %d bytes, over %d", what, i, len(p), size, pageBytes)
			}
		}
		if want := fmt.Sprint(typesOf(evs)); fmt.Sprint(types) != want {
			t.Errorf("%s: events %v, want %v", what, types, want)
		}
		if len(pages) < 5 {
			t.Errorf("%s: %d pages", what, len(pages))
		}
	}

	rs, err := c.Read(ctx, &shoalv1.ReadRequest{Stream: "paged"})
	if err != nil {
		t.Fatal(err)
	}
	var pages [][]*shoalv1.RecordedEvent
	for _, p := range recvMsgs(t, rs) {
		pages = append(pages, p.Events)
	}
	check("stream read", pages)

	sub, err := c.Read(ctx, &shoalv1.ReadRequest{Stream: "paged", Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	pages = nil
	for got := 0; got < len(evs); {
		p, err := sub.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) > 0 {
			pages = append(pages, p.Events)
			got += len(p.Events)
		}
	}
	check("subscription", pages)

	pages = nil
	for from := uint64(0); ; {
		ss, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: shard, FromPosition: from})
		if err != nil {
			t.Fatal(err)
		}
		got := recvMsgs(t, ss)
		for _, p := range got {
			if len(p.Events) > 0 {
				pages = append(pages, p.Events)
			}
		}
		if len(got) == 0 || got[len(got)-1].NextPosition == from {
			break
		}
		from = got[len(got)-1].NextPosition
	}
	check("shard read", pages)
}

func typesOf(evs []*shoalv1.EventData) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// recvMsgs receives every message of s until its end (recvEvents flattens a read's pages;
// these tests count them).
func recvMsgs[T any](t *testing.T, s grpc.ServerStreamingClient[T]) []*T {
	t.Helper()
	var out []*T
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
}

package query

import (
	"context"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
)

// TestPageBoundedInBytes: a page ends before PageSize events once its events hold
// MaxPageBytes, and the next page starts right after its last event.
func TestPageBoundedInBytes(t *testing.T) {
	c := testnode.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n, size = 8, 3 << 20 // 24 MiB: the first 6 events pass 16 MiB
	var shard uint32
	for i := range n {
		res, err := c.Append(ctx, "page-bytes", client.Any, client.Event{Type: "Big", Data: make([]byte, size)})
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		shard = res.Shard
	}
	src := newClientSource(Config{Client: c})
	var got []uint64
	from := uint64(0)
	for pages := 0; len(got) < n; pages++ {
		if pages == n {
			t.Fatalf("%d pages read %d events (versions %v), want %d", pages, len(got), got, n)
		}
		evs, next, err := src.ReadShard(ctx, shard, from, DefaultPageSize, 0, func() {})
		if err != nil {
			t.Fatal(err)
		}
		bytes := 0
		for _, ev := range evs {
			bytes += len(ev.Data)
			if ev.Stream == "page-bytes" {
				got = append(got, ev.Version)
			}
		}
		if pages == 0 && (len(evs) != 6 || bytes > MaxPageBytes+size) {
			t.Fatalf("first page: %d events, %d bytes; want 6, ending once past %d bytes", len(evs), bytes, MaxPageBytes)
		}
		from = next
	}
	for i, v := range got {
		if v != uint64(i) {
			t.Fatalf("versions read %v: an event skipped or repeated between pages", got)
		}
	}
}

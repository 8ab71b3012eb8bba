package node

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// TestAppendPastDeadlineWritesNothing: an append whose caller's deadline passed before it was
// proposed is answered DEADLINE_EXCEEDED and writes nothing (an AppendPipeline item whose
// timeout_ms ran out while it queued runs the same way).
func TestAppendPastDeadlineWritesNothing(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err := n.streams.Append(expired, &shoalv1.AppendRequest{Stream: "late", Events: events("expired")})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("append past its deadline: %v, want DeadlineExceeded", err)
	}
	// Proposals of a shard apply in order: once this one is written, the first would be too.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.streams.Append(ctx, &shoalv1.AppendRequest{Stream: "late", Events: events("marker")}); err != nil {
		t.Fatal(err)
	}
	evs, err := readAll(ctx, shoalv1.NewStreamsClient(dial(t, n.Addr())), &shoalv1.ReadRequest{Stream: "late"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Type != "marker" {
		var types []string
		for _, e := range evs {
			types = append(types, e.Type)
		}
		t.Fatalf("stream holds %v, want only the marker", types)
	}
}

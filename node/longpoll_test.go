package node_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/google/uuid"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
)

// TestLongPollAnswersBeforeDeadline: a long poll on a quiet shard whose wait outlasts its
// caller's deadline answers, with an empty page and the position to resume from, before the
// deadline: it waited the whole wait, and the caller got DEADLINE_EXCEEDED and no position.
func TestLongPollAnswersBeforeDeadline(t *testing.T) {
	t.Parallel()
	c := testnode.Start(t, 1, testnode.Options{Shards: 1, Replication: 1})
	sc := shoalv1.NewStreamsClient(c.Dial(t, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	rs, err := sc.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: 0, WaitMs: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	p, err := rs.Recv()
	if err != nil || len(p.GetEvents()) != 0 {
		t.Fatalf("long poll of 10 s under a 2 s deadline: %v after %v (%d events); want an empty page before the deadline",
			err, time.Since(start).Round(time.Millisecond), len(p.GetEvents()))
	}
	t.Logf("answered after %v, next position %d", time.Since(start).Round(time.Millisecond), p.NextPosition)
}

// TestLongPollAnswersWithinWait: a long poll whose filter matches nothing in a backlog that
// takes longer to read than its wait answers once the wait is up, with a page whose
// next_position passes what it skipped so far, and then reads on as a plain read does. Before,
// it read the whole backlog first, and a caller whose deadline was shorter than that read never
// got a position to resume from.
func TestLongPollAnswersWithinWait(t *testing.T) {
	c := testnode.Start(t, 1, testnode.Options{Shards: 1, Replication: 1})
	sc := shoalv1.NewStreamsClient(c.Dial(t, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// 20,000 entries take some tens of milliseconds to read, far more than the 1 ms wait.
	var end uint64
	for range 2 {
		evs := make([]*shoalv1.EventData, 10_000)
		for i := range evs {
			id := uuid.New()
			evs[i] = &shoalv1.EventData{Id: id[:], Type: "A"}
		}
		r, err := sc.Append(ctx, &shoalv1.AppendRequest{Stream: "backlog", Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		end = r.LastPosition + 1
	}
	rs, err := sc.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: 0, EventTypes: []string{"Z"}, WaitMs: 1})
	if err != nil {
		t.Fatal(err)
	}
	first, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Events) != 0 || first.NextPosition == 0 || first.NextPosition >= end {
		t.Fatalf("first page of the long poll: %d events, next_position %d; want none, and a position short of the log's end %d (the wait was up before the read got there)",
			len(first.Events), first.NextPosition, end)
	}
	last := first.NextPosition
	for {
		p, err := rs.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
		if len(p.Events) != 0 || p.NextPosition < last {
			t.Fatalf("a later page: %d events, next_position %d after %d", len(p.Events), p.NextPosition, last)
		}
		last = p.NextPosition
	}
	if last != end {
		t.Fatalf("the long poll ended at position %d, want the log's end %d", last, end)
	}
}

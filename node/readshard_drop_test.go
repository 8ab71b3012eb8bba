package node

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// pagesOut is a server stream of T (a read's, a listing's) that hands each message to send.
type pagesOut[T any] struct {
	grpc.ServerStream
	ctx  context.Context
	send func(*T) error
}

func (s *pagesOut[T]) Context() context.Context { return s.ctx }
func (s *pagesOut[T]) Send(p *T) error          { return s.send(p) }

// TestReadShardEndsWhenReplicaDropped: a plain shard read whose replica is dropped from under
// it after its first page (placement moved the shard away: its keys are deleted, and the state
// machine the read holds still reports its last position) ends, with UNAVAILABLE: it did not
// reach the shard's end (it ended OK, and its reader took the shard for read to its end). It
// must not take the position it cannot read past for a long truncated run that goes on, and
// send empty pages at the same position until the caller gives up.
func TestReadShardEndsWhenReplicaDropped(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx := context.Background()
	for range 3 {
		evs := events(make([]string, 200)...)
		for _, e := range evs {
			e.Type = "T"
		}
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Expected: anyVersion(), Events: evs}); err != nil {
			t.Fatal(err)
		}
	}
	id, _ := n.shardOf("s")
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var pages, empty atomic.Int32
	out := &pagesOut[shoalv1.ReadShardResponse]{ctx: rctx, send: func(p *shoalv1.ReadShardResponse) error {
		if pages.Add(1) == 1 {
			if err := n.dropReplica(id, 0); err != nil {
				t.Errorf("drop: %v", err)
			}
		}
		if len(p.Events) == 0 && empty.Add(1) >= 100 {
			cancel() // the read would go on for good
		}
		return nil
	}}
	err := n.readShard(&shoalv1.ReadShardRequest{Shard: id}, staleness{}, out)
	if rctx.Err() != nil || empty.Load() > 1 {
		t.Fatalf("read over a dropped replica: %d pages, %d empty (%v), want it to end", pages.Load(), empty.Load(), err)
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "left this node") {
		t.Fatalf("read over a dropped replica ended with %v, want UNAVAILABLE: the replica left this node", err)
	}
}

// TestListStreamsEndsWhenReplicaDropped: a listing whose replica is dropped from under it after
// its first page ends with UNAVAILABLE, not OK as if the shard had no more streams.
func TestListStreamsEndsWhenReplicaDropped(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx := context.Background()
	id, _ := n.shardOf("s")
	for i, made := 0, 0; made < pageEvents+10; i++ {
		name := fmt.Sprintf("s-%d", i)
		if s, _ := n.shardOf(name); s != id {
			continue
		}
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: name, Expected: anyVersion(), Events: events("e")}); err != nil {
			t.Fatal(err)
		}
		made++
	}
	var pages atomic.Int32
	out := &pagesOut[shoalv1.ListStreamsResponse]{ctx: ctx, send: func(p *shoalv1.ListStreamsResponse) error {
		if pages.Add(1) == 1 {
			if err := n.dropReplica(id, 0); err != nil {
				t.Errorf("drop: %v", err)
			}
		}
		return nil
	}}
	err := n.listStreams(&shoalv1.ListStreamsRequest{Shard: id}, staleness{}, out)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "left this node") {
		t.Fatalf("listing over a dropped replica ended with %v after %d pages, want UNAVAILABLE: the replica left this node", err, pages.Load())
	}
}

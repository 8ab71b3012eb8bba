package client

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// followInto ranges over a followed read in a goroutine, sending its events to the returned
// channel until ctx ends.
func followInto(ctx context.Context, t *testing.T, seq func(func(RecordedEvent, error) bool)) <-chan RecordedEvent {
	ch := make(chan RecordedEvent, 100)
	go func() {
		for ev, err := range seq {
			if err != nil && ctx.Err() == nil {
				t.Errorf("subscription: %v", err)
				return
			}
			ch <- ev
		}
	}()
	return ch
}

func expectVersions(t *testing.T, ch <-chan RecordedEvent, from, to uint64) {
	t.Helper()
	for v := from; v <= to; v++ {
		select {
		case ev := <-ch:
			if ev.Version != v {
				t.Fatalf("got version %d, want %d", ev.Version, v)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("version %d did not arrive", v)
		}
	}
	select {
	case ev := <-ch:
		t.Fatalf("unexpected version %d", ev.Version)
	case <-time.After(50 * time.Millisecond):
	}
}

func appendN(t *testing.T, c *Client, stream string, n int) {
	t.Helper()
	for i := range n {
		if _, err := c.Append(testCtx(t), stream, Any, Event{Type: fmt.Sprint("e", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFollowPollsOlderServers: a server from before subscriptions ends a followed read at the
// stream's end; the client polls it and yields each event once.
func TestFollowPollsOlderServers(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	appendN(t, c, "s", 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := followInto(ctx, t, c.Read(ctx, "s", Follow()))
	expectVersions(t, ch, 0, 1)
	appendN(t, c, "s", 3)
	expectVersions(t, ch, 2, 4)
	if n := fc.nodes[0].count("Read"); n < 3 {
		t.Fatalf("%d reads, want the client to have polled", n)
	}
	// Such a server says a stream that does not exist yet is not found: poll it too.
	later := followInto(ctx, t, c.Read(ctx, "later", Follow()))
	time.Sleep(100 * time.Millisecond)
	appendN(t, c, "later", 2)
	expectVersions(t, later, 0, 1)
}

// TestFollowStalledServer: a live subscription whose server goes silent (no heartbeat) is
// taken for hung and resumed on another node after its last event.
func TestFollowStalledServer(t *testing.T) {
	defer func(d time.Duration) { followStall = d }(followStall)
	followStall = 300 * time.Millisecond
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	appendN(t, c, "s", 2)
	hung := make(chan struct{})
	fc.nodes[0].mu.Lock()
	fc.nodes[0].follow = func(req *shoalv1.ReadRequest, srv grpc.ServerStreamingServer[shoalv1.ReadResponse]) error {
		// Serve what there is, say caught up, then hang.
		fc.mu.Lock()
		evs := fc.streams[req.Stream][req.FromVersion:]
		fc.mu.Unlock()
		if err := srv.Send(&shoalv1.ReadResponse{Events: evs, CaughtUp: true, NextVersion: req.FromVersion + uint64(len(evs))}); err != nil {
			return err
		}
		close(hung)
		<-srv.Context().Done()
		return srv.Context().Err()
	}
	fc.nodes[0].mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ended atomic.Pointer[error]
	ch := make(chan RecordedEvent, 100)
	go func() {
		for ev, err := range c.Read(ctx, "s", Follow()) {
			if err != nil {
				ended.Store(&err)
				return
			}
			ch <- ev
		}
	}()
	expectVersions(t, ch, 0, 1)
	<-hung
	appendN(t, c, "s", 2)
	expectVersions(t, ch, 2, 3) // from node 2, which the client moved to
	if n := fc.nodes[1].count("Read"); n == 0 {
		t.Fatal("the subscription did not move to the other node")
	}
	// Ended by its caller, the subscription says so, not the stall it recovered from.
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for ended.Load() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if p := ended.Load(); p == nil || *p != context.Canceled {
		t.Fatalf("the subscription cancelled after it recovered ended with %v, want context.Canceled alone", ended.Load())
	}
}

// TestFollowFromEndResumesAtTheEnd: a subscription from the end whose first server said where
// the end was, and failed before any event, resumes there, whatever FromVersion said before
// FromEnd: it resumed at that version instead, and skipped the events before it.
func TestFollowFromEndResumesAtTheEnd(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	appendN(t, c, "s", 3)
	var calls atomic.Int32
	resumed := make(chan *shoalv1.ReadRequest, 1)
	fc.nodes[0].mu.Lock()
	fc.nodes[0].follow = func(req *shoalv1.ReadRequest, srv grpc.ServerStreamingServer[shoalv1.ReadResponse]) error {
		if calls.Add(1) == 1 {
			// The end resolved (versions 0..2 exist), an event appended, then the server fails.
			if err := srv.Send(&shoalv1.ReadResponse{CaughtUp: true, NextVersion: 3}); err != nil {
				return err
			}
			fc.mu.Lock()
			ev := proto.Clone(fc.streams[req.Stream][2]).(*shoalv1.RecordedEvent)
			id := uuid.New()
			ev.Id, ev.Version = id[:], 3
			fc.streams[req.Stream] = append(fc.streams[req.Stream], ev)
			fc.mu.Unlock()
			return unavailable()
		}
		select {
		case resumed <- proto.Clone(req).(*shoalv1.ReadRequest):
		default:
		}
		fc.mu.Lock()
		evs := fc.streams[req.Stream]
		evs = evs[min(req.FromVersion, uint64(len(evs))):]
		fc.mu.Unlock()
		if err := srv.Send(&shoalv1.ReadResponse{Events: evs, CaughtUp: true, NextVersion: req.FromVersion + uint64(len(evs))}); err != nil {
			return err
		}
		<-srv.Context().Done()
		return srv.Context().Err()
	}
	fc.nodes[0].mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := followInto(ctx, t, c.Read(ctx, "s", FromVersion(100), FromEnd(), Follow()))
	expectVersions(t, ch, 3, 3)
	if req := <-resumed; req.FromVersion != 3 || req.FromEnd {
		t.Fatalf("resumed from version %d (from end %v), want 3, where the first server said the end was", req.FromVersion, req.FromEnd)
	}
}

// TestFollowStallKeepsServerAnswer: a server's answer that comes as the stall timer fires (here:
// once the timer cancelled the attempt) is the read's answer, not the stall's retry.
func TestFollowStallKeepsServerAnswer(t *testing.T) {
	defer func(d time.Duration) { followStall = d }(followStall)
	followStall = 50 * time.Millisecond
	answer := status.Error(codes.FailedPrecondition, "stream deleted")
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"server answer", answer, answer},
		{"cancelled", status.Error(codes.Canceled, "context canceled"), errFollowStalled},
		{"page", nil, errFollowStalled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := &subscription{ctx: ctx, cancel: cancel, live: time.Now()}
			_, err := recvPage(s, nil, func() (*shoalv1.ReadResponse, error) {
				<-ctx.Done() // the timer fired
				return &shoalv1.ReadResponse{}, tc.err
			})
			if err != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

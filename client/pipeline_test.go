package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// TestAppendsUsePipeline checks that appends travel over one AppendPipeline
// stream per node, and that concurrent appends get their own results.
func TestAppendsUsePipeline(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("s-%d", i)
			for v := range 5 {
				r, err := c.Append(ctx, stream, Any, Event{Type: "A"})
				if err != nil || r.LastVersion != uint64(v) {
					t.Errorf("%s: append %d: %+v, %v", stream, v, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	n := fc.nodes[0]
	if got := n.count("AppendPipeline"); got != 1 {
		t.Errorf("AppendPipeline streams: %d, want 1", got)
	}
	if got := n.count("Append"); got != 100 {
		t.Errorf("appends served: %d, want 100", got)
	}
}

// TestPipelineFallsBackToUnary checks that a server without AppendPipeline
// (an older version) gets unary Appends.
func TestPipelineFallsBackToUnary(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	fc.unary = true
	c := dial(t, fc)
	for v := range 3 {
		r, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"})
		if err != nil || r.LastVersion != uint64(v) {
			t.Fatalf("append %d: %+v, %v", v, r, err)
		}
	}
	if st := c.Stats(); st.Retries != 0 {
		t.Errorf("retries: %d, want 0 (the fallback is not a failure)", st.Retries)
	}
}

// TestPipelineBreakRetries stops the leader while an append waits on its
// stream: the append fails over to the new leader, and the next append opens
// a new stream.
func TestPipelineBreakRetries(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	entered := make(chan struct{})
	var once sync.Once
	fc.nodes[0].setFault(func(ctx context.Context, m string, k int) error {
		if m == "Append" {
			once.Do(func() { close(entered) })
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := c.Append(testCtx(t), "s", NoStream, Event{Type: "A"})
		done <- err
	}()
	<-entered
	fc.setLeader(2)
	fc.nodes[0].srv.Stop()
	if err := <-done; err != nil {
		t.Fatalf("append across the break: %v", err)
	}
	r, err := c.Append(testCtx(t), "s", Exact(0), Event{Type: "B"})
	if err != nil || r.LastVersion != 1 {
		t.Fatalf("append after the break: %+v, %v", r, err)
	}
	if got := fc.nodes[1].count("AppendPipeline"); got != 1 {
		t.Errorf("streams to the new leader: %d, want 1", got)
	}
}

// TestPipelineCancelReachesServer checks that a caller who stops waiting has
// its append cancelled on the server, as a unary call would be.
func TestPipelineCancelReachesServer(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	entered, stopped := make(chan struct{}), make(chan error, 1)
	fc.nodes[0].setFault(func(ctx context.Context, m string, k int) error {
		if m == "Append" && k == 1 {
			close(entered)
			<-ctx.Done()
			stopped <- ctx.Err()
			return ctx.Err()
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background()) // no deadline: only the cancel can end it
	done := make(chan error, 1)
	go func() {
		_, err := c.Append(ctx, "s", Any, Event{Type: "A"})
		done <- err
	}()
	<-entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Append after cancel: %v, want context.Canceled", err)
	}
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		t.Fatalf("server-side context: %v, want context.Canceled", err)
	}
	if got := fc.nodes[0].count("cancel"); got != 1 {
		t.Errorf("cancels received: %d, want 1", got)
	}
}

// TestPipelineOpenHonoursDeadline checks that an append whose node does not
// answer the connection returns when its context ends, not when the
// connection attempt gives up.
func TestPipelineOpenHonoursDeadline(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var conns []net.Conn // accepted and never answered: the HTTP/2 handshake hangs
	var mu sync.Mutex
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: time.Minute, Backoff: backoff.DefaultConfig}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := &appendPipe{streams: shoalv1.NewStreamsClient(conn)}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := p.append(ctx, &shoalv1.AppendRequest{Stream: "s"})
		done <- err
	}()
	select {
	case err := <-done:
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("append to a silent node: %v, want DeadlineExceeded", err)
		}
		if mayHaveApplied(err) {
			t.Fatalf("append that ended while its stream opened: %v may have been applied", err)
		}
	case <-time.After(30 * time.Second): // the connection attempt alone may take a minute
		t.Fatal("append outlived its context while the stream was being opened")
	}
}

// TestPipelineStreamEndIsNoVerdict: an append in flight when its stream ends is retried
// whatever status ended the stream (here Internal, as a proxy's reset gives), not failed with
// it: the server may have applied it, and here did; the retry finds it as a duplicate. The
// append whose arrival ended the stream is retried too.
func TestPipelineStreamEndIsNoVerdict(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	entered := make(chan struct{})
	fc.nodes[0].setFault(func(ctx context.Context, m string, k int) error {
		if m == "Append" && k == 1 {
			close(entered)
			time.Sleep(100 * time.Millisecond) // applied after the stream ended
		}
		return nil
	})
	fc.nodes[0].setItemFault(func(k int) error {
		if k == 2 {
			return status.Error(codes.Internal, "fake: stream reset")
		}
		return nil
	})
	done := make(chan error, 1)
	var first AppendResult
	go func() {
		var err error
		first, err = c.Append(testCtx(t), "s", NoStream, Event{Type: "A"})
		done <- err
	}()
	<-entered
	if _, err := c.Append(testCtx(t), "t", NoStream, Event{Type: "B"}); err != nil {
		t.Fatalf("the append that ended the stream: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the append in flight when the stream ended: %v", err)
	}
	if !first.Duplicate {
		t.Errorf("the append in flight: %+v, want the duplicate of what the server applied", first)
	}
	fc.mu.Lock()
	n := len(fc.streams["s"])
	fc.mu.Unlock()
	if n != 1 {
		t.Errorf("stream s holds %d events, want 1", n)
	}
}

// TestPipelineUnderSmallSendLimit: with a send limit (MaxCallSendMsgSize) below the pipeline's
// message size, appends that fit the limit one by one succeed, though together, or with the
// pipeline's framing, they do not; an append over the limit fails at once, as a unary call
// does, rather than being retried as the same message until the retry budget ends. Neither
// counts against the healthy node's breaker.
func TestPipelineUnderSmallSendLimit(t *testing.T) {
	const limit = 64 << 10
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc, WithDialOptions(grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(limit))))
	ctx := testCtx(t)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 8 { // 8 × 40 KiB: one message would be over the limit
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Append(ctx, "s", Any, Event{Type: "A", Data: bytes.Repeat([]byte{byte(i)}, 40<<10)}); err != nil {
				t.Errorf("append %d of 40 KiB: %v", i, err)
			}
		}()
	}
	wg.Wait()
	// Within the limit as a request, over it with the pipeline's framing.
	if _, err := c.Append(ctx, "s", Any, Event{Type: "A", Data: make([]byte, limit-40)}); err != nil {
		t.Errorf("append just within the limit: %v", err)
	}
	_, err := c.Append(ctx, "s", Any, Event{Type: "A", Data: make([]byte, limit+1)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("append over the limit: %v, want ResourceExhausted", err)
	}
	st := c.Stats()
	t.Logf("took %v, stats %+v, events %d", time.Since(start), st, fc.stored("s"))
	if st.BreakerTrips != 0 {
		t.Errorf("breaker trips: %d, want 0 (the node is healthy)", st.BreakerTrips)
	}
	// Each append may fail once in the pipeline before its node goes unary; without that,
	// the same messages were retried hundreds of times.
	if st.Retries > 20 {
		t.Errorf("%d retries for 10 appends: appends were retried as the same message instead of fitting the limit", st.Retries)
	}
}

// TestPipelineSizeRefusalKeepsSentAppendsUncertain: a pipeline stream that ends over a size
// limit (RESOURCE_EXHAUSTED) after an earlier message's append reached the server leaves that
// append's outcome unknown, even when the unary attempts after it are all refused: the
// server may have run it. Before, every pending call went unary as if nothing was sent, and
// the refusals ended it as if nothing was written.
func TestPipelineSizeRefusalKeepsSentAppendsUncertain(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	n := fc.nodes[0]
	release := make(chan struct{})
	n.setFault(func(ctx context.Context, method string, k int) error {
		switch {
		case method == "Append" && k == 1: // the pipelined attempt: applied, answered never
			select {
			case <-release:
			case <-ctx.Done():
			}
			return errLoseAck
		case method == "Append":
			return statusWith(codes.Unavailable, "fake: not leader", &shoalv1.NotLeader{Shard: 0}) // no leader known
		}
		return nil
	})
	n.setItemFault(func(k int) error {
		if k == 2 {
			return status.Error(codes.ResourceExhausted, "grpc: received message larger than max (5000000 vs. 4194304)")
		}
		return nil
	})
	done := make(chan error, 1)
	go func() {
		actx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := c.Append(actx, "s", Any, Event{Type: "A"})
		done <- err
	}()
	for n.count("Append") == 0 {
		time.Sleep(time.Millisecond)
	}
	bctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	c.Append(bctx, "t", Any, Event{Type: "B"}) // its message ends the stream
	close(release)
	if err := <-done; !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("append sent before the stream's size refusal, then refused: %v, want ErrOutcomeUnknown", err)
	}
}

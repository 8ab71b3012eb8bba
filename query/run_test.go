package query

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shoaldb/shoal/client"
)

// waitQuickly calls WaitForAppend for r with a 5 s deadline and fails t if it took more than
// a second: it must answer at once, not when its ctx ends.
func waitQuickly(t *testing.T, p *Projection, r client.AppendResult) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := p.WaitForAppend(ctx, r)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("WaitForAppend(%+v) took %v (%v): it waited for its ctx rather than answer", r, d, err)
	}
	return err
}

// TestWaitForAfterRunFailed: once Run stopped on a handler error, WaitForAppend for an event
// not applied returns at once with an error that is ErrNotRunning and carries Run's
// *HandlerError, and one already waiting is woken with it, where both waited until their ctx
// ended and answered context.DeadlineExceeded, hiding the cause. What was applied before
// still answers nil, and a new Run makes it wait again.
func TestWaitForAfterRunFailed(t *testing.T) {
	src := newFakeSource(1, 2)
	src.add(20)
	poison := src.shards[0][12]
	fail := true
	h := HandlerFunc(func(ctx context.Context, b *Batch, ev client.RecordedEvent) error {
		if fail && ev.ID == poison.ID {
			return errors.New("boom")
		}
		return countingHandler(ctx, b, ev)
	})
	p, err := open(testConfig(vfs.NewMem(), h), src)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	later := client.AppendResult{Shard: 0, Position: 15, LastPosition: 15}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pending := make(chan error, 1)
	go func() { pending <- p.WaitForAppend(ctx, later) }()
	time.Sleep(20 * time.Millisecond) // let it wait (had it not, it still must see the stop)

	runErr := p.Run(context.Background())
	var he *HandlerError
	if !errors.As(runErr, &he) {
		t.Fatalf("Run = %v, want a HandlerError", runErr)
	}
	check := func(what string, err error) {
		t.Helper()
		var got *HandlerError
		if !errors.Is(err, ErrNotRunning) || !errors.As(err, &got) || got != he {
			t.Fatalf("%s = %v, want ErrNotRunning wrapping Run's %v", what, err, runErr)
		}
	}
	select {
	case err := <-pending:
		check("WaitForAppend waiting when Run failed", err)
	case <-time.After(time.Second):
		t.Fatal("WaitForAppend waiting when Run failed was not woken")
	}
	check("WaitForAppend after Run failed", waitQuickly(t, p, later))
	if err := waitQuickly(t, p, client.AppendResult{Position: 3, LastPosition: 3}); err != nil {
		t.Fatalf("WaitForAppend of an applied event after Run failed = %v, want nil", err)
	}

	// Running again (the handler mended), it waits and is answered by the commit.
	fail = false
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	runInBackground(runCtx, p, done)
	if err := p.WaitForAppend(ctx, later); err != nil {
		t.Fatalf("WaitForAppend during a new Run = %v", err)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

// TestWaitForAfterRunStopped: once Run returned as its context ended, WaitFor for what it has
// not applied returns ErrNotRunning at once, without wrapping the context's error (which a
// caller would take for the end of its own wait).
func TestWaitForAfterRunStopped(t *testing.T) {
	p := caughtUpProjection(t) // Run cancelled
	defer p.Close()
	err := waitQuickly(t, p, client.AppendResult{Shard: 1, Position: 1 << 40, LastPosition: 1 << 40})
	if !errors.Is(err, ErrNotRunning) || errors.Is(err, context.Canceled) {
		t.Fatalf("WaitForAppend after Run stopped = %v, want ErrNotRunning alone", err)
	}
}

// TestWaitForBeforeRun: before the first Run, WaitFor waits (it may be called while Run
// starts) and is answered by Run's commit.
func TestWaitForBeforeRun(t *testing.T) {
	src := newFakeSource(1, 9)
	want := src.add(5)
	p, err := open(testConfig(vfs.NewMem(), HandlerFunc(countingHandler)), src)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pending := make(chan error, 1)
	go func() { pending <- p.WaitFor(ctx, 0, want[0]) }()
	runUntil(t, p, want)
	if err := <-pending; err != nil {
		t.Fatalf("WaitFor called before Run = %v", err)
	}
}

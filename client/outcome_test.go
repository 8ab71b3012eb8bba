package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/google/uuid"
	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// A write whose retries end tells its caller whether an attempt may have been applied: wrapped
// in ErrOutcomeUnknown when one may have (its answer lost, a timeout, a proposal the server lost
// track of), and the plain failure when every attempt was refused before anything was proposed
// (a shard without a leader, a node starting). Either way it still matches ErrUnavailable.
func TestWriteOutcomeWhenRetriesEnd(t *testing.T) {
	noLeader := statusWith(codes.Unavailable, "shard 0 has no leader (quorum lost?)", &shoalv1.NotLeader{Shard: 0})
	for _, tc := range []struct {
		name    string
		first   error // the first attempt's answer; every later one is noLeader
		unknown bool
	}{
		{"every attempt refused", noLeader, false},
		{"node starting, then refused", status.Error(codes.Unavailable, "node n1 is starting (joining its cluster, reopening its shards); try another node"), false},
		{"node shutting down, then refused", status.Error(codes.Unavailable, "node is shutting down"), false},
		{"answer lost, then refused", unavailable(), true},
		{"attempt timed out, then refused", status.Error(codes.DeadlineExceeded, "deadline"), true},
		{"stream reset, then refused", status.Error(codes.Internal, "stream terminated by RST_STREAM"), true},
		{"proposal not committed, then refused", statusWith(codes.Unavailable,
			"shard 0 has no leader (quorum lost?): proposal not committed within 10s", &shoalv1.NotLeader{Shard: 0}), true},
	} {
		for _, op := range []string{"Append", "Delete"} {
			t.Run(op+"/"+tc.name, func(t *testing.T) {
				fc := newFakeCluster(t, 1, 1)
				c := dial(t, fc, WithRetry(RetryPolicy{MaxElapsed: 200 * time.Millisecond, InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond}))
				ctx := testCtx(t)
				if _, err := c.Append(ctx, "s", NoStream, Event{Type: "A"}); err != nil {
					t.Fatal(err)
				}
				var later atomic.Bool
				fc.nodes[0].setFault(func(_ context.Context, m string, _ int) error {
					if m != op {
						return nil
					}
					if !later.Swap(true) {
						return tc.first
					}
					return noLeader
				})
				var err error
				if op == "Append" {
					_, err = c.Append(ctx, "s", Any, Event{Type: "B"})
				} else {
					err = c.Delete(ctx, "s", Exact(0)) // retried like an append
				}
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("%s = %v, want ErrUnavailable", op, err)
				}
				if got := errors.Is(err, ErrOutcomeUnknown); got != tc.unknown {
					t.Fatalf("%s = %v; ErrOutcomeUnknown: %v, want %v", op, err, got, tc.unknown)
				}
				var oe *OutcomeUnknownError
				if tc.unknown && (!errors.As(err, &oe) || oe.Attempts < 2) {
					t.Fatalf("%s = %v, want an *OutcomeUnknownError after its retries", op, err)
				}
			})
		}
	}
}

// A write whose caller's context ends while an attempt is under way may have been applied; one
// whose context would end before its next attempt, after refusals, was not.
func TestWriteOutcomeWhenContextEnds(t *testing.T) {
	noLeader := statusWith(codes.Unavailable, "shard 0 has no leader (quorum lost?)", &shoalv1.NotLeader{Shard: 0})
	for _, tc := range []struct {
		name    string
		fault   func(ctx context.Context) error
		unknown bool
	}{
		{"attempt under way", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, true},
		// A backoff of up to an hour: the call ends after the first refusal, its next attempt
		// due after the deadline, and no attempt is under way when the deadline passes.
		{"every attempt refused", func(context.Context) error { return noLeader }, false},
	} {
		for _, op := range []string{"Append", "Delete"} {
			t.Run(op+"/"+tc.name, func(t *testing.T) {
				fc := newFakeCluster(t, 1, 1)
				c := dial(t, fc, WithRetry(RetryPolicy{MaxElapsed: 10 * time.Hour, InitialInterval: time.Hour, MaxInterval: time.Hour}))
				if _, err := c.Append(testCtx(t), "s", NoStream, Event{Type: "A"}); err != nil {
					t.Fatal(err)
				}
				fc.nodes[0].setFault(func(ctx context.Context, m string, _ int) error {
					if m != op {
						return nil
					}
					return tc.fault(ctx)
				})
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				var err error
				if op == "Append" {
					_, err = c.Append(ctx, "s", Any, Event{Type: "B"})
				} else {
					err = c.Delete(ctx, "s", Any) // not repeated once it may have been applied
				}
				if got := errors.Is(err, ErrOutcomeUnknown); got != tc.unknown {
					t.Fatalf("%s = %v; ErrOutcomeUnknown: %v, want %v", op, err, got, tc.unknown)
				}
				if !tc.unknown && !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("%s = %v, want context.DeadlineExceeded", op, err)
				}
			})
		}
	}
}

// appendAsync appends one event to stream "s" in its own goroutine; the channel gets its error.
func appendAsync(c *Client) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := c.Append(context.Background(), "s", Any, Event{Type: "A"})
		errc <- err
	}()
	return errc
}

// stored returns how many events the fake cluster holds in stream.
func (fc *fakeCluster) stored(stream string) int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.streams[stream])
}

// An append whose attempt was applied and answered with a lost acknowledgement, when the client
// is closed while the call waits to try again, or while an attempt is in flight, fails with
// ErrOutcomeUnknown (and ErrClosed): a bare ErrClosed said nothing was written.
func TestCloseAfterAppliedAttemptIsUnknown(t *testing.T) {
	t.Run("waiting to retry", func(t *testing.T) {
		fc := newFakeCluster(t, 1, 1)
		fc.mu.Lock()
		fc.unary = true
		fc.mu.Unlock()
		c := dial(t, fc, WithRetry(RetryPolicy{MaxElapsed: time.Hour, InitialInterval: 2 * time.Second, MaxInterval: 2 * time.Second}))
		fc.nodes[0].setFault(func(_ context.Context, m string, _ int) error {
			if m == "Append" {
				return errLoseAck
			}
			return nil
		})
		errc := appendAsync(c)
		for fc.stored("s") == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // into the backoff
		c.Close()
		if err := <-errc; !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrClosed) {
			t.Fatalf("append applied, then the client closed: %v, want ErrOutcomeUnknown and ErrClosed", err)
		}
	})
	t.Run("in flight", func(t *testing.T) {
		fc := newFakeCluster(t, 1, 1)
		c := dial(t, fc)
		applied := make(chan struct{})
		fc.nodes[0].setFault(func(ctx context.Context, m string, _ int) error {
			if m == "Append" {
				close(applied)
				<-ctx.Done()
				return errLoseAck
			}
			return nil
		})
		errc := appendAsync(c)
		<-applied
		c.Close()
		if err := <-errc; !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("append under way when the client closed: %v, want ErrOutcomeUnknown", err)
		}
	})
}

// An append whose first attempt was applied (its answer lost) and whose retries are then
// refused by every node as another cluster's (a cluster created again at the same addresses)
// fails with ErrOutcomeUnknown: the refusal says nothing of the first attempt.
func TestRefusalAfterUncertainAppendIsUnknown(t *testing.T) {
	fc := newFakeCluster(t, 2, 1)
	fc.mu.Lock()
	fc.unary = true
	fc.mu.Unlock()
	c := dial(t, fc)
	wc := shoalv1.WrongClusterError("fake: another cluster", "other", "fake")
	for i, nd := range fc.nodes {
		nd.setFault(func(_ context.Context, m string, k int) error {
			switch {
			case m != "Append":
				return nil
			case i == 0 && k == 1:
				return errLoseAck
			}
			return wc
		})
	}
	_, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"})
	if fc.stored("s") != 1 || !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrWrongCluster) {
		t.Fatalf("append applied, then refused as another cluster's: %v (%d stored), want ErrOutcomeUnknown and ErrWrongCluster", err, fc.stored("s"))
	}
}

// A delete expecting any version is not repeated after an older server's answer that its
// proposal did not commit in time (a NotLeader detail, as a refusal has): it may have been
// applied, and a repeat would answer not-found for the caller's own delete.
func TestDeleteAnyNotRepeatedAfterProposalLost(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	c := dial(t, fc)
	if _, err := c.Append(testCtx(t), "s", NoStream, Event{Type: "A"}); err != nil {
		t.Fatal(err)
	}
	lost := statusWith(codes.Unavailable, "shard 0 has no leader (quorum lost?): proposal not committed within 10s", &shoalv1.NotLeader{Shard: 0})
	fc.nodes[0].setFault(func(_ context.Context, m string, k int) error {
		if m == "Delete" && k == 1 {
			fc.mu.Lock()
			delete(fc.streams, "s") // applied, then answered as an older server did
			fc.mu.Unlock()
			return lost
		}
		return nil
	})
	err := c.Delete(testCtx(t), "s", Any)
	if n := fc.nodes[0].count("Delete"); !errors.Is(err, ErrOutcomeUnknown) || n != 1 {
		t.Fatalf("delete after a lost proposal: %v after %d calls, want ErrOutcomeUnknown after 1", err, n)
	}
}

// Recommission retried after an attempt whose answer was lost (it cancelled the drain) does
// not report that nothing changed.
func TestRecommissionRetriedAfterLostAnswer(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	c := dial(t, fc)
	fc.mu.Lock()
	fc.decommissioning = true
	fc.mu.Unlock()
	if got, err := c.Recommission(testCtx(t), "n1"); err != nil || got != Recommissioned {
		t.Fatalf("Recommission = %v, %v; want Recommissioned", got, err)
	}
	if got, err := c.Recommission(testCtx(t), "n1"); err != nil || got != NotDecommissioning {
		t.Fatalf("Recommission again = %v, %v; want NotDecommissioning", got, err)
	}
	fc.mu.Lock()
	fc.decommissioning = true
	fc.mu.Unlock()
	fc.nodes[0].setFault(func(_ context.Context, m string, k int) error {
		if m == "Recommission" && k == 3 { // this call's first attempt
			return unavailable()
		}
		return nil
	})
	if got, err := c.Recommission(testCtx(t), "n1"); err != nil || got != MaybeRecommissioned {
		t.Fatalf("Recommission whose first answer was lost = %v, %v; want MaybeRecommissioned", got, err)
	}
}

// TestNothingSentIsNotUnknown: an append that ends before any of it reached a server (here
// with under a millisecond left, which sends nothing) fails with its context's error, not
// ErrOutcomeUnknown: guarantees.md promises that only an attempt that may have been applied
// makes a write's outcome unknown.
func TestNothingSentIsNotUnknown(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	c := dial(t, fc)
	if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil { // opens the pipeline
		t.Fatal(err)
	}
	before := fc.nodes[0].count("AppendPipeline.item")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Microsecond)
	defer cancel()
	_, err := c.Append(ctx, "s", Any, Event{Type: "B"})
	if sent := fc.nodes[0].count("AppendPipeline.item") - before; sent != 0 {
		t.Fatalf("%d items sent with under a millisecond left", sent)
	}
	if errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append that sent nothing: %v, want context.DeadlineExceeded and not ErrOutcomeUnknown", err)
	}
}

// An append whose first attempt was applied (its answer lost) and whose retry is then an ID
// conflict with an event of its own stream fails with ErrOutcomeUnknown: at shard format 7 that
// is what the retry meets once a truncation removed some of the applied events. A conflict
// with another stream's event still settles the call.
func TestSameStreamIDConflictAfterUncertainAppendIsUnknown(t *testing.T) {
	for _, tc := range []struct {
		existing string
		unknown  bool
	}{{"s", true}, {"t", false}} {
		fc := newFakeCluster(t, 1, 1)
		fc.mu.Lock()
		fc.unary = true
		fc.mu.Unlock()
		c := dial(t, fc)
		ev := Event{ID: uuid.Must(uuid.NewV7()), Type: "A"}
		conflict := statusWith(codes.AlreadyExists, "fake: event ID conflict",
			&shoalv1.IDConflict{Stream: "s", Id: ev.ID[:], ExistingStream: tc.existing, ExistingVersion: 0})
		fc.nodes[0].setFault(func(_ context.Context, m string, k int) error {
			switch {
			case m != "Append":
				return nil
			case k == 1:
				return errLoseAck
			}
			return conflict
		})
		_, err := c.Append(testCtx(t), "s", Any, ev)
		if !errors.Is(err, ErrIDConflict) || errors.Is(err, ErrOutcomeUnknown) != tc.unknown {
			t.Errorf("append applied, then an ID conflict with stream %q: %v, want ErrIDConflict, ErrOutcomeUnknown %t",
				tc.existing, err, tc.unknown)
		}
	}
}

// TestOutcomeUnknownNamesEventIDs: an append whose outcome is unknown names the IDs its events
// were sent with, those the client drew for events without one included, and appending the
// events again with them settles it: a duplicate, the first append having been applied.
func TestOutcomeUnknownNamesEventIDs(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	fc.mu.Lock()
	fc.unary = true
	fc.mu.Unlock()
	c := dial(t, fc, WithRetry(RetryPolicy{MaxElapsed: -1}))
	fc.nodes[0].setFault(failFirst("Append", 1, errLoseAck))
	given := uuid.Must(uuid.NewV7())
	events := []Event{{Type: "A"}, {Type: "B", ID: given}}
	_, err := c.Append(testCtx(t), "s", Any, events...)
	ou, ok := errors.AsType[*OutcomeUnknownError](err)
	if !ok || len(ou.EventIDs) != 2 || ou.EventIDs[0] == uuid.Nil || ou.EventIDs[1] != given {
		t.Fatalf("append applied, its answer lost: %v; want an *OutcomeUnknownError naming both IDs", err)
	}
	if events[0].ID != uuid.Nil {
		t.Fatal("Append changed the caller's event")
	}
	events[0].ID, events[1].ID = ou.EventIDs[0], ou.EventIDs[1]
	res, err := c.Append(testCtx(t), "s", Any, events...)
	if err != nil || !res.Duplicate {
		t.Fatalf("the append again with the IDs: %+v, %v; want a duplicate", res, err)
	}
}

// TestRetryUsesTheWholeBudget: a backoff longer than what MaxElapsed, or the caller's
// deadline, leaves is cut short, and the call tries once more instead of giving the rest
// up (here the second attempt succeeds).
func TestRetryUsesTheWholeBudget(t *testing.T) {
	slow := RetryPolicy{MaxElapsed: 300 * time.Millisecond, InitialInterval: time.Minute, MaxInterval: time.Minute}
	t.Run("MaxElapsed", func(t *testing.T) {
		fc := newFakeCluster(t, 1, 1)
		c := dial(t, fc, WithRetry(slow))
		fc.nodes[0].setFault(failFirst("Append", 1, unavailable()))
		start := time.Now()
		if _, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"}); err != nil {
			t.Fatalf("append failing once, with 300ms to retry in and a 1m backoff: %v after %v", err, time.Since(start))
		}
	})
	t.Run("deadline", func(t *testing.T) {
		fc := newFakeCluster(t, 1, 1)
		p := slow
		p.MaxElapsed = time.Hour
		c := dial(t, fc, WithRetry(p))
		fc.nodes[0].setFault(failFirst("Append", 1, unavailable()))
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		defer cancel()
		if _, err := c.Append(ctx, "s", Any, Event{Type: "A"}); err != nil {
			t.Fatalf("append failing once, with 400ms to its deadline and a 1m backoff: %v", err)
		}
	})
	t.Run("deadline once", func(t *testing.T) {
		// Cut short once only: an append that keeps failing makes two attempts in all,
		// not one every halving of the time left.
		fc := newFakeCluster(t, 1, 1)
		p := slow
		p.MaxElapsed = time.Hour
		c := dial(t, fc, WithRetry(p))
		fc.nodes[0].setFault(failFirst("Append", 1<<30, unavailable()))
		before := c.Stats().Attempts
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.Append(ctx, "s", Any, Event{Type: "A"})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("append failing each time: %v, want DeadlineExceeded", err)
		}
		if n := c.Stats().Attempts - before; n != 2 {
			t.Fatalf("append failing each time made %d attempts before its deadline, want 2", n)
		}
	})
}

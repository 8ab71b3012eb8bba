package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

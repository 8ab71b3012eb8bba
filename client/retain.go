package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// Retention is a retention policy that Retain applies to streams: which of their events it
// removes, for good, with Truncate. A live stream keeps its last event whatever the policy
// says, so that its versions go on.
type Retention struct {
	// KeepLast removes all but a live stream's last KeepLast events (0: no limit by count).
	KeepLast uint64
	// MaxAge removes a live stream's events committed more than MaxAge ago, by the clock of
	// the stream's shard's leader, in whole milliseconds (0: no limit by age; else at least
	// 1ms). Events are removed from the first on, up to the first one that is not that old: a
	// truncation removes a stream's first events only.
	MaxAge time.Duration
	// Deleted removes the events that deletes hid (StreamInfo.HiddenEvents): every event of
	// the deleted streams (soft-deleted or tombstoned), and those of live streams from before
	// a soft delete, which reads no longer return but the disks still hold. (A truncation of
	// a live stream's first events removes them too, with or without it.)
	Deleted bool
	// DryRun decides what the policy removes, and removes nothing.
	DryRun bool
}

// Retained is what Retain removed from a stream (with DryRun, would remove): its readable
// versions From to Before-1 (none when From == Before, as for a deleted stream), and the Hidden
// events it held that a delete hid (StreamInfo.HiddenEvents), which a truncation removes too.
type Retained struct {
	Stream       string
	State        StreamState
	From, Before uint64
	Hidden       uint64
}

// Events is the number of events removed.
func (r Retained) Events() uint64 { return r.Before - r.From + r.Hidden }

// Retain applies retention policy r once to every stream whose name starts with prefix ("":
// every stream), and calls fn for each stream it removed events from (fn may be nil), one call
// at a time, in no particular order, from goroutines of its own (a panic in fn is not
// recovered). Each shard's leader works out what the policy removes, a page of streams at a
// time (RetentionCuts: a stream with nothing to remove costs it a listing entry, and, under
// MaxAge, the headers of its events up to the first young one); Retain truncates those streams,
// one at a time in each of up to 16 shards at once. It stops at the first error, of a
// truncation (which names the stream) or of fn, and returns it once the streams under way are
// done. Running it again is safe, and goes on where a failed run stopped. An error of a node of
// a version without RetentionCuts ends the run too, after the shards of upgraded leaders may
// have been truncated. Events younger than the servers' --retention-min-age (a minute by
// default) stay, so that writers' retries of an append still find its events.
//
// Retain is safe with writers running: the versions it removes were decided from committed
// state, and appends only add later ones (a stream deleted since loses the versions chosen,
// which the delete hid anyway). MaxAge compares the clock of each shard's leader with the
// commit times the leaders stamped, event by event, and reads at most 100,000 of a stream's
// events a run: a run removes at most that many by age from one stream, and the next goes on.
// Every node must run a version that has RetentionCuts, and every shard must be at format 4
// (ErrShardFormat, as for Truncate); Deleted needs servers that count hidden events.
func (c *Client) Retain(ctx context.Context, prefix string, r Retention, fn func(Retained) error) error {
	switch {
	case r.MaxAge < 0 || r.MaxAge > 0 && r.MaxAge < time.Millisecond:
		return &InvalidArgumentError{Field: "Retention.MaxAge", Limit: "0 (no limit by age), or 1ms or more",
			Reason: fmt.Sprintf("%v given", r.MaxAge)}
	case r.MaxAge%time.Millisecond != 0:
		return &InvalidArgumentError{Field: "Retention.MaxAge", Limit: "whole milliseconds",
			Reason: fmt.Sprintf("%v given", r.MaxAge)}
	case r.KeepLast == 0 && r.MaxAge == 0 && !r.Deleted:
		return &InvalidArgumentError{Field: "Retention", Limit: "KeepLast, MaxAge or Deleted",
			Reason: "the policy removes nothing"}
	}
	if err := checkRetention(prefix); err != nil {
		return err
	}
	policy := RetentionPolicy{Prefix: prefix, KeepLast: r.KeepLast, MaxAge: r.MaxAge, Deleted: r.Deleted}.proto()
	shards, err := c.Shards(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex // fn's calls, failed and fnFailed
		failed   error      // the first error, which ends the run
		fnFailed bool       // fn failed: it is called no more
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if failed == nil {
			failed = err
			cancel()
		}
	}
	// Up to retentionParallel shards at once, each truncating its streams one at a time (a
	// truncation is a raft round trip).
	c.eachShard(ctx, shards, func(ctx context.Context, shard uint32) error {
		for after := ""; ; {
			if err := ctx.Err(); err != nil { // the caller's, or a failure's
				fail(err)
				return err
			}
			resp, err := c.retentionCuts(ctx, &shoalv1.RetentionCutsRequest{Shard: shard, Policy: policy, After: after})
			if err != nil {
				fail(fmt.Errorf("shard %d: %w", shard, err))
				return err
			}
			for _, cut := range resp.GetCuts() {
				ret := Retained{Stream: cut.GetStream(), State: StreamState(cut.GetState()), From: cut.GetFrom(),
					Before: cut.GetBefore(), Hidden: cut.GetHidden()}
				if !r.DryRun {
					if _, err := c.Truncate(ctx, ret.Stream, ret.Before, Any); err != nil {
						err = fmt.Errorf("truncating %q before version %d: %w", ret.Stream, ret.Before, err)
						fail(err)
						return err
					}
				}
				if fn == nil {
					continue
				}
				// Told even after another stream failed: it was truncated.
				mu.Lock()
				if !fnFailed {
					err = fn(ret)
					fnFailed = err != nil
				}
				mu.Unlock()
				if err != nil {
					fail(err)
					return err
				}
			}
			if after = resp.GetLast(); after == "" {
				return nil
			}
		}
	})
	mu.Lock()
	defer mu.Unlock()
	return failed
}

// retentionCuts asks the shard's leader for a page of cuts.
func (c *Client) retentionCuts(ctx context.Context, req *shoalv1.RetentionCutsRequest) (*shoalv1.RetentionCutsResponse, error) {
	var resp *shoalv1.RetentionCutsResponse
	err := c.run(ctx, target{kind: byShard, shard: req.Shard, idempotent: true}, true,
		func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
			var err error
			resp, err = n.streams.RetentionCuts(ctx, req)
			return false, err
		})
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unimplemented {
		return nil, fmt.Errorf("a node runs a version without RetentionCuts, which Retain needs (upgrade every node first): %s", st.Message())
	}
	return resp, err
}

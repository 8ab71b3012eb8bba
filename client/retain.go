package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Retention is a retention policy that Retain applies to streams: which of their events it
// removes, for good, with Truncate. A live stream keeps its last event whatever the policy
// says, so that its versions go on.
type Retention struct {
	// KeepLast removes all but a live stream's last KeepLast events (0: no limit by count).
	KeepLast uint64
	// MaxAge removes a live stream's events committed more than MaxAge before Retain started
	// (0: no limit by age). Events are removed from the first on, up to the first one that is
	// not that old: a truncation removes a stream's first events only.
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
// every stream), up to 16 streams at a time, and calls fn for each stream it removed events
// from (fn may be nil), one call at a time, in no particular order, from goroutines of its own
// (a panic in fn is not recovered). A stream with nothing to
// remove costs a listing entry, and, under MaxAge, a page of its first events. It stops at the
// first error, of a truncation (which names the stream) or of fn, and returns it once the
// streams under way are done. Running it again is safe, and goes on where a failed run
// stopped.
//
// Retain is safe with writers running: the versions it removes were decided from the stream
// as listed, and appends only add later ones (a stream deleted since loses the versions
// chosen, which the delete hid anyway). MaxAge compares this client's clock with the commit
// times the shards' leaders stamped. Every shard must be at format 4 (ErrShardFormat, as for
// Truncate); Deleted needs servers that count hidden events (StreamInfo.HiddenEvents), which
// older versions report as none.
func (c *Client) Retain(ctx context.Context, prefix string, r Retention, fn func(Retained) error) error {
	if r.KeepLast == 0 && r.MaxAge <= 0 && !r.Deleted {
		return &InvalidArgumentError{Field: "Retention", Limit: "KeepLast, MaxAge or Deleted",
			Reason: "the policy removes nothing"}
	}
	if r.MaxAge < 0 {
		return &InvalidArgumentError{Field: "Retention.MaxAge", Limit: "0 or more", Reason: fmt.Sprintf("%v given", r.MaxAge)}
	}
	cutoff := time.Now().Add(-r.MaxAge)
	opts := []ReadOption{StreamPrefix(prefix)}
	if r.Deleted {
		opts = append(opts, IncludeDeletes()) // deleted streams too
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex // fn's calls, failed and fnFailed
		failed   error      // the first error, which ends the run
		fnFailed bool       // fn failed: it is called no more
		wg       sync.WaitGroup
		inFlight = make(chan struct{}, retainParallel)
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if failed == nil {
			failed = err
			cancel()
		}
	}
	for s, err := range c.ListStreams(ctx, "", opts...) {
		if err != nil {
			fail(err)
			break
		}
		inFlight <- struct{}{}
		if err := ctx.Err(); err != nil { // the caller's, or a failure's
			<-inFlight
			fail(err)
			break
		}
		wg.Go(func() {
			defer func() { <-inFlight }()
			ret, ok, err := c.retainStream(ctx, s, r, cutoff)
			if err != nil {
				fail(err)
				return
			}
			if !ok || fn == nil {
				return
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
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return failed
}

// retainParallel is how many streams Retain truncates at once: each truncation is a raft
// round trip, and one at a time a run over many streams would take a round trip per stream.
const retainParallel = 16

// retainStream applies policy r to stream s, as listed: it returns what it removed, and false
// when there was nothing to remove.
func (c *Client) retainStream(ctx context.Context, s StreamInfo, r Retention, cutoff time.Time) (Retained, bool, error) {
	before, err := c.retainBefore(ctx, s, r, cutoff)
	if err != nil {
		return Retained{}, false, err
	}
	from := s.FirstVersion
	switch {
	case s.State != StreamLive: // before is past every version: the hidden events go
		if s.HiddenEvents == 0 {
			return Retained{}, false, nil
		}
	case before > from: // and so do the hidden ones
	case r.Deleted && s.HiddenEvents > 0:
		before = from // the hidden events only
	default:
		return Retained{}, false, nil
	}
	if !r.DryRun {
		if _, err := c.Truncate(ctx, s.Name, before, Any); err != nil {
			return Retained{}, false, fmt.Errorf("truncating %q before version %d: %w", s.Name, before, err)
		}
	}
	return Retained{Stream: s.Name, State: s.State, From: from, Before: before, Hidden: s.HiddenEvents}, true, nil
}

// retainBefore returns the first version of stream s that policy r keeps: events before it go.
func (c *Client) retainBefore(ctx context.Context, s StreamInfo, r Retention, cutoff time.Time) (uint64, error) {
	if s.State != StreamLive {
		// Every hidden event, and no later one: a stream appended to again since it was
		// listed has versions after LastVersion.
		return s.LastVersion + 1, nil
	}
	before := s.FirstVersion
	if r.KeepLast > 0 && s.LastVersion+1-s.FirstVersion > r.KeepLast {
		before = s.LastVersion + 1 - r.KeepLast
	}
	if r.MaxAge > 0 {
		if s.LastCreated.Before(cutoff) {
			return s.LastVersion, nil // all but the last, which a live stream keeps
		}
		// The first event that is not that old, from before on.
		for ev, err := range c.Read(ctx, s.Name, FromVersion(before)) {
			if errors.Is(err, ErrStreamNotFound) || errors.Is(err, ErrStreamDeleted) || errors.Is(err, ErrStreamChanged) {
				// Deleted or truncated since it was listed: left to the next run.
				return s.FirstVersion, nil
			}
			if err != nil {
				return 0, fmt.Errorf("reading %q: %w", s.Name, err)
			}
			if !ev.Created.Before(cutoff) {
				break
			}
			before = ev.Version + 1
		}
	}
	return min(before, s.LastVersion), nil
}

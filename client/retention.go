package client

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// RetentionPolicy is a retention policy the cluster keeps and applies by itself: every shard
// keeps it, and the shard's leader truncates the streams whose names start with Prefix as it
// says, once a retention interval (a minute by default; the servers' --retention-interval).
// The policy of the longest prefix a stream's name starts with governs the stream. A live
// stream keeps its last event whatever the policy says, so that its versions go on. What a
// policy removes is gone for good, as with Truncate.
type RetentionPolicy struct {
	// Prefix selects the streams ("": every stream).
	Prefix string
	// KeepLast keeps a live stream's last KeepLast events (0: no limit by count).
	KeepLast uint64
	// MaxAge keeps the events committed within MaxAge, in whole milliseconds (0: no limit by
	// age); the older ones go from the first on, up to the first that is not that old. The
	// leaders compare their clocks with the commit times.
	MaxAge time.Duration
	// Deleted removes the events deletes hid (StreamInfo.HiddenEvents).
	Deleted bool

	// Set is when the policy was set, by the clock of the shards' leaders (RetentionPolicies;
	// the latest of the shards'). Ignored by SetRetention.
	Set time.Time
	// Shards is how many shards hold the policy (RetentionPolicies): all of them, unless a
	// SetRetention or RemoveRetention failed part-way. Ignored by SetRetention.
	Shards uint32
}

func (p RetentionPolicy) proto() *shoalv1.RetentionPolicy {
	return &shoalv1.RetentionPolicy{Prefix: p.Prefix, KeepLast: p.KeepLast, MaxAgeMs: uint64(p.MaxAge / time.Millisecond),
		Deleted: p.Deleted}
}

// retentionParallel is how many shards SetRetention, RemoveRetention and RetentionPolicies
// call at once.
const retentionParallel = 16

// SetRetention sets policy p for the streams whose names start with p.Prefix, replacing the
// policy the prefix had, in every shard. It is safe to repeat: a call that failed part-way
// (its error says in how many shards the policy was set) is completed by running it again.
// Every shard must be at format 6 (ErrShardFormat otherwise: a node runs a version without
// retention policies). A shard holds at most 64 policies.
func (c *Client) SetRetention(ctx context.Context, p RetentionPolicy) error {
	if err := checkRetention(p.Prefix); err != nil {
		return err
	}
	switch {
	case p.MaxAge < 0 || p.MaxAge > 0 && p.MaxAge < time.Millisecond:
		return &InvalidArgumentError{Field: "RetentionPolicy.MaxAge", Limit: "0 (no limit by age), or 1ms or more",
			Reason: fmt.Sprintf("%v given", p.MaxAge)}
	case p.KeepLast == 0 && p.MaxAge == 0 && !p.Deleted:
		return &InvalidArgumentError{Field: "RetentionPolicy", Limit: "KeepLast, MaxAge or Deleted",
			Reason: "the policy removes nothing"}
	}
	return c.setRetention(ctx, "set", &shoalv1.SetRetentionRequest{Policy: p.proto()})
}

// RemoveRetention removes the retention policy of prefix from every shard (a prefix without
// one is no error). Streams it governed fall under the policy of the next longer prefix they
// start with, if any. Safe to repeat, as SetRetention.
func (c *Client) RemoveRetention(ctx context.Context, prefix string) error {
	if err := checkRetention(prefix); err != nil {
		return err
	}
	return c.setRetention(ctx, "removed", &shoalv1.SetRetentionRequest{Policy: &shoalv1.RetentionPolicy{Prefix: prefix}, Remove: true})
}

func checkRetention(prefix string) error {
	if err := checkListBounds(prefix, ""); err != nil {
		return err
	}
	if strings.HasPrefix(prefix, "$") {
		return &InvalidArgumentError{Field: "RetentionPolicy.Prefix", Limit: "not starting with '$'",
			Reason: "no stream name starts with '$'"}
	}
	return nil
}

// setRetention sends req to every shard, up to retentionParallel at once.
func (c *Client) setRetention(ctx context.Context, verb string, req *shoalv1.SetRetentionRequest) error {
	shards, err := c.Shards(ctx)
	if err != nil {
		return err
	}
	errs := c.eachShard(ctx, shards, func(ctx context.Context, shard uint32) error {
		r := &shoalv1.SetRetentionRequest{Shard: shard, Policy: req.Policy, Remove: req.Remove}
		return retentionUnimplemented(c.run(ctx, target{kind: byShard, shard: shard, idempotent: true, lostAnswerRetry: true}, true,
			func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
				_, err := n.streams.SetRetention(ctx, r)
				return false, err
			}))
	})
	return shardsFailed(errs, shards, "retention policy "+verb+" in")
}

// RetentionPolicies returns the cluster's retention policies in prefix order, read from every
// shard's leader and merged: a policy held by fewer than every shard (Shards), or held in
// different forms by different shards, tells of a SetRetention or RemoveRetention that failed
// part-way, which running it again completes.
func (c *Client) RetentionPolicies(ctx context.Context) ([]RetentionPolicy, error) {
	shards, err := c.Shards(ctx)
	if err != nil {
		return nil, err
	}
	var (
		mu  sync.Mutex
		all []RetentionPolicy
	)
	errs := c.eachShard(ctx, shards, func(ctx context.Context, shard uint32) error {
		var resp *shoalv1.RetentionResponse
		err := retentionUnimplemented(c.run(ctx, target{kind: byShard, shard: shard, idempotent: true}, true,
			func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
				var err error
				resp, err = n.streams.Retention(ctx, &shoalv1.RetentionRequest{Shard: shard})
				return false, err
			}))
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, p := range resp.GetPolicies() {
			all = append(all, RetentionPolicy{Prefix: p.Prefix, KeepLast: p.KeepLast,
				MaxAge: time.Duration(p.MaxAgeMs) * time.Millisecond, Deleted: p.Deleted, Set: time.Unix(0, p.SetUnixNano)})
		}
		return nil
	})
	if err := shardsFailed(errs, shards, "retention policies read from"); err != nil {
		return nil, err
	}
	return mergePolicies(all), nil
}

// mergePolicies merges the shards' policies: one entry per form of each prefix's policy, with
// the number of shards holding it and the latest time it was set.
func mergePolicies(all []RetentionPolicy) []RetentionPolicy {
	type form struct {
		prefix   string
		keepLast uint64
		maxAge   time.Duration
		deleted  bool
	}
	index := map[form]int{}
	var out []RetentionPolicy
	for _, p := range all {
		f := form{p.Prefix, p.KeepLast, p.MaxAge, p.Deleted}
		i, ok := index[f]
		if !ok {
			i, index[f] = len(out), len(out)
			out = append(out, p)
		}
		m := &out[i]
		m.Shards++
		if p.Set.After(m.Set) {
			m.Set = p.Set
		}
	}
	slices.SortStableFunc(out, func(a, b RetentionPolicy) int { return strings.Compare(a.Prefix, b.Prefix) })
	return out
}

// eachShard calls fn for every shard, up to retentionParallel at once, and returns the errors
// by shard (nil for the shards that succeeded).
func (c *Client) eachShard(ctx context.Context, shards uint32, fn func(context.Context, uint32) error) []error {
	errs := make([]error, shards)
	sem := make(chan struct{}, retentionParallel)
	var wg sync.WaitGroup
	for shard := range shards {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[shard] = fn(ctx, shard)
		})
	}
	wg.Wait()
	return errs
}

// shardsFailed returns nil when no shard failed, else the first shard's error, saying in how
// many shards what was done.
func shardsFailed(errs []error, shards uint32, what string) error {
	failed, first := 0, -1
	for i, err := range errs {
		if err != nil {
			failed++
			if first < 0 {
				first = i
			}
		}
	}
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("%s %d of %d shards (it is safe to run again); shard %d: %w",
		what, int(shards)-failed, shards, first, errs[first])
}

// retentionUnimplemented turns UNIMPLEMENTED, from a node of a version without retention
// policies, into ErrShardFormat: that node's shards are below format 6 too.
func retentionUnimplemented(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unimplemented {
		return fmt.Errorf("%w: a node runs a version without retention policies (%s)", ErrShardFormat, st.Message())
	}
	return err
}

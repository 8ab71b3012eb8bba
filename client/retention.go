package client

import (
	"cmp"
	"context"
	"errors"
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
	case p.MaxAge%time.Millisecond != 0:
		return &InvalidArgumentError{Field: "RetentionPolicy.MaxAge", Limit: "whole milliseconds",
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

// setRetention sends req to every shard, up to retentionParallel at once, once every shard is at
// format 6: formats are raised shard by shard, and a change made only in the shards already
// raised would apply there and not elsewhere.
func (c *Client) setRetention(ctx context.Context, verb string, req *shoalv1.SetRetentionRequest) error {
	shards, err := c.Shards(ctx)
	if err != nil {
		return err
	}
	if _, err := c.shardRetention(ctx, shards); err != nil {
		return fmt.Errorf("retention policy %s in no shard: %w", verb, err)
	}
	errs := c.eachShard(ctx, shards, func(ctx context.Context, shard uint32) error {
		r := &shoalv1.SetRetentionRequest{Shard: shard, Policy: req.Policy, Remove: req.Remove}
		return retentionUnimplemented(c.run(ctx, target{kind: byShard, shard: shard, idempotent: true, lostAnswerRetry: true}, true,
			func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
				_, err := n.streams.SetRetention(ctx, r)
				return false, err
			}))
	})
	failed, first, refused := failures(errs)
	switch {
	case failed == 0:
		return nil
	case refused == int(shards):
		return errs[first] // refused everywhere: nothing changed
	}
	return &RetentionIncompleteError{Verb: verb, Done: shards - uint32(failed), Shards: shards, Shard: uint32(first), Err: errs[first]}
}

// RetentionIncompleteError is the error of a SetRetention or RemoveRetention that changed some
// shards only, or may have: Done of Shards answered that they made it, and Shard failed with Err
// (which it wraps; others may have failed too). A shard that did not answer may have made the
// change. Running the call again completes it, unless Err is a refusal (ErrInvalidArgument: a
// shard holding 64 policies refuses a 65th), which RemoveRetention undoes.
type RetentionIncompleteError struct {
	Verb         string // "set" or "removed"
	Done, Shards uint32
	Shard        uint32
	Err          error
}

func (e *RetentionIncompleteError) Error() string {
	return fmt.Sprintf("retention policy %s in %d of %d shards (it is safe to run again); shard %d: %v",
		e.Verb, e.Done, e.Shards, e.Shard, e.Err)
}

func (e *RetentionIncompleteError) Unwrap() error { return e.Err }

// RetentionPolicies returns the cluster's retention policies in prefix order, read from every
// shard's leader and merged: a policy held by fewer than every shard (Shards), or held in
// different forms by different shards, tells of a SetRetention or RemoveRetention that failed
// part-way, which running it again completes.
//
// A shard that does not answer (no leader, its nodes down) does not hide the others' policies:
// they come back with a *RetentionUnreadError naming the shards that did not answer, whose
// policies are not among them. It fails without policies when no shard answers, or when a
// shard is below format 6 (ErrShardFormat).
func (c *Client) RetentionPolicies(ctx context.Context) ([]RetentionPolicy, error) {
	shards, err := c.Shards(ctx)
	if err != nil {
		return nil, err
	}
	resps, errs := c.readRetention(ctx, shards)
	var unread []uint32
	for shard, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, ErrShardFormat):
			return nil, err
		default:
			unread = append(unread, uint32(shard))
		}
	}
	if len(unread) == int(shards) {
		return nil, shardsFailed(errs, shards, "retention policies read from")
	}
	var all []RetentionPolicy
	for _, resp := range resps {
		for _, p := range resp.GetPolicies() {
			rp := RetentionPolicy{Prefix: p.Prefix, KeepLast: p.KeepLast,
				MaxAge: time.Duration(p.MaxAgeMs) * time.Millisecond, Deleted: p.Deleted}
			if p.SetUnixNano != 0 {
				rp.Set = time.Unix(0, p.SetUnixNano)
			}
			all = append(all, rp)
		}
	}
	if len(unread) > 0 {
		return mergePolicies(all), &RetentionUnreadError{Unread: unread, Shards: shards, Err: errs[unread[0]]}
	}
	return mergePolicies(all), nil
}

// RetentionUnreadError is RetentionPolicies' error when some shards did not answer: the
// policies it returns are those of the other shards. Err is the first unread shard's failure,
// which it wraps.
type RetentionUnreadError struct {
	Unread []uint32 // the shards that did not answer, in order
	Shards uint32   // the cluster's shards
	Err    error
}

func (e *RetentionUnreadError) Error() string {
	return fmt.Sprintf("retention policies read from %d of %d shards; %s did not answer (their policies are not shown): %v",
		e.Shards-uint32(len(e.Unread)), e.Shards, shardList(e.Unread), e.Err)
}

func (e *RetentionUnreadError) Unwrap() error { return e.Err }

// shardList names shards for a message: "shard 3", "shards 3, 7 and 9", or the first few and
// how many more.
func shardList(shards []uint32) string {
	const most = 8
	if len(shards) == 1 {
		return fmt.Sprintf("shard %d", shards[0])
	}
	var b strings.Builder
	b.WriteString("shards ")
	for i, s := range shards[:min(len(shards), most)] {
		switch {
		case i == 0:
		case i == len(shards)-1:
			b.WriteString(" and ")
		default:
			b.WriteString(", ")
		}
		fmt.Fprint(&b, s)
	}
	if len(shards) > most {
		fmt.Fprintf(&b, " and %d more", len(shards)-most)
	}
	return b.String()
}

// shardRetention reads every shard's policies from its leader. It fails when a shard does not
// answer, or is below format 6 (ErrShardFormat).
func (c *Client) shardRetention(ctx context.Context, shards uint32) ([]*shoalv1.RetentionResponse, error) {
	resps, errs := c.readRetention(ctx, shards)
	if err := shardsFailed(errs, shards, "retention policies read from"); err != nil {
		return nil, err
	}
	return resps, nil
}

// readRetention reads every shard's policies from its leader, up to retentionParallel at once,
// and returns them and the errors by shard: a shard below format 6 fails with ErrShardFormat.
func (c *Client) readRetention(ctx context.Context, shards uint32) ([]*shoalv1.RetentionResponse, []error) {
	resps := make([]*shoalv1.RetentionResponse, shards)
	errs := c.eachShard(ctx, shards, func(ctx context.Context, shard uint32) error {
		err := retentionUnimplemented(c.run(ctx, target{kind: byShard, shard: shard, idempotent: true}, true,
			func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
				resp, err := n.streams.Retention(ctx, &shoalv1.RetentionRequest{Shard: shard})
				resps[shard] = resp
				return false, err
			}))
		if err == nil && resps[shard].GetFormat() < retentionFormat {
			err = fmt.Errorf("%w: shard %d is at format %d, retention policies need %d (every node of the shard must run "+
				"a version that has them; the shard's leader then raises it)", ErrShardFormat, shard, resps[shard].GetFormat(), retentionFormat)
		}
		if err != nil {
			resps[shard] = nil
		}
		return err
	})
	return resps, errs
}

// retentionFormat is the shard format that has retention policies.
const retentionFormat = 6

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
	slices.SortStableFunc(out, func(a, b RetentionPolicy) int {
		if c := strings.Compare(a.Prefix, b.Prefix); c != 0 {
			return c
		}
		return cmp.Compare(b.Shards, a.Shards) // a prefix's most held form first
	})
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

// failures counts the shards that failed and those that refused (a verdict: ErrInvalidArgument
// or ErrShardFormat, so nothing changed there), and returns the first that failed (-1: none).
func failures(errs []error) (failed, first, refused int) {
	first = -1
	for i, err := range errs {
		if err == nil {
			continue
		}
		failed++
		if first < 0 {
			first = i
		}
		if errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrShardFormat) {
			refused++
		}
	}
	return failed, first, refused
}

// shardsFailed returns nil when no shard failed, else the first shard's error, saying in how
// many shards what was done.
func shardsFailed(errs []error, shards uint32, what string) error {
	failed, first, _ := failures(errs)
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("%s %d of %d shards; shard %d: %w", what, int(shards)-failed, shards, first, errs[first])
}

// retentionUnimplemented turns UNIMPLEMENTED, from a node of a version without retention
// policies, into ErrShardFormat: that node's shards are below format 6 too.
func retentionUnimplemented(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unimplemented && !errors.Is(err, ErrOutcomeUnknown) {
		return fmt.Errorf("%w: a node runs a version without retention policies (%s)", ErrShardFormat, st.Message())
	}
	return err
}

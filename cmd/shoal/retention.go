package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
)

func (a *app) retentionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retention",
		Short: "Keep retention policies in the cluster, applied by the shards' leaders",
		Long: `A retention policy kept in the cluster removes events for good, as truncate
does, from the streams whose names start with its prefix: all but the last
--keep-last events, the events older than --max-age (from the first on, up to
the first one that is not that old), and with --deleted the events that
deletes hid. Every shard keeps the cluster's policies, and its leader applies
them once a retention interval (the servers' --retention-interval, a minute by
default), so nothing needs to run from cron. The policy of the longest prefix
a stream's name starts with governs it. A live stream keeps its last event, and
no event younger than the servers' --retention-min-age (a minute by default)
goes, so that writers' retries of an append still find its events.

To apply a policy once instead, without keeping it, use 'shoal retain'.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.retentionSetCmd(), a.retentionRemoveCmd(), a.retentionListCmd())
	return cmd
}

func (a *app) retentionSetCmd() *cobra.Command {
	var (
		prefix, server string
		keepLast       uint64
		maxAge         time.Duration
		deleted        bool
	)
	cmd := &cobra.Command{
		Use:   "set --prefix P [--keep-last N] [--max-age D] [--deleted]",
		Short: "Set the retention policy of a prefix (replacing the one it had)",
		Long: `Set the retention policy of the streams whose names start with --prefix
(--prefix '' for every stream), in every shard, replacing the policy the prefix
had. The shards' leaders apply it from their next retention round on. It is
safe to run again: a run that failed part-way says in how many shards it set
the policy, and another run completes it. --max-age compares the leaders'
clocks with the commit times they stamped; it counts whole milliseconds.`,
		Example: `  shoal retention set --prefix session- --max-age 720h
  shoal retention set --prefix metrics- --keep-last 1000 --deleted
  shoal retention set --prefix '' --deleted`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case !cmd.Flags().Changed("prefix"):
				return usagef("--prefix is required: the policy applies to the streams whose names start with it ('' for every stream)")
			case keepLast == 0 && maxAge == 0 && !deleted:
				if cmd.Flags().Changed("keep-last") || cmd.Flags().Changed("max-age") {
					return usagef("--keep-last 0 and --max-age 0 set no limit: give a count of 1 or more, a positive age, or --deleted, or the policy removes nothing")
				}
				return usagef("give --keep-last, --max-age or --deleted: the policy removes nothing")
			case maxAge < 0 || maxAge > 0 && maxAge < time.Millisecond:
				return usagef("--max-age must be at least 1ms, got %v", maxAge)
			case maxAge%time.Millisecond != 0:
				return usagef("--max-age must be whole milliseconds (the servers keep it so), got %v", maxAge)
			}
			p := client.RetentionPolicy{Prefix: prefix, KeepLast: keepLast, MaxAge: maxAge, Deleted: deleted}
			done := fmt.Sprintf("retention policy set for %s: %s", prefixName(prefix), policyText(p))
			return a.retentionChange(cmd, server, func(ctx context.Context, c *client.Client) error {
				return c.SetRetention(ctx, p)
			}, &done)
		},
	}
	f := cmd.Flags()
	f.StringVar(&prefix, "prefix", "", "the streams the policy applies to: those whose names start with this ('' for every stream; required)")
	f.Uint64Var(&keepLast, "keep-last", 0, "keep at most the last N events of each stream")
	f.DurationVar(&maxAge, "max-age", 0, "remove the events committed longer ago than this, e.g. 720h")
	f.BoolVar(&deleted, "deleted", false, "remove the events deletes hid: all of the deleted streams', and live streams' from before a soft delete")
	a.serverFlag(cmd, &server)
	return cmd
}

func (a *app) retentionRemoveCmd() *cobra.Command {
	var prefix, server string
	cmd := &cobra.Command{
		Use:   "remove --prefix P",
		Short: "Remove the retention policy of a prefix",
		Long: `Remove the retention policy of --prefix from every shard. Its streams fall
under the policy of the next longer prefix they start with, if any. Removing a
policy that is not there is no error (it says "nothing removed"); it is safe
to run again.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("prefix") {
				return usagef("--prefix is required: the prefix whose policy to remove ('' for the policy of every stream)")
			}
			done := fmt.Sprintf("retention policy removed for %s", prefixName(prefix))
			return a.retentionChange(cmd, server, func(ctx context.Context, c *client.Client) error {
				// Said when every shard answered without it (the removal runs all the same).
				if ps, err := c.RetentionPolicies(ctx); err == nil &&
					!slices.ContainsFunc(ps, func(p client.RetentionPolicy) bool { return p.Prefix == prefix }) {
					done = fmt.Sprintf("no retention policy for %s: nothing removed", prefixName(prefix))
				}
				return c.RemoveRetention(ctx, prefix)
			}, &done)
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "the prefix whose policy to remove (required)")
	a.serverFlag(cmd, &server)
	return cmd
}

// retentionChange runs fn, a SetRetention or RemoveRetention, and prints *done (which fn may
// change) when it succeeds.
func (a *app) retentionChange(cmd *cobra.Command, server string, fn func(context.Context, *client.Client) error, done *string) error {
	err := a.call(cmd, server, fn)
	if err != nil {
		if inc := (*client.RetentionIncompleteError)(nil); errors.As(err, &inc) {
			code, msg := explain(a.unreachable(inc.Err, server))
			hint := "run the command again to complete it (it is safe to repeat)"
			if errors.Is(inc.Err, client.ErrInvalidArgument) {
				hint = "running it again will not complete it: 'shoal retention remove' undoes it, or make room in that shard first"
			}
			return &explainedError{code: code, msg: fmt.Sprintf("retention policy %s in %d of %d shards, then shard %d failed: %s; %s",
				inc.Verb, inc.Done, inc.Shards, inc.Shard, msg, hint)}
		}
		if errors.Is(err, client.ErrShardFormat) {
			return &explainedError{code: exitError, msg: trimPrefixes(err.Error()) +
				": retention policies need every node to run a version that has them (shard format 6)"}
		}
		return a.unreachable(err, server)
	}
	_, err = fmt.Fprintln(a.stdout, *done)
	return err
}

func (a *app) retentionListCmd() *cobra.Command {
	var (
		server string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the cluster's retention policies",
		Long: `List the retention policies the cluster keeps, read from every shard's leader.
A policy held by fewer than every shard, or in different forms by different
shards, is marked: a 'retention set' or 'retention remove' failed part-way, and
running it again completes it. Shards that do not answer (no leader) hide none
of the others' policies: those are listed, and the command then fails naming
the shards left out.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				ps     []client.RetentionPolicy
				shards uint32
			)
			err := a.call(cmd, server, func(ctx context.Context, c *client.Client) (err error) {
				if shards, err = c.Shards(ctx); err == nil {
					ps, err = c.RetentionPolicies(ctx)
				}
				return err
			})
			// Shards that did not answer hide none of the others' policies: those are listed,
			// and the command then fails naming the shards left out.
			var unread *client.RetentionUnreadError
			switch {
			case errors.As(err, &unread):
			case errors.Is(err, client.ErrShardFormat):
				return &explainedError{code: exitError, msg: trimPrefixes(err.Error())}
			case err != nil:
				return a.unreachable(err, server)
			}
			if err := writePolicies(a.stdout, ps, shards, unread, asJSON); err != nil {
				return err
			}
			if unread != nil {
				return &explainedError{code: exitError, msg: trimPrefixes(unread.Error())}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per policy")
	a.serverFlag(cmd, &server)
	return cmd
}

// writePolicies prints the policies `retention list` read, of shards shards, as a table or as
// JSON; unread, when not nil, names the shards whose policies are missing.
func writePolicies(w io.Writer, ps []client.RetentionPolicy, shards uint32, unread *client.RetentionUnreadError, asJSON bool) error {
	read := shards
	if unread != nil {
		read -= uint32(len(unread.Unread))
	}
	if asJSON {
		enc := json.NewEncoder(w)
		for _, p := range ps {
			if err := enc.Encode(policyJSON{Prefix: p.Prefix, KeepLast: p.KeepLast, MaxAgeMS: p.MaxAge.Milliseconds(),
				Deleted: p.Deleted, Set: p.Set.UTC().Format(time.RFC3339Nano), Shards: p.Shards, Of: shards, Read: read}); err != nil {
				return err
			}
		}
		return nil
	}
	if len(ps) == 0 {
		msg := "no retention policies"
		if unread != nil {
			msg = fmt.Sprintf("no retention policies in the %d of %d shards read", read, shards)
		}
		_, err := fmt.Fprintln(w, msg)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tPOLICY\tSET\tSHARDS")
	for _, p := range ps {
		held := fmt.Sprintf("%d", p.Shards)
		switch {
		case p.Shards < read:
			held = fmt.Sprintf("%d of %d (incomplete: set or remove it again)", p.Shards, shards)
		case read < shards:
			held = fmt.Sprintf("%d of %d (%d unread)", p.Shards, shards, shards-read)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", prefixName(p.Prefix), policyText(p), p.Set.UTC().Format(time.RFC3339), held)
	}
	return tw.Flush()
}

type policyJSON struct {
	Prefix   string `json:"prefix"`
	KeepLast uint64 `json:"keep_last"`
	MaxAgeMS int64  `json:"max_age_ms"`
	Deleted  bool   `json:"deleted"`
	Set      string `json:"set"`
	Shards   uint32 `json:"shards"`      // how many shards hold it in this form
	Of       uint32 `json:"of_shards"`   // the cluster's shards
	Read     uint32 `json:"read_shards"` // the shards that answered (of_shards unless some did not)
}

// prefixName shows a prefix quoted, and the empty one as every stream.
func prefixName(prefix string) string {
	if prefix == "" {
		return "every stream ('')"
	}
	return fmt.Sprintf("%q", prefix)
}

// policyText says what p removes.
func policyText(p client.RetentionPolicy) string {
	return (&shoalv1.RetentionPolicy{KeepLast: p.KeepLast, MaxAgeMs: uint64(p.MaxAge / time.Millisecond), Deleted: p.Deleted}).Describe()
}

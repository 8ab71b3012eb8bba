package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoaldb/shoal/client"
)

// listRows is how many streams list-streams aligns at a time: its columns are as wide as the
// widest cell of each block, so that a long listing prints as it goes.
const listRows = 500

func (a *app) listStreamsCmd() *cobra.Command {
	var (
		prefix, after, server string
		count                 uint64
		deleted, stale        bool
		asJSON                bool
	)
	cmd := &cobra.Command{
		Use:   "list-streams [--prefix P] [--after NAME] [--count N] [--deleted]",
		Short: "List the streams, in name order",
		Long: `List the cluster's streams in name order (bytewise), with each one's state,
first and last versions, event count, shard and the time of its last event.
Every shard is listed and the listings are merged.

--prefix lists the streams whose names start with it (a category, as in
order-). --after starts after a name: to go on with a listing that stopped,
pass the last name it printed. --deleted also lists soft-deleted and
tombstoned streams. --json prints one JSON object per stream per line.`,
		Example: `  shoal list-streams --prefix order-
  shoal list-streams --after order-1041 --count 100 --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts []client.ReadOption
			if prefix != "" {
				opts = append(opts, client.StreamPrefix(prefix))
			}
			if count > 0 {
				opts = append(opts, client.Count(count))
			}
			if deleted {
				opts = append(opts, client.IncludeDeletes())
			}
			if stale {
				opts = append(opts, client.Stale())
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx, server)
			if err != nil {
				return err
			}
			defer c.Close()
			w := bufio.NewWriter(a.stdout)
			defer w.Flush()
			var tw *tabwriter.Writer
			rows := 0
			var last string
			for s, err := range c.ListStreams(ctx, after, opts...) {
				if err != nil {
					if tw != nil {
						tw.Flush()
					}
					w.Flush()
					return a.listFailed(err, server, stale, last)
				}
				last = s.Name
				if asJSON {
					if err := json.NewEncoder(w).Encode(streamInfoJSON(s)); err != nil {
						return err
					}
					continue
				}
				if tw == nil {
					tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "STREAM\tSTATE\tVERSIONS\tEVENTS\tSHARD\tLAST EVENT")
				}
				writeStreamRow(tw, s)
				if rows++; rows%listRows == 0 {
					if err := tw.Flush(); err != nil {
						return err
					}
				}
			}
			if tw != nil {
				return tw.Flush()
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&prefix, "prefix", "", "only streams whose names start with this")
	f.StringVar(&after, "after", "", "start after this name (the last one a listing printed)")
	f.Uint64Var(&count, "count", 0, "list at most N streams (0 = all)")
	f.BoolVar(&deleted, "deleted", false, "also list soft-deleted and tombstoned streams")
	f.BoolVar(&stale, "stale", false, "let any replica answer, which may lag the leader (also while a shard has no leader)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per stream per line")
	a.serverFlag(cmd, &server)
	return cmd
}

func (a *app) streamInfoCmd() *cobra.Command {
	var (
		server        string
		stale, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "stream-info STREAM",
		Short: "Show a stream's state: versions, event count, last event",
		Long: `Show a stream's state: live, soft-deleted or tombstoned; its first and last
versions (the last is what --expected N names); how many events a read returns;
whether a truncation removed its first events; its shard, and the position and
time of its last event.`,
		Example: `  shoal stream-info orders-42
  shoal stream-info orders-42 --json`,
		Args: exactArgs("stream"),
		RunE: func(cmd *cobra.Command, args []string) error {
			stream := args[0]
			var opts []client.ReadOption
			if stale {
				opts = append(opts, client.Stale())
			}
			var info client.StreamInfo
			err := a.call(cmd, server, func(ctx context.Context, c *client.Client) error {
				var err error
				info, err = c.StreamInfo(ctx, stream, opts...)
				return err
			})
			switch {
			case errors.Is(err, client.ErrStreamNotFound):
				return &explainedError{code: exitNotFound, msg: fmt.Sprintf("%s does not exist: no event was ever appended to it", stream)}
			case err != nil:
				return a.listFailed(err, server, stale, "")
			case asJSON:
				return json.NewEncoder(a.stdout).Encode(streamInfoJSON(info))
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintf(tw, "stream\t%s\n", info.Name)
			fmt.Fprintf(tw, "state\t%s\n", info.State)
			fmt.Fprintf(tw, "versions\t%s\n", versionRange(info))
			fmt.Fprintf(tw, "events\t%d\n", info.Events())
			if from := info.StoredFrom(); from > info.LastVersion {
				fmt.Fprintf(tw, "truncated\tevery event was removed\n")
			} else if from > 0 {
				fmt.Fprintf(tw, "truncated\tversions before %d were removed\n", from)
			}
			if info.HiddenEvents > 0 {
				before := strconv.FormatUint(info.FirstVersion, 10)
				if info.State != client.StreamLive {
					before = "all"
				}
				fmt.Fprintf(tw, "hidden events\t%d, which a delete hid: they take space until a truncation removes them: shoal truncate %s --before %s "+
					"(for every deleted stream of a prefix: shoal retain --prefix P --deleted, or a retention policy with --deleted)\n",
					info.HiddenEvents, shellQuote(info.Name), before)
			}
			fmt.Fprintf(tw, "shard\t%d\n", info.Shard)
			if info.State == client.StreamLive {
				fmt.Fprintf(tw, "last event\tat position %d, %s\n", info.LastPosition, info.LastCreated.UTC().Format(time.RFC3339Nano))
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.BoolVar(&stale, "stale", false, "let any replica answer, which may lag the leader (also while the shard has no leader)")
	f.BoolVar(&asJSON, "json", false, "print the state as one JSON object")
	a.serverFlag(cmd, &server)
	return cmd
}

// listFailed explains the error that ended a listing or a stream-info: after is the last name
// a listing printed, where to go on ("" when none was).
func (a *app) listFailed(err error, server string, stale bool, after string) error {
	if _, ok := leaderless(err); ok {
		msg := a.unreachable(err, server).Error()
		if hint := staleHint(stale); hint != "" {
			msg += "; " + hint
		}
		if after != "" {
			msg += "; to go on after the last stream printed, run the command again with --after " + shellQuote(after)
		}
		return &explainedError{code: exitError, msg: msg}
	}
	return a.unreachable(err, server)
}

// shellQuote quotes s for a POSIX shell: in single quotes, each single quote of s ending the
// quoted part, escaped, and starting the next.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// versionRange renders a stream's versions: "0..41", or "none (deleted at version 41)".
func versionRange(s client.StreamInfo) string {
	if s.State != client.StreamLive {
		return fmt.Sprintf("none (%s at version %d)", s.State, s.LastVersion)
	}
	return fmt.Sprintf("%d..%d", s.FirstVersion, s.LastVersion)
}

func writeStreamRow(w io.Writer, s client.StreamInfo) {
	lastEvent := "-"
	if s.State == client.StreamLive {
		lastEvent = s.LastCreated.UTC().Format(time.RFC3339Nano)
	}
	state := s.State.String()
	if s.StoredFrom() > 0 {
		state += ", truncated"
	}
	if s.HiddenEvents > 0 {
		state += fmt.Sprintf(", %d hidden", s.HiddenEvents)
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\n", printable([]byte(s.Name)), state, versionRange(s), s.Events(), s.Shard, lastEvent)
}

// streamJSON is one line of `list-streams --json`, and the answer of `stream-info --json`.
type streamJSON struct {
	Stream       string  `json:"stream"`
	State        string  `json:"state"`
	FirstVersion uint64  `json:"first_version"`
	LastVersion  uint64  `json:"last_version"`
	Events       uint64  `json:"events"`
	Truncated    bool    `json:"truncated"`   // versions before stored_from were removed
	StoredFrom   uint64  `json:"stored_from"` // client.StreamInfo.StoredFrom
	HiddenEvents uint64  `json:"hidden_events"`
	Shard        uint32  `json:"shard"`
	LastPosition *uint64 `json:"last_position,omitempty"` // live streams only
	LastCreated  string  `json:"last_created,omitempty"`  // live streams only
}

func streamInfoJSON(s client.StreamInfo) streamJSON {
	line := streamJSON{Stream: s.Name, State: s.State.String(), FirstVersion: s.FirstVersion, LastVersion: s.LastVersion,
		Events: s.Events(), Truncated: s.StoredFrom() > 0, StoredFrom: s.StoredFrom(), HiddenEvents: s.HiddenEvents, Shard: s.Shard}
	if s.State == client.StreamLive {
		line.LastPosition, line.LastCreated = &s.LastPosition, s.LastCreated.UTC().Format(time.RFC3339Nano)
	}
	return line
}

func (a *app) retainCmd() *cobra.Command {
	var (
		prefix, server string
		keepLast       uint64
		maxAge         time.Duration
		deleted, dry   bool
	)
	cmd := &cobra.Command{
		Use:   "retain --prefix P [--keep-last N] [--max-age D] [--deleted] [--dry-run]",
		Short: "Apply a retention policy once: truncate the streams of a prefix",
		Long: `Apply a retention policy once to every stream whose name starts with --prefix,
removing events for good as truncate does: all but the last --keep-last events,
the events older than --max-age (from the first on, up to the first one that is
not that old; at most 100,000 a stream a run), and with --deleted the events that deletes hid: every event of
the deleted streams, and the events of live streams from before a soft delete
(reads no longer return them, but the disks still hold them). A live stream
keeps its last event whatever the policy says.

It prints each stream it truncates and a summary; --dry-run prints what it
would remove and removes nothing. Run it from cron or a Kubernetes CronJob to
keep a policy applied. It is safe with writers running, and safe to run again.
Each shard's leader works out what goes; --max-age compares its clock with the
commit times the leaders stamped. Events committed less than the servers'
--retention-min-age ago (a minute by default) stay, so that writers' retries
of an append still find its events. To keep a policy applied by the cluster
itself, use 'shoal retention set'.`,
		Example: `  shoal retain --prefix session- --max-age 720h
  shoal retain --prefix metrics- --keep-last 1000 --deleted --dry-run`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case prefix == "":
				return usagef("--prefix is required: the policy applies to the streams whose names start with it")
			case keepLast == 0 && maxAge == 0 && !deleted:
				return usagef("give --keep-last, --max-age or --deleted: the policy removes nothing")
			case maxAge < 0 || maxAge > 0 && maxAge < time.Millisecond:
				return usagef("--max-age must be at least 1ms, got %v", maxAge)
			case maxAge%time.Millisecond != 0:
				return usagef("--max-age must be whole milliseconds (the servers keep it so), got %v", maxAge)
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx, server)
			if err != nil {
				return err
			}
			defer c.Close()
			verb := "removed"
			if dry {
				verb = "would remove"
			}
			var streams, events uint64
			summary := func() string {
				return fmt.Sprintf("%s %d events from %d streams", verb, events, streams)
			}
			err = c.Retain(ctx, prefix, client.Retention{KeepLast: keepLast, MaxAge: maxAge, Deleted: deleted, DryRun: dry},
				func(r client.Retained) error {
					streams++
					events += r.Events()
					var what []string
					if r.Before > r.From {
						what = append(what, fmt.Sprintf("versions %d..%d", r.From, r.Before-1))
					}
					if r.Hidden > 0 {
						what = append(what, fmt.Sprintf("%d events a delete hid", r.Hidden))
					}
					_, err := fmt.Fprintf(a.stdout, "%s (%s): %s %s\n", printable([]byte(r.Stream)), r.State, verb, strings.Join(what, " and "))
					return err
				})
			if err != nil {
				w := summary() + ", then stopped"
				switch {
				case errors.Is(err, client.ErrShardFormat):
					return &explainedError{code: exitError, msg: fmt.Sprintf("%s: %s: the stream's shard is not at format 4 yet "+
						"(every node of the shard must run a version with truncation)", w, trimPrefixes(err.Error()))}
				case errors.Is(err, client.ErrOutcomeUnknown):
					return &explainedError{code: exitError, msg: fmt.Sprintf("%s: %s: its outcome is unknown; run the command "+
						"again (it is safe to repeat)", w, trimPrefixes(err.Error()))}
				}
				code, msg := explain(a.unreachable(err, server))
				return &explainedError{code: code, msg: w + ": " + msg}
			}
			if _, err = fmt.Fprintf(a.stdout, "%s (streams starting with %q)\n", summary(), prefix); err != nil || events > 0 ||
				keepLast == 0 && maxAge == 0 {
				return err
			}
			// What a first try on fresh events meets: say why they stay.
			_, err = fmt.Fprintln(a.stdout, "(events younger than the servers' --retention-min-age, a minute by default, always stay)")
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&prefix, "prefix", "", "the streams the policy applies to: those whose names start with this (required)")
	f.Uint64Var(&keepLast, "keep-last", 0, "keep at most the last N events of each stream")
	f.DurationVar(&maxAge, "max-age", 0, "remove the events committed longer ago than this, e.g. 720h")
	f.BoolVar(&deleted, "deleted", false, "remove the events deletes hid: all of the deleted streams', and live streams' from before a soft delete")
	f.BoolVar(&dry, "dry-run", false, "print what the policy would remove, and remove nothing")
	a.serverFlag(cmd, &server)
	return cmd
}

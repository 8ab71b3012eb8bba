package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shoaldb/shoal/client"
)

func (a *app) appendCmd() *cobra.Command {
	var (
		typ, data, metadata, expected, id, server string
		asJSON                                    bool
	)
	cmd := &cobra.Command{
		Use:   "append STREAM --type TYPE [--data JSON|@FILE|-]",
		Short: "Append one event to a stream",
		Long: `Append one event to a stream, creating the stream if needed.

--data is inline JSON (checked), @FILE (any bytes) or - (stdin); --metadata is
inline JSON or @FILE.
--expected is any (default), no-stream, exists, or the version N of the stream's
last event; a mismatch exits with code 3.
--id sets the event's ID, a non-zero UUID: run again with the same --id, the
command appends the event at most once, and answers "already there" when it is
(the server compares event IDs, not content: the stored event stays as it was).`,
		Example: `  shoal append orders-42 --type OrderPlaced --data '{"total":12.5}'
  shoal append orders-42 --type OrderPaid --data @paid.json --expected 0`,
		Args: exactArgs("stream"),
		RunE: func(cmd *cobra.Command, args []string) error {
			stream := args[0]
			if strings.TrimSpace(typ) == "" {
				return usagef("append needs --type, the event's type, e.g. --type OrderPlaced")
			}
			exp, err := parseExpected(expected, "")
			if err != nil {
				return err
			}
			d, err := parseData("--data", data, a.stdin)
			if err != nil {
				return err
			}
			md, err := parseData("--metadata", metadata, nil)
			if err != nil {
				return err
			}
			ev := client.Event{Type: typ, Data: d.bytes, Metadata: md.bytes}
			if d.json {
				ev.ContentType = "application/json"
			}
			if id != "" {
				if ev.ID, err = uuid.Parse(id); err != nil {
					return usagef("--id must be a UUID such as %s, got %q", uuid.Must(uuid.NewV7()), id)
				}
				if ev.ID == uuid.Nil {
					return usagef("--id must not be the nil UUID %s: event IDs are non-zero (leave --id out for a new one)", uuid.Nil)
				}
			} else {
				ev.ID = uuid.Must(uuid.NewV7())
			}
			var res client.AppendResult
			err = a.call(cmd, server, func(ctx context.Context, c *client.Client) (err error) {
				if res, err = c.Append(ctx, stream, exp, ev); err != nil {
					return a.appendFailed(err, server, stream, ev.ID, asJSON)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(map[string]any{
					"stream":        stream,
					"version":       res.LastVersion,
					"first_version": res.FirstVersion,
					"shard":         res.Shard,
					"position":      res.Position,
					"id":            ev.ID.String(),
					"duplicate":     res.Duplicate,
				})
			}
			if res.Duplicate {
				// The server matched the event ID, not the content: what this command sent may
				// differ from what is stored, which stays as it was.
				_, err = fmt.Fprintf(a.stdout, "already there: event %s is version %d of %s (shard %d, position %d), appended before; "+
					"nothing was written, and the stored event keeps its own type, data and metadata (the server compares event IDs, not content)\n",
					ev.ID, res.LastVersion, stream, res.Shard, res.Position)
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "appended %s to %s at version %d (shard %d, position %d, id %s)\n",
				typ, stream, res.LastVersion, res.Shard, res.Position, ev.ID)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&typ, "type", "", "event type (required), e.g. OrderPlaced")
	f.StringVar(&data, "data", "", "event data: inline JSON, @FILE, or - for stdin")
	f.StringVar(&metadata, "metadata", "", "event metadata: inline JSON or @FILE")
	f.StringVar(&expected, "expected", "any", "expected version: any, no-stream, exists, or N (the last event's version)")
	f.StringVar(&id, "id", "", "event ID: a non-zero UUID, the same on every retry of this event (default: a new time-ordered one)")
	f.BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	a.serverFlag(cmd, &server)
	return cmd
}

// appendFailed explains an append of the event id that failed after the command connected to
// server. When the failure leaves the outcome unknown, the event may have been appended, so the
// explanation (and, with asJSON, a JSON object on stdout) gives its ID: the same command with
// --id appends it at most once, where a retry without it would append a second copy.
func (a *app) appendFailed(err error, server, stream string, id uuid.UUID, asJSON bool) error {
	cause, ok := unknownOutcome(err, server)
	if !ok {
		return a.writeRefused(err, server)
	}
	msg := fmt.Sprintf("the append's outcome is unknown: %s; event %s may or may not have been appended to %q. "+
		"To retry, run the same command with --id %s: if the event is already there, nothing is written twice "+
		"and the answer says so", cause, id, stream, id)
	if asJSON {
		if err := json.NewEncoder(a.stdout).Encode(map[string]any{
			"stream":  stream,
			"id":      id.String(),
			"outcome": "unknown",
			"error":   msg,
		}); err != nil {
			return err
		}
	}
	return &explainedError{code: exitError, msg: msg}
}

func (a *app) readCmd() *cobra.Command {
	var (
		from, server string
		count        uint64
		backward     bool
		asJSON       bool
		stale        bool
		maxStale     time.Duration
		follow       bool
		whole        bool
	)
	cmd := &cobra.Command{
		Use:   "read STREAM [--from start|end|N] [--count N] [--backward] [--follow] [--whole-history]",
		Short: "Read a stream's events",
		Long: `Read a stream's events, oldest first (or newest first with --backward, which
starts at the end unless --from says otherwise). --json prints one JSON object
per line; data and metadata are embedded as JSON when they are JSON and as
base64 strings otherwise (see data_encoding and metadata_encoding).

--follow (-f) goes on at the end, like tail -f: it prints each new event as it
is appended until interrupted (Ctrl-C or SIGTERM, exit code 0). It waits for a
stream that does not exist yet; --from end prints only new events.`,
		Example: `  shoal read orders-42
  shoal read orders-42 --backward --count 1 --json
  shoal read orders-42 --follow --from end --json`,
		Args: exactArgs("stream"),
		RunE: func(cmd *cobra.Command, args []string) error {
			stream := args[0]
			switch {
			case follow && backward:
				return usagef("--follow and --backward exclude each other: a followed read goes forwards (--from says where it starts)")
			case follow && count > 0:
				return usagef("--follow and --count exclude each other: a followed read goes on until interrupted")
			}
			start, err := parseFrom(from, backward)
			if err != nil {
				return err
			}
			opts := start.options()
			if backward {
				opts = append(opts, client.Backward())
			}
			if count > 0 {
				opts = append(opts, client.Count(count))
			}
			if follow {
				opts = append(opts, client.Follow())
			}
			if whole {
				if backward || start.end {
					return usagef("--whole-history reads forwards from a version: not with --backward or --from end")
				}
				opts = append(opts, client.WholeHistory())
			}
			switch {
			case cmd.Flags().Changed("max-staleness"):
				if maxStale <= 0 || maxStale > client.MaxStalenessLimit {
					return usagef("--max-staleness must be positive and at most %v (about %d days: 2^32-1 ms), got %v",
						client.MaxStalenessLimit, client.MaxStalenessLimit/(24*time.Hour), maxStale)
				}
				stale = true
				opts = append(opts, client.MaxStaleness(maxStale))
			case stale:
				opts = append(opts, client.Stale())
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx, server)
			if err != nil {
				return err
			}
			defer c.Close()
			resume := func(ev client.RecordedEvent) string { return fmt.Sprintf("--from %d", ev.Version+1) }
			hint := staleHint(stale)
			if maxStale > 0 { // the replicas may hold the stream, but none was current within the bound
				hint = fmt.Sprintf("no replica that answered had heard from a leader within --max-staleness %v; --stale reads what a replica has", maxStale)
			}
			return a.printEvents(ctx, c.Read(ctx, stream, opts...), server, hint, asJSON, follow, resume, eventLine)
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "first version: start, end, or N (default start; end with --backward)")
	f.Uint64Var(&count, "count", 0, "read at most N events (0 = all)")
	f.BoolVar(&backward, "backward", false, "read newest first")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per event per line")
	f.BoolVar(&stale, "stale", false, "let any replica answer, which may lag the leader (also while the shard has no leader)")
	f.DurationVar(&maxStale, "max-staleness", 0, "like --stale, but only a replica that was current with its shard's leader within this long answers (else the leader does), e.g. 2s")
	f.BoolVar(&whole, "whole-history", false, "fail, printing nothing, when a truncation removed events at or after the first version asked for (rather than start at the first event left)")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events as they are appended, until interrupted (not with --backward or --count)")
	a.serverFlag(cmd, &server)
	return cmd
}

// staleHint is what a read that met a shard without a leader adds to its error: how to read
// what a replica holds, "" for a read that let any replica answer (--stale) already.
func staleHint(stale bool) string {
	if stale {
		return ""
	}
	return "--stale reads what a replica has"
}

// printEvents prints what a read yields, one line per entry (line renders it) or one JSON
// object per line, and explains the error that ends it. A followed read (follow) is flushed
// after each entry, since the next may be long in coming, and ends without error when ctx
// does: an interrupt is how a follower stops. One that loses the cluster says where to resume
// after the last entry printed (resume renders the flag; nil when there is none); one that
// met a shard without a leader adds staleHint, when there is one, to its error.
func (a *app) printEvents(ctx context.Context, evs iter.Seq2[client.RecordedEvent, error], server string,
	staleHint string, asJSON, follow bool, resume, line func(client.RecordedEvent) string) error {
	w := bufio.NewWriter(a.stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	var last *client.RecordedEvent // the last entry printed
	for ev, err := range evs {
		if err != nil {
			w.Flush()
			if follow && ctx.Err() != nil {
				return nil
			}
			if follow && last != nil && errors.Is(err, client.ErrUnavailable) {
				// The cluster went away mid-subscription: say so (not "cannot reach"), and
				// where to resume.
				msg := fmt.Sprintf("the subscription lost the cluster at %s: no replica of the shard answered for the retry budget "+
					"(its nodes may be down, hung or cut off; 'shoal cluster status' shows which)", server)
				if resume != nil {
					msg += "; to go on after the last entry printed, run the command again with " + resume(*last)
				}
				return &explainedError{code: exitError, msg: msg}
			}
			if _, ok := leaderless(err); ok && staleHint != "" {
				return &explainedError{code: exitError, msg: a.unreachable(err, server).Error() + "; " + staleHint}
			}
			return a.unreachable(err, server)
		}
		last = &ev
		if asJSON {
			err = enc.Encode(eventJSON(ev))
		} else {
			_, err = fmt.Fprintln(w, line(ev))
		}
		if err == nil && follow {
			err = w.Flush()
		}
		if err != nil {
			return err
		}
	}
	return w.Flush()
}

// recordedJSON is one line of `read --json`.
type recordedJSON struct {
	Stream           string          `json:"stream"`
	Version          uint64          `json:"version"`
	Position         uint64          `json:"position"`
	Shard            uint32          `json:"shard"`
	ID               string          `json:"id"`
	Type             string          `json:"type"`
	ContentType      string          `json:"content_type,omitempty"`
	Created          string          `json:"created"`
	Data             json.RawMessage `json:"data"`
	DataEncoding     string          `json:"data_encoding"`
	Metadata         json.RawMessage `json:"metadata"`
	MetadataEncoding string          `json:"metadata_encoding"`
	Deletion         string          `json:"deletion,omitempty"` // read-shard --deletes: "soft delete" or "tombstone"
}

func eventJSON(ev client.RecordedEvent) recordedJSON {
	if ev.Deletion != client.NotDeleted {
		return recordedJSON{Stream: ev.Stream, Version: ev.Version, Position: ev.Position, Shard: ev.Shard,
			Created: ev.Created.UTC().Format(time.RFC3339Nano), Deletion: ev.Deletion.String(),
			Data: json.RawMessage("null"), Metadata: json.RawMessage("null")}
	}
	r := recordedJSON{
		Stream:      ev.Stream,
		Version:     ev.Version,
		Position:    ev.Position,
		Shard:       ev.Shard,
		ID:          ev.ID.String(),
		Type:        ev.Type,
		ContentType: ev.ContentType,
		Created:     ev.Created.UTC().Format(time.RFC3339Nano),
	}
	r.Data, r.DataEncoding = embed(ev.Data)
	r.Metadata, r.MetadataEncoding = embed(ev.Metadata)
	return r
}

// embed returns b as JSON when it is a JSON document, else as a base64
// string, and which it chose.
func embed(b []byte) (json.RawMessage, string) {
	if len(b) > 0 && json.Valid(b) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err == nil {
			return json.RawMessage(buf.Bytes()), "json"
		}
	}
	s, _ := json.Marshal(base64.StdEncoding.EncodeToString(b))
	return s, "base64"
}

// eventLine is one line of plain `read` output (a delete's, for read-shard --deletes).
func eventLine(ev client.RecordedEvent) string {
	if ev.Deletion != client.NotDeleted {
		return fmt.Sprintf("%s@%d  %s  %s", ev.Stream, ev.Version, ev.Deletion, ev.Created.UTC().Format(time.RFC3339Nano))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s@%d  %s  %s  %s", ev.Stream, ev.Version, ev.Type,
		ev.Created.UTC().Format(time.RFC3339Nano), ev.ID)
	if len(ev.Data) > 0 {
		b.WriteString("  ")
		b.WriteString(printable(ev.Data))
	}
	if len(ev.Metadata) > 0 {
		b.WriteString("  metadata=")
		b.WriteString(printable(ev.Metadata))
	}
	return b.String()
}

// printable returns b as compact text when it is JSON or printable UTF-8,
// else as "base64:..."
func printable(b []byte) string {
	if json.Valid(b) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err == nil {
			return buf.String()
		}
	}
	if utf8.Valid(b) && strings.IndexFunc(string(b), func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) < 0 {
		return string(b)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(b)
}

func (a *app) readShardCmd() *cobra.Command {
	var (
		server, from string
		count        uint64
		asJSON       bool
		log          logFlags
	)
	cmd := &cobra.Command{
		Use:   "read-shard SHARD [--from P|start|end] [--count N] [--deletes] [--stream-prefix P] [--type T] [--follow]",
		Short: "Read a shard's log: every stream of the shard, in position order",
		Long: `Read a shard's log (the events of all its streams, in position order), as a
projection does. --deletes also prints the deletes, at their positions (shards at
format 2, which a cluster reaches once every node runs a version that knows it).
'shoal cluster status' gives the shard count; 'shoal append' prints an event's shard.

--follow (-f) goes on at the end of the log, like tail -f: it prints each new
entry as it is applied until interrupted (Ctrl-C or SIGTERM, exit code 0).`,
		Example: `  shoal read-shard 14
  shoal read-shard 14 --from 1200 --count 10 --deletes --json
  shoal read-shard 14 --follow --deletes
  shoal read-shard 14 --follow --from end --json`,
		Args: exactArgs("shard"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sh, err := strconv.ParseUint(args[0], 10, 32)
			if err != nil {
				return usagef("SHARD must be a shard number (0 up to the shard count), got %q", args[0])
			}
			if log.follow && count > 0 {
				return usagef("--follow and --count exclude each other: a followed read goes on until interrupted")
			}
			start := uint64(0)
			opts := log.options()
			switch strings.ToLower(strings.TrimSpace(from)) { // as read's --from
			case "", "start":
			case "end":
				opts = append(opts, client.FromEnd()) // with --follow: only what comes next
			default:
				if start, err = strconv.ParseUint(strings.TrimSpace(from), 10, 64); err != nil {
					return usagef("--from must be a position (a number), start or end, got %q", from)
				}
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx, server)
			if err != nil {
				return err
			}
			defer c.Close()
			resume := func(ev client.RecordedEvent) string { return fmt.Sprintf("--from %d", ev.Position+1) }
			return a.printEvents(ctx, c.ReadShard(ctx, uint32(sh), start, count, opts...), server, staleHint(log.stale), asJSON, log.follow, resume,
				func(ev client.RecordedEvent) string { return fmt.Sprintf("%d  %s", ev.Position, eventLine(ev)) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "first position: N, start (0, the default) or end (with --follow: only new entries)")
	f.Uint64Var(&count, "count", 0, "read at most N entries (0 = to the current end)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per entry per line (a delete has \"deletion\")")
	log.register(f, " (not with --count)")
	a.serverFlag(cmd, &server)
	return cmd
}

// logFlags are the flags of the shard-log reads (read-shard, read-all): which entries, from
// which replica, and whether to follow.
type logFlags struct {
	deletes, stale, follow bool
	prefix                 string
	types                  []string
}

func (l *logFlags) register(f *pflag.FlagSet, followNote string) {
	f.BoolVar(&l.deletes, "deletes", false, "also print the deletes, at their positions")
	f.StringVar(&l.prefix, "stream-prefix", "", "only the entries of streams whose names start with this (filtered by the servers)")
	f.StringArrayVar(&l.types, "type", nil, "only events of this type (repeat for several; deletes are not filtered by type)")
	f.BoolVar(&l.stale, "stale", false, "let any replica answer, which may lag the leader")
	f.BoolVarP(&l.follow, "follow", "f", false, "keep printing new entries as they are applied, until interrupted"+followNote)
}

// options returns the read options the flags ask for.
func (l *logFlags) options() []client.ReadOption {
	var opts []client.ReadOption
	if l.deletes {
		opts = append(opts, client.IncludeDeletes())
	}
	if l.prefix != "" {
		opts = append(opts, client.StreamPrefix(l.prefix))
	}
	if len(l.types) > 0 {
		opts = append(opts, client.EventTypes(l.types...))
	}
	if l.stale {
		opts = append(opts, client.Stale())
	}
	if l.follow {
		opts = append(opts, client.Follow())
	}
	return opts
}

func (a *app) readAllCmd() *cobra.Command {
	var (
		server, from string
		asJSON       bool
		log          logFlags
	)
	cmd := &cobra.Command{
		Use:   "read-all [--follow] [--from start|end] [--stream-prefix P] [--type T]",
		Short: "Read every shard's log: all streams, in order within each shard",
		Long: `Read every shard's log at once: the events of all streams, in position order
within each shard and interleaved across shards (there is no order across shards).
Lines start with SHARD:POSITION. --stream-prefix and --type keep only some streams
and event types (the servers filter, so the rest do not cross the network).

--follow (-f) goes on at the end of every log, like tail -f: a subscription to
everything appended to the cluster (--from end: only new entries), until
interrupted (Ctrl-C or SIGTERM, exit code 0).`,
		Example: `  shoal read-all --stream-prefix order-
  shoal read-all --follow --from end --type OrderPlaced --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := log.options()
			switch strings.ToLower(strings.TrimSpace(from)) { // as read's --from
			case "", "start":
			case "end":
				opts = append(opts, client.FromEnd())
			default:
				return usagef("--from must be start or end, got %q (positions are per shard: use read-shard --from)", from)
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx, server)
			if err != nil {
				return err
			}
			defer c.Close()
			return a.printEvents(ctx, c.ReadAll(ctx, nil, opts...), server, staleHint(log.stale), asJSON, log.follow, nil,
				func(ev client.RecordedEvent) string {
					return fmt.Sprintf("%d:%d  %s", ev.Shard, ev.Position, eventLine(ev))
				})
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "start (the default) or end (with --follow: only new entries)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per entry per line (with its shard and position)")
	log.register(f, "")
	a.serverFlag(cmd, &server)
	return cmd
}

func (a *app) deleteCmd() *cobra.Command {
	var (
		expected, server string
		tombstone        bool
	)
	cmd := &cobra.Command{
		Use:   "delete STREAM [--expected any|exists|N] [--tombstone]",
		Short: "Delete a stream",
		Long: `Delete a stream. A soft delete hides its events; a later append continues the
stream after its last version, and reads show the events appended since.
--tombstone deletes it permanently: the name can never be used again.`,
		Args: exactArgs("stream"),
		RunE: func(cmd *cobra.Command, args []string) error {
			stream := args[0]
			exp, err := parseExpected(expected, "delete")
			if err != nil {
				return err
			}
			var opts []client.DeleteOption
			if tombstone {
				opts = append(opts, client.Tombstone())
			}
			err = a.call(cmd, server, func(ctx context.Context, c *client.Client) error {
				if err := c.Delete(ctx, stream, exp, opts...); err != nil {
					return a.deleteFailed(err, server, stream)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if tombstone {
				_, err = fmt.Fprintf(a.stdout, "tombstoned %s: it is deleted permanently and the name can never be used again\n", stream)
			} else {
				_, err = fmt.Fprintf(a.stdout, "deleted %s\n", stream)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&expected, "expected", "any", "expected version: any, exists, or N (the last event's version)")
	f.BoolVar(&tombstone, "tombstone", false, "delete permanently; the name can never be used again")
	a.serverFlag(cmd, &server)
	return cmd
}

// truncatedLine reports a truncation of stream that answered start, given the stream's state
// read after it (info, unless infoErr).
func truncatedLine(stream string, start uint64, info client.StreamInfo, infoErr error) string {
	from := info.StoredFrom()
	switch {
	case infoErr != nil, info.State == client.StreamLive && from >= info.FirstVersion:
		return fmt.Sprintf("truncated %s: it now starts at version %d (the events before it are gone)", stream, start)
	case info.State == client.StreamLive:
		// Events a soft delete hid before the stream went on are still there, below its start.
		held := heldVersions(from, info.FirstVersion-1, "events a delete hid", "the event a delete hid")
		return fmt.Sprintf("truncated %s: it starts at version %d; versions before %d are gone, and it still holds %s, "+
			"which --before %d removes", stream, info.FirstVersion, from, held, info.FirstVersion)
	}
	if from > info.LastVersion {
		return fmt.Sprintf("truncated %s: it is %s, and every event it held is gone", stream, info.State)
	}
	return fmt.Sprintf("truncated %s: versions before %d are gone; it is %s, and still holds %s, which --before all removes",
		stream, from, info.State, heldVersions(from, info.LastVersion, "hidden events", "its hidden event"))
}

// heldVersions names the events of versions from..to as many ("2 hidden events (versions 2 to
// 3)") or, for one, as one ("its hidden event at version 3").
func heldVersions(from, to uint64, many, one string) string {
	if from == to {
		return fmt.Sprintf("%s at version %d", one, from)
	}
	return fmt.Sprintf("%d %s (versions %d to %d)", to-from+1, many, from, to)
}

func (a *app) truncateCmd() *cobra.Command {
	var expected, server, before string
	cmd := &cobra.Command{
		Use:   "truncate STREAM --before N|all [--expected any|exists|N]",
		Short: "Remove a stream's events before a version, for good",
		Long: `Remove a stream's events before version N, for good: from reads of the stream,
from reads of its shard (read-shard, read-all, subscriptions and projections
that have not read them yet) and, within seconds, from the servers' disks. The
events' IDs are forgotten with them: a retried append of them is answered as
a new append would be, so truncate only events older than your writers' retries.

A live stream keeps its last event, so that its versions go on: N is capped at
the last version, and the command prints where the stream now starts. A
deleted stream can lose every event (--before all), which frees the space its
hidden history holds. Running it again removes nothing more, unless the stream
was appended to since and N passes its old last version.

Every node must run a version that has truncation (shard format 4); until the
shard's leader has raised the format, the command is refused.`,
		Args: exactArgs("stream"),
		RunE: func(cmd *cobra.Command, args []string) error {
			stream := args[0]
			var n uint64
			switch b := strings.TrimSpace(before); b {
			case "":
				return usagef("--before is required: the first version to keep, or all")
			case "all":
				n = math.MaxUint64
			default:
				v, err := strconv.ParseUint(b, 10, 64)
				if err != nil {
					return usagef("--before must be a version number (0 or more) or all, got %q", before)
				}
				n = v
			}
			exp, err := parseExpected(expected, "truncate")
			if err != nil {
				return err
			}
			var (
				start   uint64
				info    client.StreamInfo
				infoErr error
			)
			err = a.call(cmd, server, func(ctx context.Context, c *client.Client) error {
				if start, err = c.Truncate(ctx, stream, n, exp); err != nil {
					return a.truncateFailed(err, server, stream)
				}
				// A deleted stream's start is not where its stored events begin: what is left
				// of them is in its state.
				info, infoErr = c.StreamInfo(ctx, stream)
				return nil
			})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(a.stdout, truncatedLine(stream, start, info, infoErr))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&before, "before", "", "the first version to keep (events before it are removed), or all")
	f.StringVar(&expected, "expected", "any", "expected version: any, exists, or N (the last event's version)")
	a.serverFlag(cmd, &server)
	return cmd
}

// truncateFailed explains a truncate of stream that failed after the command connected to
// server: a shard not yet at the format, or an outcome left unknown (a truncate is
// idempotent: running it again is safe).
func (a *app) truncateFailed(err error, server, stream string) error {
	if errors.Is(err, client.ErrShardFormat) {
		return &explainedError{code: exitError, msg: fmt.Sprintf(
			"stream %q was not truncated: its shard is not at format 4 yet. Every node of the shard must run a version "+
				"with truncation; once they do, its leader raises the format within seconds ('shoal cluster status' shows "+
				"each node's version)", stream)}
	}
	if cause, ok := unknownOutcome(err, server); ok {
		return &explainedError{code: exitError, msg: fmt.Sprintf(
			"the truncate's outcome is unknown: %s; run it again (a truncate is safe to repeat)", cause)}
	}
	return a.writeRefused(err, server)
}

// deleteFailed explains a delete of stream that failed after the command connected to server,
// saying so when the failure leaves its outcome unknown.
func (a *app) deleteFailed(err error, server, stream string) error {
	cause, ok := unknownOutcome(err, server)
	if !ok {
		return a.writeRefused(err, server)
	}
	return &explainedError{code: exitError, msg: fmt.Sprintf(
		"the delete's outcome is unknown: %s; stream %q may or may not be deleted. "+
			"Read it to find out ('shoal read %s --backward --count 1') and delete again if it is still there",
		cause, stream, stream)}
}

package snapshot

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/client"
)

const (
	// EventType is the event type of every snapshot record.
	EventType = "shoal.snapshot"
	// ContentType is the content type of every snapshot record.
	ContentType = "application/vnd.shoal.snapshot"

	// DefaultCodec is the codec name used when Options.Codec is empty.
	DefaultCodec = "raw"
	// DefaultMaxStateSize bounds an uncompressed state, bytes (64 MiB).
	DefaultMaxStateSize = 64 << 20
	// MaxRecordSize is the largest record Save writes: one event's data,
	// bytes (shard.MaxEventSize).
	MaxRecordSize = 4 << 20
	// DefaultKeep is Options.Keep when zero: a save leaves only the newest
	// snapshot, the only one Latest (and so Load and Repository) reads.
	DefaultKeep = 1
)

// idSpace is the UUID v5 namespace of snapshot event IDs.
var idSpace = uuid.MustParse("5d0c6f0e-2f4b-4b53-9a61-7368a0e1a001")

// Options configures a Store. The zero value is valid.
type Options struct {
	// Prefix of companion streams (see CompanionStream); default
	// DefaultPrefix. At most 447 bytes, must not start with '$'.
	Prefix string
	// Codec names the state encoding of Save and Latest; it is written into
	// every record and a record with another codec is refused by Latest
	// (ErrCodecMismatch). Load, SaveState and Repository use their
	// Codec[S].Name instead. Default DefaultCodec; at most MaxCodecNameLen
	// bytes.
	Codec string
	// MaxStateSize bounds the uncompressed state on Save and Latest, bytes;
	// default DefaultMaxStateSize.
	MaxStateSize int
	// Keep is how many of the newest snapshots a save leaves in the
	// companion stream: after writing its record at companion version V,
	// Save truncates the companion before V+1-Keep (client.Truncate,
	// expected version Any), removing the older records for good. Default
	// DefaultKeep (1): Latest reads only the companion's last event, so an
	// older snapshot is never loaded, whatever its version. A concurrent
	// save's newer record is never lost, as a truncation keeps a stream's
	// last event. Negative keeps every snapshot (no pruning).
	//
	// A truncation that fails (client.ErrShardFormat while the companion's
	// shard is below format 4, unavailability, the context) does not fail
	// the save: it is counted (shoal_snapshot_prune_errors_total) and
	// logged, and the next save's truncation removes what it left.
	Keep int
	// Logger receives warnings (e.g. Repository save failures); nil discards.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil does not register. The
	// metrics are unlabelled: register one Store per Registerer.
	Registerer prometheus.Registerer
}

// Validate reports the first invalid field.
func (o *Options) Validate() error {
	if err := checkPrefix(o.Prefix); err != nil {
		return err
	}
	if len(o.Codec) > MaxCodecNameLen || !utf8.ValidString(o.Codec) || strings.IndexFunc(o.Codec, unicode.IsControl) >= 0 {
		return &ConfigError{Field: "Codec", Reason: fmt.Sprintf("must be valid UTF-8 without control characters, at most %d bytes", MaxCodecNameLen)}
	}
	if o.MaxStateSize < 0 {
		return &ConfigError{Field: "MaxStateSize", Reason: "must not be negative"}
	}
	return nil
}

func (o *Options) setDefaults() {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Codec == "" {
		o.Codec = DefaultCodec
	}
	if o.MaxStateSize == 0 {
		o.MaxStateSize = DefaultMaxStateSize
	}
	if o.Keep == 0 {
		o.Keep = DefaultKeep
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Snapshot is a decoded snapshot: the state of Stream after applying its
// events 0..Version.
type Snapshot struct {
	Stream  string
	Version uint64
	Codec   string
	State   []byte

	record uint64 // the version of its record in the companion stream
}

// Store saves and loads snapshots in companion streams. Safe for concurrent
// use.
type Store struct {
	c       *client.Client
	opts    Options
	metrics *metrics
}

// New returns a Store over c. It does not take ownership of c.
func New(c *client.Client, opts Options) (*Store, error) {
	if c == nil {
		return nil, &ConfigError{Field: "client", Reason: "must not be nil"}
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	m := newMetrics()
	if err := m.register(opts.Registerer); err != nil {
		return nil, err
	}
	return &Store{c: c, opts: opts, metrics: m}, nil
}

// Client returns the client the store reads and writes through.
func (s *Store) Client() *client.Client { return s.c }

// Codec returns the codec name the store writes and accepts.
func (s *Store) Codec() string { return s.opts.Codec }

// Companion returns the name of the stream holding stream's snapshots.
func (s *Store) Companion(stream string) string { return CompanionStream(s.opts.Prefix, stream) }

// Save appends a snapshot of stream's state after version to the companion
// stream. The record's event ID is derived from (companion, version, codec,
// format), so saving the same version again is an idempotent no-op that keeps
// the first record, while a save in another codec is written. A stream name no
// stream can have is refused (client.ErrInvalidArgument), writing nothing.
// The companion's records go up in version: a save of a version below its
// newest record's (in any codec) writes nothing and returns nil, and a save
// appends right after the newest record it read (an expected version), so a
// slow Save of an older version never lands after a newer one. Else it would
// become Latest, and after Repository.TruncateHistory, which removes the
// events before the newer one's version, a Load could not start from it.
//
// After the record is stored, Save prunes the companion stream down to the
// newest Options.Keep records; a failed prune is counted and logged, not
// returned (see Options.Keep).
func (s *Store) Save(ctx context.Context, stream string, version uint64, state []byte) error {
	return s.save(ctx, stream, version, s.opts.Codec, state, 0)
}

// save is Save in codec, superseding the record at companion version rejected-1 (0: none),
// one a Load did not use (Loaded.rejected): the new record has an ID of its own, even at the
// same version and codec (a record corrupted, or one its codec's name cannot decode, would
// otherwise take the save for its repeat, and every Load replay the stream in full), and is
// written after it even when it is newer (one at a version the stream never reached, which
// would otherwise make every Load replay the stream in full until the stream got there, and
// then be taken for the stream's state).
func (s *Store) save(ctx context.Context, stream string, version uint64, codec string, state []byte, rejected uint64) error {
	if err := checkStream(stream); err != nil {
		return fmt.Errorf("snapshot: save %q@%d: %w", stream, version, err)
	}
	if len(state) > s.opts.MaxStateSize {
		return &TooLargeError{Stream: stream, Size: len(state), Limit: s.opts.MaxStateSize, What: "state"}
	}
	rec := encodeRecord(stream, codec, version, state)
	if len(rec) > MaxRecordSize {
		return &TooLargeError{Stream: stream, Size: len(rec), Limit: MaxRecordSize, What: "record"}
	}
	companion := s.Companion(stream)
	ev := client.Event{
		ID:          recordID(companion, version, codec, rejected),
		Type:        EventType,
		Data:        rec,
		ContentType: ContentType,
	}
	// The record goes right after the companion's newest one, and only when that one is not
	// of a later version: the companion's records go up in version, whatever the order the
	// saves run in. A newer record's history may be truncated already (TruncateHistory), and
	// an older snapshot landing after it would become the newest, one a Load cannot start
	// from: it would replay the events left from the initial state.
	var res client.AppendResult
	var err error
	for attempt := 1; ; attempt++ {
		exp, newer, rerr := s.after(ctx, stream, companion, version, rejected)
		if rerr != nil {
			err = rerr
			break
		}
		if newer {
			return nil // a snapshot of a later version is stored: this one is of no use
		}
		res, err = s.c.Append(ctx, companion, exp, ev)
		if !errors.Is(err, client.ErrWrongExpectedVersion) || attempt == maxSaveAttempts {
			break // a save racing others every time gives up: a snapshot is a cache
		}
	}
	conflict := errors.Is(err, client.ErrIDConflict)
	if conflict {
		// Not a repeated save: the record's ID already in the companion stream, at any
		// version, is answered as a duplicate (nil). A conflict means the ID is stored in
		// another stream of the companion's shard (a record copied there, ID and all):
		// nothing was written. A snapshot is a cache, so the save is let go as done; the
		// next version's save has an ID of its own. Nothing is pruned either: the
		// companion did not grow, and res has no version of it.
		err = nil
	}
	if err != nil {
		s.metrics.saveErrors.Inc()
		return fmt.Errorf("snapshot: save %q@%d: %w", stream, version, err)
	}
	s.metrics.saves.Inc()
	s.metrics.savedBytes.Add(float64(len(rec)))
	// A duplicate (the same version saved again) is pruned too, at its first record's
	// version: usually a no-op, but the client reports a duplicate when a retried append's
	// first attempt wrote the record, and the prune after a failed one is retried.
	if !conflict {
		s.prune(ctx, stream, companion, res.LastVersion)
	}
	return nil
}

// maxSaveAttempts bounds how often a save appends again after another save's record landed
// between its read of the companion and its append.
const maxSaveAttempts = 5

// after reads companion's newest record and returns the expected version that appends right
// after it (no stream when there is none), and newer when it is stream's snapshot of a version
// after version, unless it is the record at companion version rejected-1 (see save). A record
// whose header cannot be read says nothing of its version.
func (s *Store) after(ctx context.Context, stream, companion string, version, rejected uint64) (exp client.ExpectedVersion, newer bool, err error) {
	last, found, err := readLast(ctx, s.c, companion)
	if err != nil {
		return exp, false, err
	}
	if !found {
		return client.NoStream, false, nil // none, or deleted (soft: an append starts it again)
	}
	if h, _, why := decodeHeader(last.Data); why == "" && last.Type == EventType && h.Stream == stream && h.Version > version &&
		last.Version+1 != rejected {
		return exp, true, nil
	}
	return client.Exact(last.Version), false, nil
}

// prune truncates companion, whose record of stream's snapshot is at version at, down
// to the newest Options.Keep records. Truncation keeps a live stream's last event, so a
// newer record saved concurrently stays whatever the order. A failure is counted and
// logged, not returned: the snapshot is stored, and the next save's truncation covers
// every older record, this one's too.
func (s *Store) prune(ctx context.Context, stream, companion string, at uint64) {
	keep := s.opts.Keep
	if keep < 0 || at+1 <= uint64(keep) {
		return // pruning off, or nothing below version 0 to remove
	}
	before := at + 1 - uint64(keep)
	if _, err := s.c.Truncate(ctx, companion, before, client.Any); err != nil {
		s.metrics.pruneErrors.Inc()
		lvl := slog.LevelWarn
		if errors.Is(err, client.ErrShardFormat) {
			lvl = slog.LevelInfo // until the cluster is upgraded: every save says so
		}
		s.opts.Logger.Log(ctx, lvl, "snapshot: pruning old snapshots failed; the save stands, the next one retries",
			"stream", stream, "companion", companion, "before", before, "err", err)
		return
	}
	s.metrics.prunes.Inc()
}

// recordID is the event ID of the snapshot record of a stream's state after version, in
// codec's encoding and the record format FormatVersion: UUID v5 of companion | 0 | version
// (8 BE) | codec | 0 | format. Saving the same again is a duplicate; a record in another
// codec or format at a version already saved is a record of its own (else, after a codec
// change, the first save would be dropped as the old record's repeat, and every load replay
// the stream in full until the next event). A record superseding the one at companion version
// rejected-1 (see save) adds | 0 | rejected (8 BE).
func recordID(companion string, version uint64, codec string, rejected uint64) uuid.UUID {
	b := make([]byte, 0, len(companion)+len(codec)+20)
	b = append(b, companion...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, version)
	b = append(b, codec...)
	b = append(b, 0, FormatVersion)
	if rejected != 0 {
		b = append(b, 0)
		b = binary.BigEndian.AppendUint64(b, rejected)
	}
	return uuid.NewSHA1(idSpace, b)
}

// Latest returns stream's newest snapshot, reading the companion stream
// backward with count 1. ok is false when there is none. A record that
// cannot be trusted returns a *CorruptError (ErrCorrupt or ErrCodecMismatch)
// naming the stream: the caller falls back to a full replay.
func (s *Store) Latest(ctx context.Context, stream string) (snap Snapshot, ok bool, err error) {
	return s.latest(ctx, stream, s.opts.Codec)
}

func (s *Store) latest(ctx context.Context, stream, codec string) (snap Snapshot, ok bool, err error) {
	companion := s.Companion(stream)
	ev, found, err := readLast(ctx, s.c, companion)
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("snapshot: latest %q: %w", stream, err)
	}
	if !found {
		s.metrics.misses.Inc()
		return Snapshot{}, false, nil
	}
	snap, err = s.decode(stream, codec, ev)
	if err != nil {
		s.metrics.corrupt.Inc()
		return Snapshot{}, false, err
	}
	s.metrics.hits.Inc()
	return snap, true, nil
}

func (s *Store) decode(stream, codec string, ev client.RecordedEvent) (Snapshot, error) {
	bad := func(codec bool, format string, args ...any) (Snapshot, error) {
		return Snapshot{}, &CorruptError{Stream: stream, Companion: ev.Stream, Version: ev.Version,
			Reason: fmt.Sprintf(format, args...), codec: codec}
	}
	if ev.Type != EventType {
		return bad(false, "event type %q, want %q", ev.Type, EventType)
	}
	h, payload, why := decodeHeader(ev.Data)
	if why != "" {
		return bad(false, "%s", why)
	}
	if h.Stream != stream {
		return bad(false, "record belongs to stream %q", h.Stream)
	}
	if h.Codec != codec {
		return bad(true, "record codec %q, want %q", h.Codec, codec)
	}
	state, why := decompress(payload, h.RawLen, s.opts.MaxStateSize)
	if why != "" {
		return bad(false, "%s", why)
	}
	return Snapshot{Stream: stream, Version: h.Version, Codec: h.Codec, State: state, record: ev.Version}, nil
}

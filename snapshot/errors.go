package snapshot

import (
	"errors"
	"fmt"
)

var (
	// ErrCorrupt is returned by Store.Latest (and so Load and Repository.Load)
	// when the newest snapshot record cannot be trusted: bad checksum, unknown
	// format, truncated, written for another stream, or not a snapshot at all.
	// The caller falls back to a full replay; the concrete error is a
	// *CorruptError naming the stream.
	ErrCorrupt = errors.New("snapshot: corrupt snapshot")

	// ErrCodecMismatch is returned by Store.Latest when the newest snapshot
	// was written with another codec than Options.Codec (the state type or
	// its encoding changed). Fall back to replay and save a fresh snapshot.
	ErrCodecMismatch = errors.New("snapshot: codec mismatch")

	// ErrDeletedHistory is the Loaded.SnapshotErr of a snapshot taken before the stream was
	// soft-deleted: it folds events the stream no longer has, so Load replayed the events
	// written since the delete from the initial state instead.
	ErrDeletedHistory = errors.New("snapshot: snapshot covers events deleted since")

	// ErrVersionGap is returned by Load and Repository.Load when the stream was deleted (and
	// written again) while it was read, on each of their attempts: the events read skipped a
	// version, or a read that resumed after a failover found the last event it had read gone
	// (client.ErrStreamChanged, wrapped). Nothing was loaded; the load may be tried again.
	ErrVersionGap = errors.New("snapshot: the stream's versions skip (deleted and written again while read)")

	// ErrTooLarge is returned by Store.Save when the compressed record does
	// not fit in one event (MaxRecordSize) or the state exceeds MaxStateSize.
	ErrTooLarge = errors.New("snapshot: snapshot too large")

	// ErrUnread is returned by Repository.TruncateHistory with ReadBy when a reader of the shard
	// logs has not read every event the truncation would remove: nothing was removed. Try again
	// once the reader has caught up.
	ErrUnread = errors.New("snapshot: a reader has not read the events a truncation would remove")

	// ErrInvalidConfig is returned by New and NewRepository for bad options.
	ErrInvalidConfig = errors.New("snapshot: invalid config")
)

// CorruptError describes an untrusted snapshot record. Is(ErrCorrupt), or
// Is(ErrCodecMismatch) when only the codec differs.
type CorruptError struct {
	Stream    string // source stream
	Companion string // the stream holding the record
	Version   uint64 // companion-stream version of the record
	Reason    string
	codec     bool
}

// undecodable is the *CorruptError of stream's snapshot at version that codec cannot decode.
func (s *Store) undecodable(stream, codec string, snap Snapshot, err error) *CorruptError {
	return &CorruptError{Stream: stream, Companion: s.Companion(stream), Version: snap.record,
		Reason: fmt.Sprintf("codec %q cannot decode version %d: %v", codec, snap.Version, err)}
}

// endsBefore is the *CorruptError of stream's snapshot snap, at a version the stream never
// reached.
func (s *Store) endsBefore(stream string, snap Snapshot) *CorruptError {
	return &CorruptError{Stream: stream, Companion: s.Companion(stream), Version: snap.record,
		Reason: fmt.Sprintf("snapshot at version %d, but the stream ends before it", snap.Version)}
}

func (e *CorruptError) Error() string {
	if e.codec {
		return fmt.Sprintf("snapshot: codec mismatch for stream %q (record %s@%d): %s", e.Stream, e.Companion, e.Version, e.Reason)
	}
	return fmt.Sprintf("snapshot: corrupt snapshot for stream %q (record %s@%d): %s", e.Stream, e.Companion, e.Version, e.Reason)
}

// Is reports ErrCorrupt, or ErrCodecMismatch for codec mismatches.
func (e *CorruptError) Is(target error) bool {
	if e.codec {
		return target == ErrCodecMismatch
	}
	return target == ErrCorrupt
}

// TooLargeError carries the sizes of a refused Save. Is(ErrTooLarge).
type TooLargeError struct {
	Stream string
	Size   int    // bytes
	Limit  int    // bytes
	What   string // "state" or "record"
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("snapshot: %s for stream %q is %d bytes, limit %d (%s)", e.What, e.Stream, e.Size, e.Limit, e.limitName())
}

// limitName names the limit that refused the save: the state's is Options.MaxStateSize, which
// the caller may raise; the record's is MaxRecordSize, one event's data, which no option raises
// (a state that compresses to more cannot be snapshotted). A bare number left the caller to
// guess which, and raising MaxStateSize does nothing for a record too large.
func (e *TooLargeError) limitName() string {
	if e.What == "record" {
		return "MaxRecordSize: the compressed record must fit in one event"
	}
	return "Options.MaxStateSize"
}

// Is reports ErrTooLarge.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// ConfigError names a bad option. Is(ErrInvalidConfig).
type ConfigError struct{ Field, Reason string }

func (e *ConfigError) Error() string {
	return fmt.Sprintf("snapshot: invalid config: %s %s", e.Field, e.Reason)
}

// Is reports ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

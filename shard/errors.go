package shard

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Verdict errors. Apply returns them (as values) for commands it refuses; the
// read methods return ErrStreamNotFound and ErrStreamDeleted. Callers match
// them with errors.Is; the typed errors below carry the facts.
var (
	// ErrStreamNotFound: reads and StreamInfo of absent or soft-deleted
	// streams; a delete of an absent (or already soft-deleted) stream.
	ErrStreamNotFound = errors.New("shard: stream not found")
	// ErrStreamDeleted: the stream is tombstoned; returned by reads, appends
	// and deletes, forever (but for the retry of an append stored before the
	// tombstone, a duplicate).
	ErrStreamDeleted = errors.New("shard: stream deleted")
	// ErrWrongExpectedVersion: Apply, when the expected-version check fails.
	// The concrete value is a *WrongExpectedVersionError.
	ErrWrongExpectedVersion = errors.New("shard: wrong expected version")
	// ErrIDConflict: Apply, when some (not all) event IDs of an append are
	// already stored, or all are but not as a consecutive run of this stream.
	// The concrete value is an *IDConflictError.
	ErrIDConflict = errors.New("shard: event ID conflict")
	// ErrInvalid: validation (ValidateAppend, ValidateDelete, CheckStreamName,
	// Apply) and DecodeCommand. The concrete value is an *InvalidError.
	ErrInvalid = errors.New("shard: invalid argument")
	// ErrNeedsFormat: Apply, for a command the shard's format does not have yet (a
	// TruncateCommand below Format4). The error names both formats.
	ErrNeedsFormat = errors.New("shard: the shard's format is too old for this command")
	// ErrPolicyChanged: Apply, for a retention policy's truncation (TruncateCommand.Policy)
	// of a stream no longer governed by that policy as it was set: it was removed, set again,
	// or a policy of a longer prefix governs the stream now. Nothing is removed.
	ErrPolicyChanged = errors.New("shard: the retention policy changed")
	// ErrHistoryTruncated: ReadStreamWhole, when a truncation removed events of the stream
	// at or after the version asked for. The error is a *HistoryTruncatedError.
	ErrHistoryTruncated = errors.New("shard: stream history truncated")
)

// HistoryTruncatedError is ErrHistoryTruncated: versions From to Start-1 of Stream were
// removed by a truncation, so its history from From on is not all there.
type HistoryTruncatedError struct {
	Stream      string
	From, Start uint64
}

func (e *HistoryTruncatedError) Error() string {
	return fmt.Sprintf("shard: stream %q was truncated before version %d: versions from %d on are not all there",
		e.Stream, e.Start, e.From)
}

// Is reports whether target is ErrHistoryTruncated.
func (e *HistoryTruncatedError) Is(target error) bool { return target == ErrHistoryTruncated }

// WrongExpectedVersionError is returned by Apply when the expected-version
// check fails. Exists reports whether the stream exists (present and not
// soft-deleted); Actual is its last version when a stream record is present
// (also for a soft-deleted stream), else 0.
type WrongExpectedVersionError struct {
	Stream   string
	Expected Expected
	Exists   bool
	Actual   uint64
	Deleted  bool // addition: the stream is soft-deleted; Actual is its last version
}

func (e *WrongExpectedVersionError) Error() string {
	state := "does not exist"
	switch {
	case e.Exists:
		state = fmt.Sprintf("exists with last version %d", e.Actual)
	case e.Deleted:
		state = fmt.Sprintf("is soft-deleted at last version %d", e.Actual)
	}
	return fmt.Sprintf("shard: wrong expected version for stream %q: expected %s, stream %s",
		e.Stream, e.Expected, state)
}

// Is reports whether target is ErrWrongExpectedVersion.
func (e *WrongExpectedVersionError) Is(target error) bool { return target == ErrWrongExpectedVersion }

// IDConflictError is returned by Apply when an append's event IDs are partly
// stored already (or stored elsewhere). ID is the first offending ID of the
// batch; ExistingStream/ExistingVersion say where it is stored.
type IDConflictError struct {
	Stream          string
	ID              [16]byte
	ExistingStream  string
	ExistingVersion uint64
}

func (e *IDConflictError) Error() string {
	return fmt.Sprintf("shard: event ID conflict in stream %q: event %s is already stored in stream %q at version %d",
		e.Stream, uuid.UUID(e.ID), e.ExistingStream, e.ExistingVersion)
}

// Is reports whether target is ErrIDConflict.
func (e *IDConflictError) Is(target error) bool { return target == ErrIDConflict }

// InvalidError describes bad input: which field, which limit, and why.
type InvalidError struct {
	Field  string // e.g. "stream", "events[3].type", "expected.kind"
	Limit  string // e.g. "1..512 bytes"
	Reason string // e.g. "too long (513 bytes)"
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("shard: invalid argument: %s: %s (limit: %s)", e.Field, e.Reason, e.Limit)
}

// Is reports whether target is ErrInvalid.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, limit, format string, args ...any) *InvalidError {
	return &InvalidError{Field: field, Limit: limit, Reason: fmt.Sprintf(format, args...)}
}

// ErrCorrupt is returned by reads, Open and Reload when a stored record
// cannot be decoded (an addition to the contract). Apply never writes such
// records; seeing one means disk corruption or a foreign keyspace.
var ErrCorrupt = errors.New("shard: corrupt record")

// errFilterBuildStopped ends a background filter scan that a newer Reload or Close replaced.
var errFilterBuildStopped = errors.New("shard: filter scan stopped")

func errCorrupt(what string) error { return fmt.Errorf("%w: %s", ErrCorrupt, what) }

package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Expected-version values passed to Target.Append. A value >= 0 is the exact
// version of the stream's last event.
const (
	ExpectAny      int64 = -1 // no check
	ExpectNoStream int64 = -2 // the stream must not exist yet
)

// ActualUnknown is ConflictError.Actual when the target cannot tell a
// stream's current version.
const ActualUnknown int64 = math.MinInt64

// Target is the system under test. The benchmark owns this interface; shoal's
// implementation is ShoalTarget, and adapters for other systems implement it
// the same way. Implementations must be safe for concurrent use: every
// worker calls them from its own goroutine.
type Target interface {
	// Append appends events (opaque payloads) to stream, all or nothing,
	// checking expected first (ExpectAny, ExpectNoStream or an exact last
	// version >= 0). It returns the stream's last version after the append.
	// A failed check returns an error for which errors.Is(err, ErrConflict)
	// holds, preferably a *ConflictError carrying the actual version.
	// events are valid only during the call: the caller reuses them.
	Append(ctx context.Context, stream string, expected int64, events [][]byte) (last int64, err error)
	// ReadStream reads the whole stream from its first event and returns
	// how many events it read.
	ReadStream(ctx context.Context, stream string) (n int64, err error)
}

// Subscriber is an optional interface of a Target that can follow what is appended: RunAppend
// with AppendConfig.Subscribe measures with it how long an event takes to reach a subscriber.
type Subscriber interface {
	// Subscribe follows every event appended from now on until ctx ends, calling fn (from
	// any goroutine, possibly concurrently) with the time the system stamped the event when
	// its append arrived, on the system's clock (RunAppend subtracts it from its own clock's
	// time of the call). It returns when ctx ends, or with the error that ended a
	// subscription.
	Subscribe(ctx context.Context, fn func(stamped time.Time)) error
}

// System describes a target for reports.
type System struct {
	Name       string `json:"name"`       // e.g. "shoal"
	Version    string `json:"version"`    // the server's version, "" when unknown
	Durability string `json:"durability"` // what an acknowledged append survives, one short label
}

// Describer is an optional interface of a Target that names itself.
type Describer interface {
	Describe(ctx context.Context) System
}

// Error kinds, the keys of Result.Errors.
const (
	KindConflict    = "conflict"    // expected-version check failed (counted in Result.Conflicts, not Errors)
	KindTimeout     = "timeout"     // the per-operation deadline passed
	KindUnavailable = "unavailable" // the target could not be reached or had no leader
	KindInvalid     = "invalid"     // the target refused the request as malformed
	KindNotFound    = "not_found"   // the stream does not exist
	KindOther       = "other"
)

// ErrConflict is matched by the errors a Target returns when an
// expected-version check fails.
var ErrConflict = errors.New("bench: wrong expected version")

// ConflictError is a failed expected-version check. It matches ErrConflict.
type ConflictError struct {
	Stream string
	Actual int64 // the stream's last version; -1 when it does not exist; ActualUnknown when not known
}

func (e *ConflictError) Error() string {
	switch e.Actual {
	case ActualUnknown:
		return fmt.Sprintf("bench: wrong expected version for stream %q", e.Stream)
	case -1:
		return fmt.Sprintf("bench: wrong expected version for stream %q (it does not exist)", e.Stream)
	}
	return fmt.Sprintf("bench: wrong expected version for stream %q (it is at %d)", e.Stream, e.Actual)
}

// Is reports whether target is ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// KindError classifies an error for Result.Errors. Targets wrap their errors
// in one (see Classified) when the default classification (context deadline =
// timeout, ErrConflict = conflict, else other) is not enough.
type KindError struct {
	Kind string
	Err  error
}

// Classified wraps err with a kind; nil stays nil.
func Classified(kind string, err error) error {
	if err == nil {
		return nil
	}
	return &KindError{Kind: kind, Err: err}
}

func (e *KindError) Error() string { return e.Err.Error() }
func (e *KindError) Unwrap() error { return e.Err }

// Classify returns the kind of err, one of the Kind constants or a kind a
// Target chose.
func Classify(err error) string {
	var ke *KindError
	switch {
	case errors.Is(err, ErrConflict):
		return KindConflict
	case errors.As(err, &ke):
		return ke.Kind
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	}
	return KindOther
}

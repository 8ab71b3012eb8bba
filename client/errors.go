package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// Sentinel errors. Match them with errors.Is; the typed errors below carry
// the facts and match their sentinel.
var (
	// ErrWrongExpectedVersion is returned by Append and Delete when the
	// stream's version does not satisfy the expected version. The error is a
	// *WrongExpectedVersionError. Never retried.
	ErrWrongExpectedVersion = errors.New("client: wrong expected version")
	// ErrStreamNotFound is returned by reads of a stream that does not exist
	// or was soft-deleted, and by Delete of a stream that does not exist.
	ErrStreamNotFound = errors.New("client: stream not found")
	// ErrStreamDeleted is returned by any operation on a tombstoned stream but Truncate, which
	// frees its events' space, and StreamInfo, which reports it (StreamTombstoned).
	ErrStreamDeleted = errors.New("client: stream deleted")
	// ErrStreamChanged ends a Read that resumed after a failure and found the stream deleted
	// and written again since the events it yielded, or truncated past them: what follows is
	// not the history read so far. (Deleted and not written again, it ends with
	// ErrStreamNotFound.) The error is a *StreamChangedError. Read the stream again.
	ErrStreamChanged = errors.New("client: stream deleted during the read")
	// ErrHistoryTruncated is returned by a Read with WholeHistory when a truncation removed
	// events of the stream at or after the version it starts from. The error is a
	// *HistoryTruncatedError. Never retried.
	ErrHistoryTruncated = errors.New("client: stream history truncated")
	// ErrPositionAhead is returned by a linearizable ReadShard from a position past the
	// shard's end, which a position the cluster handed out never is: it comes from a history
	// the shard no longer has (kept across a restore from an older backup) or from another
	// cluster, and a reader that waited there would skip what is written up to it. The error
	// is a *PositionAheadError. Never retried.
	ErrPositionAhead = errors.New("client: position past the shard's end")
	// ErrInvalidArgument is returned for a request the server (or the
	// client, before sending) refuses as malformed. The error is an
	// *InvalidArgumentError naming the field and the limit. Never retried.
	ErrInvalidArgument = errors.New("client: invalid argument")
	// ErrIDConflict is returned by Append when some, not all, of the
	// batch's event IDs are already stored, or stored elsewhere. The error
	// is an *IDConflictError. Never retried.
	ErrIDConflict = errors.New("client: event ID conflict")
	// ErrShardFormat is returned by Truncate when the stream's shard is not yet at the
	// format that has it: a replica of the shard runs a version without it. It passes once
	// every node is upgraded (the shard's leader then raises the format by itself). Never
	// retried.
	ErrShardFormat = errors.New("client: the shard's format does not have this operation yet")
	// ErrDiskLow is returned by Append when the stream's shard refuses appends because a
	// majority of its voters have less free space on their data directory's disk than their
	// --min-free-disk: the message names the nodes. Nothing of the refused append was written.
	// It passes once space is freed on them (a retention policy, Truncate), so it is not
	// retried: reads, deletes and truncations go on meanwhile.
	ErrDiskLow = errors.New("client: a replica's disk is low on space")
	// ErrUnavailable is returned when retries gave up (the retry policy's
	// MaxElapsed passed) without reaching a node able to serve the call. The
	// error is an *UnavailableError wrapping the last attempt's error.
	ErrUnavailable = errors.New("client: cluster unavailable")
	// ErrClosed is returned by calls on a closed Client. A write that Close ended after an
	// attempt that may have been applied wraps it in an *OutcomeUnknownError.
	ErrClosed = errors.New("client: closed")
	// ErrOutcomeUnknown is returned by Append and Delete when an attempt failed
	// after it may have been applied, and the call ended without learning
	// whether it was: the error is an *OutcomeUnknownError wrapping the call's
	// final failure, which still matches its own sentinel (ErrUnavailable,
	// context.DeadlineExceeded, ...). An attempt may have been applied when it
	// failed after its request may have reached a node that could propose it:
	// a connection cut after sending, a timeout, an INTERNAL, CANCELLED or
	// UNKNOWN answer (the server's own verdict that a write's outcome is
	// unknown), a not-leader answer saying the node's proposal did not commit
	// in time, or an attempt abandoned for a new leader while it waited. When
	// every attempt was refused before anything was proposed (no leader known,
	// not the leader, a node starting or shutting down before it took the
	// write, a connection that could not be made), the call returns its failure
	// without this wrapper: nothing was written. (A server of an earlier version that proposed an append, lost
	// the proposal to a leadership change and then found no leader answered "no
	// leader" as if it had refused it; servers now answer UNKNOWN. An append is
	// safe to repeat with the same event IDs either way.)
	//
	// Append and Delete expecting an exact version, which a repeat cannot apply
	// twice, are retried after such failures, and return it only when their
	// retries end. A Delete expecting any version or an existing stream is not
	// repeated once an attempt may have reached the cluster (a repeat could
	// delete events another writer appended meanwhile): it returns it at once.
	// Read the stream to find out, or, for an append, send it again with the
	// same event IDs (OutcomeUnknownError.EventIDs has them, those drawn for
	// events given without one included). A delete expecting an exact version also returns it when
	// a repeat after such an attempt was refused in a way the attempt itself
	// could have caused (stream not found or deleted, another version).
	ErrOutcomeUnknown = errors.New("client: the write may or may not have been applied")
	// ErrTLSHandshake is returned by any call, Dial included, when the TLS
	// handshake with a node failed on its certificates or protocol (a server
	// certificate the client does not trust or that does not name the
	// address dialled, a server without TLS, a client certificate the server
	// refuses): a setup error, never retried. The error wraps the gRPC
	// status.
	ErrTLSHandshake = errors.New("client: TLS handshake failed")
	// ErrNotGRPC is returned by any call, Dial included, when a node's address
	// answered HTTP/1.1 rather than gRPC: an HTTP port (a node's --http, a
	// proxy) given for its gRPC address. A setup error, never retried on that
	// address. The error wraps the gRPC status.
	ErrNotGRPC = errors.New("client: the address answers HTTP/1.1, not gRPC (an HTTP port given for the node's gRPC address?)")
	// ErrWrongCluster is returned by any call when the nodes it reached belong to another
	// cluster than the one the client dialled (its first topology's cluster ID): the cluster
	// was re-created at the same addresses, or the addresses now serve another one. Streams
	// there live under other shards and versions; dial again to use that cluster. The error
	// wraps the refusal.
	ErrWrongCluster = errors.New("client: the node belongs to another cluster than the one dialled")
)

// OutcomeUnknownError is the ErrOutcomeUnknown failure: Err is the failure
// that ended the call (the last attempt's error, or the *UnavailableError or
// context error of a call whose retries ended), after Attempts attempts.
// EventIDs, for an append, are the IDs its events were sent with, those
// Append drew for events without one included: append the events again with
// these IDs to learn the outcome (a duplicate, if the first append was
// applied) or to apply them once.
type OutcomeUnknownError struct {
	Attempts int
	Err      error
	EventIDs []uuid.UUID
}

func (e *OutcomeUnknownError) Error() string {
	// An ended call's error counts the attempts itself: *UnavailableError, and ctxError's
	// wrapping of a context error.
	_, ended := errors.AsType[*UnavailableError](e.Err)
	wrappedCtx := (errors.Is(e.Err, context.Canceled) || errors.Is(e.Err, context.DeadlineExceeded)) &&
		e.Err != context.Canceled && e.Err != context.DeadlineExceeded
	if ended || wrappedCtx {
		return fmt.Sprintf("%v: %v", ErrOutcomeUnknown, e.Err)
	}
	return fmt.Sprintf("%v (after %d attempt(s): %v)", ErrOutcomeUnknown, e.Attempts, e.Err)
}

// Is reports whether target is ErrOutcomeUnknown.
func (e *OutcomeUnknownError) Is(target error) bool { return target == ErrOutcomeUnknown }

// Unwrap returns the failure that ended the call.
func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// ownRefusal reports whether err, converted, refuses a delete in a way an earlier attempt of
// the same delete could have caused: the stream not found or deleted (that attempt deleted it),
// or at another version (that attempt deleted, and another writer appended since).
func ownRefusal(err error) bool {
	return errors.Is(err, ErrStreamNotFound) || errors.Is(err, ErrStreamDeleted) || errors.Is(err, ErrWrongExpectedVersion)
}

// streamVerdict reports whether err is the stream's verdict on a write: what a repeat of an
// append that was applied would not answer (it finds its event IDs and answers as a
// duplicate), so that an append's verdict settles its earlier attempts. An ID conflict with an
// event of the append's own stream does not: at shard format 7 a truncation forgets the IDs of
// the events it removes, and that is what the repeat meets once it removed some of them.
func streamVerdict(err error) bool {
	var ice *IDConflictError
	if errors.As(err, &ice) && ice.ExistingStream == ice.Stream {
		return false
	}
	return ownRefusal(err) || errors.Is(err, ErrIDConflict)
}

// mayHaveApplied reports whether an attempt that failed with err, while the
// caller's context is live, may have been applied by the cluster: every
// failure but a connection that could not be made and answers that refuse
// the call without applying it (not the leader, a verdict, a full queue).
func mayHaveApplied(err error) bool {
	if ns := (*notSentError)(nil); errors.As(err, &ns) {
		return false
	}
	st, ok := status.FromError(err)
	if !ok {
		return true // a connection error, or an attempt's timeout
	}
	switch st.Code() {
	case codes.Unavailable:
		if tlsRefused(st) {
			return false // no connection was made
		}
		for _, d := range st.Details() {
			if _, ok := d.(*shoalv1.NotLeader); ok {
				return false
			}
		}
		// gRPC's failure to connect, a node still starting, a node shutting down: refused
		// before anything ran (the server's refusedUnapplied knows the same answers).
		msg := st.Message()
		return !strings.Contains(msg, "while dialing") && !strings.Contains(msg, "is starting") &&
			!strings.Contains(msg, "node is shutting down")
	case codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal:
		return true
	}
	return false
}

// proposalLost reports whether err is a not-leader answer that a server gives an idempotent
// write (an append, a delete expecting an exact version) after proposing it itself: the
// proposal did not commit in time, or the replica it waited on stopped or left its group. Such
// a proposal may still commit, so the write may have been applied although the answer, like
// a refusal, carries a NotLeader detail. Servers of this version answer UNKNOWN in these cases
// once the write's attempts end (node.appendOutcome); this reads the answers of earlier ones,
// and of a server's attempt that is repeated.
func proposalLost(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	msg := st.Message()
	return strings.Contains(msg, "not committed within") || strings.Contains(msg, "replica: stopped") ||
		strings.Contains(msg, "replica: group removed")
}

// WrongExpectedVersionError is the ErrWrongExpectedVersion verdict with its
// facts.
type WrongExpectedVersionError struct {
	Stream       string
	Expected     ExpectedVersion
	Actual       uint64 // the stream's last version; meaningful when StreamExists or StreamDeleted
	StreamExists bool
	// StreamDeleted: the stream is soft-deleted (StreamExists is false). An append expecting
	// Exact(Actual) continues it, as one expecting NoStream or Any does.
	StreamDeleted bool
}

func (e *WrongExpectedVersionError) Error() string {
	actual := "does not exist"
	switch {
	case e.StreamExists:
		actual = fmt.Sprintf("is at version %d", e.Actual)
	case e.StreamDeleted:
		actual = fmt.Sprintf("is soft-deleted at version %d", e.Actual)
	}
	return fmt.Sprintf("client: wrong expected version for stream %q: expected %s, but the stream %s", e.Stream, e.Expected, actual)
}

// Is reports whether target is ErrWrongExpectedVersion.
func (e *WrongExpectedVersionError) Is(target error) bool { return target == ErrWrongExpectedVersion }

// InvalidArgumentError is the ErrInvalidArgument verdict with its facts.
type InvalidArgumentError struct {
	Field  string // e.g. "stream", "events[3].type"; may be empty
	Limit  string // e.g. "at most 512 bytes"; may be empty
	Reason string // one sentence
}

func (e *InvalidArgumentError) Error() string {
	var b strings.Builder
	b.WriteString("client: invalid argument")
	if e.Field != "" {
		fmt.Fprintf(&b, " %q", e.Field)
	}
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	if e.Limit != "" {
		fmt.Fprintf(&b, " (limit: %s)", e.Limit)
	}
	return b.String()
}

// Is reports whether target is ErrInvalidArgument.
func (e *InvalidArgumentError) Is(target error) bool { return target == ErrInvalidArgument }

// IDConflictError is the ErrIDConflict verdict with its facts.
type IDConflictError struct {
	Stream          string
	ID              uuid.UUID
	ExistingStream  string
	ExistingVersion uint64
}

func (e *IDConflictError) Error() string {
	if e.ExistingStream == "" {
		return fmt.Sprintf("client: event ID %s conflicts with an event already stored for stream %q", e.ID, e.Stream)
	}
	if e.ExistingStream == e.Stream {
		// Stored in this stream, but the batch is no retry of what was stored: a retry
		// resends the events of earlier appends in their order and at consecutive versions.
		return fmt.Sprintf("client: event ID %s is already stored as version %d of stream %q, but the batch does not "+
			"repeat stored events in order at consecutive versions (it mixes new events with stored ones, reorders them, "+
			"or leaves one out; or a truncation removed some of them since, which forgets their IDs): a retry resends "+
			"the same events in the same order", e.ID, e.ExistingVersion, e.Stream)
	}
	return fmt.Sprintf("client: event ID %s sent to stream %q is already stored as version %d of stream %q",
		e.ID, e.Stream, e.ExistingVersion, e.ExistingStream)
}

// Is reports whether target is ErrIDConflict.
func (e *IDConflictError) Is(target error) bool { return target == ErrIDConflict }

// UnavailableError is returned when retries gave up. Err is the last
// attempt's error (a gRPC status error, so status.Code(err) still works).
type UnavailableError struct {
	Attempts int
	Elapsed  time.Duration
	Err      error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("client: cluster unavailable after %d attempts in %s: %v", e.Attempts, e.Elapsed.Round(time.Millisecond), e.Err)
}

// Is reports whether target is ErrUnavailable.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// Unwrap returns the last attempt's error.
func (e *UnavailableError) Unwrap() error { return e.Err }

// ctxError is what a call returns when the caller's context ended (or its
// deadline would pass before the next attempt): it matches the context error
// and still carries the last attempt's error.
func ctxError(ctxErr error, attempts int, last error) error {
	if last == nil {
		return ctxErr
	}
	return fmt.Errorf("client: %w after %d attempts, last error: %w", ctxErr, attempts, last)
}

// Internal causes; they only ever appear wrapped in an UnavailableError or a
// ctxError.
var (
	errAllBreakersOpen = errors.New("client: every candidate node's circuit breaker is open")
	errNoNodes         = errors.New("client: no node address is known")
)

// verdict is how the retry loop treats an attempt's error.
type verdict uint8

const (
	fatal    verdict = iota // convert and return
	retry                   // back off, then try again
	redirect                // NotLeader with an address: try it at once
)

// classify decides what to do with err, an attempt's error, given that the
// caller's context is still live. nodeFault reports whether the error counts
// against the node's circuit breaker (transport failures only).
func classify(err error) (v verdict, nodeFault bool, nl *shoalv1.NotLeader) {
	st, ok := status.FromError(err)
	if !ok {
		// Not a status: a connection error, or the context error of an
		// attempt that timed out (the caller's own context is live).
		return retry, true, nil
	}
	switch st.Code() {
	case codes.Unavailable:
		if tlsRefused(st) || notGRPC(st) {
			return fatal, false, nil
		}
		for _, d := range st.Details() {
			if d, ok := d.(*shoalv1.NotLeader); ok {
				if d.GetLeaderAddr() != "" {
					return redirect, false, d
				}
				return retry, false, d // election in progress
			}
		}
		if shoalv1.IsNodeUnreachable(st) {
			return retry, false, nil // the node answered: another it forwarded to did not
		}
		return retry, true, nil
	case codes.DeadlineExceeded:
		return retry, !shoalv1.IsNodeUnreachable(st), nil
	case codes.ResourceExhausted:
		if overSize(st) || shoalv1.IsDiskLow(st) {
			return fatal, false, nil
		}
		return retry, false, nil
	case codes.Aborted:
		return retry, false, nil
	}
	return fatal, false, nil
}

// overSize reports whether st is gRPC's refusal of a message over its size limit, the
// sender's or the receiver's (ResourceExhausted, as overload is too): that is permanent.
func overSize(st *status.Status) bool {
	return st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "larger than max")
}

// tlsRefused reports whether st is gRPC's failure of a connection's TLS handshake on
// certificates or protocol ("authentication handshake failed" naming a tls or x509 error),
// which a retry meets again. A handshake cut short (EOF, a connection reset: a node
// restarting) is not one.
func tlsRefused(st *status.Status) bool {
	msg := st.Message()
	_, cause, ok := strings.Cut(msg, "authentication handshake failed")
	return ok && (strings.Contains(cause, "tls:") || strings.Contains(cause, "x509:"))
}

// notGRPC reports whether st is gRPC's failure to read a server's HTTP/2 preface because the
// server answered HTTP/1.1, which it does however often it is asked.
func notGRPC(st *status.Status) bool {
	return st.Code() == codes.Unavailable && strings.Contains(st.Message(), "looked like an HTTP/1.1 header")
}

// nodeRefusal reports whether st is a node's refusal of this client as such (a TLS handshake
// on certificates, another cluster, an address that does not speak gRPC), which that node
// repeats however often it is asked, while another node may accept the call.
func nodeRefusal(st *status.Status) bool {
	return tlsRefused(st) || shoalv1.IsWrongCluster(st) || notGRPC(st)
}

// errWrongCluster is the refusal of a topology that n answered for cluster got, not for want.
func errWrongCluster(n *node, got, want string) error {
	return shoalv1.WrongClusterError(fmt.Sprintf("the node at %s answered for cluster %s, not %s, which the client dialled",
		n.addr, got, want), got, want)
}

// convertError maps a fatal gRPC error to the package's errors. stream names
// the stream the call was about ("" for cluster calls). Errors without a
// mapping are returned unchanged (status.Code still works on them).
func convertError(err error, stream string) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *shoalv1.WrongExpectedVersion:
			return &WrongExpectedVersionError{
				Stream:       firstNonEmpty(d.GetStream(), stream),
				Expected:     expectedFromProto(d.GetExpected()),
				Actual:       d.GetActualVersion(),
				StreamExists: d.GetStreamExists(),
				// From servers before the field, a soft-deleted stream reads as absent.
				StreamDeleted: d.GetStreamDeleted(),
			}
		case *shoalv1.StreamNotFound:
			return fmt.Errorf("%w: %q", ErrStreamNotFound, firstNonEmpty(d.GetStream(), stream))
		case *shoalv1.StreamDeleted:
			return fmt.Errorf("%w: %q", ErrStreamDeleted, firstNonEmpty(d.GetStream(), stream))
		case *shoalv1.HistoryTruncated:
			return &HistoryTruncatedError{Stream: firstNonEmpty(d.GetStream(), stream), From: d.GetFromVersion(), Start: d.GetStart()}
		case *shoalv1.InvalidField:
			return &InvalidArgumentError{Field: d.GetField(), Limit: d.GetLimit(), Reason: d.GetReason()}
		case *shoalv1.IDConflict:
			e := &IDConflictError{
				Stream:          firstNonEmpty(d.GetStream(), stream),
				ExistingStream:  d.GetExistingStream(),
				ExistingVersion: d.GetExistingVersion(),
			}
			e.ID, _ = uuid.FromBytes(d.GetId())
			return e
		}
	}
	if shoalv1.IsWrongCluster(st) {
		return fmt.Errorf("%w: %w", ErrWrongCluster, err)
	}
	if shoalv1.IsShardFormat(st) {
		return fmt.Errorf("%w: %s", ErrShardFormat, st.Message())
	}
	if shoalv1.IsDiskLow(st) {
		return fmt.Errorf("%w: %s", ErrDiskLow, st.Message())
	}
	if shard, from, end, ok := shoalv1.PositionAhead(st); ok {
		return &PositionAheadError{Shard: shard, From: from, End: end}
	}
	// No details: map what the code alone says unambiguously.
	switch st.Code() {
	case codes.Unavailable:
		if tlsRefused(st) {
			return fmt.Errorf("%w: %w", ErrTLSHandshake, err)
		}
		if notGRPC(st) {
			return fmt.Errorf("%w: %w", ErrNotGRPC, err)
		}
	case codes.InvalidArgument:
		return &InvalidArgumentError{Reason: st.Message()}
	case codes.NotFound:
		if stream != "" {
			return fmt.Errorf("%w: %q", ErrStreamNotFound, stream)
		}
	case codes.AlreadyExists:
		if stream != "" {
			return &IDConflictError{Stream: stream}
		}
	}
	return err
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// PositionAheadError is ErrPositionAhead: a read of Shard from From, past End, the position
// the shard's next entry takes.
type PositionAheadError struct {
	Shard     uint32
	From, End uint64
}

func (e *PositionAheadError) Error() string {
	return fmt.Sprintf("client: shard %d: position %d is past the shard's end, %d: the shard no longer has the history "+
		"it came from (kept across a restore from an older backup?) or it is another cluster's", e.Shard, e.From, e.End)
}

// Is reports whether target is ErrPositionAhead.
func (e *PositionAheadError) Is(target error) bool { return target == ErrPositionAhead }

// HistoryTruncatedError is ErrHistoryTruncated: versions From to Start-1 of Stream were
// removed by a truncation; its first event is at Start.
type HistoryTruncatedError struct {
	Stream      string
	From, Start uint64
}

func (e *HistoryTruncatedError) Error() string {
	return fmt.Sprintf("client: stream %q was truncated before version %d: its history from version %d is not all there",
		e.Stream, e.Start, e.From)
}

// Is reports whether target is ErrHistoryTruncated.
func (e *HistoryTruncatedError) Is(target error) bool { return target == ErrHistoryTruncated }

// StreamChangedError is ErrStreamChanged: Version, yielded by the read, was gone when the read
// resumed.
type StreamChangedError struct {
	Stream  string
	Version uint64
}

func (e *StreamChangedError) Error() string {
	return fmt.Sprintf("client: stream %q was deleted during the read: version %d, already read, is gone (read it again)",
		e.Stream, e.Version)
}

// Is reports whether target is ErrStreamChanged.
func (e *StreamChangedError) Is(target error) bool { return target == ErrStreamChanged }

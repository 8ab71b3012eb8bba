package saga

import (
	"errors"
	"fmt"

	"github.com/shoaldb/shoal/client"
)

var (
	// ErrConflict is returned by Start and Resume when another coordinator
	// appended to the saga stream first (the append's exact expected version
	// failed). The concrete error is a *ConflictError, which also matches
	// client.ErrWrongExpectedVersion. Stop driving the saga; the other
	// coordinator owns it (Resume later if it may have crashed).
	ErrConflict = errors.New("saga: another coordinator advanced the saga")
	// ErrCorruptLog is returned when a saga stream does not fold (*LogError).
	ErrCorruptLog = errors.New("saga: saga stream breaks the protocol")
	// ErrHistoryDeleted is returned (with ErrCorruptLog, as a *LogError) when a saga
	// stream's visible events start after its SagaStarted: the stream was soft-deleted while
	// the saga ran, and the history it needs to resume or compensate is gone (doc.go, duty 6).
	ErrHistoryDeleted = errors.New("saga: saga history deleted while the saga ran")
	// ErrUnknownSaga is returned by Resume for a saga ID without a stream: no Start recorded
	// it (one that failed with ErrNotStarted, or with client.ErrOutcomeUnknown when its
	// SagaStarted did not land), or its stream was deleted. Unfinished does not list such a
	// saga, so its command is dropped unless the caller calls Start again with the same ID
	// and input, which is safe: an ID already started fails Start with ErrExists and runs
	// nothing (Resume it then). Start after a delete runs a new saga (doc.go, duty 6).
	ErrUnknownSaga = errors.New("saga: no such saga")
	// ErrNotStarted is returned by Start, wrapping the failure, when recording the saga's
	// first event (SagaStarted) failed and wrote nothing: refused by the cluster, or never
	// sent (cluster unavailable, ctx done, an input too large: ErrInvalid too). The saga
	// does not exist: Resume answers ErrUnknownSaga and Unfinished does not list it. Start
	// it again with the same ID (not Resume). A Start failing otherwise (other than with
	// ErrInvalid, ErrUnknownDefinition or ErrExists) may have recorded the saga: Resume it.
	ErrNotStarted = errors.New("saga: not started (nothing recorded)")
	// ErrExists is returned by Start when the saga ID is already used (wrapping the
	// append's client.ErrWrongExpectedVersion; not ErrConflict: a saga started twice, a
	// command delivered again say, is not another coordinator driving it).
	ErrExists = errors.New("saga: saga already exists")
	// ErrUnknownDefinition is returned when no registered Definition has the
	// name a saga was started with.
	ErrUnknownDefinition = errors.New("saga: unknown definition")
	// ErrDefinitionMismatch is returned by Resume when the registered
	// Definition's steps differ from those the saga was started with.
	ErrDefinitionMismatch = errors.New("saga: definition changed since the saga started")
	// ErrCompensationFailed is returned when a compensation still failed
	// after its retries; the saga stays compensating and Resume retries it.
	ErrCompensationFailed = errors.New("saga: compensation failed")
	// ErrInvalid is returned for bad arguments and configs.
	ErrInvalid = errors.New("saga: invalid argument")
)

// ConflictError says a saga append lost a race. Is(ErrConflict); Unwrap
// gives the client's *WrongExpectedVersionError.
type ConflictError struct {
	SagaID   string
	Expected client.ExpectedVersion
	Err      error
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("saga: %q was advanced by another coordinator: %v", e.SagaID, e.Err)
}

// Is reports ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Unwrap returns the append error.
func (e *ConflictError) Unwrap() error { return e.Err }

// LogError names the saga event that does not fold. Is(ErrCorruptLog).
type LogError struct {
	SagaID  string
	Version uint64
	Type    string
	Reason  string
	// Deleted: the events before Version were deleted (ErrHistoryDeleted).
	Deleted bool
}

func (e *LogError) Error() string {
	return fmt.Sprintf("saga: %q event %d (%s): %s", e.SagaID, e.Version, e.Type, e.Reason)
}

// Is reports ErrCorruptLog, and ErrHistoryDeleted when Deleted.
func (e *LogError) Is(target error) bool {
	return target == ErrCorruptLog || e.Deleted && target == ErrHistoryDeleted
}

// StepError carries a compensation that kept failing. Is(ErrCompensationFailed).
type StepError struct {
	SagaID   string
	Step     int
	Name     string
	Kind     Kind
	Attempts int
	Err      error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("saga: %q step %d (%s) %s failed after %d attempts: %v", e.SagaID, e.Step, e.Name, e.Kind, e.Attempts, e.Err)
}

// Is reports ErrCompensationFailed for compensations.
func (e *StepError) Is(target error) bool {
	return target == ErrCompensationFailed && e.Kind == KindCompensation
}

// Unwrap returns the step's last error.
func (e *StepError) Unwrap() error { return e.Err }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

package saga

import (
	"encoding/json"
	"fmt"

	"github.com/shoaldb/shoal/client"
)

// Event types of a saga stream. Append-only: never rename or reuse one.
const (
	TypeSagaStarted           = "saga.started"
	TypeStepStarted           = "saga.step-started"
	TypeStepCompleted         = "saga.step-completed"
	TypeStepFailed            = "saga.step-failed"
	TypeCompensationCompleted = "saga.compensation-completed"
	TypeSagaCompleted         = "saga.completed"
	TypeSagaAborted           = "saga.aborted"
)

// Status is where a saga stands. Values are stable (append-only).
type Status uint8

const (
	StatusNew          Status = iota // no saga stream yet
	StatusRunning                    // executing steps forward
	StatusCompensating               // a step failed: undoing completed steps in reverse
	StatusCompleted                  // every step completed (terminal)
	StatusAborted                    // every completed step compensated (terminal)
)

func (s Status) String() string {
	switch s {
	case StatusNew:
		return "new"
	case StatusRunning:
		return "running"
	case StatusCompensating:
		return "compensating"
	case StatusCompleted:
		return "completed"
	case StatusAborted:
		return "aborted"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Terminal reports whether the saga is finished.
func (s Status) Terminal() bool { return s == StatusCompleted || s == StatusAborted }

// record is the JSON data of every saga event; fields unused by a type are
// omitted.
type record struct {
	Saga     string   `json:"saga,omitempty"`  // started: definition name
	Steps    []string `json:"steps,omitempty"` // started: step names
	Input    []byte   `json:"input,omitempty"` // started
	Step     int      `json:"step"`            // step events
	Output   []byte   `json:"output,omitempty"`
	Error    string   `json:"error,omitempty"` // failed / aborted
	Attempts int      `json:"attempts,omitempty"`
	// Compensate, on StepFailed: the failed step is compensated too (before the
	// completed ones), since its action may have taken effect although the
	// coordinator saw it fail. Written by every coordinator since it was added;
	// a StepFailed without it (recorded before) compensates completed steps only.
	Compensate bool `json:"compensate,omitempty"`
}

// StepState is one step's progress.
type StepState struct {
	Name        string
	Started     bool
	Completed   bool
	Failed      bool
	Compensated bool
	Output      []byte // the action's output, recorded with StepCompleted
	Error       string // the failure, recorded with StepFailed
	// Uncertain: the step failed, but its action may have taken effect (a reply
	// lost, an attempt timed out, another coordinator ran it), so it is
	// compensated like a completed step.
	Uncertain bool
}

// State is a saga folded from its stream. The zero value is a saga whose
// stream does not exist yet.
type State struct {
	ID         string // saga ID (stream "saga-"+ID)
	Definition string // definition name
	Input      []byte
	Steps      []StepState
	Status     Status
	FailedStep int    // the step whose failure started compensation; -1 when none
	Failure    string // its error text

	Exists  bool   // the stream has events
	Version uint64 // version of the last event folded in; valid when Exists
	// StartVersion is the version of the SagaStarted event: 0, unless the ID was used before
	// by a saga whose stream was soft-deleted (the stream goes on after its last version).
	// It tells the two sagas' idempotency IDs apart (IdempotencyIDAt).
	StartVersion uint64
}

// Expected is the expected version for the next saga event: exactly the
// folded one, so a coordinator acting on a stale fold fails its append.
func (s *State) Expected() client.ExpectedVersion {
	if s.Exists {
		return client.Exact(s.Version)
	}
	return client.NoStream
}

// Outputs returns the recorded outputs of all steps (nil for steps not
// completed).
func (s *State) Outputs() [][]byte {
	out := make([][]byte, len(s.Steps))
	for i, st := range s.Steps {
		out[i] = st.Output
	}
	return out
}

// Fold rebuilds a saga's state from its events in version order.
func Fold(id string, events []client.RecordedEvent) (State, error) {
	s := State{ID: id, FailedStep: -1}
	for _, ev := range events {
		if err := s.Apply(ev); err != nil {
			return State{}, err
		}
	}
	return s, nil
}

// Apply folds one event into s. It refuses events that break the saga
// protocol (wrong order, unknown step, unknown type) with a *LogError: a
// saga stream is written only by coordinators and must always fold.
func (s *State) Apply(ev client.RecordedEvent) error {
	bad := func(format string, args ...any) error {
		return &LogError{SagaID: s.ID, Version: ev.Version, Type: ev.Type, Reason: fmt.Sprintf(format, args...)}
	}
	if s.Exists && ev.Version != s.Version+1 {
		return bad("version %d follows %d", ev.Version, s.Version)
	}
	var r record
	if err := json.Unmarshal(ev.Data, &r); err != nil {
		return bad("undecodable: %v", err)
	}
	step := func() (*StepState, error) {
		if r.Step < 0 || r.Step >= len(s.Steps) {
			return nil, bad("step %d out of range (saga has %d)", r.Step, len(s.Steps))
		}
		return &s.Steps[r.Step], nil
	}
	if ev.Type != TypeSagaStarted && s.Status == StatusNew {
		if ev.Version > 0 {
			// A saga's first event is its SagaStarted, at version 0 or, for an ID used
			// again, the first version after a delete: one written later was recorded
			// after the stream was soft-deleted under a running saga.
			return &LogError{SagaID: s.ID, Version: ev.Version, Type: ev.Type, Deleted: true,
				Reason: fmt.Sprintf("the saga's history before version %d was deleted while it ran; it can be neither resumed nor compensated", ev.Version)}
		}
		return bad("first event must be %s", TypeSagaStarted)
	}
	switch ev.Type {
	case TypeSagaStarted:
		if s.Status != StatusNew {
			return bad("saga already started")
		}
		s.Definition, s.Input, s.Status, s.StartVersion = r.Saga, r.Input, StatusRunning, ev.Version
		s.Steps = make([]StepState, len(r.Steps))
		for i, n := range r.Steps {
			s.Steps[i].Name = n
		}
	case TypeStepStarted:
		st, err := step()
		if err != nil {
			return err
		}
		if s.Status != StatusRunning || st.Started || s.nextForward() != r.Step {
			return bad("step %d cannot start (status %s, next step %d)", r.Step, s.Status, s.nextForward())
		}
		st.Started = true
	case TypeStepCompleted:
		st, err := step()
		if err != nil {
			return err
		}
		if s.Status != StatusRunning || !st.Started || st.Completed {
			return bad("step %d cannot complete (status %s)", r.Step, s.Status)
		}
		st.Completed, st.Output = true, r.Output
	case TypeStepFailed:
		st, err := step()
		if err != nil {
			return err
		}
		if s.Status != StatusRunning || !st.Started || st.Completed {
			return bad("step %d cannot fail (status %s)", r.Step, s.Status)
		}
		st.Failed, st.Error, st.Uncertain = true, r.Error, r.Compensate
		s.Status, s.FailedStep, s.Failure = StatusCompensating, r.Step, r.Error
	case TypeCompensationCompleted:
		st, err := step()
		if err != nil {
			return err
		}
		if s.Status == StatusCompensating && s.nextCompensation() != r.Step && s.legacyCompensation() == r.Step {
			// A coordinator of the version before the failed step was compensated too (a
			// rolling upgrade) went on with the completed steps: the failed one is left.
			s.Steps[s.FailedStep].Uncertain = false
		}
		if s.Status != StatusCompensating || s.nextCompensation() != r.Step {
			return bad("step %d cannot be compensated now (status %s, next %d)", r.Step, s.Status, s.nextCompensation())
		}
		st.Compensated = true
	case TypeSagaCompleted:
		if s.Status != StatusRunning || s.nextForward() != len(s.Steps) {
			return bad("saga cannot complete (status %s, next step %d)", s.Status, s.nextForward())
		}
		s.Status = StatusCompleted
	case TypeSagaAborted:
		if s.Status == StatusCompensating && s.legacyCompensation() < 0 && !s.Steps[s.FailedStep].Compensated {
			// Aborted by a coordinator of the version before: see CompensationCompleted.
			s.Steps[s.FailedStep].Uncertain = false
		}
		if s.Status != StatusCompensating || s.nextCompensation() >= 0 {
			return bad("saga cannot abort (status %s, step %d not compensated)", s.Status, s.nextCompensation())
		}
		s.Status = StatusAborted
	default:
		return bad("unknown event type")
	}
	s.Exists, s.Version = true, ev.Version
	return nil
}

// nextForward is the first step not completed (len(Steps) when all are).
func (s *State) nextForward() int {
	for i := range s.Steps {
		if !s.Steps[i].Completed {
			return i
		}
	}
	return len(s.Steps)
}

// legacyCompensation is nextCompensation as the version before the compensate flag had it:
// the last completed, uncompensated step, or -1.
func (s *State) legacyCompensation() int {
	for i := len(s.Steps) - 1; i >= 0; i-- {
		if s.Steps[i].Completed && !s.Steps[i].Compensated {
			return i
		}
	}
	return -1
}

// nextCompensation is the last uncompensated step that completed or failed
// uncertain, or -1.
func (s *State) nextCompensation() int {
	for i := len(s.Steps) - 1; i >= 0; i-- {
		if st := &s.Steps[i]; (st.Completed || st.Uncertain) && !st.Compensated {
			return i
		}
	}
	return -1
}

// move is what a coordinator does next.
type move struct {
	kind moveKind
	step int
}

type moveKind uint8

const (
	moveDone       moveKind = iota
	moveStartStep           // record StepStarted, then run the action
	moveRunStep             // the step is started but not finished: run (again)
	moveCompensate          // run the compensation of step
	moveComplete            // record SagaCompleted
	moveAbort               // record SagaAborted
)

// next decides the coordinator's next move from the folded state alone,
// which is what makes Resume after a crash correct.
func (s *State) next() move {
	switch s.Status {
	case StatusRunning:
		i := s.nextForward()
		switch {
		case i == len(s.Steps):
			return move{kind: moveComplete}
		case s.Steps[i].Started:
			return move{kind: moveRunStep, step: i}
		default:
			return move{kind: moveStartStep, step: i}
		}
	case StatusCompensating:
		if i := s.nextCompensation(); i >= 0 {
			return move{kind: moveCompensate, step: i}
		}
		return move{kind: moveAbort}
	}
	return move{kind: moveDone}
}

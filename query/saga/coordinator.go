package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v5"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/client"
)

// StreamPrefix is prepended to a saga ID to name its stream.
const StreamPrefix = "saga-"

// MaxIDLen bounds a saga ID, bytes (the stream-name limit minus the prefix).
const MaxIDLen = 512 - len(StreamPrefix)

// Stream returns the name of saga id's stream.
func Stream(id string) string { return StreamPrefix + id }

// StepContext is what a step's action or compensation learns about its run.
type StepContext struct {
	SagaID string
	Step   int
	Name   string
	Kind   Kind
	// Input, Output and Prior share the saga's State: read them, do not change them (a
	// change would reach the later steps and compensations of this run, not of a Resume's).
	Input  []byte   // the saga's input (Start)
	Output []byte   // compensation only: the action's recorded output (nil for the failed step)
	Prior  [][]byte // outputs of the steps before this one
	// IdempotencyID is IdempotencyIDAt(SagaID, StartVersion, Step, Kind):
	// identical on every attempt and after Resume. Pass it to whatever the step
	// changes.
	IdempotencyID uuid.UUID
	// StartVersion is the saga's State.StartVersion (0 unless its ID was used
	// before).
	StartVersion uint64
	Attempt      int // 1-based, within this coordinator's run of the step
}

// ActionID is the idempotency ID of the step's action: in a compensation, it
// names what the action would have done.
func (sc StepContext) ActionID() uuid.UUID {
	return IdempotencyIDAt(sc.SagaID, sc.StartVersion, sc.Step, KindAction)
}

// Step is one saga step. Action must be idempotent under its
// StepContext.IdempotencyID: after a crash it may run again for the same
// step. So must Compensate, which may also run more than once.
type Step struct {
	Name   string
	Action func(ctx context.Context, sc StepContext) (output []byte, err error)
	// Compensate undoes the Action of a completed step, and of the step that
	// failed: a failure the coordinator sees does not prove the action had no
	// effect (its reply was lost, an attempt timed out, another coordinator
	// resumed the saga and ran it). So Compensate must also succeed, doing
	// nothing, when the action never took effect; StepContext.Output is nil
	// for the failed step, and StepContext.ActionID names what its action
	// would have done. nil means nothing to undo.
	Compensate func(ctx context.Context, sc StepContext) error
	// Retry overrides Config.ActionRetry for this step's action.
	Retry *RetryPolicy
}

// Definition is a named, ordered list of steps. Its name and step names are
// recorded when a saga starts and checked on Resume; each is valid UTF-8 of at
// most MaxNameLen bytes.
type Definition struct {
	Name  string
	Steps []Step
}

func (d *Definition) validate() error {
	if d == nil || d.Name == "" {
		return invalid("definition needs a name")
	}
	if len(d.Name) > MaxNameLen {
		return invalid("definition name is %d bytes, longer than the limit of %d (MaxNameLen)", len(d.Name), MaxNameLen)
	}
	// The names are recorded in JSON, which would replace invalid bytes with U+FFFD: Resume
	// would then find neither the definition nor its steps again.
	if !utf8.ValidString(d.Name) {
		return invalid("definition name %q is not valid UTF-8", d.Name)
	}
	if len(d.Steps) == 0 || len(d.Steps) > MaxSteps {
		return invalid("definition %q has %d steps; it needs 1 to %d (MaxSteps)", d.Name, len(d.Steps), MaxSteps)
	}
	for i, s := range d.Steps {
		if s.Name == "" || s.Action == nil {
			return invalid("definition %q step %d needs a Name and an Action", d.Name, i)
		}
		if len(s.Name) > MaxNameLen {
			return invalid("definition %q step %d: its name is %d bytes, longer than the limit of %d (MaxNameLen)",
				d.Name, i, len(s.Name), MaxNameLen)
		}
		if !utf8.ValidString(s.Name) {
			return invalid("definition %q step %d: its name %q is not valid UTF-8", d.Name, i, s.Name)
		}
	}
	return nil
}

// Limits of a Definition: the saga's first event records its definition's name and step
// names, which must leave room in an event for the saga's input.
const (
	MaxNameLen = 256  // bytes of a definition's name, of each step's and of Config.Name
	MaxSteps   = 1000 // steps of a definition
)

// Permanent wraps err so that the step is not retried: the action fails at
// once (and compensation starts).
func Permanent(err error) error { return backoff.Permanent(err) }

// RetryPolicy bounds the retries of a step's action or compensation, with
// exponential backoff (doubling, ±20% jitter) from Initial to Max.
type RetryPolicy struct {
	Initial     time.Duration // first wait; default 50ms
	Max         time.Duration // wait cap; default 2s
	MaxAttempts int           // attempts in all, including the first; 0 = default, -1 = unlimited
	MaxElapsed  time.Duration // give up after this long, an attempt under way included (its context ends); 0 = default
	// AttemptTimeout ends one attempt's context after this long, so that a hung attempt
	// leaves time for the next ones within MaxElapsed; 0: the default policy's (a Step's
	// Retry takes the Config's; the default policies have none: attempts share MaxElapsed).
	AttemptTimeout time.Duration
}

// Default retry policies.
var (
	DefaultActionRetry       = RetryPolicy{Initial: 50 * time.Millisecond, Max: 2 * time.Second, MaxAttempts: 3, MaxElapsed: 30 * time.Second}
	DefaultCompensationRetry = RetryPolicy{Initial: 100 * time.Millisecond, Max: 5 * time.Second, MaxAttempts: -1, MaxElapsed: time.Minute}
)

func (p RetryPolicy) validate() error {
	if p.Initial < 0 || p.Max < 0 || p.MaxElapsed < 0 || p.AttemptTimeout < 0 || p.MaxAttempts < -1 {
		return invalid("retry policy %+v has a negative field (MaxAttempts -1 means unlimited)", p)
	}
	if p.Max > 0 && p.Max < p.Initial {
		return invalid("retry policy %+v: Max (%v) is below Initial (%v)", p, p.Max, p.Initial)
	}
	return nil
}

func (p RetryPolicy) withDefaults(d RetryPolicy) RetryPolicy {
	if p.Initial <= 0 {
		p.Initial = d.Initial
	}
	if p.Max <= 0 {
		p.Max = max(d.Max, p.Initial)
	}
	if p.MaxAttempts == 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = d.MaxElapsed
	}
	if p.AttemptTimeout <= 0 {
		p.AttemptTimeout = d.AttemptTimeout
	}
	return p
}

// Store is what a Coordinator asks of shoal, the methods of *client.Client it calls: a
// wrapper of the client (for tracing, metrics or a tenant's stream names) can stand in for it.
// Its semantics must be the client's: Append's expected-version check and idempotent event
// IDs, Read's order and WholeHistory, and their errors (client.ErrWrongExpectedVersion,
// client.ErrOutcomeUnknown, ...), on which the Coordinator's guarantees rest.
type Store interface {
	Append(ctx context.Context, stream string, expected client.ExpectedVersion, events ...client.Event) (client.AppendResult, error)
	Read(ctx context.Context, stream string, opts ...client.ReadOption) iter.Seq2[client.RecordedEvent, error]
	ListStreams(ctx context.Context, after string, opts ...client.ReadOption) iter.Seq2[client.StreamInfo, error]
}

var _ Store = (*client.Client)(nil)

// Config configures a Coordinator.
type Config struct {
	Client      Store         // required, not owned: a *client.Client, or a wrapper of one
	Definitions []*Definition // the sagas this coordinator can start and resume
	// ActionRetry applies to every action without its own Step.Retry;
	// default DefaultActionRetry (30 s in all).
	ActionRetry RetryPolicy
	// CompensationRetry applies to compensations; default
	// DefaultCompensationRetry (a minute in all). When it gives up, the saga
	// stays compensating and Resume tries again. MaxElapsed bounds each run
	// of an action or compensation too (its context ends then): one that
	// takes longer on its own needs a policy with a longer MaxElapsed, or it
	// never completes.
	CompensationRetry RetryPolicy
	// Name identifies this coordinator in event metadata, at most MaxNameLen bytes;
	// default random.
	Name       string
	Logger     *slog.Logger          // nil discards
	Registerer prometheus.Registerer // nil does not register; one Coordinator per Registerer
}

// Coordinator drives sagas: it records every transition in the saga's
// stream with an exact expected version before acting on it. Safe for
// concurrent use; two coordinators (in one process or many) driving the
// same saga cannot both record a transition.
type Coordinator struct {
	c       Store
	cfg     Config
	defs    map[string]*Definition
	meta    []byte
	metrics *metrics
}

// Validate reports the first problem of cfg: a nil client, a name longer than MaxNameLen,
// an invalid or duplicate definition, a negative retry setting.
func (cfg *Config) Validate() error {
	if c, ok := cfg.Client.(*client.Client); cfg.Client == nil || ok && c == nil {
		return invalid("Config.Client must not be nil")
	}
	// The name is in every saga event's metadata: past the limit it would crowd out the
	// events' data and be blamed on the input or output.
	if len(cfg.Name) > MaxNameLen {
		return invalid("Config.Name is %d bytes, longer than the limit of %d (MaxNameLen)", len(cfg.Name), MaxNameLen)
	}
	seen := make(map[string]bool, len(cfg.Definitions))
	for _, d := range cfg.Definitions {
		if err := d.validate(); err != nil {
			return err
		}
		if seen[d.Name] {
			return invalid("definition %q registered twice", d.Name)
		}
		seen[d.Name] = true
		for _, s := range d.Steps {
			if s.Retry != nil {
				if err := s.Retry.validate(); err != nil {
					return err
				}
			}
		}
	}
	if err := cfg.ActionRetry.validate(); err != nil {
		return err
	}
	return cfg.CompensationRetry.validate()
}

// NewCoordinator validates cfg and returns a Coordinator.
func NewCoordinator(cfg Config) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	defs := make(map[string]*Definition, len(cfg.Definitions))
	for _, d := range cfg.Definitions {
		defs[d.Name] = d
	}
	cfg.ActionRetry = cfg.ActionRetry.withDefaults(DefaultActionRetry)
	cfg.CompensationRetry = cfg.CompensationRetry.withDefaults(DefaultCompensationRetry)
	if cfg.Name == "" {
		cfg.Name = uuid.NewString()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := newMetrics()
	if err := m.register(cfg.Registerer); err != nil {
		return nil, err
	}
	meta, _ := json.Marshal(map[string]string{"coordinator": cfg.Name})
	return &Coordinator{c: cfg.Client, cfg: cfg, defs: defs, meta: meta, metrics: m}, nil
}

func checkID(id string) error {
	switch {
	case id == "":
		return invalid("saga ID must not be empty")
	case len(id) > MaxIDLen:
		return invalid("saga ID is %d bytes, at most %d", len(id), MaxIDLen)
	case !utf8.ValidString(id) || strings.IndexFunc(id, unicode.IsControl) >= 0:
		return invalid("saga ID must be valid UTF-8 without control characters")
	}
	return nil
}

// Start creates saga id of the named definition with input and drives it
// to the end: Completed, or Aborted after compensating. The returned State
// says which; the error is for sagas that could not be driven (conflict,
// ctx done, cluster unavailable, compensation still failing), which Resume
// can pick up later. An existing id fails with ErrExists, and runs nothing.
// A saga whose SagaStarted was not recorded fails with ErrNotStarted: Resume
// cannot pick it up (ErrUnknownSaga); call Start again with the same id. When
// recording it ended with client.ErrOutcomeUnknown, it may or may not have
// been: Resume, and Start again if Resume answers ErrUnknownSaga (a start
// that lands late makes that Start fail with ErrExists; Resume then).
func (c *Coordinator) Start(ctx context.Context, definition, id string, input []byte) (State, error) {
	if err := checkID(id); err != nil {
		return State{}, err
	}
	def := c.defs[definition]
	if def == nil {
		return State{}, fmt.Errorf("%w: %q", ErrUnknownDefinition, definition)
	}
	st := State{ID: id, FailedStep: -1}
	names := make([]string, len(def.Steps))
	for i, s := range def.Steps {
		names[i] = s.Name
	}
	if err := c.record(ctx, &st, TypeSagaStarted, record{Saga: def.Name, Steps: names, Input: input}); err != nil {
		var ce *ConflictError
		if errors.As(err, &ce) {
			c.metrics.exists.Inc()
			// The append's refusal, not the *ConflictError: ErrConflict says another
			// coordinator is driving the saga, which a repeated Start does not show.
			return st, fmt.Errorf("%w: %q: %w", ErrExists, id, ce.Err)
		}
		if unrecorded(err) {
			return st, fmt.Errorf("%w: %w", ErrNotStarted, err)
		}
		return st, err
	}
	c.metrics.started.Inc()
	return c.drive(ctx, def, &st)
}

// unrecorded reports whether a record that failed with err wrote nothing for sure: the event
// was refused before its append (ErrInvalid), or the append failed without
// client.ErrOutcomeUnknown, the client's word that none of its attempts may have been
// applied. A failure to fold the appended event (ErrCorruptLog) came after the write.
func unrecorded(err error) bool {
	return !errors.Is(err, client.ErrOutcomeUnknown) && !errors.Is(err, ErrCorruptLog)
}

// Resume continues saga id from its stream, after a crash or an error of
// Start or Resume. Completed steps are not run again; a step that was
// started but not recorded as finished is run again with the same
// idempotency ID. Resuming a finished saga returns its state, whatever its definition now.
// A saga without a stream fails with ErrUnknownSaga: no Start recorded it, and a
// Start with the same id is what runs it.
func (c *Coordinator) Resume(ctx context.Context, id string) (State, error) {
	st, err := c.Load(ctx, id)
	if err != nil {
		return st, err
	}
	if !st.Exists {
		return st, fmt.Errorf("%w: %q", ErrUnknownSaga, id)
	}
	if st.Status.Terminal() {
		return st, nil // nothing to drive: its definition may have changed since
	}
	def := c.defs[st.Definition]
	if def == nil {
		return st, fmt.Errorf("%w: %q (saga %q)", ErrUnknownDefinition, st.Definition, id)
	}
	if len(def.Steps) != len(st.Steps) {
		return st, fmt.Errorf("%w: %q has %d steps, saga %q started with %d", ErrDefinitionMismatch, def.Name, len(def.Steps), id, len(st.Steps))
	}
	for i := range def.Steps {
		if def.Steps[i].Name != st.Steps[i].Name {
			return st, fmt.Errorf("%w: %q step %d is %q, saga %q started with %q", ErrDefinitionMismatch, def.Name, i, def.Steps[i].Name, id, st.Steps[i].Name)
		}
	}
	return c.drive(ctx, def, &st)
}

// Unfinished yields the sagas that have not ended (running or compensating): after a crash,
// Resume each. It lists the live "saga-" streams in name order (client.ListStreams, every
// shard answering) and loads each linearizably, so it reads every saga's stream: a recovery
// step for a coordinator's start, not a per-request call; deleting ended sagas' streams
// keeps it short. A saga that cannot be loaded (its history truncated, for one) is yielded
// with its ID and the error, and the listing goes on; a listing that fails ends with its
// error. Sagas of definitions this coordinator does not have are yielded too: Resume refuses
// them (ErrUnknownDefinition).
func (c *Coordinator) Unfinished(ctx context.Context) iter.Seq2[State, error] {
	return func(yield func(State, error) bool) {
		for info, err := range c.c.ListStreams(ctx, "", client.StreamPrefix(StreamPrefix), client.Linearizable()) {
			if err != nil {
				yield(State{}, fmt.Errorf("saga: listing sagas: %w", err))
				return
			}
			id := strings.TrimPrefix(info.Name, StreamPrefix)
			st, err := c.Load(ctx, id)
			switch {
			case err != nil:
				if !yield(State{ID: id, FailedStep: -1}, err) {
					return
				}
			case st.Exists && !st.Status.Terminal():
				if !yield(st, nil) {
					return
				}
			}
		}
	}
}

// Load folds saga id's stream without driving it. A missing saga returns a
// State with Exists false and Status StatusNew; one whose first events a
// truncation removed (client.Truncate) fails with client.ErrHistoryTruncated
// (from its shard's format 5 on; before, the fold finds the gap instead).
func (c *Coordinator) Load(ctx context.Context, id string) (State, error) {
	if err := checkID(id); err != nil {
		return State{}, err
	}
	st := State{ID: id, FailedStep: -1}
	// Linearizable whatever the client's default: a lagging replica's copy of the saga
	// would make Resume act on a past state (run the action of a saga already aborted).
	// WholeHistory: a saga whose first events a truncation removed is refused as such.
	for ev, err := range c.c.Read(ctx, Stream(id), client.Linearizable(), client.WholeHistory()) {
		if errors.Is(err, client.ErrStreamNotFound) {
			return State{ID: id, FailedStep: -1}, nil
		}
		if err != nil {
			return State{}, fmt.Errorf("saga: load %q: %w", id, err)
		}
		if err := st.Apply(ev); err != nil {
			return State{}, err
		}
	}
	return st, nil
}

// drive runs the saga from st until it is terminal or an error stops it. A saga left
// running or compensating waits for a Resume: it is counted and logged, as nothing else
// lists it.
func (c *Coordinator) drive(ctx context.Context, def *Definition, st *State) (State, error) {
	out, err := c.driveSteps(ctx, def, st)
	if errors.Is(err, ErrConflict) {
		c.metrics.conflicts.Inc() // another coordinator drives it
	} else if err != nil {
		c.metrics.stopped.Inc()
		c.cfg.Logger.Warn("saga: stopped before its end; Resume it", "saga", st.ID, "status", st.Status, "err", err)
	}
	return out, err
}

func (c *Coordinator) driveSteps(ctx context.Context, def *Definition, st *State) (State, error) {
	for {
		mv := st.next()
		var err error
		switch mv.kind {
		case moveDone:
			return *st, nil
		case moveStartStep:
			err = c.record(ctx, st, TypeStepStarted, record{Step: mv.step})
		case moveRunStep:
			out, attempts, aerr := c.runAction(ctx, def, st, mv.step)
			switch {
			case ctx.Err() != nil:
				return *st, context.Cause(ctx) // crash-like stop: Resume re-runs the step
			case aerr == nil:
				if data, ferr := c.encode(record{Step: mv.step, Output: out}); ferr != nil {
					// The action took effect, but its output cannot be recorded: the step
					// fails, and is compensated with the steps before it (a StepCompleted
					// refused on every Resume would leave the saga running for good).
					c.cfg.Logger.Info("saga: step output too large, compensating", "saga", st.ID, "step", mv.step, "err", ferr)
					err = c.record(ctx, st, TypeStepFailed, record{Step: mv.step, Error: ferr.Error(), Attempts: attempts, Compensate: true})
				} else {
					err = c.recordEncoded(ctx, st, TypeStepCompleted, data)
				}
			default:
				c.metrics.stepFailures.Inc()
				c.cfg.Logger.Info("saga: step failed, compensating", "saga", st.ID, "step", mv.step, "attempts", attempts, "err", aerr)
				err = c.record(ctx, st, TypeStepFailed, record{Step: mv.step, Error: errorText(aerr), Attempts: attempts, Compensate: true})
			}
		case moveCompensate:
			if cerr := c.runCompensation(ctx, def, st, mv.step); cerr != nil {
				if ctx.Err() != nil {
					return *st, context.Cause(ctx)
				}
				return *st, cerr
			}
			err = c.record(ctx, st, TypeCompensationCompleted, record{Step: mv.step})
		case moveComplete:
			if err = c.record(ctx, st, TypeSagaCompleted, record{}); err == nil {
				c.metrics.completed.Inc()
			}
		case moveAbort:
			if err = c.record(ctx, st, TypeSagaAborted, record{Step: st.FailedStep, Error: st.Failure}); err == nil {
				c.metrics.aborted.Inc()
			}
		}
		if err != nil {
			return *st, err
		}
	}
}

func (c *Coordinator) stepContext(st *State, step int, kind Kind) StepContext {
	return StepContext{
		SagaID: st.ID, Step: step, Name: st.Steps[step].Name, Kind: kind,
		Input: st.Input, Prior: st.Outputs()[:step],
		IdempotencyID: IdempotencyIDAt(st.ID, st.StartVersion, step, kind), StartVersion: st.StartVersion,
	}
}

func (c *Coordinator) runAction(ctx context.Context, def *Definition, st *State, step int) ([]byte, int, error) {
	s := def.Steps[step]
	p := c.cfg.ActionRetry
	if s.Retry != nil {
		p = s.Retry.withDefaults(c.cfg.ActionRetry)
	}
	sc := c.stepContext(st, step, KindAction)
	var out []byte
	attempts, err := c.retry(ctx, p, func(actx context.Context, attempt int) error {
		sc.Attempt = attempt
		o, err := s.Action(actx, sc)
		out = o
		return err
	})
	return out, attempts, err
}

func (c *Coordinator) runCompensation(ctx context.Context, def *Definition, st *State, step int) error {
	s := def.Steps[step]
	if s.Compensate == nil {
		return nil
	}
	sc := c.stepContext(st, step, KindCompensation)
	sc.Output = st.Steps[step].Output
	attempts, err := c.retry(ctx, c.cfg.CompensationRetry, func(actx context.Context, attempt int) error {
		sc.Attempt = attempt
		return s.Compensate(actx, sc)
	})
	if err != nil {
		if ctx.Err() == nil {
			c.metrics.compensationFailures.Inc()
		}
		return &StepError{SagaID: st.ID, Step: step, Name: s.Name, Kind: KindCompensation, Attempts: attempts, Err: err}
	}
	return nil
}

// retry runs op under p with exponential backoff; it returns the number of
// attempts made and the last error. MaxElapsed bounds the attempts too, not only the
// waits between them: op's context ends then (a remote call that never answers).
func (c *Coordinator) retry(ctx context.Context, p RetryPolicy, op func(ctx context.Context, attempt int) error) (int, error) {
	actx, cancel := context.WithTimeout(ctx, p.MaxElapsed)
	defer cancel()
	b := &backoff.ExponentialBackOff{InitialInterval: p.Initial, RandomizationFactor: 0.2, Multiplier: 2, MaxInterval: p.Max}
	tries := uint(0)
	if p.MaxAttempts > 0 {
		tries = uint(p.MaxAttempts)
	}
	attempts := 0
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		attempts++
		if attempts > 1 {
			c.metrics.retries.Inc()
		}
		if p.AttemptTimeout <= 0 {
			return struct{}{}, op(actx, attempts)
		}
		tctx, cancel := context.WithTimeout(actx, p.AttemptTimeout)
		defer cancel()
		return struct{}{}, op(tctx, attempts)
	}, backoff.WithBackOff(b), backoff.WithMaxTries(tries), backoff.WithMaxElapsedTime(p.MaxElapsed))
	return attempts, err
}

// maxErrorText bounds a step's error as recorded (StepFailed, SagaAborted), so that however
// long an action's error, its failure fits an event.
const maxErrorText = 64 << 10

func errorText(err error) string {
	s := err.Error()
	if len(s) > maxErrorText {
		return strings.ToValidUTF8(s[:maxErrorText], "") + "… (truncated)"
	}
	return s
}

// maxRecord is the largest saga event a coordinator writes, data and metadata: the server's
// limit on one event (shard.MaxEventSize). A saga's input and its steps' outputs go in it
// base64-encoded in JSON, at about 4/3 of their size.
const maxRecord = 4 << 20

// encode returns r as a saga event's data, or, when the event would be larger than one event
// may be, an error naming the limit on the input or output r carries.
func (c *Coordinator) encode(r record) ([]byte, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if size := len(data) + len(c.meta); size > maxRecord {
		what, n := "output", len(r.Output)
		if r.Input != nil {
			what, n = "input", len(r.Input)
		}
		encoded := (len(r.Input)+2)/3*4 + (len(r.Output)+2)/3*4
		room := (maxRecord - (size - encoded)) * 3 / 4
		return nil, fmt.Errorf("%w: the %s of %d bytes does not fit a saga event (at most %d bytes of data and metadata, "+
			"the %s base64-encoded in JSON): at most about %d bytes of %s", ErrInvalid, what, n, maxRecord, what, room, what)
	}
	return data, nil
}

// record appends one saga event expecting exactly st's version, then folds
// it into st. Losing the race yields a *ConflictError; an event too large,
// an error naming the limit (ErrInvalid; nothing is written).
func (c *Coordinator) record(ctx context.Context, st *State, typ string, r record) error {
	data, err := c.encode(r)
	if err != nil {
		return fmt.Errorf("saga: record %s for %q: %w", typ, st.ID, err)
	}
	return c.recordEncoded(ctx, st, typ, data)
}

// recordEncoded is record of data, a record already encoded.
func (c *Coordinator) recordEncoded(ctx context.Context, st *State, typ string, data []byte) error {
	ev := client.Event{ID: uuid.Must(uuid.NewV7()), Type: typ, Data: data, Metadata: c.meta, ContentType: "application/json"}
	expected := st.Expected()
	res, err := c.c.Append(ctx, Stream(st.ID), expected, ev)
	if errors.Is(err, client.ErrWrongExpectedVersion) {
		return &ConflictError{SagaID: st.ID, Expected: expected, Err: err}
	}
	if err != nil {
		return fmt.Errorf("saga: record %s for %q: %w", typ, st.ID, err)
	}
	return st.Apply(client.RecordedEvent{Stream: Stream(st.ID), Version: res.LastVersion, Position: res.Position,
		Shard: res.Shard, ID: ev.ID, Type: typ, Data: data, Metadata: c.meta, ContentType: ev.ContentType})
}

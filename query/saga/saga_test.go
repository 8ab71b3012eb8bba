package saga

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
)

// world is a test saga whose steps write to a ledger stream with their
// idempotency IDs as event IDs, so a re-run action is a duplicate append.
type world struct {
	t  *testing.T
	c  *client.Client
	mu sync.Mutex
	// calls counts action/compensation invocations per "kind/step".
	calls map[string]int
	// hooks run inside an action/compensation before it writes; returning
	// an error fails the attempt.
	before func(ctx context.Context, sc StepContext) error
	after  func(ctx context.Context, sc StepContext) error
	// output, when set and not nil for a step, replaces its action's output.
	output func(sc StepContext) []byte
}

func newWorld(t *testing.T, c *client.Client) *world {
	return &world{t: t, c: c, calls: map[string]int{}}
}

func (w *world) count(kind Kind, step int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls[fmt.Sprintf("%s/%d", kind, step)]
}

func (w *world) effect(ctx context.Context, sc StepContext, typ string) ([]byte, error) {
	w.mu.Lock()
	w.calls[fmt.Sprintf("%s/%d", sc.Kind, sc.Step)]++
	w.mu.Unlock()
	if w.before != nil {
		if err := w.before(ctx, sc); err != nil {
			return nil, err
		}
	}
	res, err := w.c.Append(ctx, "ledger-"+sc.SagaID, client.Any,
		client.Event{ID: sc.IdempotencyID, Type: typ, Data: []byte(sc.Name)})
	if err != nil {
		return nil, err
	}
	if w.after != nil {
		if err := w.after(ctx, sc); err != nil {
			return nil, err
		}
	}
	return fmt.Appendf(nil, "%s@%d", sc.Name, res.FirstVersion), nil
}

// booked reports whether the action of sc's step took effect: the ledger holds its event.
func (w *world) booked(ctx context.Context, sc StepContext) (bool, error) {
	id := sc.ActionID()
	for ev, err := range w.c.Read(ctx, "ledger-"+sc.SagaID) {
		if errors.Is(err, client.ErrStreamNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if ev.ID == id {
			return true, nil
		}
	}
	return false, nil
}

func (w *world) definition() *Definition {
	d := &Definition{Name: "trip"}
	for _, name := range []string{"flight", "hotel", "car"} {
		d.Steps = append(d.Steps, Step{
			Name: name,
			Action: func(ctx context.Context, sc StepContext) ([]byte, error) {
				out, err := w.effect(ctx, sc, "Booked")
				if w.output != nil && err == nil {
					if o := w.output(sc); o != nil {
						out = o
					}
				}
				return out, err
			},
			Compensate: func(ctx context.Context, sc StepContext) error {
				// Undo only what the action did: a failed step's action may or may not
				// have taken effect.
				if booked, err := w.booked(ctx, sc); err != nil || !booked {
					return err
				}
				_, err := w.effect(ctx, sc, "Cancelled")
				return err
			},
		})
	}
	return d
}

func (w *world) coordinator(name string) *Coordinator {
	co, err := NewCoordinator(Config{Client: w.c, Definitions: []*Definition{w.definition()}, Name: name,
		ActionRetry:       RetryPolicy{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 3},
		CompensationRetry: RetryPolicy{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 3}})
	if err != nil {
		w.t.Fatal(err)
	}
	return co
}

// ledger returns the ledger stream as "Type:step" entries.
func (w *world) ledger(ctx context.Context, id string) []string {
	var out []string
	for ev, err := range w.c.Read(ctx, "ledger-"+id) {
		if errors.Is(err, client.ErrStreamNotFound) {
			return nil
		}
		if err != nil {
			w.t.Fatal(err)
		}
		out = append(out, ev.Type+":"+string(ev.Data))
	}
	return out
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSagas(t *testing.T) {
	c := testnode.Client(t)

	t.Run("happy path", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		co := w.coordinator("a")
		st, err := co.Start(ctx, "trip", "happy", []byte("to Lisbon"))
		if err != nil || st.Status != StatusCompleted {
			t.Fatalf("Start = %s, %v", st.Status, err)
		}
		if got, want := w.ledger(ctx, "happy"), []string{"Booked:flight", "Booked:hotel", "Booked:car"}; !slices.Equal(got, want) {
			t.Fatalf("ledger %v, want %v", got, want)
		}
		if string(st.Steps[1].Output) != "hotel@1" || string(st.Input) != "to Lisbon" {
			t.Fatalf("outputs %q input %q", st.Outputs(), st.Input)
		}
		// Loading and resuming a finished saga changes nothing.
		again, err := co.Resume(ctx, "happy")
		if err != nil || again.Status != StatusCompleted || again.Version != st.Version {
			t.Fatalf("Resume of finished saga: %+v %v", again, err)
		}
		if _, err := co.Start(ctx, "trip", "happy", nil); !errors.Is(err, ErrExists) || errors.Is(err, ErrConflict) ||
			!errors.Is(err, client.ErrWrongExpectedVersion) {
			t.Fatalf("second Start: %v", err)
		}
	})

	t.Run("failure compensates in reverse", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		w.before = func(_ context.Context, sc StepContext) error {
			if sc.Kind == KindAction && sc.Name == "car" {
				return fmt.Errorf("no cars left (attempt %d)", sc.Attempt)
			}
			return nil
		}
		st, err := w.coordinator("a").Start(ctx, "trip", "nocar", nil)
		if err != nil || st.Status != StatusAborted || st.FailedStep != 2 {
			t.Fatalf("Start = %+v, %v", st, err)
		}
		if w.count(KindAction, 2) != 3 {
			t.Fatalf("failing step tried %d times, want 3", w.count(KindAction, 2))
		}
		want := []string{"Booked:flight", "Booked:hotel", "Cancelled:hotel", "Cancelled:flight"}
		if got := w.ledger(ctx, "nocar"); !slices.Equal(got, want) {
			t.Fatalf("ledger %v, want %v", got, want)
		}
		if w.count(KindCompensation, 2) != 0 || st.Failure != "no cars left (attempt 3)" {
			t.Fatalf("the failed step's compensation wrote to the ledger, or the failure was lost: %d %q", w.count(KindCompensation, 2), st.Failure)
		}
		if !st.Steps[2].Compensated || !st.Steps[2].Uncertain {
			t.Fatalf("the failed step's compensation did not run: %+v", st.Steps[2])
		}
	})

	// An action that took effect although every attempt reported a failure (its reply lost,
	// a timeout after the write) is undone: the failed step is compensated too.
	t.Run("failed step whose action took effect is compensated", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		w.after = func(_ context.Context, sc StepContext) error {
			if sc.Kind == KindAction && sc.Name == "hotel" {
				return fmt.Errorf("hotel API timeout after booking (attempt %d)", sc.Attempt)
			}
			return nil
		}
		st, err := w.coordinator("a").Start(ctx, "trip", "lostreply", nil)
		if err != nil || st.Status != StatusAborted || st.FailedStep != 1 {
			t.Fatalf("Start = %+v, %v", st, err)
		}
		want := []string{"Booked:flight", "Booked:hotel", "Cancelled:hotel", "Cancelled:flight"}
		if got := w.ledger(ctx, "lostreply"); !slices.Equal(got, want) {
			t.Fatalf("ledger %v, want %v", got, want)
		}
	})

	// An action that took effect but returned more output than a saga event holds fails its
	// step, which is compensated with the ones before it (recording the output would be
	// refused on every Resume, and the saga stay running with nothing undone).
	t.Run("output too large to record", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		w.output = func(sc StepContext) []byte {
			if sc.Name == "hotel" {
				return make([]byte, 7<<19) // 3.5 MiB: 4.7 MB in base64
			}
			return nil
		}
		st, err := w.coordinator("a").Start(ctx, "trip", "bigout", nil)
		if err != nil || st.Status != StatusAborted || st.FailedStep != 1 || !strings.Contains(st.Failure, "does not fit a saga event") {
			t.Fatalf("Start = %s, failed step %d (%q), %v; want aborted at step 1, naming the limit", st.Status, st.FailedStep, st.Failure, err)
		}
		want := []string{"Booked:flight", "Booked:hotel", "Cancelled:hotel", "Cancelled:flight"}
		if got := w.ledger(ctx, "bigout"); !slices.Equal(got, want) {
			t.Fatalf("ledger %v, want %v", got, want)
		}
	})

	// An input too large for the SagaStarted event is refused, naming the limit, and nothing
	// is written.
	t.Run("input too large", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		co := w.coordinator("a")
		_, err := co.Start(ctx, "trip", "bigin", make([]byte, 7<<19))
		if !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrNotStarted) || !strings.Contains(err.Error(), "the input of 3670016 bytes") {
			t.Fatalf("Start with a 3.5 MiB input: %v, want ErrInvalid (and ErrNotStarted) naming the input and the limit", err)
		}
		if st, err := co.Load(ctx, "bigin"); err != nil || st.Exists {
			t.Fatalf("after the refused Start: %+v, %v; want no saga", st, err)
		}
	})

	// A Start whose SagaStarted was not recorded (its append never sent: ctx done, cluster
	// unavailable) says so with ErrNotStarted: Resume cannot pick such a saga up
	// (ErrUnknownSaga) and Unfinished does not list it, so the caller starts it again with
	// the same ID, which runs it once; a Start stopped after the saga was recorded does not
	// say so, and is resumed.
	t.Run("start not recorded is started again", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		co := w.coordinator("a")
		done, cancel := context.WithCancel(ctx)
		cancel()
		st, err := co.Start(done, "trip", "unrecorded", nil)
		if !errors.Is(err, ErrNotStarted) || !errors.Is(err, context.Canceled) || st.Exists {
			t.Fatalf("Start with its context done = %+v, %v; want ErrNotStarted, nothing recorded", st, err)
		}
		if _, err := co.Resume(ctx, "unrecorded"); !errors.Is(err, ErrUnknownSaga) {
			t.Fatalf("Resume after ErrNotStarted: %v, want ErrUnknownSaga", err)
		}
		for st, err := range co.Unfinished(ctx) {
			if st.ID == "unrecorded" {
				t.Fatalf("Unfinished lists the unrecorded saga: %+v, %v", st, err)
			}
		}
		if st, err := co.Start(ctx, "trip", "unrecorded", nil); err != nil || st.Status != StatusCompleted {
			t.Fatalf("Start again = %s, %v; want completed", st.Status, err)
		}
		if _, err := co.Start(ctx, "trip", "unrecorded", nil); !errors.Is(err, ErrExists) || errors.Is(err, ErrNotStarted) {
			t.Fatalf("third Start: %v, want ErrExists only", err)
		}
		if got, want := w.ledger(ctx, "unrecorded"), []string{"Booked:flight", "Booked:hotel", "Booked:car"}; !slices.Equal(got, want) {
			t.Fatalf("ledger %v, want %v: the saga ran other than once", got, want)
		}

		// Stopped after its SagaStarted was recorded: Resume it, not Start.
		stopCtx, stop := context.WithCancel(ctx)
		w.before = func(_ context.Context, sc StepContext) error {
			if sc.SagaID == "recorded" && sc.Kind == KindAction && sc.Step == 0 {
				stop()
				return context.Canceled
			}
			return nil
		}
		if st, err := co.Start(stopCtx, "trip", "recorded", nil); !errors.Is(err, context.Canceled) || errors.Is(err, ErrNotStarted) || !st.Exists {
			t.Fatalf("Start stopped after recording = %+v, %v; want context.Canceled, not ErrNotStarted", st, err)
		}
		w.before = nil
		if st, err := co.Resume(ctx, "recorded"); err != nil || st.Status != StatusCompleted {
			t.Fatalf("Resume = %s, %v; want completed", st.Status, err)
		}
	})

	// A saga ID used again after the first saga's stream was soft-deleted starts a new saga,
	// whose steps get idempotency IDs of their own: with the first saga's, the ledger's
	// idempotent appends would take the new bookings for repeats and do nothing.
	t.Run("ID reused after a soft delete", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		co := w.coordinator("a")
		first, err := co.Start(ctx, "trip", "again", nil)
		if err != nil || first.Status != StatusCompleted || first.StartVersion != 0 {
			t.Fatalf("first Start = %+v, %v", first, err)
		}
		if err := c.Delete(ctx, Stream("again"), client.Exact(first.Version)); err != nil {
			t.Fatal(err)
		}
		second, err := co.Start(ctx, "trip", "again", nil)
		if err != nil || second.Status != StatusCompleted || second.StartVersion != first.Version+1 {
			t.Fatalf("second Start = %+v, %v; want completed, started at version %d", second, err, first.Version+1)
		}
		want := []string{"Booked:flight", "Booked:hotel", "Booked:car", "Booked:flight", "Booked:hotel", "Booked:car"}
		if got := w.ledger(ctx, "again"); !slices.Equal(got, want) {
			t.Fatalf("ledger %v, want %v: the second saga's bookings were taken for the first's", got, want)
		}
	})

	// A saga's stream truncated (its first events removed) cannot be folded: Load and Resume
	// say so rather than fold the events left.
	t.Run("truncated stream", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		testnode.WaitMaxFormat(t, c, 30*time.Second)
		co := w.coordinator("a")
		if _, err := co.Start(ctx, "trip", "cut", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Truncate(ctx, Stream("cut"), 2, client.Any); err != nil {
			t.Fatal(err)
		}
		if st, err := co.Load(ctx, "cut"); !errors.Is(err, client.ErrHistoryTruncated) {
			t.Fatalf("Load of a truncated saga = %+v, %v; want ErrHistoryTruncated", st, err)
		}
		if st, err := co.Resume(ctx, "cut"); !errors.Is(err, client.ErrHistoryTruncated) {
			t.Fatalf("Resume of a truncated saga = %+v, %v; want ErrHistoryTruncated", st, err)
		}
	})

	t.Run("transient failure is retried", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		w.before = func(_ context.Context, sc StepContext) error {
			if sc.Kind == KindAction && sc.Step == 1 && sc.Attempt < 3 {
				return errors.New("hotel API timeout")
			}
			return nil
		}
		st, err := w.coordinator("a").Start(ctx, "trip", "flaky", nil)
		if err != nil || st.Status != StatusCompleted || w.count(KindAction, 1) != 3 {
			t.Fatalf("Start = %s %v, attempts %d", st.Status, err, w.count(KindAction, 1))
		}
	})

	t.Run("permanent error skips retries", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		w.before = func(_ context.Context, sc StepContext) error {
			if sc.Kind == KindAction && sc.Step == 0 {
				return Permanent(errors.New("invalid card"))
			}
			return nil
		}
		st, err := w.coordinator("a").Start(ctx, "trip", "perm", nil)
		if err != nil || st.Status != StatusAborted || w.count(KindAction, 0) != 1 || w.ledger(ctx, "perm") != nil {
			t.Fatalf("Start = %s %v, attempts %d", st.Status, err, w.count(KindAction, 0))
		}
	})

	t.Run("crash then resume does not repeat completed actions", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		// The first coordinator "crashes" right after step 1's effect
		// landed but before it could record StepCompleted.
		crashCtx, crash := context.WithCancel(ctx)
		w.after = func(_ context.Context, sc StepContext) error {
			if sc.Kind == KindAction && sc.Step == 1 && w.count(KindAction, 1) == 1 {
				crash()
				return context.Canceled
			}
			return nil
		}
		st, err := w.coordinator("a").Start(crashCtx, "trip", "crash", nil)
		if !errors.Is(err, context.Canceled) || st.Status != StatusRunning || !st.Steps[1].Started || st.Steps[1].Completed {
			t.Fatalf("crashed Start = %+v, %v", st, err)
		}
		st, err = w.coordinator("b").Resume(ctx, "crash")
		if err != nil || st.Status != StatusCompleted {
			t.Fatalf("Resume = %s, %v", st.Status, err)
		}
		if w.count(KindAction, 0) != 1 || w.count(KindAction, 1) != 2 || w.count(KindAction, 2) != 1 {
			t.Fatalf("action runs %v", w.calls)
		}
		// Step 1 ran twice with one idempotency ID: its effect landed once.
		if got, want := w.ledger(ctx, "crash"), []string{"Booked:flight", "Booked:hotel", "Booked:car"}; !slices.Equal(got, want) {
			t.Fatalf("ledger %v, want %v", got, want)
		}
	})

	t.Run("crash during compensation then resume", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		crashCtx, crash := context.WithCancel(ctx)
		w.before = func(_ context.Context, sc StepContext) error {
			switch {
			case sc.Kind == KindAction && sc.Step == 2:
				return Permanent(errors.New("sold out"))
			case sc.Kind == KindCompensation && sc.Step == 0 && w.count(KindCompensation, 0) == 1:
				crash()
				return context.Canceled
			}
			return nil
		}
		if _, err := w.coordinator("a").Start(crashCtx, "trip", "crash-comp", nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("crashed Start: %v", err)
		}
		st, err := w.coordinator("b").Resume(ctx, "crash-comp")
		if err != nil || st.Status != StatusAborted {
			t.Fatalf("Resume = %s, %v", st.Status, err)
		}
		if w.count(KindCompensation, 1) != 1 || w.count(KindCompensation, 0) != 2 {
			t.Fatalf("compensation runs %v", w.calls)
		}
		want := []string{"Booked:flight", "Booked:hotel", "Cancelled:hotel", "Cancelled:flight"}
		if got := w.ledger(ctx, "crash-comp"); !slices.Equal(got, want) {
			t.Fatalf("ledger %v, want %v", got, want)
		}
	})

	t.Run("two coordinators race on one saga", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		// Both coordinators get inside step 0's action (A from Start, B
		// from Resume, e.g. after wrongly presuming A dead) before either
		// may finish: both then try to record StepCompleted at the same
		// expected version.
		var arrived sync.WaitGroup
		arrived.Add(2)
		w.before = func(_ context.Context, sc StepContext) error {
			if sc.Kind == KindAction && sc.Step == 0 && sc.Attempt == 1 {
				arrived.Done()
				arrived.Wait()
			}
			return nil
		}
		a, b := w.coordinator("a"), w.coordinator("b")
		errs := make(chan error, 2)
		go func() {
			_, err := a.Start(ctx, "trip", "race", nil)
			errs <- err
		}()
		// Resume B once A has recorded StepStarted(0).
		for {
			st, err := b.Load(ctx, "race")
			if err != nil {
				t.Fatal(err)
			}
			if st.Exists && st.Steps[0].Started {
				break
			}
			time.Sleep(time.Millisecond)
		}
		go func() {
			_, err := b.Resume(ctx, "race")
			errs <- err
		}()
		e1, e2 := <-errs, <-errs
		if (e1 == nil) == (e2 == nil) {
			t.Fatalf("want exactly one loser: %v / %v", e1, e2)
		}
		loser := errors.Join(e1, e2)
		var ce *ConflictError
		if !errors.Is(loser, ErrConflict) || !errors.Is(loser, client.ErrWrongExpectedVersion) || !errors.As(loser, &ce) || ce.SagaID != "race" {
			t.Fatalf("loser error %v, want ConflictError wrapping wrong expected version", loser)
		}
		st, err := b.Load(ctx, "race")
		if err != nil || st.Status != StatusCompleted {
			t.Fatalf("final %s %v", st.Status, err)
		}
		if got, want := w.ledger(ctx, "race"), []string{"Booked:flight", "Booked:hotel", "Booked:car"}; !slices.Equal(got, want) {
			t.Fatalf("ledger %v, want %v", got, want)
		}
	})

	t.Run("resume errors", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		co := w.coordinator("a")
		if _, err := co.Resume(ctx, "never-started"); !errors.Is(err, ErrUnknownSaga) {
			t.Fatalf("unknown saga: %v", err)
		}
		if _, err := co.Start(ctx, "nope", "x", nil); !errors.Is(err, ErrUnknownDefinition) {
			t.Fatalf("unknown definition: %v", err)
		}
		if _, err := co.Start(ctx, "trip", "", nil); !errors.Is(err, ErrInvalid) {
			t.Fatalf("empty id: %v", err)
		}
		// A saga left running (its coordinator stopped during step 1) refuses another
		// definition under the same name; a finished one answers its state whatever the
		// definition now (a sweeper resuming every saga after a deploy that adds a step).
		stopCtx, stop := context.WithCancel(ctx)
		w.after = func(_ context.Context, sc StepContext) error {
			if sc.Kind == KindAction && sc.Step == 1 {
				stop()
				return context.Canceled
			}
			return nil
		}
		if st, err := co.Start(stopCtx, "trip", "changed", nil); !errors.Is(err, context.Canceled) || st.Status != StatusRunning {
			t.Fatalf("stopped Start = %s, %v", st.Status, err)
		}
		w.after = nil
		if _, err := co.Start(ctx, "trip", "finished", nil); err != nil {
			t.Fatal(err)
		}
		d := w.definition()
		d.Steps = d.Steps[:2]
		other, err := NewCoordinator(Config{Client: c, Definitions: []*Definition{d}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Resume(ctx, "changed"); !errors.Is(err, ErrDefinitionMismatch) {
			t.Fatalf("changed definition: %v", err)
		}
		if st, err := other.Resume(ctx, "finished"); err != nil || st.Status != StatusCompleted {
			t.Fatalf("Resume of a completed saga after its definition changed = %s, %v; want its state", st.Status, err)
		}
	})

	// What a saga left for Resume is counted and logged, as nothing else lists it: a
	// compensation that keeps failing stops the drive; the failed step, the failed
	// compensation and the stop each count once, and a Start of a taken ID counts apart from
	// a conflict between coordinators.
	t.Run("failures counted", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		flightDown := true
		w.before = func(_ context.Context, sc StepContext) error {
			switch {
			case sc.Kind == KindAction && sc.Step == 2:
				return Permanent(errors.New("sold out"))
			case sc.Kind == KindCompensation && sc.Step == 0 && flightDown:
				return errors.New("airline API down")
			}
			return nil
		}
		co := w.coordinator("a")
		m := co.metrics
		_, err := co.Start(ctx, "trip", "counted", nil)
		var se *StepError
		if !errors.As(err, &se) || se.Kind != KindCompensation || se.Step != 0 {
			t.Fatalf("Start = %v, want the flight's compensation failing", err)
		}
		flightDown = false
		if st, err := co.Resume(ctx, "counted"); err != nil || st.Status != StatusAborted {
			t.Fatalf("Resume = %s, %v", st.Status, err)
		}
		if _, err := co.Start(ctx, "trip", "counted", nil); !errors.Is(err, ErrExists) {
			t.Fatalf("second Start: %v", err)
		}
		for _, tc := range []struct {
			name string
			c    prometheus.Counter
			want float64
		}{
			{"step_failures", m.stepFailures, 1}, {"compensation_failures", m.compensationFailures, 1},
			{"stopped", m.stopped, 1}, {"aborted", m.aborted, 1}, {"exists", m.exists, 1}, {"conflicts", m.conflicts, 0},
		} {
			if got := testutil.ToFloat64(tc.c); got != tc.want {
				t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
			}
		}
	})

	// Unfinished lists the sagas a crash or a failing compensation left, for Resume, and
	// not those that ended.
	t.Run("unfinished sagas listed", func(t *testing.T) {
		ctx, w := testCtx(t), newWorld(t, c)
		crashCtx, crash := context.WithCancel(ctx)
		flightDown, crashed := true, false
		w.before = func(_ context.Context, sc StepContext) error {
			switch {
			case sc.SagaID == "unf-crashed" && sc.Kind == KindAction && sc.Step == 1 && !crashed:
				crashed = true
				crash()
				return context.Canceled
			case sc.SagaID == "unf-compensating" && sc.Kind == KindAction && sc.Step == 2:
				return Permanent(errors.New("sold out"))
			case sc.SagaID == "unf-compensating" && sc.Kind == KindCompensation && sc.Step == 0 && flightDown:
				return errors.New("airline API down")
			}
			return nil
		}
		co := w.coordinator("a")
		if st, err := co.Start(ctx, "trip", "unf-done", nil); err != nil || st.Status != StatusCompleted {
			t.Fatalf("Start = %s, %v", st.Status, err)
		}
		if _, err := co.Start(crashCtx, "trip", "unf-crashed", nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("crashed Start: %v", err)
		}
		if st, err := co.Start(ctx, "trip", "unf-compensating", nil); err == nil || st.Status != StatusCompensating {
			t.Fatalf("Start = %s, %v; want it left compensating", st.Status, err)
		}
		unfinished := func() map[string]Status {
			got := map[string]Status{}
			for st, err := range co.Unfinished(ctx) {
				if err != nil && (st.ID == "" || strings.HasPrefix(st.ID, "unf-")) {
					t.Fatal(err)
				}
				if err != nil {
					continue // another subtest's saga that cannot be loaded ("truncated stream")
				}
				if strings.HasPrefix(st.ID, "unf-") {
					got[st.ID] = st.Status
				}
			}
			return got
		}
		want := map[string]Status{"unf-crashed": StatusRunning, "unf-compensating": StatusCompensating}
		if got := unfinished(); !maps.Equal(got, want) {
			t.Fatalf("Unfinished = %v, want %v", got, want)
		}
		flightDown = false
		for id := range want {
			if st, err := co.Resume(ctx, id); err != nil || !st.Status.Terminal() {
				t.Fatalf("Resume(%s) = %s, %v", id, st.Status, err)
			}
		}
		if got := unfinished(); len(got) != 0 {
			t.Fatalf("Unfinished after resuming them = %v, want none", got)
		}
	})

	// A wrapper of the client stands in for it (Store): here one that counts the saga
	// stream's appends, three per step and two for the start and end of a one-step saga.
	t.Run("wrapped client", func(t *testing.T) {
		ctx := testCtx(t)
		one := &Definition{Name: "one", Steps: []Step{{Name: "only",
			Action: func(context.Context, StepContext) ([]byte, error) { return []byte("ok"), nil }}}}
		counted := &countingStore{Client: c}
		co, err := NewCoordinator(Config{Client: counted, Definitions: []*Definition{one}})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := co.Start(ctx, "one", "wrapped-1", nil); err != nil || st.Status != StatusCompleted {
			t.Fatalf("Start through a wrapped client = %s, %v", st.Status, err)
		}
		// SagaStarted, StepStarted, StepCompleted, SagaCompleted.
		if n := counted.appends.Load(); n != 4 {
			t.Fatalf("%d appends through the wrapper, want 4", n)
		}
	})

	// MaxElapsed bounds an attempt under way too: an action that never answers fails after
	// it, and the saga aborts, rather than hold Start until its caller gives up.
	t.Run("hung action given up after MaxElapsed", func(t *testing.T) {
		hang := &Definition{Name: "hang", Steps: []Step{{Name: "remote",
			Action: func(ctx context.Context, sc StepContext) ([]byte, error) {
				<-ctx.Done() // a remote call that never answers
				return nil, ctx.Err()
			}}}}
		co, err := NewCoordinator(Config{Client: c, Definitions: []*Definition{hang},
			ActionRetry: RetryPolicy{Initial: time.Millisecond, MaxAttempts: 3, MaxElapsed: 200 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(testCtx(t), 30*time.Second)
		defer cancel()
		if st, err := co.Start(ctx, "hang", "h1", nil); err != nil || st.Status != StatusAborted {
			t.Fatalf("Start = %s, %v; want the step given up after MaxElapsed (200ms) and the saga aborted", st.Status, err)
		}

		// With AttemptTimeout, a hung first attempt leaves the budget to the next.
		once := &Definition{Name: "once", Steps: []Step{{Name: "remote",
			Action: func(ctx context.Context, sc StepContext) ([]byte, error) {
				if sc.Attempt == 1 {
					<-ctx.Done()
					return nil, ctx.Err()
				}
				return []byte("done"), nil
			}}}}
		co, err = NewCoordinator(Config{Client: c, Definitions: []*Definition{once},
			ActionRetry: RetryPolicy{Initial: time.Millisecond, MaxAttempts: 3, MaxElapsed: 20 * time.Second,
				AttemptTimeout: 100 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := co.Start(ctx, "once", "o1", nil); err != nil || st.Status != StatusCompleted {
			t.Fatalf("Start = %s, %v; want the hung first attempt ended after AttemptTimeout and the second to complete", st.Status, err)
		}
		if _, err := NewCoordinator(Config{Client: c, Definitions: []*Definition{once},
			ActionRetry: RetryPolicy{Initial: time.Second, Max: time.Millisecond}}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("NewCoordinator with Max below Initial: %v, want ErrInvalid", err)
		}
	})
}

// countingStore is a Store that counts the appends it passes on to its client.
type countingStore struct {
	*client.Client
	appends atomic.Int64
}

func (s *countingStore) Append(ctx context.Context, stream string, expected client.ExpectedVersion, events ...client.Event) (client.AppendResult, error) {
	s.appends.Add(1)
	return s.Client.Append(ctx, stream, expected, events...)
}

package saga

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/shoaldb/shoal/client"
)

// evs builds a saga stream from (type, record) pairs at versions 0, 1, ….
func evs(t *testing.T, pairs ...any) []client.RecordedEvent {
	t.Helper()
	var out []client.RecordedEvent
	for i := 0; i < len(pairs); i += 2 {
		data, err := json.Marshal(pairs[i+1].(record))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, client.RecordedEvent{Stream: "saga-x", Version: uint64(i / 2), Type: pairs[i].(string), Data: data})
	}
	return out
}

var started3 = record{Saga: "order", Steps: []string{"reserve", "charge", "ship"}, Input: []byte("in")}

func TestFoldHappyPath(t *testing.T) {
	log := evs(t,
		TypeSagaStarted, started3,
		TypeStepStarted, record{Step: 0}, TypeStepCompleted, record{Step: 0, Output: []byte("r1")},
		TypeStepStarted, record{Step: 1}, TypeStepCompleted, record{Step: 1},
		TypeStepStarted, record{Step: 2}, TypeStepCompleted, record{Step: 2},
		TypeSagaCompleted, record{},
	)
	// Every prefix folds, and the next move follows the protocol.
	wantMoves := []move{
		{moveStartStep, 0}, {moveRunStep, 0}, {moveStartStep, 1}, {moveRunStep, 1},
		{moveStartStep, 2}, {moveRunStep, 2}, {moveComplete, 0}, {moveDone, 0},
	}
	for n := 1; n <= len(log); n++ {
		st, err := Fold("x", log[:n])
		if err != nil {
			t.Fatalf("prefix %d: %v", n, err)
		}
		if got := st.next(); got != wantMoves[n-1] {
			t.Fatalf("prefix %d: next = %+v, want %+v", n, got, wantMoves[n-1])
		}
		if !st.Exists || st.Version != uint64(n-1) || st.Expected() != client.Exact(uint64(n-1)) {
			t.Fatalf("prefix %d: version %d exists %v", n, st.Version, st.Exists)
		}
	}
	st, _ := Fold("x", log)
	if st.Status != StatusCompleted || string(st.Steps[0].Output) != "r1" || string(st.Input) != "in" || st.Definition != "order" {
		t.Fatalf("final state %+v", st)
	}
	var empty State
	if empty.Expected() != client.NoStream || empty.next().kind != moveDone {
		t.Fatal("empty state")
	}
}

// TestFoldCompensationInReverse folds a StepFailed recorded before the "compensate" flag: the
// failed step is not compensated, only the completed ones.
func TestFoldCompensationInReverse(t *testing.T) {
	log := evs(t,
		TypeSagaStarted, started3,
		TypeStepStarted, record{Step: 0}, TypeStepCompleted, record{Step: 0},
		TypeStepStarted, record{Step: 1}, TypeStepCompleted, record{Step: 1},
		TypeStepStarted, record{Step: 2}, TypeStepFailed, record{Step: 2, Error: "card declined"},
	)
	st, err := Fold("x", log)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusCompensating || st.FailedStep != 2 || st.Failure != "card declined" {
		t.Fatalf("state %+v", st)
	}
	if mv := st.next(); mv != (move{moveCompensate, 1}) {
		t.Fatalf("next = %+v, want compensate 1", mv)
	}
	// Compensating step 0 before step 1 breaks the reverse order.
	next := func(typ string, r record) client.RecordedEvent {
		data, _ := json.Marshal(r)
		return client.RecordedEvent{Version: st.Version + 1, Type: typ, Data: data}
	}
	s2 := st
	s2.Steps = append([]StepState(nil), st.Steps...)
	if err := s2.Apply(next(TypeCompensationCompleted, record{Step: 0})); !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("out-of-order compensation: %v", err)
	}
	for _, step := range []int{1, 0} {
		if err := st.Apply(next(TypeCompensationCompleted, record{Step: step})); err != nil {
			t.Fatal(err)
		}
	}
	if mv := st.next(); mv.kind != moveAbort {
		t.Fatalf("next = %+v, want abort", mv)
	}
	if err := st.Apply(next(TypeSagaAborted, record{})); err != nil || st.Status != StatusAborted || !st.Status.Terminal() {
		t.Fatalf("abort: %v %s", err, st.Status)
	}
}

func TestFoldRejectsProtocolViolations(t *testing.T) {
	for _, tc := range []struct {
		name string
		log  []any
	}{
		{"no started first", []any{TypeStepStarted, record{Step: 0}}},
		{"started twice", []any{TypeSagaStarted, started3, TypeSagaStarted, started3}},
		{"step out of range", []any{TypeSagaStarted, started3, TypeStepStarted, record{Step: 3}}},
		{"skip a step", []any{TypeSagaStarted, started3, TypeStepStarted, record{Step: 1}}},
		{"complete unstarted", []any{TypeSagaStarted, started3, TypeStepCompleted, record{Step: 0}}},
		{"step started twice", []any{TypeSagaStarted, started3, TypeStepStarted, record{Step: 0}, TypeStepStarted, record{Step: 0}}},
		{"complete saga early", []any{TypeSagaStarted, started3, TypeSagaCompleted, record{}}},
		{"abort while running", []any{TypeSagaStarted, started3, TypeSagaAborted, record{}}},
		{"unknown type", []any{TypeSagaStarted, started3, "saga.bogus", record{}}},
		{"compensate while running", []any{TypeSagaStarted, started3, TypeStepStarted, record{Step: 0},
			TypeStepCompleted, record{Step: 0}, TypeCompensationCompleted, record{Step: 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Fold("x", evs(t, tc.log...))
			var le *LogError
			if !errors.As(err, &le) || !errors.Is(err, ErrCorruptLog) || le.SagaID != "x" {
				t.Fatalf("err = %v, want *LogError", err)
			}
		})
	}
	// A version gap and undecodable data are refused too.
	log := evs(t, TypeSagaStarted, started3, TypeStepStarted, record{Step: 0})
	log[1].Version = 5
	if _, err := Fold("x", log); !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("gap: %v", err)
	}
	log[1].Version, log[1].Data = 1, []byte("{")
	if _, err := Fold("x", log); !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("garbage: %v", err)
	}
	// A stream whose visible events start after its SagaStarted was soft-deleted while the
	// saga ran: said so (ErrHistoryDeleted), as a protocol error from version 0 is not.
	log = evs(t, TypeStepCompleted, record{Step: 1}, TypeStepStarted, record{Step: 2})
	log[0].Version, log[1].Version = 4, 5
	if _, err := Fold("x", log); !errors.Is(err, ErrHistoryDeleted) || !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("history deleted under a running saga: %v, want ErrHistoryDeleted", err)
	}
	if _, err := Fold("x", evs(t, TypeStepStarted, record{Step: 0})); errors.Is(err, ErrHistoryDeleted) {
		t.Fatalf("no SagaStarted at version 0: %v, not a deleted history", err)
	}
}

func TestIdempotencyID(t *testing.T) {
	a := IdempotencyID("order-1", 2, KindAction)
	if a != IdempotencyID("order-1", 2, KindAction) {
		t.Fatal("not deterministic")
	}
	if a.Version() != 5 {
		t.Fatalf("version %d, want 5 (SHA-1)", a.Version())
	}
	if IdempotencyIDAt("order-1", 0, 2, KindAction) != a {
		t.Fatal("IdempotencyIDAt at start version 0 is not IdempotencyID")
	}
	// Golden values of the documented layout (also computed outside Go): IDs already handed
	// to other systems as idempotency keys must never change, so any change here is a bug.
	long := strings.Repeat("x", 200) // a two-byte uvarint length
	for _, tc := range []struct {
		id      string
		started uint64
		step    int
		kind    Kind
		want    string
	}{
		{"order-1", 0, 2, KindAction, "90e00bb1-7c80-5bc3-9e4d-65c7e7fa2912"},
		{"order-1", 0, 2, KindCompensation, "51c04da7-aa66-570b-8cf0-960eaaed2153"},
		{"order-1", 0, 0, KindAction, "64693888-b6c8-5ddc-9f36-ff95e769cbff"},
		{"order-1", 7, 2, KindAction, "fd4af650-5444-5342-8888-d16322e7f09e"},
		{"order-1", 1 << 40, 2, KindCompensation, "d817c515-c0f7-59dd-be3e-7493d54443ac"},
		{long, 0, 70000, KindAction, "6386b1b0-445a-5d55-9ea7-7a7945e9621c"},
	} {
		if got := IdempotencyIDAt(tc.id, tc.started, tc.step, tc.kind).String(); got != tc.want {
			t.Errorf("IdempotencyIDAt(%.10q, %d, %d, %s) = %s, want %s", tc.id, tc.started, tc.step, tc.kind, got, tc.want)
		}
	}
	seen := map[string]bool{}
	for _, id := range []string{"order-1", "order-12", "order-", "o"} {
		for step := range 13 {
			for _, k := range []Kind{KindAction, KindCompensation} {
				for _, started := range []uint64{0, 1, 7, 1 << 40} {
					u := IdempotencyIDAt(id, started, step, k).String()
					if seen[u] {
						t.Fatalf("collision at %q %d %d %s", id, started, step, k)
					}
					seen[u] = true
				}
			}
		}
	}
}

func TestRetryPolicyDefaults(t *testing.T) {
	p := RetryPolicy{}.withDefaults(DefaultActionRetry)
	if p != DefaultActionRetry {
		t.Fatalf("zero policy = %+v", p)
	}
	p = RetryPolicy{MaxAttempts: 1}.withDefaults(DefaultActionRetry)
	if p.MaxAttempts != 1 || p.Initial != DefaultActionRetry.Initial {
		t.Fatalf("partial policy = %+v", p)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no client", Config{}},
		{"nil client", Config{Client: (*client.Client)(nil)}}, // a typed nil in the Store interface
		{"unnamed definition", Config{Client: &client.Client{}, Definitions: []*Definition{{}}}},
		{"no steps", Config{Client: &client.Client{}, Definitions: []*Definition{{Name: "d"}}}},
		{"step without action", Config{Client: &client.Client{}, Definitions: []*Definition{{Name: "d", Steps: []Step{{Name: "s"}}}}}},
		{"negative retry", Config{Client: &client.Client{}, ActionRetry: RetryPolicy{Initial: -1}}},
		{"duplicate", Config{Client: &client.Client{}, Definitions: []*Definition{okDef, okDef}}},
		// The first event records the names: past the limits, they would crowd out the input
		// and be blamed on it.
		{"long coordinator name", Config{Client: &client.Client{}, Name: strings.Repeat("c", MaxNameLen+1)}},
		{"long definition name", Config{Client: &client.Client{}, Definitions: []*Definition{{Name: strings.Repeat("d", MaxNameLen+1), Steps: okDef.Steps}}}},
		{"long step name", Config{Client: &client.Client{}, Definitions: []*Definition{{Name: "d", Steps: []Step{{Name: strings.Repeat("s", MaxNameLen+1), Action: okDef.Steps[0].Action}}}}}},
		{"too many steps", Config{Client: &client.Client{}, Definitions: []*Definition{{Name: "d", Steps: slices.Repeat(okDef.Steps, MaxSteps+1)}}}},
		// Names not valid UTF-8 are recorded (JSON) with U+FFFD in place of their bad bytes, so
		// Resume never found the definition again (ErrUnknownDefinition) nor matched its steps
		// (ErrDefinitionMismatch): a saga that crashed could not be resumed or compensated.
		{"definition name not UTF-8", Config{Client: &client.Client{}, Definitions: []*Definition{{Name: "trip\xff", Steps: okDef.Steps}}}},
		{"step name not UTF-8", Config{Client: &client.Client{}, Definitions: []*Definition{{Name: "d", Steps: []Step{{Name: "s\xfe", Action: okDef.Steps[0].Action}}}}}},
	} {
		if err := tc.cfg.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", tc.name, err)
		} else if strings.HasPrefix(tc.name, "long") && !strings.Contains(err.Error(), "MaxNameLen") ||
			tc.name == "too many steps" && !strings.Contains(err.Error(), "MaxSteps") {
			t.Errorf("%s: %v, want the limit named", tc.name, err)
		}
	}
	if err := (&Config{Client: &client.Client{}, Definitions: []*Definition{okDef}}).Validate(); err != nil {
		t.Fatal(err)
	}
}

var okDef = &Definition{Name: "d", Steps: []Step{{Name: "s", Action: func(context.Context, StepContext) ([]byte, error) { return nil, nil }}}}

// A StepFailed with the "compensate" flag (every coordinator records it now) has the failed
// step compensated first, then the completed ones in reverse; aborting before is refused.
func TestFoldFailedStepCompensated(t *testing.T) {
	log := evs(t,
		TypeSagaStarted, started3,
		TypeStepStarted, record{Step: 0}, TypeStepCompleted, record{Step: 0},
		TypeStepStarted, record{Step: 1}, TypeStepFailed, record{Step: 1, Error: "timeout", Compensate: true},
	)
	st, err := Fold("x", log)
	if err != nil {
		t.Fatal(err)
	}
	next := func(typ string, r record) client.RecordedEvent {
		data, _ := json.Marshal(r)
		return client.RecordedEvent{Version: st.Version + 1, Type: typ, Data: data}
	}
	for _, step := range []int{1, 0} {
		if mv := st.next(); mv != (move{moveCompensate, step}) {
			t.Fatalf("next = %+v, want compensate %d", mv, step)
		}
		s2 := st
		s2.Steps = append([]StepState(nil), st.Steps...)
		if err := s2.Apply(next(TypeSagaAborted, record{})); !errors.Is(err, ErrCorruptLog) {
			t.Fatalf("abort before step %d was compensated: %v", step, err)
		}
		if err := st.Apply(next(TypeCompensationCompleted, record{Step: step})); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Apply(next(TypeSagaAborted, record{})); err != nil || st.Status != StatusAborted {
		t.Fatalf("abort: %v %s", err, st.Status)
	}
}

// A stream that a coordinator of this version and one of the version before both wrote (a
// rolling upgrade): StepFailed with the compensate flag, then the completed steps compensated
// and the saga aborted by the older one, which leaves the failed step alone. It folds.
func TestFoldMixedVersionCompensation(t *testing.T) {
	log := evs(t,
		TypeSagaStarted, started3,
		TypeStepStarted, record{Step: 0}, TypeStepCompleted, record{Step: 0},
		TypeStepStarted, record{Step: 1}, TypeStepFailed, record{Step: 1, Error: "timeout", Compensate: true},
		TypeCompensationCompleted, record{Step: 0},
		TypeSagaAborted, record{Step: 1, Error: "timeout"},
	)
	st, err := Fold("x", log)
	if err != nil || st.Status != StatusAborted {
		t.Fatalf("fold of a mixed-version stream: %v, %s", err, st.Status)
	}
	if mv := st.next(); mv.kind != moveDone {
		t.Fatalf("next = %+v", mv)
	}
}

package shard

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// model is an in-memory reference implementation of the shard semantics.
type model struct {
	streams map[string]*mStream
	ids     map[[16]byte]mLoc
	nextPos uint64
	order   []mLoc // position -> event or delete
	format  uint64
	id      uint32 // the shard's
}

type mStream struct {
	events []mEvent // index = version
	start  uint64
	gone   uint64 // events before it were truncated
	state  byte
	marked bool // start is a truncation's (Format5 on), after any soft delete's
}

type mEvent struct {
	id      [16]byte
	typ     string
	data    string
	pos     uint64
	created int64
}

type mLoc struct {
	stream   string
	version  uint64
	deletion Deletion
}

func newModel(id uint32) *model {
	return &model{id: id, streams: map[string]*mStream{}, ids: map[[16]byte]mLoc{}, format: Format1}
}

func (m *model) apply(cmd any) any {
	switch c := cmd.(type) {
	case *AppendCommand:
		return m.append(c)
	case *DeleteCommand:
		return m.delete(c)
	case *TruncateCommand:
		return m.truncate(c)
	case *SetFormatCommand:
		m.format = max(m.format, c.Format)
		return &FormatResult{Format: m.format}
	}
	panic("unknown command")
}

func (m *model) expectOK(st *mStream, exp Expected) bool {
	live := st != nil && st.state == stateLive
	switch exp.Kind {
	case ExpectAny:
		return true
	case ExpectNoStream:
		return !live
	case ExpectExists:
		return live
	default:
		return st != nil && uint64(len(st.events))-1 == exp.Version
	}
}

func (m *model) wev(name string, st *mStream, exp Expected) error {
	e := &WrongExpectedVersionError{Stream: name, Expected: exp}
	if st != nil {
		e.Exists = st.state == stateLive
		e.Deleted = st.state == stateDeleted // soft-deleted, not tombstoned
		e.Actual = uint64(len(st.events)) - 1
	}
	return e
}

func (m *model) append(c *AppendCommand) any {
	if err := ValidateAppend(c); err != nil {
		return err
	}
	st := m.streams[c.Stream]
	tombstoned := st != nil && st.state == stateTombstoned
	var locs []mLoc
	firstHit := -1
	for i, e := range c.Events {
		if l, ok := m.ids[e.ID]; ok && (m.format < Format7 || l.version >= m.streams[l.stream].gone) {
			// From Format7 on an ID is known only while its event is stored.
			if firstHit < 0 {
				firstHit = i
			}
			locs = append(locs, l)
		}
	}
	if len(locs) > 0 {
		dup := len(locs) == len(c.Events)
		for i, l := range locs {
			if l.stream != c.Stream || l.version != locs[0].version+uint64(i) {
				dup = false
			}
		}
		if dup {
			last := locs[len(locs)-1].version
			return &AppendResult{FirstVersion: locs[0].version, LastVersion: last,
				Position: st.events[locs[0].version].pos, LastPosition: st.events[last].pos, Duplicate: true}
		}
		if tombstoned {
			return ErrStreamDeleted
		}
		return &IDConflictError{Stream: c.Stream, ID: c.Events[firstHit].ID,
			ExistingStream: locs[0].stream, ExistingVersion: locs[0].version}
	}
	if tombstoned {
		return ErrStreamDeleted
	}
	if !m.expectOK(st, c.Expected) {
		return m.wev(c.Stream, st, c.Expected)
	}
	if st == nil {
		st = &mStream{}
		m.streams[c.Stream] = st
	}
	st.state = stateLive
	res := &AppendResult{FirstVersion: uint64(len(st.events)), Position: m.nextPos}
	for _, e := range c.Events {
		v := uint64(len(st.events))
		st.events = append(st.events, mEvent{id: e.ID, typ: e.Type, data: string(e.Data), pos: m.nextPos, created: c.Time})
		m.ids[e.ID] = mLoc{stream: c.Stream, version: v}
		m.order = append(m.order, mLoc{stream: c.Stream, version: v})
		m.nextPos++
	}
	res.LastVersion = uint64(len(st.events)) - 1
	res.LastPosition = m.nextPos - 1
	return res
}

func (m *model) delete(c *DeleteCommand) any {
	if err := ValidateDelete(c); err != nil {
		return err
	}
	st := m.streams[c.Stream]
	switch {
	case st == nil:
		return ErrStreamNotFound
	case st.state == stateTombstoned:
		return ErrStreamDeleted
	case st.state == stateDeleted && !c.Tombstone:
		return ErrStreamNotFound
	}
	if !m.expectOK(st, c.Expected) {
		return m.wev(c.Stream, st, c.Expected)
	}
	kind := DeletionSoft
	if c.Tombstone {
		st.state, kind = stateTombstoned, DeletionTombstone
	} else {
		st.state = stateDeleted
		st.start, st.marked = uint64(len(st.events)), false
	}
	res := &DeleteResult{Position: m.nextPos}
	if m.format >= Format2 {
		m.order = append(m.order, mLoc{stream: c.Stream, version: uint64(len(st.events)) - 1, deletion: kind})
		m.nextPos++
		res.Logged = true
	}
	return res
}

func (m *model) truncate(c *TruncateCommand) any {
	if m.format < Format4 {
		return NeedsFormat("truncating a stream", Format4, m.id, m.format)
	}
	if err := ValidateTruncate(c); err != nil {
		return err
	}
	st := m.streams[c.Stream]
	if st == nil {
		return ErrStreamNotFound
	}
	if !m.expectOK(st, c.Expected) {
		return m.wev(c.Stream, st, c.Expected)
	}
	limit := uint64(len(st.events))
	if st.state == stateLive {
		limit-- // the last event stays
	}
	before := min(c.Before, limit)
	st.gone = max(st.gone, before)
	if before > st.start {
		st.start, st.marked = before, m.format >= Format5
	}
	return &TruncateResult{Start: st.start}
}

// checkList compares ListStreams, of every stream, with the model.
func (m *model) checkList(t *testing.T, s *Shard) {
	t.Helper()
	var want, got []string
	for _, name := range slices.Sorted(maps.Keys(m.streams)) {
		st := m.streams[name]
		last := uint64(len(st.events)) - 1
		first := st.start
		if st.state != stateLive {
			first = last + 1
		}
		line := fmt.Sprintf("%s %s first=%d last=%d truncated=%t hidden=%d", name, StreamState(st.state), first, last, st.marked,
			first-min(st.gone, first))
		if st.state == stateLive {
			line += fmt.Sprintf(" pos=%d time=%d", st.events[last].pos, st.events[last].created)
		}
		want = append(want, line)
	}
	_, err := s.ListStreams("", "", true, 0, func(sum *StreamSummary) error {
		line := fmt.Sprintf("%s %s first=%d last=%d truncated=%t hidden=%d", sum.Name, sum.State, sum.First, sum.Last, sum.Truncated,
			sum.Hidden)
		if sum.State == StreamLive {
			line += fmt.Sprintf(" pos=%d time=%d", sum.LastPosition, sum.LastCreated)
		}
		got = append(got, line)
		return nil
	})
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("ListStreams: %v\n got %q\nwant %q", err, got, want)
	}
}

// check compares every stream and the shard log with the model.
func (m *model) check(t *testing.T, s *Shard) {
	t.Helper()
	if s.LastPosition() != m.nextPos {
		t.Fatalf("LastPosition %d, model %d", s.LastPosition(), m.nextPos)
	}
	m.checkList(t, s)
	for name, st := range m.streams {
		exists, last, deleted, tomb, err := s.StreamInfo(name)
		if err != nil || exists != (st.state == stateLive) || deleted != (st.state != stateLive) ||
			tomb != (st.state == stateTombstoned) || last != uint64(len(st.events))-1 {
			t.Fatalf("StreamInfo(%s) = %v %d %v %v %v; model %+v", name, exists, last, deleted, tomb, err, st)
		}
		var got []string
		err = s.ReadStream(name, 0, false, false, 0, func(ev *RecordedEvent) error {
			got = append(got, fmt.Sprintf("%d/%d/%x/%s/%s/%d", ev.Version, ev.Position, ev.ID, ev.Type, ev.Data, ev.Created))
			return nil
		})
		var want []string
		switch st.state {
		case stateLive:
			for v := st.start; v < uint64(len(st.events)); v++ {
				e := st.events[v]
				want = append(want, fmt.Sprintf("%d/%d/%x/%s/%s/%d", v, e.pos, e.id, e.typ, e.data, e.created))
			}
			if err != nil {
				t.Fatalf("ReadStream(%s): %v", name, err)
			}
		case stateDeleted:
			if err != ErrStreamNotFound {
				t.Fatalf("ReadStream(%s) of soft-deleted: %v", name, err)
			}
		case stateTombstoned:
			if err != ErrStreamDeleted {
				t.Fatalf("ReadStream(%s) of tombstoned: %v", name, err)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("ReadStream(%s):\n got %v\nwant %v", name, got, want)
		}
		// A whole read from each version below the start and at it: refused from below a
		// marked start, else the same events as ReadStream's from there.
		for from := range st.start + 1 {
			first, n := uint64(0), 0
			err := s.ReadStreamWhole(name, from, 0, func(ev *RecordedEvent) error {
				if n == 0 {
					first = ev.Version
				}
				n++
				return nil
			})
			var hte *HistoryTruncatedError
			switch {
			case st.state == stateLive && st.marked && from < st.start:
				if !errors.As(err, &hte) || hte.From != from || hte.Start != st.start || n != 0 {
					t.Fatalf("ReadStreamWhole(%s, %d): %v after %d events; model: truncated before %d", name, from, err, n, st.start)
				}
			case st.state == stateLive:
				if err != nil || n != len(want) || first != st.start {
					t.Fatalf("ReadStreamWhole(%s, %d): %v, %d events from %d; model %d from %d", name, from, err, n, first, len(want), st.start)
				}
			case err == nil:
				t.Fatalf("ReadStreamWhole(%s, %d) of a deleted stream: no error", name, from)
			}
		}
	}
	// The whole log, in pages of 3, without the truncated events.
	var kept []uint64 // positions
	for p, l := range m.order {
		if l.deletion != DeletionNone || l.version >= m.streams[l.stream].gone {
			kept = append(kept, uint64(p))
		}
	}
	var pos uint64
	i := 0
	for {
		n := 0
		next, err := s.ReadLog(pos, 3, func(ev *RecordedEvent) error {
			if i >= len(kept) {
				t.Fatalf("ReadLog from %d: %s@%d pos %d past the model's last kept entry", pos, ev.Stream, ev.Version, ev.Position)
			}
			want := m.order[kept[i]]
			if ev.Position != kept[i] || ev.Stream != want.stream || ev.Version != want.version || ev.Deletion != want.deletion {
				t.Fatalf("ReadLog from %d: got %s@%d pos %d, want %v at %d", pos, ev.Stream, ev.Version, ev.Position, want, kept[i])
			}
			i, n = i+1, n+1
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		pos = next
		if n == 0 && next >= s.LastPosition() {
			break // the last read passed the truncated entries at the end too
		}
	}
	if i != len(kept) {
		t.Fatalf("ReadLog delivered %d entries, want %d", i, len(kept))
	}
	if pos != m.nextPos {
		t.Fatalf("ReadLog ended at %d, want %d", pos, m.nextPos)
	}
}

// randCommand makes a random command over a small name and ID space so that
// conflicts, retries and version mismatches are frequent.
func randCommand(rng *rand.Rand, m *model, history [][]byte) []byte {
	if len(history) > 0 && rng.IntN(8) == 0 {
		return history[rng.IntN(len(history))] // a retry
	}
	if rng.IntN(300) == 0 {
		return EncodeSetFormat(&SetFormatCommand{Format: 1 + uint64(rng.IntN(int(MaxFormat)))})
	}
	name := fmt.Sprintf("s%d", rng.IntN(16))
	exp := Expected{Kind: ExpectedKind(rng.IntN(4))}
	if exp.Kind == ExpectExact {
		if st := m.streams[name]; st != nil && rng.IntN(3) > 0 {
			exp.Version = uint64(len(st.events)) - 1
		} else {
			exp.Version = uint64(rng.IntN(5))
		}
	}
	if rng.IntN(15) == 0 {
		if exp.Kind == ExpectNoStream && rng.IntN(4) > 0 {
			exp.Kind = ExpectAny
		}
		before := uint64(math.MaxUint64)
		if st := m.streams[name]; st != nil && rng.IntN(4) > 0 {
			before = st.start + uint64(rng.IntN(4))
		}
		return EncodeTruncate(&TruncateCommand{Stream: name, Before: before, Expected: exp})
	}
	if rng.IntN(12) == 0 {
		if exp.Kind == ExpectNoStream && rng.IntN(4) > 0 {
			exp.Kind = ExpectAny
		}
		return EncodeDelete(&DeleteCommand{Stream: name, Expected: exp, Tombstone: rng.IntN(12) == 0, Time: rng.Int64N(1e9)})
	}
	c := &AppendCommand{Stream: name, Expected: exp, Time: rng.Int64N(1e9)}
	n := 1 + rng.IntN(4)
	for i := 0; i < n; i++ {
		id := testID(uint64(1 + rng.IntN(3000)))
		if rng.IntN(300) == 0 {
			id = [16]byte{}
		}
		data := make([]byte, rng.IntN(20))
		for j := range data {
			data[j] = byte('a' + rng.IntN(26))
		}
		c.Events = append(c.Events, Event{ID: id, Type: fmt.Sprintf("T%d", rng.IntN(3)), Data: data})
	}
	return EncodeAppend(c)
}

func TestModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	for round := uint64(0); round < 3; round++ {
		rng := rand.New(rand.NewPCG(seed, round))
		runModel(t, rng, 1200)
		if t.Failed() {
			t.Fatalf("failed with seed %d round %d", seed, round)
		}
	}
}

func runModel(t *testing.T, rng *rand.Rand, ops int) {
	ts := newTestShard(t, nil, uint32(rng.IntN(4)))
	m := newModel(ts.s.ID())
	if rng.IntN(2) == 0 { // truncations from the start
		ts.apply(EncodeSetFormat(&SetFormatCommand{Format: MaxFormat}))
		m.format = MaxFormat
	}
	var history [][]byte
	stats := map[string]int{}
	defer func() { t.Logf("verdicts: %v", stats) }()
	for i := 0; i < ops; {
		// One indexed batch of 1..6 entries, like the replica's apply loop.
		ts.begin()
		for n := 1 + rng.IntN(6); n > 0 && i < ops; n, i = n-1, i+1 {
			data := randCommand(rng, m, history)
			history = append(history, data)
			cmd, err := DecodeCommand(data)
			if err != nil {
				t.Fatal(err)
			}
			res := m.apply(cmd)
			stats[verdictKind(res)]++
			want := fmtResult(res)
			got := fmtResult(ts.apply(data))
			if got != want {
				t.Fatalf("op %d %+v:\n got %s\nwant %s", i, cmd, got, want)
			}
			if rng.IntN(10) == 0 {
				ts.index++
				ts.s.SetApplied(ts.batch, ts.index)
			}
		}
		ts.commit(pebble.NoSync)
		if ts.s.Applied() != ts.index {
			t.Fatalf("Applied %d, want %d", ts.s.Applied(), ts.index)
		}
		switch rng.IntN(40) {
		case 0:
			if err := ts.s.Reload(); err != nil {
				t.Fatal(err)
			}
		case 1:
			s, err := Open(ts.db, ts.s.ID(), Options{MaxCachedStreams: 2})
			if err != nil {
				t.Fatal(err)
			}
			ts.s.Close()
			ts.s = s
		}
		if rng.IntN(10) == 0 {
			m.check(t, ts.s)
		}
	}
	m.check(t, ts.s)
}

func verdictKind(res any) string {
	switch r := res.(type) {
	case *AppendResult:
		if r.Duplicate {
			return "duplicate"
		}
		return "append"
	case *DeleteResult:
		return "delete"
	case *TruncateResult:
		return "truncate"
	case *FormatResult:
		return fmt.Sprintf("format %d", r.Format)
	case *WrongExpectedVersionError:
		return "wrong-version"
	case *IDConflictError:
		return "id-conflict"
	case *InvalidError:
		return "invalid"
	case error:
		if errors.Is(r, ErrNeedsFormat) {
			return "needs-format"
		}
		return r.Error()
	}
	return "?"
}

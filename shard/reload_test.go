package shard

import (
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestReloadRefusesInconsistentState: Reload, and Stored, load what Apply writes at every
// format, and refuse, as corrupt, the states Apply never writes: a meta record without the
// applied index it is written with (up to Format2: the 'X' key), none at Format3 (where it
// holds the applied index), or one of the other format's length.
func TestReloadRefusesInconsistentState(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format uint64
		damage func(ts *testShard) // nil: none
		want   string              // in the error; "" loads
	}{
		{name: "format1", format: Format1},
		{name: "format2", format: Format2},
		{name: "format3", format: Format3},
		{name: "format2 without X", format: Format2, want: "has a meta record and no applied index",
			damage: func(ts *testShard) { ts.delete(ts.s.keys.applied(nil)) }},
		{name: "format1 without X", format: Format1, want: "has a meta record and no applied index",
			damage: func(ts *testShard) { ts.delete(ts.s.keys.applied(nil)) }},
		{name: "format3 without Z", format: Format3, want: "has no meta record",
			damage: func(ts *testShard) { ts.delete(ts.s.keys.meta(nil)) }},
		{name: "format3 with a format2 Z", format: Format3, want: "meta record of 16 bytes at format 3",
			damage: func(ts *testShard) { ts.set(ts.s.keys.meta(nil), make([]byte, 16)) }},
		{name: "format2 with a format3 Z", format: Format2, want: "meta record of 24 bytes at format 2",
			damage: func(ts *testShard) { ts.set(ts.s.keys.meta(nil), make([]byte, 24)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestShard(t, nil, 7)
			if tc.format > Format1 {
				ts.apply(EncodeSetFormat(&SetFormatCommand{Format: tc.format}))
			}
			for i := range uint64(3) {
				ts.apply(EncodeAppend(&AppendCommand{Stream: "r-1", Events: []Event{{ID: testID(i + 1), Type: "T"}}}))
			}
			if got := ts.s.Format(); got != tc.format {
				t.Fatalf("format %d, want %d", got, tc.format)
			}
			applied, next := ts.s.Applied(), ts.s.LastPosition()
			if tc.damage != nil {
				tc.damage(ts)
			}
			// Stored reads the same state, and reaches the same verdict, without opening it.
			st, err := Stored(ts.db, 7)
			switch {
			case tc.want == "" && (err != nil || st != StoredState{Applied: applied, Format: tc.format, LastPosition: next}):
				t.Fatalf("Stored: %+v, %v; want applied %d, format %d, next position %d", st, err, applied, tc.format, next)
			case tc.want != "" && (!errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Stored: %v, want ErrCorrupt with %q", err, tc.want)
			}
			err = ts.s.Reload()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Reload: %v", err)
			case tc.want == "" && ts.s.Applied() != applied:
				t.Fatalf("reloaded applied %d, want %d", ts.s.Applied(), applied)
			case tc.want != "" && (!errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Reload: %v, want ErrCorrupt with %q", err, tc.want)
			}
		})
	}
}

func (ts *testShard) delete(key []byte) {
	ts.t.Helper()
	if err := ts.db.Delete(key, pebble.Sync); err != nil {
		ts.t.Fatal(err)
	}
}

func (ts *testShard) set(key, value []byte) {
	ts.t.Helper()
	if err := ts.db.Set(key, value, pebble.Sync); err != nil {
		ts.t.Fatal(err)
	}
}

package shard

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestReadStreamOneView reads a stream while it is soft-deleted and appended to again and
// again, one event each time: at any moment it shows at most one event, so a read that
// returns two mixed the stream record of one moment with the events of a later one.
func TestReadStreamOneView(t *testing.T) {
	for _, format := range []uint64{Format2, Format3} {
		ts := newTestShard(t, nil, 1)
		if _, ok := ts.apply(EncodeSetFormat(&SetFormatCommand{Format: format})).(*FormatResult); !ok {
			t.Fatal("set format")
		}
		var (
			stop  atomic.Bool
			wg    sync.WaitGroup
			reads atomic.Int64
		)
		for _, backward := range []bool{false, true} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					var got []uint64
					err := ts.s.ReadStream("s", 0, backward, backward, 0, func(ev *RecordedEvent) error {
						got = append(got, ev.Version)
						return nil
					})
					switch {
					case errors.Is(err, ErrStreamNotFound):
					case err != nil:
						t.Errorf("format %d: ReadStream: %v", format, err)
						return
					case len(got) != 1:
						t.Errorf("format %d: ReadStream (backward %t) returned versions %v; the stream never shows more than one", format, backward, got)
						return
					}
					reads.Add(1)
				}
			}()
		}
		for i := 0; i < 2000 && !t.Failed(); i++ {
			if _, ok := ts.apply(EncodeAppend(&AppendCommand{Stream: "s", Expected: Expected{Kind: ExpectAny},
				Events: []Event{{ID: testID(uint64(i + 1)), Type: "T"}}, Time: 1})).(*AppendResult); !ok {
				t.Fatalf("append %d", i)
			}
			if _, ok := ts.apply(EncodeDelete(&DeleteCommand{Stream: "s", Expected: Expected{Kind: ExpectAny}, Time: 1})).(*DeleteResult); !ok {
				t.Fatalf("delete %d", i)
			}
		}
		stop.Store(true)
		wg.Wait()
		ts.commit(pebble.NoSync)
		t.Logf("format %d: %d reads", format, reads.Load())
	}
}

// TestReadLogOneView: ReadLog reads the log, the events and the streams' names from the view
// of the DB it started with. Here the shard's keyspace is deleted (as DropGroup does) while the
// read is under way, after its first event; the read still delivers the whole log, including
// the events and the name of a stream it had not reached.
func TestReadLogOneView(t *testing.T) {
	ts := newTestShard(t, nil, 1)
	for i, stream := range []string{"a", "a", "b", "b"} {
		ts.apply(EncodeAppend(&AppendCommand{Stream: stream, Events: []Event{{ID: testID(uint64(i + 1)), Type: "T"}}, Time: 1}))
	}
	lo, hi := ts.s.keys.span()
	var got []string
	_, err := ts.s.ReadLog(0, 0, func(ev *RecordedEvent) error {
		if len(got) == 0 {
			if err := ts.db.DeleteRange(lo, hi, pebble.Sync); err != nil {
				t.Fatal(err)
			}
		}
		got = append(got, fmt.Sprintf("%s@%d", ev.Stream, ev.Version))
		return nil
	})
	if err != nil {
		t.Fatalf("ReadLog with the keyspace deleted after its first event: %v (read %v)", err, got)
	}
	if want := []string{"a@0", "a@1", "b@0", "b@1"}; !slices.Equal(got, want) {
		t.Fatalf("ReadLog read %v, want %v", got, want)
	}
	var after int
	if _, err := ts.s.ReadLog(0, 0, func(*RecordedEvent) error { after++; return nil }); err != nil || after != 0 {
		t.Fatalf("a read started after the delete: %d events, %v; want none", after, err)
	}
}

package shard

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// testShard is a shard over an in-memory Pebble, applied exactly like the
// replica does: NewIndexedBatch, BeginBatch, Apply..., FinishBatch, Commit,
// Committed (eager: without BeginBatch/FinishBatch).
type testShard struct {
	t     testing.TB
	fs    vfs.FS
	db    *pebble.DB
	s     *Shard
	index uint64
	batch *pebble.Batch // open batch (between begin and commit), or nil
	eager bool          // no BeginBatch/FinishBatch: per-entry applied index and meta
}

func newTestShard(t testing.TB, fs vfs.FS, id uint32) *testShard {
	t.Helper()
	if fs == nil {
		fs = vfs.NewMem()
	}
	db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(db, id, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testShard{t: t, fs: fs, db: db, s: s, index: s.Applied()}
	t.Cleanup(func() {
		if ts.batch != nil {
			ts.batch.Close()
		}
		if ts.db == nil {
			return // closed by the test
		}
		ts.s.Close()
		if err := ts.db.Close(); err != nil {
			t.Error(err)
		}
	})
	return ts
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

func (ts *testShard) begin() {
	if ts.batch == nil {
		ts.batch = ts.db.NewIndexedBatch()
		if !ts.eager {
			ts.s.BeginBatch(ts.batch)
		}
	}
}

func (ts *testShard) commit(opts *pebble.WriteOptions) {
	ts.t.Helper()
	if ts.batch == nil {
		return
	}
	if err := ts.s.FinishBatch(ts.batch); err != nil {
		ts.t.Fatal(err)
	}
	if err := ts.batch.Commit(opts); err != nil {
		ts.t.Fatal(err)
	}
	ts.batch.Close()
	ts.batch = nil
	ts.s.Committed()
}

// apply applies data as the next entry, committing at once unless a batch is open.
func (ts *testShard) apply(data []byte) any {
	ts.t.Helper()
	auto := ts.batch == nil
	ts.begin()
	ts.index++
	res := ts.s.Apply(ts.batch, ts.index, data)
	if err, ok := res.(error); ok && errors.Is(err, ErrStorage) {
		ts.t.Fatal(err)
	}
	if auto {
		ts.commit(pebble.NoSync)
	}
	return res
}

func fmtResult(res any) string {
	switch r := res.(type) {
	case *AppendResult:
		s := fmt.Sprintf("ok first=%d last=%d pos=%d", r.FirstVersion, r.LastVersion, r.Position)
		if r.LastPosition != r.Position+(r.LastVersion-r.FirstVersion) {
			s += fmt.Sprintf(" last-pos=%d", r.LastPosition)
		}
		if r.Duplicate {
			s += " duplicate"
		}
		return s
	case *DeleteResult:
		if r.Logged {
			return fmt.Sprintf("ok pos=%d logged", r.Position)
		}
		return fmt.Sprintf("ok pos=%d", r.Position)
	case *FormatResult:
		return fmt.Sprintf("ok format=%d", r.Format)
	case *TruncateResult:
		return fmt.Sprintf("ok start=%d", r.Start)
	case *RetentionResult:
		return fmt.Sprintf("ok policies=%d", r.Policies)
	case error:
		return "error: " + r.Error()
	}
	return fmt.Sprintf("unexpected result %T %v", res, res)
}

// testID makes a recognisable UUID from a small number.
func testID(n uint64) [16]byte {
	var id [16]byte
	for i := 0; i < 8; i++ {
		id[15-i] = byte(n >> (8 * i))
	}
	return id
}

func idNum(id [16]byte) uint64 {
	var n uint64
	for i := 8; i < 16; i++ {
		n = n<<8 | uint64(id[i])
	}
	return n
}

func fmtEvent(ev *RecordedEvent, withStream bool) string {
	var sb strings.Builder
	if ev.Deletion != DeletionNone {
		kind := map[Deletion]string{DeletionSoft: "soft-delete", DeletionTombstone: "tombstone"}[ev.Deletion]
		fmt.Fprintf(&sb, "pos=%d %s %s@%d created=%d", ev.Position, kind, ev.Stream, ev.Version, ev.Created)
		if ev.Type != "" || ev.Data != nil || ev.Metadata != nil || ev.ID != ([16]byte{}) {
			fmt.Fprintf(&sb, " unexpected fields %+v", *ev)
		}
		return sb.String()
	}
	if withStream {
		fmt.Fprintf(&sb, "pos=%d %s@%d", ev.Position, ev.Stream, ev.Version)
	} else {
		fmt.Fprintf(&sb, "%d pos=%d", ev.Version, ev.Position)
	}
	fmt.Fprintf(&sb, " id=%d type=%s", idNum(ev.ID), ev.Type)
	if len(ev.Data) > 32 {
		fmt.Fprintf(&sb, " data=<%d bytes>", len(ev.Data))
	} else if ev.Data != nil {
		fmt.Fprintf(&sb, " data=%s", ev.Data)
	}
	if len(ev.Metadata) > 32 {
		fmt.Fprintf(&sb, " meta=<%d bytes>", len(ev.Metadata))
	} else if ev.Metadata != nil {
		fmt.Fprintf(&sb, " meta=%s", ev.Metadata)
	}
	if ev.ContentType != "" {
		fmt.Fprintf(&sb, " ctype=%s", ev.ContentType)
	}
	fmt.Fprintf(&sb, " created=%d", ev.Created)
	return sb.String()
}

// TestDeferredBatchMatchesEager applies the same random commands with per-entry
// bookkeeping (eager) and with BeginBatch/FinishBatch over batches of random
// size, and requires byte-identical state.
func TestDeferredBatchMatchesEager(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	gen := newModel(3)
	var cmds [][]byte
	for range 400 {
		data := randCommand(rng, gen, nil)
		cmd, _ := DecodeCommand(data)
		gen.apply(cmd)
		cmds = append(cmds, data)
	}
	dump := func(eager bool) string {
		ts := newTestShard(t, nil, 3)
		ts.eager = eager
		for i := 0; i < len(cmds); {
			ts.begin()
			for n := 1 + rng.IntN(10); n > 0 && i < len(cmds); n-- {
				ts.apply(cmds[i])
				i++
			}
			ts.commit(pebble.NoSync)
		}
		var sb strings.Builder
		sb.WriteString(dumpSpan(t, ts))
		if err := ts.s.Reload(); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "applied %d next %d\n", ts.s.Applied(), ts.s.LastPosition())
		return sb.String()
	}
	if a, b := dump(true), dump(false); a != b {
		t.Fatalf("deferred state differs from eager state")
	}
}

package shard

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// ApplyFailure tells a storage failure inside Apply (here, a read through a batch that cannot be
// read, failing as a Pebble read error would) from a verdict.
func TestApplyFailure(t *testing.T) {
	ts := newTestShard(t, nil, 3)
	if res := ts.apply(appendOne("af-1", 1)); ts.s.ApplyFailure(res) != nil {
		t.Fatalf("a success (%v) reported as a storage failure", res)
	}
	res := ts.apply(EncodeAppend(&AppendCommand{Stream: "af-1", Expected: Expected{Kind: ExpectNoStream},
		Events: []Event{{ID: testID(2), Type: "T"}}}))
	if _, ok := res.(*WrongExpectedVersionError); !ok || ts.s.ApplyFailure(res) != nil {
		t.Fatalf("verdict %v: ApplyFailure %v, want nil", res, ts.s.ApplyFailure(res))
	}
	// After a Reload the stream is no longer cached, so its record is read through the batch.
	if err := ts.s.Reload(); err != nil {
		t.Fatal(err)
	}
	b := ts.db.NewBatch() // not indexed: reads fail with pebble.ErrNotIndexed
	defer b.Close()
	res = ts.s.Apply(b, ts.index+1, appendOne("af-1", 3))
	if err := ts.s.ApplyFailure(res); err == nil || !errors.Is(err, ErrStorage) {
		t.Fatalf("Apply with a failing read gave %v; ApplyFailure %v, want an ErrStorage", res, err)
	}
}

// TestApplyUnknownEncodingFails: a command type, delete flag or expected-version kind this
// version does not know is a later version's encoding. Apply fails on it (ApplyFailure, with
// ErrUnsupportedFormat) and records nothing, not even the applied index: recorded as a
// refusal, it would be applied by that later version's replicas and refused here, and the
// replicas would diverge without a word.
func TestApplyUnknownEncodingFails(t *testing.T) {
	ts := newTestShard(t, nil, 3)
	app := EncodeAppend(&AppendCommand{Stream: "u", Events: []Event{{ID: testID(1), Type: "T"}}})
	kind := slices.Clone(app)
	kind[1+1+len("u")] = byte(ExpectExact) + 1 // the expected kind follows the type and the name
	del := EncodeDelete(&DeleteCommand{Stream: "u"})
	flags := slices.Clone(del)
	flags[len(flags)-1] = 0x2
	for name, data := range map[string][]byte{"command type": {0x7f, 0}, "expected kind": kind, "delete flags": flags} {
		before := ts.s.Applied()
		b := ts.db.NewIndexedBatch()
		res := ts.s.Apply(b, before+1, data)
		b.Close()
		if err := ts.s.ApplyFailure(res); err == nil || !errors.Is(err, ErrUnsupportedFormat) {
			t.Errorf("%s: Apply gave %v; ApplyFailure %v, want an ErrUnsupportedFormat", name, res, err)
		}
		if got := ts.s.Applied(); got != before {
			t.Errorf("%s: applied index %d, want %d unchanged", name, got, before)
		}
	}
	// The same command with the encoding known applies.
	if res := ts.apply(app); ts.s.ApplyFailure(res) != nil {
		t.Fatalf("the known append: %v", res)
	}
}

// A large event leaves the apply buffers at its size; Committed gives them back, so a shard
// does not hold megabytes per buffer for its life after one large append.
func TestLargeEventBuffersReleased(t *testing.T) {
	ts := newTestShard(t, nil, 1)
	big := bytes.Repeat([]byte("shoal "), 600_000) // 3.6 MB, compressible: the scratch buffer grows too
	if res := ts.apply(EncodeAppend(&AppendCommand{Stream: "big", Events: []Event{{ID: testID(1), Type: "T", Data: big}}})); !isResult(res) {
		t.Fatalf("large append: %v", res)
	}
	ts.apply(EncodeAppend(&AppendCommand{Stream: "small", Events: []Event{{ID: testID(2), Type: "T", Data: []byte("x")}}}))
	for name, b := range map[string][]byte{"key": ts.s.keyBuf, "value": ts.s.valBuf, "scratch": ts.s.scratchBuf} {
		if cap(b) > maxKeptBuffer {
			t.Errorf("%s buffer keeps %d bytes after a small append, want at most %d", name, cap(b), maxKeptBuffer)
		}
	}
}

func isResult(res any) bool { _, ok := res.(*AppendResult); return ok }

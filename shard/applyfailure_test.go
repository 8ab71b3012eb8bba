package shard

import (
	"errors"
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

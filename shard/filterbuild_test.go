package shard

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// waitFilters blocks until the background scan has ended and its filters are
// installed, and returns them.
func (s *Shard) waitFilters(t testing.TB) (ids, names *hashFilter) {
	t.Helper()
	if s.build != nil {
		<-s.build.done
	}
	ids, names = s.filters()
	if ids == nil || names == nil {
		t.Fatal("no filters after the scan ended")
	}
	return ids, names
}

// newMeteredShard is newTestShard with the shard's metrics on a registry of its own.
func newMeteredShard(t *testing.T, id uint32) (*testShard, *Metrics) {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestShard(t, nil, id)
	ts.s.Close()
	if ts.s, err = Open(ts.db, id, Options{Metrics: m}); err != nil {
		t.Fatal(err)
	}
	return ts, m
}

func appendOne(stream string, id uint64) []byte {
	return EncodeAppend(&AppendCommand{Stream: stream, Events: []Event{{ID: testID(id), Type: "T"}}})
}

// TestIDFilterBuildsInBackground checks that idempotency holds while the
// event-ID filter is rebuilt after a Reload, and that the rebuilt filter
// holds both the IDs stored before the Reload and those stored during the
// scan.
func TestIDFilterBuildsInBackground(t *testing.T) {
	ts, m := newMeteredShard(t, 5)
	const before, during = 10000, 500 // more than filterBuildCheckEvery keys
	ts.begin()
	for i := range uint64(before) {
		ts.apply(appendOne(fmt.Sprintf("s-%d", i%100), i+1))
	}
	ts.commit(pebble.NoSync)

	ts.s.waitFilters(t)
	unfiltered := m.idLookups.WithLabelValues("5", "unfiltered")
	base := counterValue(t, unfiltered)
	gate := make(chan struct{})
	ts.s.filterBuildGate = gate
	if err := ts.s.Reload(); err != nil {
		t.Fatal(err)
	}
	if ids, _ := ts.s.filters(); ids != nil {
		t.Fatal("filter ready while its scan is held")
	}
	// A retry of a stored event is recognised without the filter.
	res := ts.apply(appendOne("s-7", 8))
	if r, ok := res.(*AppendResult); !ok || !r.Duplicate {
		t.Fatalf("retry during the scan: got %s, want a duplicate", fmtResult(res))
	}
	for i := range uint64(during) {
		if res := ts.apply(appendOne("new", before+1+i)); !isAppend(res) {
			t.Fatalf("append during the scan: %s", fmtResult(res))
		}
	}
	if got := counterValue(t, unfiltered) - base; got != during {
		t.Errorf("unfiltered lookups: got %v, want %d", got, during)
	}

	close(gate)
	f, names := ts.s.waitFilters(t)
	for i := range uint64(before + during) {
		id := testID(i + 1)
		if !f.mayContain(idHash(&id)) {
			t.Fatalf("rebuilt filter misses stored event %d", i+1)
		}
	}
	if f.count() != before+during {
		t.Errorf("filter count %d, want %d", f.count(), before+during)
	}
	// 100 streams before the Reload, "new" during the scan.
	for i := range 100 {
		if !names.mayContain(nameHash(fmt.Sprintf("s-%d", i))) {
			t.Fatalf("rebuilt stream filter misses s-%d", i)
		}
	}
	if !names.mayContain(nameHash("new")) || names.count() != 101 {
		t.Errorf("stream filter: %d streams, holds new: %v", names.count(), names.mayContain(nameHash("new")))
	}
	res = ts.apply(appendOne("new", before+during))
	if r, ok := res.(*AppendResult); !ok || !r.Duplicate {
		t.Fatalf("retry after the scan: got %s, want a duplicate", fmtResult(res))
	}
}

// TestReloadAndCloseStopTheScan checks that a Reload replaces a scan in
// progress and that Close stops it, so that the DB closes with no iterator
// left open.
func TestReloadAndCloseStopTheScan(t *testing.T) {
	ts := newTestShard(t, nil, 6)
	for i := range uint64(100) {
		ts.apply(appendOne("a", i+1))
	}
	ts.s.filterBuildGate = make(chan struct{}) // never opened
	if err := ts.s.Reload(); err != nil {
		t.Fatal(err)
	}
	first := ts.s.build
	if err := ts.s.Reload(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.done:
	default:
		t.Fatal("the first scan still runs after a second Reload")
	}
	res := ts.apply(appendOne("a", 50))
	if r, ok := res.(*AppendResult); !ok || !r.Duplicate {
		t.Fatalf("retry during the scan: got %s, want a duplicate", fmtResult(res))
	}
	ts.s.Close()
	ts.s.Close()
	if err := ts.db.Close(); err != nil {
		t.Fatalf("closing the DB after Close: %v", err)
	}
	ts.db = nil
}

func isAppend(res any) bool {
	r, ok := res.(*AppendResult)
	return ok && !r.Duplicate
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var pb dto.Metric
	if err := c.Write(&pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetCounter().GetValue()
}

// TestStreamFilter checks that, once the filters are built, the first append
// to a new stream reads nothing from Pebble while an existing stream that is
// not cached is still read and found, also after a Reload.
func TestStreamFilter(t *testing.T) {
	ts, m := newMeteredShard(t, 7)
	ts.s.waitFilters(t)
	lookups := func() (hit, miss, fresh float64) {
		return counterValue(t, m.streamCache.WithLabelValues("7", "hit")),
			counterValue(t, m.streamCache.WithLabelValues("7", "miss")),
			counterValue(t, m.streamCache.WithLabelValues("7", "new"))
	}
	for i := range uint64(50) {
		if res := ts.apply(appendOne(fmt.Sprintf("f-%d", i), i+1)); !isAppend(res) {
			t.Fatalf("append: %s", fmtResult(res))
		}
	}
	if _, miss, fresh := lookups(); miss != 0 || fresh != 50 {
		t.Fatalf("50 new streams: %v Pebble reads, %v proved new; want 0 and 50", miss, fresh)
	}
	if err := ts.s.Reload(); err != nil { // empties the cache, rebuilds the filters
		t.Fatal(err)
	}
	ts.s.waitFilters(t)
	exp := Expected{Kind: ExpectExact, Version: 0}
	res := ts.apply(EncodeAppend(&AppendCommand{Stream: "f-3", Expected: exp, Events: []Event{{ID: testID(1000), Type: "T"}}}))
	if r, ok := res.(*AppendResult); !ok || r.FirstVersion != 1 {
		t.Fatalf("append to an existing, uncached stream: %s", fmtResult(res))
	}
	if hit, miss, _ := lookups(); miss != 1 || hit != 0 {
		t.Fatalf("existing stream after Reload: %v hits, %v reads; want 0 and 1", hit, miss)
	}
	res = ts.apply(EncodeAppend(&AppendCommand{Stream: "f-3", Expected: exp, Events: []Event{{ID: testID(1001), Type: "T"}}}))
	if _, ok := res.(*WrongExpectedVersionError); !ok {
		t.Fatalf("stale expected version: %s", fmtResult(res))
	}
}

// TestFilterRebuildAfterForgetting: once truncations have forgotten enough event IDs (Format7),
// Committed rebuilds the ID filter from the IDs left, so a long-running shard under retention
// does not keep a filter of every ID it ever stored; verdicts are the same throughout.
func TestFilterRebuildAfterForgetting(t *testing.T) {
	defer func(n int) { filterRebuildMin = n }(filterRebuildMin)
	filterRebuildMin = 100
	ts := newTestShard(t, nil, 1)
	ts.apply(EncodeSetFormat(&SetFormatCommand{Format: Format7}))
	ts.s.waitFilters(t)
	evs := make([]Event, 300)
	for i := range evs {
		evs[i] = Event{ID: testID(uint64(i + 1)), Type: "T"}
	}
	for i := 0; i < len(evs); i += 100 {
		if res := fmtResult(ts.apply(EncodeAppend(&AppendCommand{Stream: "s", Events: evs[i : i+100]}))); res[:2] != "ok" {
			t.Fatal(res)
		}
	}
	if f, _ := ts.s.waitFilters(t); f.count() != 300 {
		t.Fatalf("filter of %d IDs, want 300", f.count())
	}
	// 99 forgotten: below the minimum, no rebuild.
	ts.apply(EncodeTruncate(&TruncateCommand{Stream: "s", Before: 99}))
	if ts.s.build != nil {
		t.Fatal("a rebuild after 99 forgotten IDs, want none below 100")
	}
	// 250 forgotten, more than half of the filter's 300: rebuilt from the 50 left.
	ts.apply(EncodeTruncate(&TruncateCommand{Stream: "s", Before: 250}))
	if ts.s.build == nil {
		t.Fatal("no rebuild after 250 of 300 IDs were forgotten")
	}
	if res := fmtResult(ts.apply(EncodeAppend(&AppendCommand{Stream: "s", Expected: Expected{Kind: ExpectAny}, Events: evs[250:]}))); res != "ok first=250 last=299 pos=250 duplicate" {
		t.Fatalf("retry of stored events during the rebuild: %s", res)
	}
	if f, _ := ts.s.waitFilters(t); f.count() != 50 {
		t.Fatalf("rebuilt filter of %d IDs, want the 50 left", f.count())
	}
	if res := fmtResult(ts.apply(EncodeAppend(&AppendCommand{Stream: "t", Events: evs[:1]}))); res != "ok first=0 last=0 pos=300" {
		t.Fatalf("a forgotten ID appended again after the rebuild: %s", res)
	}
	if res := fmtResult(ts.apply(EncodeAppend(&AppendCommand{Stream: "s", Expected: Expected{Kind: ExpectAny}, Events: evs[299:]}))); res != "ok first=299 last=299 pos=299 duplicate" {
		t.Fatalf("retry of a stored event after the rebuild: %s", res)
	}
}

// TestFilterSizedFromIDIndex: a shard reopened after truncations forgot most of its event IDs
// sizes its ID filter from the index left on disk, not from every event it ever appended.
func TestFilterSizedFromIDIndex(t *testing.T) {
	defer func(n uint64) { idsUnflushed = n }(idsUnflushed)
	idsUnflushed = 0
	ts := newTestShard(t, nil, 1)
	ts.apply(EncodeSetFormat(&SetFormatCommand{Format: Format7}))
	rnd := rand.New(rand.NewPCG(1, 2)) // random IDs, which do not compress
	for i := 0; i < 20; i++ {
		evs := make([]Event, 1000)
		for j := range evs {
			evs[j] = Event{Type: "T"}
			binary.BigEndian.PutUint64(evs[j].ID[:8], rnd.Uint64())
			binary.BigEndian.PutUint64(evs[j].ID[8:], rnd.Uint64())
		}
		if res := fmtResult(ts.apply(EncodeAppend(&AppendCommand{Stream: "s", Events: evs}))); res[:2] != "ok" {
			t.Fatal(res)
		}
	}
	if err := ts.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := ts.s.idsEstimate(20000); got != 20000 {
		t.Fatalf("estimate with every ID stored: %d, want the 20,000 appended", got)
	}
	ts.apply(EncodeTruncate(&TruncateCommand{Stream: "s", Before: 19900}))
	lo, hi := ts.s.Span()
	if err := ts.db.Compact(context.Background(), lo, hi, true); err != nil {
		t.Fatal(err)
	}
	if got := ts.s.idsEstimate(20000); got < 100 || got > 2000 {
		t.Fatalf("estimate with 100 IDs left: %d, want 100..2,000", got)
	}
	if err := ts.s.Reload(); err != nil {
		t.Fatal(err)
	}
	if f, _ := ts.s.waitFilters(t); f.count() != 100 || f.bytes() > 1<<17 {
		t.Fatalf("filter rebuilt on reload: %d IDs in %d bytes, want 100 in at most 128 KiB", f.count(), f.bytes())
	}
}

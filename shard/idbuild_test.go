package shard

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// waitIDFilter blocks until the background event-ID scan has ended and its
// filter is installed, and returns the filter.
func (s *Shard) waitIDFilter(t testing.TB) *idFilter {
	t.Helper()
	if s.build != nil {
		<-s.build.done
	}
	f := s.idFilterReady()
	if f == nil {
		t.Fatal("no event-ID filter after the scan ended")
	}
	return f
}

func appendOne(stream string, id uint64) []byte {
	return EncodeAppend(&AppendCommand{Stream: stream, Events: []Event{{ID: testID(id), Type: "T"}}})
}

// TestIDFilterBuildsInBackground checks that idempotency holds while the
// event-ID filter is rebuilt after a Reload, and that the rebuilt filter
// holds both the IDs stored before the Reload and those stored during the
// scan.
func TestIDFilterBuildsInBackground(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestShard(t, nil, 5)
	ts.s.Close()
	ts.s, err = Open(ts.db, 5, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	const before, during = 10000, 500 // more than idBuildCheckEvery keys
	ts.begin()
	for i := range uint64(before) {
		ts.apply(appendOne(fmt.Sprintf("s-%d", i%100), i+1))
	}
	ts.commit(pebble.NoSync)

	ts.s.waitIDFilter(t)
	unfiltered := m.idLookups.WithLabelValues("5", "unfiltered")
	base := counterValue(t, unfiltered)
	gate := make(chan struct{})
	ts.s.idBuildGate = gate
	if err := ts.s.Reload(); err != nil {
		t.Fatal(err)
	}
	if ts.s.idFilterReady() != nil {
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
	f := ts.s.waitIDFilter(t)
	for i := range uint64(before + during) {
		id := testID(i + 1)
		if !f.mayContain(&id) {
			t.Fatalf("rebuilt filter misses stored event %d", i+1)
		}
	}
	if f.count() != before+during {
		t.Errorf("filter count %d, want %d", f.count(), before+during)
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
	ts.s.idBuildGate = make(chan struct{}) // never opened
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

package shard

import (
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering twice succeeded")
	}
	db, err := pebble.Open("db", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := Open(db, 4, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	app := EncodeAppend(&AppendCommand{Stream: "a", Events: []Event{{ID: testID(1), Type: "T"}, {ID: testID(2), Type: "T"}}})
	wrong := EncodeAppend(&AppendCommand{Stream: "a", Expected: Expected{Kind: ExpectNoStream}, Events: []Event{{ID: testID(3), Type: "T"}}})
	b := db.NewIndexedBatch()
	for i, data := range [][]byte{app, app, wrong, {cmdAppend}} { // the last truncated: a refusal
		s.Apply(b, uint64(i+1), data)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	s.Committed()
	for _, c := range []struct {
		c    prometheus.Counter
		want float64
	}{
		{m.applied.WithLabelValues("4", "append"), 1},
		{m.applied.WithLabelValues("4", "duplicate"), 1},
		{m.applied.WithLabelValues("4", "wrong_expected_version"), 1},
		{m.applied.WithLabelValues("4", "invalid"), 1},
		{m.events.WithLabelValues("4"), 2},
		{m.idLookups.WithLabelValues("4", "found"), 2},
	} {
		var pb dto.Metric
		if err := c.c.Write(&pb); err != nil {
			t.Fatal(err)
		}
		if got := pb.GetCounter().GetValue(); got != c.want {
			t.Errorf("%v: got %v, want %v", c.c, got, c.want)
		}
	}
}

// TestMetricsTruncate: a truncation applied, and one refused below format 4, are counted by
// verdict like every other command (shoal_shard_commands_applied_total).
func TestMetricsTruncate(t *testing.T) {
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open("db", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := Open(db, 4, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	app := EncodeAppend(&AppendCommand{Stream: "a", Events: []Event{{ID: testID(1), Type: "T"}, {ID: testID(2), Type: "T"}}})
	trunc := EncodeTruncate(&TruncateCommand{Stream: "a", Before: 1})
	// At Format7 a truncation forgets the removed event's ID (2), and a lookup of an ID whose
	// event an earlier format's truncation removed (1) finds it gone.
	app3 := EncodeAppend(&AppendCommand{Stream: "a", Events: []Event{{ID: testID(3), Type: "T"}}})
	trunc2 := EncodeTruncate(&TruncateCommand{Stream: "a", Before: 2})
	reuse := EncodeAppend(&AppendCommand{Stream: "b", Events: []Event{{ID: testID(1), Type: "T"}}})
	b := db.NewIndexedBatch()
	for i, data := range [][]byte{app, trunc, EncodeSetFormat(&SetFormatCommand{Format: Format4}), trunc,
		app3, EncodeSetFormat(&SetFormatCommand{Format: Format7}), trunc2, reuse} {
		s.Apply(b, uint64(i+1), data)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	s.Committed()
	for _, c := range []struct {
		result string
		want   float64
	}{{"truncate", 2}, {"needs_format", 1}, {"append", 3}, {"format", 2}} {
		var pb dto.Metric
		if err := m.applied.WithLabelValues("4", c.result).Write(&pb); err != nil {
			t.Fatal(err)
		}
		if got := pb.GetCounter().GetValue(); got != c.want {
			t.Errorf("commands_applied_total{result=%q}: got %v, want %v", c.result, got, c.want)
		}
	}
	for _, c := range []struct {
		name string
		c    prometheus.Counter
	}{{"event_ids_forgotten_total", m.forgotten.WithLabelValues("4")}, {"event_id_lookups_total{outcome=gone}", m.idLookups.WithLabelValues("4", "gone")}} {
		var pb dto.Metric
		if err := c.c.Write(&pb); err != nil {
			t.Fatal(err)
		}
		if got := pb.GetCounter().GetValue(); got != 1 {
			t.Errorf("%s: got %v, want 1", c.name, got)
		}
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoaldb/shoal/bench"
)

// A latency at the histograms' top stands for every one from there up: the table says "at
// least", not a measured 60,000 ms; results without a ceiling (older runs) show as measured.
func TestClampedLatencyCell(t *testing.T) {
	l := bench.Latency{P50: 1234, P99: 60_000_000, Ceiling: 60_000_000}
	if got := msCell(l, l.P99); got != ">=60000" {
		t.Errorf("p99 at the ceiling shown as %q, want >=60000", got)
	}
	if got := msCell(l, l.P50); got != "1.23" {
		t.Errorf("p50 of 1,234 µs shown as %q, want 1.23", got)
	}
	if got := msCell(bench.Latency{P99: 60_000_000}, 60_000_000); got != "60000.00" {
		t.Errorf("a result without a ceiling shown as %q, want the value", got)
	}
}

// An interrupted run's report is refused, not published as a row with rates over part of it.
func TestInterruptedReportRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "06-nats.json"), []byte(`{"ops": 10, "interrupted": true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(dir, filepath.Join(dir, "out.md"), filepath.Join(dir, "out.png"))
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("run over an interrupted report: %v, want it refused", err)
	}
}

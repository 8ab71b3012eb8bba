package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoaldb/shoal/bench"
)

// TestBenchJSONFileCheckedFirst: a --json FILE that cannot be created is refused before the
// run sends any load (and before an embedded server starts), not after the whole run.
func TestBenchJSONFileCheckedFirst(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "no-such-dir", "out.json")
	code, out, errOut := runCLI(t, nil, "", "bench", "append", "--embedded", "--count", "200", "--warmup", "0", "--json", bad)
	if code != exitError || out != "" || !strings.Contains(errOut, "cannot create the JSON report") ||
		strings.Contains(errOut, "embedded server on") {
		t.Fatalf("exit %d, stdout %q, stderr %q: want a refusal before the run", code, out, errOut)
	}
}

// TestBenchJSONFileWritten: the report goes to the file opened before the run, and a run
// that ends without a report leaves the path as it found it (no empty file, an earlier
// report kept).
func TestBenchJSONFileWritten(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	file := filepath.Join(t.TempDir(), "out.json")
	code, _, errOut := runCLI(t, nil, "", "bench", "append", "--embedded", "--count", "20", "--warmup", "0", "--concurrency", "2", "--json", file)
	if code != exitOK {
		t.Fatalf("exit %d stderr %q", code, errOut)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if r := decode(t, string(raw)); r["ops"] != 20.0 {
		t.Fatalf("report: %s", raw)
	}
	// Runs that fail after the file was opened: a CA file that cannot be read.
	fail := func(file string) {
		t.Helper()
		code, _, errOut := runCLI(t, nil, "", "bench", "append", "--server", "127.0.0.1:1",
			"--tls-ca", filepath.Join(t.TempDir(), "missing.pem"), "--count", "1", "--json", file)
		if code == exitOK || !strings.Contains(errOut, "missing.pem") {
			t.Fatalf("exit %d stderr %q, want the CA file refused", code, errOut)
		}
	}
	fail(file)
	if again, err := os.ReadFile(file); err != nil || string(again) != string(raw) {
		t.Fatalf("a failed run changed the earlier report: %q, %v", again, err)
	}
	none := filepath.Join(t.TempDir(), "none.json")
	fail(none)
	if _, err := os.Stat(none); !os.IsNotExist(err) {
		t.Fatalf("a failed run left a file behind: %v", err)
	}
}

// TestBenchRefusesNonPositiveFlags: workload flags set to zero or less are refused, naming
// the flag, instead of silently taking their defaults (a zero config field means the default).
func TestBenchRefusesNonPositiveFlags(t *testing.T) {
	for _, args := range [][]string{
		{"append", "--concurrency", "0"},
		{"append", "--concurrency", "-3"},
		{"append", "--batch", "0"},
		{"append", "--streams", "0"},
		{"append", "--event-size", "0"},
		{"append", "--duration", "0"},
		{"read", "--events-per-stream", "0"},
		{"read", "--streams", "0"},
	} {
		code, out, errOut := runCLI(t, nil, "", append([]string{"bench", args[0], "--embedded", "--warmup", "0"}, args[1:]...)...)
		if code != exitUsage || !strings.Contains(errOut, args[1]) || out != "" {
			t.Errorf("bench %v: exit %d, stderr %q, stdout %q; want a usage error naming %s", args, code, errOut, out, args[1])
		}
	}
}

// TestBenchConfigErrorsNameFlags: an invalid value is explained with the flag's name, not
// the config field's.
func TestBenchConfigErrorsNameFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"append", "--batch", "20000"}, "--batch must be 1..10000 events"},
		{[]string{"append", "--batch", "10000", "--event-size", "4096"}, "--batch must be at most 4096 with events of 4096 bytes"},
		{[]string{"append", "--event-size", "99999999"}, "--event-size must be"},
		{[]string{"append", "--dist", "pareto"}, "--dist must be uniform or zipf"},
		{[]string{"append", "--expected", "exact", "--streams", "4", "--concurrency", "8"}, "--streams must be at least the concurrency"},
		{[]string{"append", "--rate", "NaN"}, "--rate must be"},
		{[]string{"append", "--rate", "+Inf"}, "--rate must be"},
		{[]string{"append", "--rate", "2e9"}, "up to 1e+09"},
		{[]string{"read", "--rate", "-1"}, "--rate must be"},
		{[]string{"read", "--count", "-1"}, "--count must not be negative"},
		{[]string{"append", "--warmup", "-1s"}, "--warmup must not be negative, got -1s (0 for none)"},
	} {
		code, _, errOut := runCLI(t, nil, "", append([]string{"bench", tc.args[0], "--embedded", "--warmup", "0"}, tc.args[1:]...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.msg) {
			t.Errorf("bench %v: exit %d, stderr %q; want a usage error with %q", tc.args, code, errOut, tc.msg)
		}
	}
}

// TestBenchHelpDescribesRate: `shoal bench --help` says --rate switches to an open loop, and
// both workloads take it.
func TestBenchHelpDescribesRate(t *testing.T) {
	_, out, _ := runCLI(t, nil, "", "bench", "--help")
	if !strings.Contains(out, "--rate") {
		t.Fatalf("bench --help does not mention --rate:\n%s", out)
	}
	for _, w := range []string{"append", "read"} {
		if _, out, _ := runCLI(t, nil, "", "bench", w, "--help"); !strings.Contains(out, "--rate") {
			t.Errorf("bench %s --help lacks --rate:\n%s", w, out)
		}
	}
}

// A run whose operations mostly failed or went unsent measured an outage: it exits 1, however
// good the figures of its successes (kill two of three nodes mid-run: 0.4% of the operations
// failed in a closed loop, 62% in an open one, and both exited 0). --max-errors sets the share.
func TestBenchFailsOnErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  bench.Result
		max  float64
		want string // "" for no failure
	}{
		{"clean", bench.Result{Ops: 1000}, bench.DefaultMaxErrors, ""},
		{"conflicts are answers", bench.Result{Ops: 500, Conflicts: 500}, bench.DefaultMaxErrors, ""},
		{"1% failed", bench.Result{Ops: 990, ErrorCount: 10}, bench.DefaultMaxErrors, ""},
		{"timeouts", bench.Result{Ops: 980, ErrorCount: 20}, bench.DefaultMaxErrors, "20 of 1000 measured operations failed or were never sent (2.00%, over --max-errors 1%)"},
		{"missed", bench.Result{Ops: 150, ErrorCount: 8, Missed: 442}, bench.DefaultMaxErrors, "450 of 600"},
		{"allowed", bench.Result{Ops: 150, ErrorCount: 8, Missed: 442}, 80, ""},
		{"nothing", bench.Result{ErrorCount: 3}, 100, "no operation succeeded"},
	} {
		err := tc.res.Failure(tc.max)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, bad := range []string{"101", "NaN"} { // NaN passed every comparison, and turned the check off
		code, _, errOut := runCLI(t, nil, "", "bench", "append", "--embedded", "--count", "10", "--max-errors", bad)
		if code != exitUsage || !strings.Contains(errOut, "--max-errors is a percentage, 0 to 100") {
			t.Fatalf("--max-errors %s: exit %d, stderr %q", bad, code, errOut)
		}
	}
}

// TestReadConfigDefaultPreloadBatch: the default preload batch fits one append of large
// events (it named a flag bench read does not have, refusing every --event-size over 33,554).
func TestReadConfigDefaultPreloadBatch(t *testing.T) {
	for _, size := range []int{256, 65536, bench.MaxEventSize} {
		cfg := bench.ReadConfig{EventSize: size}
		cfg.EnsureDefaults()
		if err := cfg.Validate(); err != nil || int64(cfg.PreloadBatch)*int64(size) > bench.MaxBatchBytes {
			t.Errorf("event size %d: preload batch %d, %v", size, cfg.PreloadBatch, err)
		}
	}
}

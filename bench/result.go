package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range: latencies are recorded in microseconds from 1µs to 60s
// with 3 significant digits; longer latencies are recorded as 60s.
const (
	histMinUS   = 1
	histMaxUS   = 60_000_000
	histSigFigs = 3
)

// DefaultMaxErrors is the default of Failure's maxErrors (the tools' --max-errors): a run in
// which more than 1% of the operations failed measured an outage, not the target's speed.
const DefaultMaxErrors = 1.0

// Failure says why r, a finished run's report, is no good measure of its target, or nil: a
// script must be able to tell a run that measured nothing, or mostly failures (an outage),
// from a good one. maxErrors is the percentage of the measured operations that may fail or,
// in an open loop, go unsent (--max-errors).
func (r *Result) Failure(maxErrors float64) error {
	failed, total := r.ErrorCount+r.Missed, r.Ops+r.Conflicts+r.ErrorCount+r.Missed
	switch {
	case r.Interrupted:
		return errors.New("the run was interrupted before its end; the report covers what ran")
	case r.Ops == 0:
		return errors.New("no operation succeeded; the report's errors say why")
	case total > 0 && float64(failed)*100 > maxErrors*float64(total):
		return fmt.Errorf("%d of %d measured operations failed or were never sent (%.2f%%, over --max-errors %g%%): "+
			"the target did not keep up or was unavailable; the report's errors and latency say how",
			failed, total, float64(failed)*100/float64(total), maxErrors)
	}
	return nil
}

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMinUS, histMaxUS, histSigFigs)
}

// recordLatency records d in h, clamped to the histogram's range.
func recordLatency(h *hdrhistogram.Histogram, d time.Duration) {
	_ = h.RecordValue(clampUS(d)) // cannot fail: clamped to the range
}

// clampUS returns d in whole microseconds, within the histograms' range.
func clampUS(d time.Duration) int64 {
	return min(max(d.Microseconds(), histMinUS), histMaxUS)
}

// Latency summarises a histogram, in microseconds.
type Latency struct {
	Count int64   `json:"count"`
	Min   int64   `json:"min_us"`
	Mean  float64 `json:"mean_us"`
	P50   int64   `json:"p50_us"`
	P90   int64   `json:"p90_us"`
	P99   int64   `json:"p99_us"`
	P999  int64   `json:"p99_9_us"`
	Max   int64   `json:"max_us"`
	// Ceiling is the histograms' top: every latency from it up was recorded as it, so a
	// percentile equal to it means at least that much (AtCeiling). 0 in results that predate it.
	Ceiling int64 `json:"ceiling_us,omitempty"`
}

// AtCeiling reports whether us, one of l's values, stands for a latency of Ceiling or more
// rather than a measured one.
func (l Latency) AtCeiling(us int64) bool { return l.Ceiling > 0 && us >= l.Ceiling }

// Summarize returns the percentiles of h (all zero when h is empty).
func Summarize(h *hdrhistogram.Histogram) Latency {
	if h == nil || h.TotalCount() == 0 {
		return Latency{}
	}
	// A value of the clamped top reads back as the highest of its bucket, a little above
	// histMaxUS: it is reported as histMaxUS, which Ceiling says is a lower bound.
	top := func(us int64) int64 { return min(us, histMaxUS) }
	return Latency{
		Count:   h.TotalCount(),
		Min:     top(h.Min()),
		Mean:    min(h.Mean(), histMaxUS),
		P50:     top(h.ValueAtQuantile(50)),
		P90:     top(h.ValueAtQuantile(90)),
		P99:     top(h.ValueAtQuantile(99)),
		P999:    top(h.ValueAtQuantile(99.9)),
		Max:     top(h.Max()),
		Ceiling: histMaxUS,
	}
}

// Machine describes where the benchmark ran.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	GoVersion string `json:"go_version"`
}

// ThisMachine describes the running machine (the CPU model from
// /proc/cpuinfo where there is one).
func ThisMachine() Machine {
	return Machine{
		CPUs:      numCPU(),
		CPUModel:  cpuModel(),
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
		GoVersion: runtime.Version(),
	}
}

func numCPU() int { return runtime.NumCPU() }

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name", "Model", "cpu model":
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Preload reports the read workload's loading phase.
type Preload struct {
	Streams        int     `json:"streams"`
	Events         int64   `json:"events"`  // events appended (streams already complete are skipped)
	Skipped        int     `json:"skipped"` // streams that already held enough events
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	EventsPerSec   float64 `json:"events_per_sec"`
}

// Result is one run's report. Every figure covers the measured phase only
// (after warmup). Latency is per operation: one append (of Batch events) or
// one whole-stream replay. Ops, Events, Bytes and the latencies count the
// operations due in the measured phase; in a timed run the rates count the
// successes that ended in it, over its duration (Elapsed), so that neither the
// drain after it nor the warmup's last operations bias them.
type Result struct {
	Workload     string    `json:"workload"` // "append" or "read"
	System       System    `json:"system"`
	ShoalVersion string    `json:"shoal_version"` // version of the benchmark binary
	Machine      Machine   `json:"machine"`
	Config       any       `json:"config"` // the AppendConfig or ReadConfig, defaults applied
	Seed         uint64    `json:"seed"`
	Start        time.Time `json:"start"` // of the measured phase

	Elapsed        time.Duration `json:"-"`
	ElapsedSeconds float64       `json:"elapsed_seconds"`
	Ops            int64         `json:"ops"`    // successful operations
	Events         int64         `json:"events"` // events appended or read by them
	Bytes          int64         `json:"bytes"`  // payload bytes appended (append workload)
	OpsPerSec      float64       `json:"ops_per_sec"`
	EventsPerSec   float64       `json:"events_per_sec"`
	MBPerSec       float64       `json:"mb_per_sec"` // payload MB (1e6 bytes) per second
	Latency        Latency       `json:"latency"`

	Conflicts  int64            `json:"conflicts"`   // failed expected-version checks
	ErrorCount int64            `json:"error_count"` // failed operations other than conflicts
	Errors     map[string]int64 `json:"errors"`      // by kind (see the Kind constants)

	// Open loop only.
	TargetRate float64 `json:"target_rate,omitempty"` // operations per second asked for
	Missed     int64   `json:"missed,omitempty"`      // operations due in the measured phase but never sent

	// Delivery (AppendConfig.Subscribe): how long the events appended in the measured phase
	// took from the target's receipt of their append (its stamp, on its clock) to a
	// subscriber (on the load generator's clock): exact on one machine, off by the clocks'
	// offset across machines.
	Delivery *Delivery `json:"delivery,omitempty"`

	Preload     *Preload `json:"preload,omitempty"`
	Interrupted bool     `json:"interrupted"` // the context was cancelled before the end

	// Histogram holds every measured latency in microseconds: successes, failures and (open
	// loop) the lower bounds of missed operations (doc.go, Measurement).
	Histogram *hdrhistogram.Histogram `json:"-"`
}

// Delivery is what a subscription to everything appended received.
type Delivery struct {
	Events  int64   `json:"events"` // delivered events stamped in the measured phase
	Latency Latency `json:"latency"`
	Error   string  `json:"error,omitempty"` // what ended the subscription early
}

// WriteJSON writes r as one indented JSON document.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteJSONFile writes r to the named file.
func (r *Result) WriteJSONFile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := r.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReportFile is the file a run's JSON report goes to, opened before the run so that a path
// that cannot be written is refused before any load is sent. Not safe for concurrent use.
type ReportFile struct {
	f       *os.File // nil once written or closed
	name    string
	created bool // the file did not exist before OpenReportFile
}

// OpenReportFile opens name for a report, creating it if needed; what it holds stays until
// Write replaces it.
func OpenReportFile(name string) (*ReportFile, error) {
	_, err := os.Stat(name)
	created := errors.Is(err, fs.ErrNotExist)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	return &ReportFile{f: f, name: name, created: created}, nil
}

// Write replaces the file's content with r as JSON (WriteJSON) and closes the file.
func (rf *ReportFile) Write(r *Result) error {
	f := rf.f
	rf.f = nil
	var err error
	// Only a regular file has a length to cut (/dev/stdout, a pipe: EINVAL).
	if st, serr := f.Stat(); serr == nil && st.Mode().IsRegular() {
		err = f.Truncate(0)
	}
	if err == nil {
		err = r.WriteJSON(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close closes a file that was not written, removing it when OpenReportFile created it: a
// run that ends without a report leaves the path as it found it. After Write it does
// nothing.
func (rf *ReportFile) Close() error {
	if rf.f == nil {
		return nil
	}
	err := rf.f.Close()
	rf.f = nil
	if rf.created {
		if rerr := os.Remove(rf.name); err == nil {
			err = rerr
		}
	}
	return err
}

// WriteTable writes r as a human-readable table.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }
	sys := r.System.Name
	if r.System.Version != "" {
		sys += " " + r.System.Version
	}
	p("workload\t%s", r.Workload)
	p("system\t%s", sys)
	if r.System.Durability != "" {
		p("durability\t%s", r.System.Durability)
	}
	p("machine\t%d CPUs, %s, %s", r.Machine.CPUs, orUnknown(r.Machine.CPUModel), r.Machine.GoVersion)
	if r.Preload != nil {
		p("preload\t%s events in %.1fs (%s events/s, %d streams already loaded)",
			thousands(r.Preload.Events), r.Preload.ElapsedSeconds, thousands(int64(r.Preload.EventsPerSec)), r.Preload.Skipped)
	}
	p("elapsed\t%.2fs", r.ElapsedSeconds)
	p("seed\t%d\t(replay the stream selection with --seed %d)", r.Seed, r.Seed)
	op := "appends"
	if r.Workload == "read" {
		op = "replays"
	}
	p("%s\t%s\t%s/s", op, thousands(r.Ops), thousands(int64(r.OpsPerSec)))
	p("events\t%s\t%s/s\t%.1f MB/s", thousands(r.Events), thousands(int64(r.EventsPerSec)), r.MBPerSec)
	if r.TargetRate > 0 {
		p("target rate\t%s/s\tmissed %s", thousands(int64(r.TargetRate)), thousands(r.Missed))
	}
	l := r.Latency
	p("latency ms\tp50 %s\tp90 %s\tp99 %s\tp99.9 %s\tmax %s",
		ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max))
	if d := r.Delivery; d != nil {
		l := d.Latency
		p("delivery ms\tp50 %s\tp90 %s\tp99 %s\tp99.9 %s\tmax %s\t(%s events to a subscriber, from the append's arrival: the server's clock against this one's)",
			ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), thousands(d.Events))
		if d.Error != "" {
			p("delivery error\t%s", d.Error)
		}
	}
	p("conflicts\t%s", thousands(r.Conflicts))
	p("errors\t%s", formatErrors(r.Errors))
	if r.Interrupted {
		p("note\tinterrupted before the end")
	}
	return tw.Flush()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown CPU"
	}
	return s
}

// ms formats a latency of the histograms in milliseconds. One at the histograms' top stands
// for every latency from 60 s up (recordLatency clamps them) and says so, rather than passing
// for a measured 60 s.
func ms(us int64) string {
	if us >= histMaxUS {
		return fmt.Sprintf(">=%.0f", float64(histMaxUS)/1000)
	}
	return fmt.Sprintf("%.3f", float64(us)/1000)
}

func formatErrors(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	kinds := make([]string, 0, len(m))
	for k := range m {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for i, k := range kinds {
		if i > 0 {
			b.WriteString("  ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// thousands formats n with thousands separators.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

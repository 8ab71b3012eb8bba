// Command benchreport turns the JSON reports of one `make bench` run into
// docs/benchmarks.md and a PNG chart of throughput against p99 latency.
//
//	benchreport --results DIR --out docs/benchmarks.md --chart docs/benchmarks.png
//
// DIR holds NN-name.json reports (in table order), commands.txt (the exact
// commands, one per line) and optionally profile.txt (`go tool pprof -top`
// of the shoal server during its single-node run).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/shoaldb/shoal/bench"
)

// report is the part of bench.Result the table needs, with the config kept
// as raw JSON (bench.Result.Config is an interface).
type report struct {
	bench.Result
	Config struct {
		Concurrency int    `json:"concurrency"`
		Streams     int    `json:"streams"`
		EventSize   int    `json:"event_size"`
		Batch       int    `json:"batch"`
		Expected    string `json:"expected"`
		Duration    int64  `json:"duration_ns"`
	} `json:"config"`
	file string
}

func main() {
	results := flag.String("results", "bench-results", "directory of JSON reports")
	out := flag.String("out", "docs/benchmarks.md", "markdown file to write")
	chart := flag.String("chart", "docs/benchmarks.png", "PNG chart to write")
	flag.Parse()
	if err := run(*results, *out, *chart); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(dir, out, chart string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	var rs []report
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var r report
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		r.file = strings.TrimSuffix(filepath.Base(f), ".json")
		if r.Interrupted {
			// Its rates cover part of a run: no row of the table.
			return fmt.Errorf("%s: the run was interrupted before its end; run the benchmark again", f)
		}
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return fmt.Errorf("no reports in %s", dir)
	}
	if err := drawChart(rs, chart); err != nil {
		return err
	}
	commands, _ := os.ReadFile(filepath.Join(dir, "commands.txt"))
	profile, _ := os.ReadFile(filepath.Join(dir, "profile.txt"))
	skipped, _ := os.ReadFile(filepath.Join(dir, "skipped.txt"))

	var b strings.Builder
	m := rs[0].Machine
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` on %s. Every row ran on the same machine, one after another, with the\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "same workload: appends of one stream each, picked uniformly from the configured streams, with the\n")
	fmt.Fprintf(&b, "expected version checked (each caller owns its streams, so conflicts mean a bug). The load\n")
	fmt.Fprintf(&b, "generator is a separate process on loopback. Each caller sends its next append when the previous\n")
	fmt.Fprintf(&b, "one is acknowledged (a closed loop): the latencies are those of the appends sent, and a stall slows\n")
	fmt.Fprintf(&b, "the load down instead of showing in the percentiles (coordinated omission; `--rate` measures an\n")
	fmt.Fprintf(&b, "open loop from each append's due time).\n\n")
	fmt.Fprintf(&b, "Machine: %d CPUs, %s, %s/%s, %s.\n\n", m.CPUs, m.CPUModel, m.OS, m.Arch, m.GoVersion)
	fmt.Fprintf(&b, "| run | system | durability at ack | callers | batch | appends/s | events/s | p50 ms | p99 ms | p99.9 ms | conflicts | errors |\n")
	fmt.Fprintf(&b, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		l := r.Latency
		fmt.Fprintf(&b, "| %s | %s %s | %s | %d | %d | %.0f | %.0f | %s | %s | %s | %d | %d |\n",
			r.file, r.System.Name, r.System.Version, r.System.Durability, r.Config.Concurrency, r.Config.Batch,
			r.OpsPerSec, r.EventsPerSec, msCell(l, l.P50), msCell(l, l.P99), msCell(l, l.P999), r.Conflicts, r.ErrorCount)
	}
	batched := 0
	for _, r := range rs {
		batched = max(batched, r.Config.Batch)
	}
	if batched > 1 {
		fmt.Fprintf(&b, "\n%s\n", batchNote(batched))
	}
	if len(skipped) > 0 {
		fmt.Fprintf(&b, "\nSkipped:\n\n```\n%s```\n", skipped)
	}
	fmt.Fprintf(&b, "\n![throughput against p99 latency](%s)\n\n", filepath.Base(chart))
	fmt.Fprintf(&b, "## Commands\n\n```\n%s```\n", commands)
	if len(profile) > 0 {
		fmt.Fprintf(&b, "\n## Where shoal's time goes\n\nA CPU profile of the single-node server during its single-event run (`go tool pprof -top`, first lines):\n\n```\n%s```\n", profile)
	}
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

func ms(us int64) float64 { return float64(us) / 1000 }

// msCell formats us, one of l's values, for the table: at the histograms' top it stands for
// every latency from there up, and says so.
func msCell(l bench.Latency, us int64) string {
	if l.AtCeiling(us) {
		return fmt.Sprintf(">=%.0f", ms(l.Ceiling))
	}
	return fmt.Sprintf("%.2f", ms(us))
}

// batchNote says how each system appends a batch of n events (bench/peers: NATS.Append,
// Postgres.Append).
func batchNote(n int) string {
	return fmt.Sprintf(`Batches (the rows with batch %[1]d) are one atomic append per batch in every system. shoal: one
append request. NATS: one JetStream atomic batch publish (`+"`AllowAtomicPublish`"+`, nats-server 2.12
and later): the first %[2]d messages are published without waiting for anything, the first carrying
the expected last subject sequence, and the %[1]dth commits the batch and is the one acknowledged;
the server checks and stores all %[1]d or none. PostgreSQL: one transaction of %[1]d `+"`write_message`"+`
calls, one round trip each.`, n, n-1)
}

// drawChart plots events/s against p99 latency, one labelled point per run.
func drawChart(rs []report, path string) error {
	p := plot.New()
	p.Title.Text = "Durable appends: throughput against p99 latency"
	p.X.Label.Text = "p99 latency (ms, log)"
	p.Y.Label.Text = "events per second (log)"
	p.X.Scale = plot.LogScale{}
	p.Y.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	pts := make(plotter.XYs, 0, len(rs))
	labels := make([]string, 0, len(rs))
	for _, r := range rs {
		if r.EventsPerSec <= 0 || r.Latency.P99 <= 0 {
			continue
		}
		pts = append(pts, plotter.XY{X: ms(r.Latency.P99), Y: r.EventsPerSec})
		labels = append(labels, r.file)
	}
	if len(pts) == 0 {
		return fmt.Errorf("no run with throughput to plot")
	}
	sc, err := plotter.NewScatter(pts)
	if err != nil {
		return err
	}
	sc.GlyphStyle.Shape = draw.CircleGlyph{}
	sc.GlyphStyle.Radius = vg.Points(4)
	sc.GlyphStyle.Color = color.RGBA{R: 20, G: 90, B: 160, A: 255}
	p.Add(sc)
	ls, err := plotter.NewLabels(plotter.XYLabels{XYs: pts, Labels: labels})
	if err != nil {
		return err
	}
	for i := range ls.TextStyle {
		ls.TextStyle[i].XAlign = draw.XLeft
		ls.Offset = vg.Point{X: vg.Points(6), Y: vg.Points(-3)}
	}
	p.Add(ls)
	return p.Save(9*vg.Inch, 6*vg.Inch, path)
}

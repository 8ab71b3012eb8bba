// Command peerbench runs shoal's benchmark workloads against the systems
// shoal is compared with, started on loopback in a throwaway directory:
//
//	peerbench --system nats --sync always|default [--replicas 1|3] [--processes] [workload flags]
//	peerbench --system postgres [--postgres-dsn DSN] [workload flags]
//
// The workload flags and the JSON report are those of `shoal bench append`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/shoaldb/shoal/bench"
	"github.com/shoaldb/shoal/bench/peers"
)

func main() {
	if child, err := peers.ServeNATSChild(); child {
		if err != nil {
			fmt.Fprintln(os.Stderr, "peerbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		if errors.Is(err, peers.ErrPostgresNotInstalled) {
			fmt.Println(err)
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "peerbench:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := bench.AppendConfig{}
	var (
		system   = flag.String("system", "nats", "nats or postgres")
		sync     = flag.String("sync", "always", "NATS fsync: always (before ack) or default (every 2m)")
		replicas = flag.Int("replicas", 1, "NATS servers and stream replicas: 1 or 3")
		procs    = flag.Bool("processes", false, "NATS: run every server in a process of its own (default: all in this one)")
		dsn      = flag.String("postgres-dsn", "", "use this PostgreSQL server instead of starting one")
		workload = flag.String("workload", "append", "append or read")
		jsonOut  = flag.String("json", "", "write the full report as JSON to this file")
		dir      = flag.String("dir", "", "storage directory (default: a new temporary directory, removed afterwards)")
		streams  = flag.Int("streams", 10000, "distinct streams")
		eps      = flag.Int("events-per-stream", 1000, "read workload: events per preloaded stream")
	)
	flag.StringVar(&cfg.Dist, "dist", "uniform", "stream distribution: uniform or zipf")
	flag.IntVar(&cfg.EventSize, "event-size", 256, "event payload bytes")
	flag.IntVar(&cfg.Batch, "batch", 1, "events per append")
	flag.IntVar(&cfg.Concurrency, "concurrency", 64, "concurrent callers")
	flag.StringVar(&cfg.Expected, "expected", "exact", "exact or any")
	flag.DurationVar(&cfg.Duration, "duration", 30*time.Second, "measured duration")
	flag.Int64Var(&cfg.Count, "count", 0, "measured operations (instead of --duration)")
	flag.Float64Var(&cfg.Rate, "rate", 0, "open loop: operations per second (0 = closed loop)")
	flag.DurationVar(&cfg.Warmup, "warmup", 5*time.Second, "unmeasured warm-up; 0 for none, as shoal bench takes it")
	maxErrors := flag.Float64("max-errors", bench.DefaultMaxErrors, "exit 1 when more than this percentage of the measured operations failed or, with --rate, were never sent (as shoal bench)")
	flag.Parse()
	// A zero in the config means "the default": refuse it set here, as shoal bench does.
	var bad error
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "concurrency", "duration", "streams", "batch", "event-size", "events-per-stream":
			if g, ok := f.Value.(flag.Getter); ok && bad == nil {
				switch v := g.Get().(type) {
				case int:
					if v <= 0 {
						bad = fmt.Errorf("--%s must be at least 1, got %d", f.Name, v)
					}
				case time.Duration:
					if v <= 0 {
						bad = fmt.Errorf("--%s must be positive, got %s", f.Name, v)
					}
				}
			}
		}
	})
	if bad != nil {
		return bad
	}
	if !(*maxErrors >= 0 && *maxErrors <= 100) { // NaN too, which no comparison would fail
		return fmt.Errorf("--max-errors is a percentage, 0 to 100, got %g", *maxErrors)
	}
	if cfg.Warmup == 0 {
		cfg.Warmup = -1 // none, as `shoal bench` takes 0 (EnsureDefaults would apply the default)
	}
	cfg.Streams = *streams

	// The report's file is opened before the run, so a path that cannot be written is
	// refused before the load is sent.
	var report *bench.ReportFile
	if *jsonOut != "" {
		var err error
		if report, err = bench.OpenReportFile(*jsonOut); err != nil {
			return fmt.Errorf("cannot create the JSON report: %w", err)
		}
		defer report.Close()
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	// A reader of the table that went away (^C reaches `peerbench | tee` as a whole) must not
	// kill this process before its deferred Close stops the servers it started.
	signal.Ignore(syscall.SIGPIPE)

	root := *dir
	if root == "" {
		d, err := os.MkdirTemp("", "peerbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		root = d
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}

	var target bench.Target
	switch *system {
	case "nats":
		if *sync != "always" && *sync != "default" {
			return fmt.Errorf("--sync must be always or default, not %q", *sync)
		}
		n, err := peers.StartNATS(ctx, peers.NATSConfig{Dir: root, Replicas: *replicas, SyncAlways: *sync == "always", Processes: *procs})
		if err != nil {
			return err
		}
		defer n.Close()
		target = n
	case "postgres":
		var p *peers.Postgres
		var err error
		if *dsn != "" {
			p, err = peers.ConnectPostgres(ctx, *dsn)
		} else {
			p, err = peers.StartPostgres(ctx, root, cfg.Concurrency)
		}
		if err != nil {
			return err
		}
		defer p.Close()
		target = p
	default:
		return fmt.Errorf("--system must be nats or postgres, not %q", *system)
	}

	progress := bench.Progress{W: os.Stderr, Terminal: bench.IsTerminal(os.Stderr)}
	var res *bench.Result
	var err error
	switch *workload {
	case "append":
		cfg.Progress = progress
		cfg.EnsureDefaults()
		if err := cfg.Validate(); err != nil {
			return err
		}
		res, err = bench.RunAppend(ctx, cfg, target)
	case "read":
		rc := bench.ReadConfig{Run: cfg.Run, Streams: *streams, EventsPerStream: *eps, EventSize: cfg.EventSize}
		rc.Progress = progress
		rc.EnsureDefaults()
		if err := rc.Validate(); err != nil {
			return err
		}
		res, err = bench.RunRead(ctx, rc, target)
	default:
		return fmt.Errorf("--workload must be append or read, not %q", *workload)
	}
	if err != nil {
		return err
	}
	// The report first: a table that cannot be written (its reader gone) still leaves it.
	if report != nil {
		if err := report.Write(res); err != nil {
			return fmt.Errorf("cannot write the JSON report: %w", err)
		}
	}
	if err := res.WriteTable(os.Stdout); err != nil {
		return err
	}
	return res.Failure(*maxErrors)
}

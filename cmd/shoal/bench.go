package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shoaldb/shoal/bench"
	"github.com/shoaldb/shoal/internal/tlsfiles"
	"github.com/shoaldb/shoal/shard"
)

func (a *app) benchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark a shoal server or an embedded one",
		Long: `Benchmark a shoal server (--server) or a single-node server started in a
temporary directory for the run (--embedded). Progress goes to stderr, the
final table to stdout, and --json FILE writes every figure with the config and
machine. --rate N switches to an open loop: operations are due on a fixed
schedule and latency counts from the due time (coordinated omission corrected).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.benchAppendCmd(), a.benchReadCmd())
	return cmd
}

// benchTarget is where a benchmark sends its load.
type benchTarget struct {
	server   string
	embedded bool
	jsonFile string
	cpuProf  string
	// maxErrors: the percentage of the measured operations that may fail or go unsent (open
	// loop) before the run counts as failed.
	maxErrors float64
}

func (a *app) targetFlags(f *pflag.FlagSet, t *benchTarget) {
	def := a.getenv("SHOAL_SERVER")
	if def == "" {
		def = defaultServer
	}
	f.StringVar(&t.server, "server", def, "gRPC address of any node, from $SHOAL_SERVER when set")
	f.BoolVar(&t.embedded, "embedded", false, "start a single-node server in a temporary directory for the run")
	f.StringVar(&t.jsonFile, "json", "", "write the full report as JSON to this file")
	f.StringVar(&t.cpuProf, "cpuprofile", "", "write the load generator's own CPU profile (go tool pprof) to this file")
	f.Float64Var(&t.maxErrors, "max-errors", bench.DefaultMaxErrors, "exit 1 when more than this percentage of the measured operations failed or, with --rate, were never sent")
	a.clientTLSFlags(f)
}

func runFlags(f *pflag.FlagSet, r *bench.Run, concurrency int) {
	f.IntVar(&r.Concurrency, "concurrency", concurrency, "workers, each with at most one operation in flight")
	f.DurationVar(&r.Duration, "duration", bench.DefaultDuration, "length of the measured phase (after warmup)")
	f.Int64Var(&r.Count, "count", 0, "measured operations to run instead of --duration")
	f.DurationVar(&r.Warmup, "warmup", bench.DefaultWarmup, "unmeasured warmup before the measured phase (0 = none)")
	f.Uint64Var(&r.Seed, "seed", 0, "seed of stream selection (0 = random; the report records it)")
	f.Float64Var(&r.Rate, "rate", 0, fmt.Sprintf("open loop: operations per second on a fixed schedule, up to %g (0 = closed loop)", float64(bench.MaxRate)))
}

// positiveFlags are the workload flags whose zero in the config means "the default": set on
// the command line, zero or less is refused rather than taken for the default.
var positiveFlags = []string{"concurrency", "duration", "streams", "batch", "event-size", "events-per-stream"}

// refuseNonPositive refuses a flag of names set to zero or less.
func refuseNonPositive(f *pflag.FlagSet, names ...string) error {
	for _, name := range names {
		fl := f.Lookup(name)
		if fl == nil || !fl.Changed {
			continue
		}
		switch fl.Value.Type() {
		case "duration":
			if d, err := f.GetDuration(name); err == nil && d <= 0 {
				return usagef("--%s must be positive, got %s (leave it out for the default, %s)", name, fl.Value, fl.DefValue)
			}
		case "int":
			if n, err := f.GetInt(name); err == nil && n <= 0 {
				return usagef("--%s must be at least 1, got %d (leave it out for the default, %s)", name, n, fl.DefValue)
			}
		}
	}
	return nil
}

// configError names the flag of an invalid config field, when the command has one.
func configError(cmd *cobra.Command, err error) error {
	var ce *bench.ConfigError
	if errors.As(err, &ce) && cmd.Flags().Lookup(ce.Field) != nil {
		return usagef("--%s %s", ce.Field, ce.Reason)
	}
	return err
}

// checkStreamPrefix refuses a --stream-prefix that makes invalid stream names (prefix and an
// index below streams), which the servers would refuse every append of: a benchmark ran its whole
// duration and then reported only a count of invalid errors.
func checkStreamPrefix(prefix string, streams int) error {
	name := prefix + strconv.Itoa(max(streams-1, 0)) // the longest
	var ie *shard.InvalidError
	if err := shard.CheckStreamName(name); errors.As(err, &ie) {
		return usagef("--stream-prefix %q makes invalid stream names such as %q: %s (limit: %s)", prefix, name, ie.Reason, ie.Limit)
	}
	return nil
}

// prepareRun settles the flags that interact.
func (a *app) prepareRun(cmd *cobra.Command, r *bench.Run, t *benchTarget) error {
	if cmd.Flags().Changed("server") && t.embedded {
		return usagef("--server and --embedded exclude each other; pick one")
	}
	if t.embedded {
		if tlsFlagsChanged(cmd.Flags()) {
			return usagef("--embedded starts a plaintext server; leave out the --tls-* flags")
		}
		a.tls = tlsfiles.Files{} // $SHOAL_TLS_* are for --server
	}
	if cmd.Flags().Changed("duration") && cmd.Flags().Changed("count") {
		return usagef("--duration and --count exclude each other; pick one")
	}
	if !(t.maxErrors >= 0 && t.maxErrors <= 100) { // NaN too, which no comparison would fail
		return usagef("--max-errors is a percentage, 0 to 100, got %g", t.maxErrors)
	}
	if err := refuseNonPositive(cmd.Flags(), positiveFlags...); err != nil {
		return err
	}
	if r.Count > 0 {
		r.Duration = 0
	}
	switch {
	case r.Warmup < 0:
		return usagef("--warmup must not be negative, got %s (0 for none)", r.Warmup)
	case r.Warmup == 0:
		r.Warmup = -1 // none, not the default
	}
	r.Progress = bench.Progress{W: nil}
	return nil
}

func (a *app) benchAppendCmd() *cobra.Command {
	var (
		cfg bench.AppendConfig
		t   benchTarget
	)
	cmd := &cobra.Command{
		Use:   "append",
		Short: "Benchmark appends",
		Example: `  shoal bench append --embedded --duration 10s
  shoal bench append --server 127.0.0.1:7400 --dist zipf --batch 10 --expected exact --rate 5000 --json out.json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.prepareRun(cmd, &cfg.Run, &t); err != nil {
				return err
			}
			cfg.EnsureDefaults()
			if err := cfg.Validate(); err != nil {
				return configError(cmd, err)
			}
			if err := checkStreamPrefix(cfg.StreamPrefix, cfg.Streams); err != nil {
				return err
			}
			return a.runBench(cmd.Context(), &cfg.Run, t, func(ctx context.Context, target bench.Target) (*bench.Result, error) {
				return bench.RunAppend(ctx, cfg, target)
			})
		},
	}
	f := cmd.Flags()
	a.targetFlags(f, &t)
	runFlags(f, &cfg.Run, bench.DefaultConcurrency)
	f.IntVar(&cfg.Streams, "streams", bench.DefaultAppendStreams, "distinct streams")
	f.StringVar(&cfg.StreamPrefix, "stream-prefix", bench.DefaultStreamPrefix, "stream names are this prefix and an index (a fresh prefix starts from empty streams)")
	f.StringVar(&cfg.Dist, "dist", bench.DistUniform, "stream selection: uniform or zipf")
	f.IntVar(&cfg.EventSize, "event-size", bench.DefaultEventSize, "bytes of data per event")
	f.IntVar(&cfg.Batch, "batch", bench.DefaultBatch, "events per append")
	f.StringVar(&cfg.Expected, "expected", bench.ExpectedAny, "expected version: any, or exact (workers own their streams and track versions)")
	f.BoolVar(&cfg.Subscribe, "subscribe", false, "also subscribe to every shard and report how long events take from their append's arrival "+
		"(the leader's clock) to the subscriber (this machine's clock: with a remote --server, the clocks must be synchronized)")
	return cmd
}

func (a *app) benchReadCmd() *cobra.Command {
	var (
		cfg bench.ReadConfig
		t   benchTarget
	)
	cmd := &cobra.Command{
		Use:     "read",
		Short:   "Benchmark whole-stream reads",
		Long:    "Preload --streams streams of --events-per-stream events (skipped when already there), then replay whole streams concurrently.",
		Example: `  shoal bench read --embedded --streams 100 --events-per-stream 1000 --duration 10s`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.prepareRun(cmd, &cfg.Run, &t); err != nil {
				return err
			}
			cfg.EnsureDefaults()
			if err := cfg.Validate(); err != nil {
				return configError(cmd, err)
			}
			if err := checkStreamPrefix(cfg.StreamPrefix, cfg.Streams); err != nil {
				return err
			}
			return a.runBench(cmd.Context(), &cfg.Run, t, func(ctx context.Context, target bench.Target) (*bench.Result, error) {
				return bench.RunRead(ctx, cfg, target)
			})
		},
	}
	f := cmd.Flags()
	a.targetFlags(f, &t)
	runFlags(f, &cfg.Run, bench.DefaultReadConfig().Concurrency)
	f.IntVar(&cfg.Streams, "streams", bench.DefaultReadStreams, "streams to preload and replay")
	f.IntVar(&cfg.EventsPerStream, "events-per-stream", bench.DefaultEventsPerStream, "events per stream")
	f.IntVar(&cfg.EventSize, "event-size", bench.DefaultEventSize, "bytes of data per preloaded event")
	f.StringVar(&cfg.StreamPrefix, "stream-prefix", bench.DefaultReadStreamPrefix,
		"stream names are this prefix and an index; streams a run left are reused, so change it with --event-size or --events-per-stream")
	return cmd
}

// runBench connects to the target (starting an embedded server if asked),
// runs fn, prints the table and writes the JSON report.
func (a *app) runBench(ctx context.Context, run *bench.Run, t benchTarget, fn func(context.Context, bench.Target) (*bench.Result, error)) error {
	// --json FILE is opened before the run, so a path that cannot be written is refused
	// before the load is sent rather than after it.
	var report *bench.ReportFile
	if t.jsonFile != "" {
		var err error
		if report, err = bench.OpenReportFile(t.jsonFile); err != nil {
			return fmt.Errorf("cannot create the JSON report: %w", err)
		}
		defer report.Close()
	}
	server := t.server
	opts, err := a.clientOptions()
	if err != nil {
		return err
	}
	if t.embedded {
		emb, err := bench.StartEmbedded(ctx, slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelError})))
		if err != nil {
			return fmt.Errorf("cannot start the embedded server: %w", err)
		}
		defer emb.Close()
		server = emb.Addr()
		fmt.Fprintf(a.stderr, "embedded server on %s\n", server)
	}
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	target, err := bench.DialShoal(dialCtx, []string{server}, opts...)
	cancel()
	if err != nil {
		return a.unreachable(err, server)
	}
	defer target.Close()
	run.Progress = bench.Progress{W: a.stderr, Terminal: bench.IsTerminal(a.stderr)}
	if t.cpuProf != "" {
		stop, err := startCPUProfile(t.cpuProf)
		if err != nil {
			return err
		}
		defer stop()
	}
	res, err := fn(ctx, target)
	if err != nil {
		return err
	}
	if err := res.WriteTable(a.stdout); err != nil {
		return err
	}
	if report != nil {
		if err := report.Write(res); err != nil {
			return fmt.Errorf("cannot write the JSON report: %w", err)
		}
	}
	return res.Failure(t.maxErrors)
}

// startCPUProfile profiles this process into file until the returned func is called.
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("cannot create the CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot start the CPU profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

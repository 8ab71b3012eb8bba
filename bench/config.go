package bench

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// Distributions of stream selection.
const (
	DistUniform = "uniform"
	DistZipf    = "zipf"
)

// Expected-version modes of the append workload.
const (
	ExpectedExact = "exact" // each append names the stream's current version
	ExpectedAny   = "any"   // no check
)

// Defaults of AppendConfig and ReadConfig (zero fields take them).
const (
	DefaultAppendStreams    = 10000
	DefaultReadStreams      = 1000
	DefaultEventsPerStream  = 1000
	DefaultEventSize        = 256
	DefaultBatch            = 1
	DefaultConcurrency      = 64
	DefaultDuration         = 30 * time.Second
	DefaultWarmup           = 5 * time.Second
	DefaultOpTimeout        = 10 * time.Second
	DefaultPreloadBatch     = 500
	DefaultZipfS            = 1.1
	DefaultStreamPrefix     = "bench-"
	DefaultReadStreamPrefix = "bench-read-"
	DefaultProgressInterval = time.Second

	// MaxEventSize keeps one event within shoal's per-event limit (4 MiB).
	MaxEventSize = 4 << 20
	// MaxBatch keeps one append within shoal's per-append limit.
	MaxBatch = 10000
	// MaxBatchBytes keeps one append's payloads (Batch x EventSize) within shoal's
	// per-append limit.
	MaxBatchBytes = 16 << 20
	// MaxRate is the highest Rate, in operations per second: one operation per nanosecond,
	// the open loop's finest interval.
	MaxRate = 1e9
)

// ErrInvalidConfig is matched by the errors Validate returns, each a *ConfigError.
var ErrInvalidConfig = errors.New("bench: invalid config")

// ConfigError is the ErrInvalidConfig failure of one field.
type ConfigError struct {
	// Field is the field's name as the commands' flags spell it (shoal bench, peerbench):
	// "concurrency", "event-size", "preload-batch".
	Field string
	// Reason completes a sentence about the field: "must be at least 1, got 0".
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%v: %s %s", ErrInvalidConfig, e.Field, e.Reason)
}

// Is reports whether target is ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

func invalid(field, format string, args ...any) error {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Progress says where and how a run reports while it goes. It is not part of
// the workload and is left out of the JSON report.
type Progress struct {
	W        io.Writer     // nil: no progress output
	Terminal bool          // W is a terminal: one updating line with a bar; else plain lines
	Interval time.Duration // between updates; default 1s (plain lines: 5 x Interval)
}

// Run is the part of a config shared by both workloads: how long and how
// hard to drive the target.
type Run struct {
	// Concurrency is the number of workers, each with at most one operation
	// in flight. Default 64 (appends), the CPU count x 4 (reads).
	Concurrency int `json:"concurrency"`
	// Duration of the measured phase, after Warmup. Default 30s unless
	// Count is set; ignored when Count is set.
	Duration time.Duration `json:"duration_ns"`
	// Count of measured operations; 0 = run for Duration.
	Count int64 `json:"count"`
	// Warmup runs the workload unmeasured before the measured phase.
	// Default 5s; negative = none (kept negative, so EnsureDefaults is
	// idempotent).
	Warmup time.Duration `json:"warmup_ns"`
	// Rate, operations per second across all workers. 0 = closed loop
	// (each worker sends as soon as its previous operation finished). > 0 =
	// open loop: operation k is due at start + k/Rate and its latency is
	// measured from that intended time (coordinated omission corrected);
	// Concurrency bounds the operations outstanding. At most MaxRate; NaN
	// and infinities are invalid.
	Rate float64 `json:"rate"`
	// OpTimeout bounds one operation. Default 10s.
	OpTimeout time.Duration `json:"op_timeout_ns"`
	// Seed of stream selection and payloads; 0 = random (the seed used
	// is recorded in the result).
	Seed uint64 `json:"seed"`

	Progress Progress `json:"-"`
}

func (r *Run) ensureDefaults(concurrency int) {
	if r.Concurrency == 0 {
		r.Concurrency = concurrency
	}
	if r.Duration == 0 && r.Count == 0 {
		r.Duration = DefaultDuration
	}
	if r.Count > 0 {
		r.Duration = 0
	}
	if r.Warmup == 0 {
		r.Warmup = DefaultWarmup
	}
	if r.OpTimeout == 0 {
		r.OpTimeout = DefaultOpTimeout
	}
	if r.Progress.Interval == 0 {
		r.Progress.Interval = DefaultProgressInterval
	}
}

func (r *Run) validate() error {
	switch {
	case r.Concurrency < 1:
		return invalid("concurrency", "must be at least 1, got %d", r.Concurrency)
	case r.Count < 0:
		return invalid("count", "must not be negative, got %d", r.Count)
	case r.Duration < 0:
		return invalid("duration", "must not be negative, got %s", r.Duration)
	case !(r.Rate >= 0 && r.Rate <= MaxRate): // NaN fails both
		return invalid("rate", "must be 0 (closed loop) or a number of operations per second up to %g (one per nanosecond), got %g",
			float64(MaxRate), r.Rate)
	case r.OpTimeout < 0:
		return invalid("op-timeout", "must not be negative, got %s", r.OpTimeout)
	}
	return nil
}

// AppendConfig is the append workload: workers append batches of events to
// streams picked from Streams streams named StreamPrefix + index.
type AppendConfig struct {
	Run
	// Streams is the number of distinct streams. Default 10000.
	Streams int `json:"streams"`
	// StreamPrefix names the streams: prefix + index. Default "bench-".
	StreamPrefix string `json:"stream_prefix"`
	// Dist picks streams: "uniform" (default) or "zipf" (rank 0 hottest).
	Dist string `json:"dist"`
	// ZipfS is the zipf exponent, > 1. Default 1.1.
	ZipfS float64 `json:"zipf_s"`
	// EventSize is each event's payload in bytes, 1..4 MiB. Default 256.
	EventSize int `json:"event_size"`
	// Batch is the events per append, 1..10000. Default 1.
	Batch int `json:"batch"`
	// Expected: "any" (default) or "exact". With exact, the streams are
	// partitioned among workers (stream i belongs to worker i mod
	// Concurrency), each worker tracks its streams' versions, and the
	// distribution applies within each worker's partition; so Streams must
	// be >= Concurrency. Conflicts are still counted (e.g. streams left by an
	// earlier run: the worker resynchronises from the conflict's version).
	Expected string `json:"expected"`
	// Subscribe also subscribes to everything appended (the target must be a Subscriber)
	// and reports how long events took to reach the subscriber (Result.Delivery): from the
	// target's stamp on its receipt of the append, on its clock, to the subscriber's receipt,
	// on this process's clock. On one machine that is one clock; across machines the figure
	// is off by the clocks' offset, so they must be synchronized well below it.
	Subscribe bool `json:"subscribe,omitempty"`
}

// DefaultAppendConfig returns the defaults.
func DefaultAppendConfig() AppendConfig {
	c := AppendConfig{}
	c.EnsureDefaults()
	return c
}

// EnsureDefaults sets zero fields to their defaults.
func (c *AppendConfig) EnsureDefaults() {
	c.Run.ensureDefaults(DefaultConcurrency)
	if c.Streams == 0 {
		c.Streams = DefaultAppendStreams
	}
	if c.StreamPrefix == "" {
		c.StreamPrefix = DefaultStreamPrefix
	}
	if c.Dist == "" {
		c.Dist = DistUniform
	}
	if c.ZipfS == 0 {
		c.ZipfS = DefaultZipfS
	}
	if c.EventSize == 0 {
		c.EventSize = DefaultEventSize
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	if c.Expected == "" {
		c.Expected = ExpectedAny
	}
}

// Validate checks a config after EnsureDefaults.
func (c *AppendConfig) Validate() error {
	if err := c.Run.validate(); err != nil {
		return err
	}
	switch {
	case c.Streams < 1:
		return invalid("streams", "must be at least 1, got %d", c.Streams)
	case c.Dist != DistUniform && c.Dist != DistZipf:
		return invalid("dist", "must be uniform or zipf, got %q", c.Dist)
	case !(c.ZipfS > 1):
		return invalid("zipf-s", "(the zipf exponent) must be greater than 1, got %g", c.ZipfS)
	case c.EventSize < 1 || c.EventSize > MaxEventSize:
		return invalid("event-size", "must be 1..%d bytes, got %d", MaxEventSize, c.EventSize)
	case c.Batch < 1 || c.Batch > MaxBatch:
		return invalid("batch", "must be 1..%d events, got %d", MaxBatch, c.Batch)
	case int64(c.Batch)*int64(c.EventSize) > MaxBatchBytes:
		return invalid("batch", "must be at most %d with events of %d bytes (16 MiB per append), got %d",
			MaxBatchBytes/c.EventSize, c.EventSize, c.Batch)
	case c.Expected != ExpectedAny && c.Expected != ExpectedExact:
		return invalid("expected", "must be exact or any, got %q", c.Expected)
	case c.Expected == ExpectedExact && c.Streams < c.Concurrency:
		return invalid("streams", "must be at least the concurrency (%d) with expected exact (each worker owns its streams), got %d",
			c.Concurrency, c.Streams)
	}
	return nil
}

// ReadConfig is the read workload: preload Streams streams of
// EventsPerStream events each, then replay whole streams, picked uniformly.
type ReadConfig struct {
	Run
	// Streams to preload and replay. Default 1000.
	Streams int `json:"streams"`
	// StreamPrefix names the streams. Default "bench-read-".
	StreamPrefix string `json:"stream_prefix"`
	// EventsPerStream, default 1000.
	EventsPerStream int `json:"events_per_stream"`
	// EventSize of the preloaded events in bytes. Default 256.
	EventSize int `json:"event_size"`
	// PreloadBatch is the events per preload append. Default 500.
	PreloadBatch int `json:"preload_batch"`
}

// DefaultReadConfig returns the defaults.
func DefaultReadConfig() ReadConfig {
	c := ReadConfig{}
	c.EnsureDefaults()
	return c
}

// EnsureDefaults sets zero fields to their defaults.
func (c *ReadConfig) EnsureDefaults() {
	c.Run.ensureDefaults(4 * numCPU())
	if c.Streams == 0 {
		c.Streams = DefaultReadStreams
	}
	if c.StreamPrefix == "" {
		c.StreamPrefix = DefaultReadStreamPrefix
	}
	if c.EventsPerStream == 0 {
		c.EventsPerStream = DefaultEventsPerStream
	}
	if c.EventSize == 0 {
		c.EventSize = DefaultEventSize
	}
	if c.PreloadBatch == 0 {
		// At most what one append of EventSize events may carry (MaxBatchBytes).
		c.PreloadBatch = max(1, min(DefaultPreloadBatch, int(MaxBatchBytes/int64(c.EventSize))))
	}
}

// Validate checks a config after EnsureDefaults.
func (c *ReadConfig) Validate() error {
	if err := c.Run.validate(); err != nil {
		return err
	}
	switch {
	case c.Streams < 1:
		return invalid("streams", "must be at least 1, got %d", c.Streams)
	case c.EventsPerStream < 1:
		return invalid("events-per-stream", "must be at least 1, got %d", c.EventsPerStream)
	case c.EventSize < 1 || c.EventSize > MaxEventSize:
		return invalid("event-size", "must be 1..%d bytes, got %d", MaxEventSize, c.EventSize)
	case c.PreloadBatch < 1 || c.PreloadBatch > MaxBatch:
		return invalid("preload-batch", "must be 1..%d events, got %d", MaxBatch, c.PreloadBatch)
	case int64(c.PreloadBatch)*int64(c.EventSize) > MaxBatchBytes:
		return invalid("preload-batch", "must be at most %d with events of %d bytes (16 MiB per append), got %d",
			MaxBatchBytes/c.EventSize, c.EventSize, c.PreloadBatch)
	}
	return nil
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// RunRead runs the read workload against target: it preloads cfg.Streams
// streams of cfg.EventsPerStream events (skipping streams that already hold
// that many, so a second run on the same server starts at once), then
// replays whole streams picked uniformly and reports replays and events per
// second and the latency of one replay. It returns an error for an invalid
// config or a failed preload; replay failures are counted in the Result.
func RunRead(ctx context.Context, cfg ReadConfig, target Target) (*Result, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64() | 1
	}
	names := streamNames(cfg.StreamPrefix, cfg.Streams)
	pre, err := preload(ctx, &cfg, names, target)
	if err != nil {
		return nil, err
	}
	ops := make([]op, cfg.Concurrency)
	for w := range ops {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
		size := int64(cfg.EventSize)
		ops[w].run = func(ctx context.Context) (int64, int64, error) {
			n, err := target.ReadStream(ctx, names[rng.IntN(len(names))])
			return n, n * size, err
		}
	}
	r := newEngine(cfg.Run, "read", ops).execute(ctx)
	r.Preload = pre
	finish(ctx, r, &cfg, cfg.Seed, target)
	return r, nil
}

// preloadAttempts bounds the retries of one failed preload append.
const preloadAttempts = 5

// preload fills the streams with cfg.Concurrency workers.
func preload(ctx context.Context, cfg *ReadConfig, names []string, target Target) (*Preload, error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan string)
	var (
		mu       sync.Mutex
		firstErr error
		events   int64
		skipped  int
		done     int // streams finished
	)
	var wg sync.WaitGroup
	for w := range min(cfg.Concurrency, len(names)) {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)+1<<32))
		batch := payloads(rng, cfg.PreloadBatch, cfg.EventSize)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range next {
				n, err := fill(ctx, cfg, target, name, batch)
				mu.Lock()
				done++
				events += n
				if n == 0 && err == nil {
					skipped++
				}
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	stopProgress := preloadProgress(cfg.Progress, len(names), func() int {
		mu.Lock()
		defer mu.Unlock()
		return done
	})
	defer stopProgress()
	for _, name := range names {
		select {
		case next <- name:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return nil, fmt.Errorf("bench: preload: %w", firstErr)
	}
	el := time.Since(start).Seconds()
	p := &Preload{Streams: len(names), Events: events, Skipped: skipped, ElapsedSeconds: el}
	if el > 0 {
		p.EventsPerSec = float64(events) / el
	}
	return p, nil
}

// fill appends to stream until it holds cfg.EventsPerStream events, with
// exact expected versions so that a retried append cannot add twice. It
// returns the events it appended.
func fill(ctx context.Context, cfg *ReadConfig, target Target, stream string, batch [][]byte) (int64, error) {
	want := int64(cfg.EventsPerStream)
	have, expected := int64(0), ExpectNoStream
	var added int64
	failures := 0
	for have < want {
		n := min(want-have, int64(len(batch)))
		last, err := target.Append(ctx, stream, expected, batch[:n])
		var ce *ConflictError
		switch {
		case err == nil:
			added += n
			have, expected = last+1, last
			failures = 0
			continue
		case errors.As(err, &ce) && ce.Actual != ActualUnknown:
			have, expected = ce.Actual+1, ce.Actual
			if ce.Actual < 0 {
				expected = ExpectNoStream
			}
			continue
		case errors.Is(err, ErrConflict):
			read, rerr := target.ReadStream(ctx, stream)
			if rerr != nil {
				return added, rerr
			}
			have, expected = read, read-1
			if read == 0 {
				expected = ExpectNoStream
			}
			continue
		}
		failures++
		if failures >= preloadAttempts || ctx.Err() != nil {
			return added, fmt.Errorf("stream %q: %w", stream, err)
		}
		select {
		case <-time.After(time.Duration(failures) * 100 * time.Millisecond):
		case <-ctx.Done():
			return added, ctx.Err()
		}
	}
	if have > want {
		// Left by a run with other settings: replaying it would time longer streams than
		// the report says.
		return added, fmt.Errorf("stream %q holds %d events, more than the %d per stream asked for (a run with other settings left it); use another stream prefix",
			stream, have, want)
	}
	return added, nil
}

// preloadProgress reports finished streams every interval until stopped.
func preloadProgress(p Progress, total int, done func() int) (stop func()) {
	return report(p, func(time.Time) string {
		return fmt.Sprintf("preload %s/%s streams", thousands(int64(done())), thousands(int64(total)))
	})
}

package query

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shoaldb/shoal/client"
)

// source is what a projection reads: implemented over *client.Client, and
// by fakes in tests.
type source interface {
	// Shards returns the cluster's shard count and ID.
	Shards(ctx context.Context) (shards uint32, cluster string, err error)
	// ReadShard returns up to count events of shard's log from position from
	// on, and the position to resume at. With wait > 0, a read that finds
	// nothing new waits up to wait for the shard's next entry (a long poll).
	// It calls arrived (idempotent) when the first event comes in, if it does
	// before it returns.
	ReadShard(ctx context.Context, shard uint32, from uint64, count int, wait time.Duration, arrived func()) ([]client.RecordedEvent, uint64, error)
}

// Run processes events until ctx is done or a handler fails: one goroutine
// per shard, at most Config.Concurrency of them catching up at a time, each
// resuming from the stored checkpoint and committing one batch per page. A
// catch-up read that has not answered within PollMax (its shard has no
// leader, say) gives its place up while it waits.
// Once caught up, a shard is read with a long poll of PollMax, outside the
// Concurrency limit: its server answers as soon as the shard has a new
// entry, so a new event reaches the handler within milliseconds, and an idle
// shard costs one read per PollMax. A server that answers a long poll at
// once (a version before long polls) is polled with a doubling idle wait
// (PollMin..PollMax) instead. Read errors, and a topology request that fails
// as Run starts, are retried with backoff (up to RetryMax apart), except
// those no retry mends: a request the servers refuse
// (client.ErrInvalidArgument), a closed client (client.ErrClosed), nodes
// of another cluster (client.ErrWrongCluster) and a checkpoint past its
// shard's end (ErrCheckpointAhead), which Run returns. It returns the
// *HandlerError or commit error that stopped it, or context.Cause(ctx).
// Once it returned, WaitFor answers ErrNotRunning (wrapping a failure) for
// what it has not applied, until Run is called again.
// Run may be called again after it returned; not concurrently.
func (p *Projection) Run(ctx context.Context) (err error) {
	p.mu.Lock()
	switch {
	case p.mu.closed:
		p.mu.Unlock()
		return ErrClosed
	case p.mu.running:
		p.mu.Unlock()
		return ErrRunning
	}
	p.mu.running = true
	p.mu.stopped = nil
	p.mu.Unlock()
	defer func() { p.stop(ctx, err) }()

	shards, cluster, err := p.topology(ctx)
	if err != nil {
		return err
	}
	if err := p.bind(shards, cluster); err != nil {
		return err
	}
	start := p.Checkpoint()

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		fatal error
	)
	fail := func(err error) {
		once.Do(func() { fatal = err; cancel(err) })
	}
	sem := make(chan struct{}, p.cfg.Concurrency)
	for s := range shards {
		wg.Go(func() {
			if err := p.runShard(runCtx, s, start[s], sem); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	if fatal != nil {
		return fatal
	}
	return context.Cause(ctx)
}

// stop records that Run returned err, and wakes every WaitFor: no commit follows until the
// next Run, so what is not covered yet answers ErrNotRunning rather than wait for ctx's end.
func (p *Projection) stop(ctx context.Context, err error) {
	var stopped error
	if ctx.Err() != nil && errors.Is(err, context.Cause(ctx)) {
		// The ordinary stop. Not wrapped: a WaitFor's caller whose own ctx is a different one
		// would take errors.Is(err, context.Canceled) for the end of its own wait.
		stopped = fmt.Errorf("%w: projection %q: Run returned as its context ended (%v)", ErrNotRunning, p.cfg.Name, err)
	} else {
		stopped = fmt.Errorf("%w: projection %q: Run failed: %w", ErrNotRunning, p.cfg.Name, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.running = false
	p.mu.stopped = stopped
	close(p.mu.changed)
	p.mu.changed = make(chan struct{})
}

// topology learns the shard count and cluster ID, retrying failures with the backoff of a
// failed read: a cluster unavailable when Run starts (started beside it, or down for longer
// than the client's retry budget) is waited for like one that fails a read later, rather
// than ending a Run that promises to end only with its context or a handler.
func (p *Projection) topology(ctx context.Context) (uint32, string, error) {
	retry := p.cfg.PollMin
	for {
		shards, cluster, err := p.src.Shards(ctx)
		switch {
		case err == nil:
			return shards, cluster, nil
		case ctx.Err() != nil:
			return 0, "", context.Cause(ctx)
		case unmendable(err):
			return 0, "", fmt.Errorf("query: projection %q: topology: %w", p.cfg.Name, err)
		}
		p.cfg.Logger.Warn("query: topology failed, retrying", "projection", p.cfg.Name, "err", err, "retry_in", retry)
		if !sleep(ctx, retry) {
			return 0, "", context.Cause(ctx)
		}
		retry = min(2*retry, p.cfg.RetryMax)
	}
}

// unmendable reports the read failures no retry mends: a request the servers refuse, a
// closed client, nodes of another cluster, a checkpoint past the shard's end. Run returns them.
func unmendable(err error) bool {
	return errors.Is(err, client.ErrInvalidArgument) || errors.Is(err, client.ErrClosed) || errors.Is(err, client.ErrWrongCluster) ||
		errors.Is(err, client.ErrPositionAhead)
}

// runShard follows one shard until ctx is done; it returns only fatal
// errors (handler and commit failures).
func (p *Projection) runShard(ctx context.Context, shard uint32, from uint64, sem chan struct{}) error {
	idle, retry := p.cfg.PollMin, p.cfg.PollMin
	caughtUp := false // the last read found nothing new: long-poll the next
	for {
		var wait time.Duration
		answered, release := func() {}, func() {}
		if caughtUp {
			wait = p.cfg.PollMax
		} else {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			answered, release = p.holdPlace(sem)
		}
		start := time.Now()
		evs, next, err := p.src.ReadShard(ctx, shard, from, p.cfg.PageSize, wait, answered)
		answered()
		if err == nil && next > from {
			if aerr := p.apply(ctx, shard, evs, next); aerr != nil {
				release()
				if ctx.Err() != nil {
					return nil
				}
				return aerr
			}
		}
		release()
		var pause time.Duration
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, client.ErrPositionAhead):
			return fmt.Errorf("%w: projection %q: shard %d: the cluster no longer has the history the model was built from "+
				"(restored from an older backup?); rebuild the model from an empty directory: %w", ErrCheckpointAhead, p.cfg.Name, shard, err)
		case unmendable(err):
			// Failures no retry mends (a closed client, another cluster's nodes): Run returns
			// them rather than retry until its context ends.
			return fmt.Errorf("query: projection %q: read shard %d: %w", p.cfg.Name, shard, err)
		case err != nil:
			p.metrics.readErrors.Inc()
			p.cfg.Logger.Warn("query: read shard failed, retrying", "projection", p.cfg.Name, "shard", shard, "from", from, "err", err, "retry_in", retry)
			pause, retry = retry, min(2*retry, p.cfg.RetryMax)
		case next > from:
			from, idle, retry = next, p.cfg.PollMin, p.cfg.PollMin
			caughtUp = !p.pageFull(evs)
			continue
		case !caughtUp:
			caughtUp = true
			continue
		case time.Since(start) < wait/2:
			// Answered at once: the server does not long-poll.
			pause, idle = idle, min(2*idle, p.cfg.PollMax)
		}
		if pause > 0 && !sleep(ctx, pause) {
			return nil
		}
	}
}

// holdPlace holds the place a catch-up read took in sem. A read that has not answered within
// PollMax gives it back by itself: it is waiting, not reading (a shard without a leader, whose
// read the client retries for its whole budget), as a long poll waits outside the Concurrency
// limit; holding its place all along, it kept the other shards from catching up meanwhile.
// answered, called once the read's first event arrived or it returned, keeps the place (if
// still held) until release: a read that is receiving a page, however slowly, is reading, and
// giving its place up then let every shard hold a page in memory at once.
func (p *Projection) holdPlace(sem chan struct{}) (answered, release func()) {
	free := sync.OnceFunc(func() { <-sem })
	t := time.AfterFunc(p.cfg.PollMax, free)
	return func() { t.Stop() }, free
}

// pageFull reports whether a page ended at one of its bounds, PageSize events or
// MaxPageBytes (clientSource), rather than at the log's end: its shard is still catching up,
// and its next read waits for its turn under Concurrency instead of long-polling outside it.
func (p *Projection) pageFull(evs []client.RecordedEvent) bool {
	if len(evs) >= p.cfg.PageSize {
		return true
	}
	size := 0
	for i := range evs {
		size += eventBytes(&evs[i])
	}
	return size >= MaxPageBytes
}

// sleep waits d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

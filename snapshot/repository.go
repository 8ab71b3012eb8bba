package snapshot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/shoaldb/shoal/client"
)

// DefaultEvery is Policy.Every when zero.
const DefaultEvery = 100

// Policy decides when a Repository saves a snapshot.
type Policy struct {
	// Every: after a Load that applied at least Every events on top of the
	// latest snapshot (or of nothing), save a new one. Default DefaultEvery.
	Every int
	// Disabled turns snapshot saving off (loads still use snapshots).
	Disabled bool
}

// ShouldSave reports whether a load that replayed n events should save.
func (p Policy) ShouldSave(n int) bool {
	every := p.Every
	if every <= 0 {
		every = DefaultEvery
	}
	return !p.Disabled && n >= every
}

// RepositoryConfig configures a Repository.
type RepositoryConfig[S any] struct {
	Store   *Store       // required
	Codec   Codec[S]     // required
	Initial func() S     // the empty state, called for every start of a load (once, unless it starts over); required
	Apply   ApplyFunc[S] // required
	Policy  Policy
}

// Repository loads aggregates through snapshots and keeps the snapshots
// fresh according to its Policy. Safe for concurrent use.
type Repository[S any] struct{ cfg RepositoryConfig[S] }

// NewRepository validates cfg and returns a Repository.
func NewRepository[S any](cfg RepositoryConfig[S]) (*Repository[S], error) {
	switch {
	case cfg.Store == nil:
		return nil, &ConfigError{Field: "Store", Reason: "must not be nil"}
	case cfg.Initial == nil:
		return nil, &ConfigError{Field: "Initial", Reason: "must not be nil"}
	case cfg.Apply == nil:
		return nil, &ConfigError{Field: "Apply", Reason: "must not be nil"}
	}
	if err := cfg.Codec.validate(); err != nil {
		return nil, err
	}
	return &Repository[S]{cfg: cfg}, nil
}

// Load loads stream's state (see Load). When the policy says so it then
// saves a snapshot at the loaded version, synchronously, pruning the older
// ones as the Store's Options.Keep says; a failed save is logged and counted
// but does not fail the load (a failed prune does not fail the save).
func (r *Repository[S]) Load(ctx context.Context, stream string) (Loaded[S], error) {
	l, err := load(ctx, r.cfg.Store, stream, func() (S, error) { return r.cfg.Initial(), nil }, r.cfg.Apply, r.cfg.Codec)
	if err != nil || !l.Exists || r.cfg.Policy.Disabled || !(r.cfg.Policy.ShouldSave(l.Replayed) || l.SnapshotErr != nil && l.Replayed > 0) {
		return l, err
	}
	if serr := saveState(ctx, r.cfg.Store, stream, l.Version, l.State, r.cfg.Codec, l.rejected); serr != nil {
		r.cfg.Store.opts.Logger.Warn("snapshot: save after load failed", "stream", stream, "version", l.Version, "err", serr)
	}
	return l, nil
}

// Append appends events to stream expecting the version l was loaded at
// (client.Exact or client.NoStream), so a concurrent writer makes it fail
// with client.ErrWrongExpectedVersion; reload and retry the command then.
// An l loaded from another stream (l.Stream) is refused with a
// *client.InvalidArgumentError (client.ErrInvalidArgument) naming both
// streams, and nothing is written: its version would be checked against a
// stream it was never folded from.
func (r *Repository[S]) Append(ctx context.Context, stream string, l Loaded[S], events ...client.Event) (client.AppendResult, error) {
	if err := l.checkStream(stream); err != nil {
		return client.AppendResult{}, fmt.Errorf("snapshot: append %q: %w", stream, err)
	}
	res, err := r.cfg.Store.c.Append(ctx, stream, l.Expected(), events...)
	if err != nil {
		return res, fmt.Errorf("snapshot: append %q: %w", stream, err)
	}
	return res, nil
}

// MaxUpdateAttempts is how many times Repository.Update loads and decides before it gives up
// on a stream other writers keep changing under it.
const MaxUpdateAttempts = 10

// Update runs one command on stream's aggregate: it loads the state (Load), asks decide for the
// events the command makes of it, and appends them expecting the version it loaded (Append).
// When another writer appended first (client.ErrWrongExpectedVersion), nothing was written: it
// waits a moment (exponential backoff with jitter, from 5 ms) and loads and decides again, up
// to MaxUpdateAttempts times, after which the conflict is returned. decide may thus run more
// than once for one command: it must depend on the state it is given alone, without side
// effects. When decide returns no events, or an error, Update returns at once and writes
// nothing (the zero AppendResult and decide's error).
//
// Only a conflict, which wrote nothing, is decided again. Any other failure is returned as it
// is, client.ErrOutcomeUnknown above all: those events may have been written, and a new
// decision over a state that holds them would run the command twice. Its
// *client.OutcomeUnknownError gives the IDs the events were sent with (EventIDs): append the
// same events with those IDs again to settle it (an event already stored answers as a
// duplicate), or load and look.
func (r *Repository[S]) Update(ctx context.Context, stream string, decide func(Loaded[S]) ([]client.Event, error)) (client.AppendResult, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = 5*time.Millisecond, 200*time.Millisecond
	var conflict error
	for range MaxUpdateAttempts {
		l, err := r.Load(ctx, stream)
		if err != nil {
			return client.AppendResult{}, err
		}
		events, err := decide(l)
		if err != nil || len(events) == 0 {
			return client.AppendResult{}, err
		}
		res, err := r.Append(ctx, stream, l, events...)
		if !errors.Is(err, client.ErrWrongExpectedVersion) {
			return res, err
		}
		conflict = err
		select {
		case <-ctx.Done():
			return client.AppendResult{}, fmt.Errorf("%w (after a conflict: %w)", ctx.Err(), conflict)
		case <-time.After(b.NextBackOff()):
		}
	}
	return client.AppendResult{}, fmt.Errorf("snapshot: update %q: other writers changed it under each of %d attempts: %w",
		stream, MaxUpdateAttempts, conflict)
}

// checkStream refuses to append to stream with l unless l was loaded from it. A Loaded that
// names no stream (the zero value, or one built by hand) is accepted only when it does not
// exist: its NoStream expectation holds on no stream that has events, so it bases no decision
// on another stream's state, and appending the first events of a new aggregate with a zero
// Loaded keeps working. One that exists but names no stream is refused: its version cannot be
// told to be stream's, which is the check Append promises (set Stream to the stream it was
// folded from).
func (l Loaded[S]) checkStream(stream string) error {
	switch {
	case l.Stream == stream, l.Stream == "" && !l.Exists:
		return nil
	case l.Stream == "":
		return &client.InvalidArgumentError{Field: "Loaded.Stream", Limit: "the stream appended to",
			Reason: fmt.Sprintf("the state at version %d names no stream (not made by Load); it cannot be told to be %q's", l.Version, stream)}
	}
	return &client.InvalidArgumentError{Field: "Loaded.Stream", Limit: "the stream appended to",
		Reason: fmt.Sprintf("the state was loaded from stream %q, not %q", l.Stream, stream)}
}

package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/shoaldb/shoal/client"
)

// Codec encodes an aggregate state S for snapshots. Name is written into
// every record: change it whenever the encoding or S changes incompatibly,
// and old snapshots are ignored (ErrCodecMismatch) instead of mis-decoded.
type Codec[S any] struct {
	Name   string // at most MaxCodecNameLen bytes, e.g. "order/json/v2"
	Encode func(S) ([]byte, error)
	Decode func([]byte) (S, error)
}

// JSONCodec returns a Codec using encoding/json under name. encoding/json
// round-trips what it encodes only for exported fields, and for strings only
// when they are valid UTF-8: it writes U+FFFD for invalid bytes, so a state
// loaded from such a snapshot would differ from one replayed from the events.
// Keep binary data in []byte fields (base64 in JSON), or write a Codec of
// your own.
func JSONCodec[S any](name string) Codec[S] {
	return Codec[S]{
		Name:   name,
		Encode: func(s S) ([]byte, error) { return json.Marshal(s) },
		Decode: func(b []byte) (S, error) {
			var s S
			err := json.Unmarshal(b, &s)
			return s, err
		},
	}
}

func (c Codec[S]) validate() error {
	o := Options{Codec: c.Name}
	if c.Name == "" {
		return &ConfigError{Field: "Codec.Name", Reason: "must not be empty"}
	}
	if err := o.Validate(); err != nil {
		return err
	}
	if c.Encode == nil || c.Decode == nil {
		return &ConfigError{Field: "Codec", Reason: "needs Encode and Decode"}
	}
	return nil
}

// ApplyFunc folds one event into the state. It must be deterministic and
// must not mutate a state it may share with a snapshot still in use (return
// a new value or own the old one).
type ApplyFunc[S any] func(S, client.RecordedEvent) (S, error)

// Loaded is the result of Load.
type Loaded[S any] struct {
	// Stream is the stream State was folded from (Load sets it). Repository.Append refuses
	// a Loaded of another stream: its Version says nothing about the stream appended to.
	Stream  string
	State   S
	Exists  bool   // the stream has at least one event
	Version uint64 // version of the last event folded into State; valid when Exists

	FromSnapshot    bool   // State started from a snapshot
	SnapshotVersion uint64 // its version; valid when FromSnapshot
	Replayed        int    // events applied on top (all of them without a snapshot)
	// SnapshotErr is the reason a present snapshot was not used (corrupt,
	// codec mismatch, undecodable, or taken before a soft delete of the
	// stream: ErrDeletedHistory); Load then replayed the whole stream.
	SnapshotErr error

	// rejected is 1 + the companion stream's version of the newest snapshot's record when Load
	// did not use it (0: none): a Repository's save after the load supersedes it (Store.save).
	rejected uint64
}

// Expected returns the expected version for appending after this state:
// Exact(Version) when the stream exists, NoStream otherwise.
func (l Loaded[S]) Expected() client.ExpectedVersion {
	if l.Exists {
		return client.Exact(l.Version)
	}
	return client.NoStream
}

// Load rebuilds stream's state: it starts from the latest snapshot (if one
// is present and trusted) and applies the events after it, or replays the
// whole stream from initial. A snapshot that is corrupt, of another codec or
// undecodable, or at a version the stream never reached, is reported in
// Loaded.SnapshotErr and replaced by a full replay; only read and apply
// errors fail Load, and a stream deleted and written again under every one
// of maxLoadAttempts loads (its versions skip: ErrVersionGap).
//
// initial is the empty state. The first replay starts from initial itself (not a copy), so
// it must not be shared mutable data. A state an ApplyFunc folded events into, even in place
// (a map it owns), is never used again: a load that starts over (ErrVersionGap), or that
// finds the stream deleted while it read it, starts from codec.Decode(codec.Encode(initial))
// with the encoding taken before the first event was applied (if the codec cannot encode
// initial, such a load fails instead).
func Load[S any](ctx context.Context, store *Store, stream string, initial S, apply ApplyFunc[S], codec Codec[S]) (Loaded[S], error) {
	if err := codec.validate(); err != nil {
		return Loaded[S]{}, err
	}
	return load(ctx, store, stream, initialCopies(initial, codec), apply, codec)
}

// initialFunc returns a fresh initial state on every call: one no ApplyFunc has seen.
type initialFunc[S any] func() (S, error)

// initialCopies returns the initialFunc of a Load given initial: initial itself on the first
// call, then decodings of initial's encoding, taken now, before an ApplyFunc could change it.
// An encoding error fails only a call that needs a copy.
func initialCopies[S any](initial S, codec Codec[S]) initialFunc[S] {
	enc, encErr := codec.Encode(initial)
	used := false
	return func() (S, error) {
		if !used {
			used = true
			return initial, nil
		}
		var s S
		if encErr != nil {
			return s, fmt.Errorf("snapshot: copy the initial state: encode with %q: %w", codec.Name, encErr)
		}
		s, err := codec.Decode(enc)
		if err != nil {
			return s, fmt.Errorf("snapshot: copy the initial state: decode with %q: %w", codec.Name, err)
		}
		return s, nil
	}
}

// load is Load with a fresh initial state per start (codec already validated).
func load[S any](ctx context.Context, store *Store, stream string, initial initialFunc[S], apply ApplyFunc[S], codec Codec[S]) (Loaded[S], error) {
	// A read that resumed after a failover may find the stream deleted and written again
	// since its first page (versions jump): the load starts over, a few times at most.
	// So does one that found the events after its snapshot truncated: another process saved a
	// newer snapshot and truncated the history before it (TruncateHistory) between this load's
	// read of the newest snapshot and its read of the stream.
	for attempt := 1; ; attempt++ {
		l, err := loadOnce(ctx, store, stream, initial, apply, codec)
		if err == nil {
			l.Stream = stream
		}
		if attempt == maxLoadAttempts || !errors.Is(err, ErrVersionGap) && !newerSnapshot(ctx, store, stream, codec.Name, err) {
			return l, err
		}
		store.opts.Logger.Warn("snapshot: the stream changed under the load; loading again", "stream", stream, "err", err)
	}
}

// newerSnapshot reports whether err says that stream's history was truncated past the version
// a load read from, and stream's newest snapshot now starts at or after the stream's start.
func newerSnapshot(ctx context.Context, store *Store, stream, codec string, err error) bool {
	var hte *client.HistoryTruncatedError
	if !errors.As(err, &hte) {
		return false
	}
	snap, ok, lerr := store.latest(ctx, stream, codec)
	return lerr == nil && ok && snap.Version >= hte.Start
}

// maxLoadAttempts bounds how often Load starts over (ErrVersionGap, or a newer snapshot after
// a truncation).
const maxLoadAttempts = 3

// loadOnce is one try of Load. Every start from scratch takes a fresh initial state.
func loadOnce[S any](ctx context.Context, store *Store, stream string, initial initialFunc[S], apply ApplyFunc[S], codec Codec[S]) (Loaded[S], error) {
	var l Loaded[S]
	snap, ok, err := store.latest(ctx, stream, codec.Name)
	switch {
	case err != nil && (errors.Is(err, ErrCorrupt) || errors.Is(err, ErrCodecMismatch)):
		l.SnapshotErr = err
	case err != nil:
		return Loaded[S]{}, err
	case ok:
		st, derr := codec.Decode(snap.State)
		if derr != nil {
			l.SnapshotErr = store.undecodable(stream, codec.Name, snap, derr)
			break
		}
		l.State, l.FromSnapshot, l.SnapshotVersion = st, true, snap.Version
		l.Exists, l.Version = true, snap.Version
	}
	// restart starts l over from a fresh initial state, with snapErr as its SnapshotErr.
	restart := func(snapErr error) error {
		st, err := initial()
		if err != nil {
			return fmt.Errorf("snapshot: load %q: %w", stream, err)
		}
		l = Loaded[S]{State: st, SnapshotErr: snapErr}
		return nil
	}
	// record is the companion version of the newest snapshot's record, which the save after
	// a load that did not use it supersedes (Loaded.rejected); none for one of another codec,
	// which another process may be using (a deploy that changes the codec, part-way): its
	// record has an ID of its own, and a save older than it stays unwritten (Store.save).
	var record uint64
	supersede := true
	if ce := (*CorruptError)(nil); errors.As(err, &ce) {
		record, supersede = ce.Version, !errors.Is(err, ErrCodecMismatch)
	} else if ok {
		record = snap.record
	}
	// without drops the snapshot for the reason err: the load starts over.
	without := func(err error) error {
		store.opts.Logger.Warn("snapshot: replaying without snapshot", "stream", stream, "err", err)
		if err := restart(err); err != nil {
			return err
		}
		if supersede {
			l.rejected = record + 1
		}
		return nil
	}
	var serr error
	switch {
	case l.SnapshotErr != nil:
		serr = without(l.SnapshotErr)
	case !l.FromSnapshot:
		serr = restart(nil)
	}
	if serr != nil {
		return Loaded[S]{}, serr
	}
	// With a snapshot, the read starts at the snapshot's own version. That event is still
	// visible unless the stream was soft-deleted since (a delete hides every version up to
	// the stream's last, and versions are never reused); the read then starts at the first
	// version written after the delete, and the snapshot folds deleted history. A stream that
	// ends before the snapshot's version never had the state it claims (a snapshot saved at a
	// wrong version): it is not used either.
	from := uint64(0)
	if l.FromSnapshot {
		from = l.SnapshotVersion
	}
	checkSnapshot := l.FromSnapshot
	for {
		for ev, err := range readFrom(ctx, store.c, stream, from) {
			if errors.Is(err, client.ErrStreamNotFound) {
				// Absent, or deleted after the snapshot or while read: the stream has no
				// state, and what was folded so far is none of it.
				if l.FromSnapshot || l.Replayed > 0 { // l.State is not a fresh initial state
					if err := restart(l.SnapshotErr); err != nil {
						return Loaded[S]{}, err
					}
				}
				return l, nil
			}
			if errors.Is(err, client.ErrStreamChanged) {
				// A read resumed after a failure found the stream deleted since the events
				// folded: they are no longer its history.
				return Loaded[S]{}, fmt.Errorf("%w: %w", ErrVersionGap, err)
			}
			if err != nil {
				if l.SnapshotErr != nil && errors.Is(err, client.ErrHistoryTruncated) {
					// The replay that replaced the snapshot cannot be done: say why there was
					// one (a change of codec, mostly), not only that the history is gone.
					hint := ""
					if errors.Is(l.SnapshotErr, ErrCodecMismatch) {
						hint = "; to change a truncated aggregate's codec, load it with the old one and SaveState in the new one"
					}
					// %v: the load failed; ErrCorrupt and the like say a replay stands in for it.
					return Loaded[S]{}, fmt.Errorf("snapshot: load %q from version %d, without its newest snapshot (%v%s): %w",
						stream, from, l.SnapshotErr, hint, err)
				}
				return Loaded[S]{}, fmt.Errorf("snapshot: load %q from version %d: %w", stream, from, err)
			}
			if checkSnapshot {
				checkSnapshot = false
				if ev.Version == l.SnapshotVersion {
					continue // in the snapshot
				}
				if err := without(fmt.Errorf("%w: %q restarts at version %d, after the snapshot's version %d",
					ErrDeletedHistory, stream, ev.Version, l.SnapshotVersion)); err != nil {
					return Loaded[S]{}, err
				}
			}
			if l.Exists && ev.Version != l.Version+1 {
				return Loaded[S]{}, fmt.Errorf("%w: %q read version %d after %d", ErrVersionGap, stream, ev.Version, l.Version)
			}
			if l.State, err = apply(l.State, ev); err != nil {
				return Loaded[S]{}, fmt.Errorf("snapshot: load %q: apply version %d: %w", stream, ev.Version, err)
			}
			l.Exists, l.Version = true, ev.Version
			l.Replayed++
		}
		if !checkSnapshot {
			break
		}
		// Nothing at or after the snapshot's version: the stream ends before it.
		if err := without(store.endsBefore(stream, snap)); err != nil {
			return Loaded[S]{}, err
		}
		from, checkSnapshot = 0, false
	}
	store.metrics.replayed.Add(float64(l.Replayed))
	return l, nil
}

// SaveState encodes state with codec and saves it as stream's snapshot at
// version.
func SaveState[S any](ctx context.Context, store *Store, stream string, version uint64, state S, codec Codec[S]) error {
	return saveState(ctx, store, stream, version, state, codec, 0)
}

// saveState is SaveState superseding the snapshot whose record is at companion version
// rejected-1, which a load did not use (0: none; Store.save).
func saveState[S any](ctx context.Context, store *Store, stream string, version uint64, state S, codec Codec[S], rejected uint64) error {
	if err := codec.validate(); err != nil {
		return err
	}
	b, err := codec.Encode(state)
	if err != nil {
		return fmt.Errorf("snapshot: encode %q@%d with %q: %w", stream, version, codec.Name, err)
	}
	return store.save(ctx, stream, version, codec.Name, b, rejected)
}

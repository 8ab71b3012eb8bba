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

// JSONCodec returns a Codec using encoding/json under name.
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
// of maxLoadAttempts loads (its versions skip).
//
// initial is the empty state; it is used (not copied) when there is no
// snapshot, so it must not be shared mutable data.
func Load[S any](ctx context.Context, store *Store, stream string, initial S, apply ApplyFunc[S], codec Codec[S]) (Loaded[S], error) {
	if err := codec.validate(); err != nil {
		return Loaded[S]{}, err
	}
	// A read that resumed after a failover may find the stream deleted and written again
	// since its first page (versions jump): the load starts over, a few times at most.
	for attempt := 1; ; attempt++ {
		l, err := loadOnce(ctx, store, stream, initial, apply, codec)
		if !errors.Is(err, errVersionGap) || attempt == maxLoadAttempts {
			return l, err
		}
		store.opts.Logger.Warn("snapshot: the stream changed under the load; loading again", "stream", stream, "err", err)
	}
}

// maxLoadAttempts bounds how often Load starts over (errVersionGap).
const maxLoadAttempts = 3

// errVersionGap: the events read skip a version, so the stream was deleted and written again
// while it was read.
var errVersionGap = errors.New("snapshot: the stream's versions skip (deleted and written again while read)")

// loadOnce is one try of Load.
func loadOnce[S any](ctx context.Context, store *Store, stream string, initial S, apply ApplyFunc[S], codec Codec[S]) (Loaded[S], error) {
	l := Loaded[S]{State: initial}
	snap, ok, err := store.latest(ctx, stream, codec.Name)
	switch {
	case err != nil && (errors.Is(err, ErrCorrupt) || errors.Is(err, ErrCodecMismatch)):
		l.SnapshotErr = err
	case err != nil:
		return Loaded[S]{}, err
	case ok:
		st, derr := codec.Decode(snap.State)
		if derr != nil {
			l.SnapshotErr = &CorruptError{Stream: stream, Companion: store.Companion(stream),
				Reason: fmt.Sprintf("codec %q cannot decode version %d: %v", codec.Name, snap.Version, derr)}
			break
		}
		l.State, l.FromSnapshot, l.SnapshotVersion = st, true, snap.Version
		l.Exists, l.Version = true, snap.Version
	}
	// without drops the snapshot for the reason err: the load starts over from initial.
	without := func(err error) Loaded[S] {
		store.opts.Logger.Warn("snapshot: replaying without snapshot", "stream", stream, "err", err)
		return Loaded[S]{State: initial, SnapshotErr: err}
	}
	if l.SnapshotErr != nil {
		l = without(l.SnapshotErr)
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
				// Absent, or deleted after the snapshot: the snapshot is stale.
				return Loaded[S]{State: initial, SnapshotErr: l.SnapshotErr}, nil
			}
			if err != nil {
				return Loaded[S]{}, fmt.Errorf("snapshot: load %q from version %d: %w", stream, from, err)
			}
			if checkSnapshot {
				checkSnapshot = false
				if ev.Version == l.SnapshotVersion {
					continue // in the snapshot
				}
				l = without(fmt.Errorf("%w: %q restarts at version %d, after the snapshot's version %d",
					ErrDeletedHistory, stream, ev.Version, l.SnapshotVersion))
			}
			if l.Exists && ev.Version != l.Version+1 {
				return Loaded[S]{}, fmt.Errorf("%w: %q read version %d after %d", errVersionGap, stream, ev.Version, l.Version)
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
		l = without(&CorruptError{Stream: stream, Companion: store.Companion(stream),
			Reason: fmt.Sprintf("snapshot at version %d, but the stream ends before it", l.SnapshotVersion)})
		from, checkSnapshot = 0, false
	}
	store.metrics.replayed.Add(float64(l.Replayed))
	return l, nil
}

// SaveState encodes state with codec and saves it as stream's snapshot at
// version.
func SaveState[S any](ctx context.Context, store *Store, stream string, version uint64, state S, codec Codec[S]) error {
	if err := codec.validate(); err != nil {
		return err
	}
	b, err := codec.Encode(state)
	if err != nil {
		return fmt.Errorf("snapshot: encode %q@%d with %q: %w", stream, version, codec.Name, err)
	}
	return store.save(ctx, stream, version, codec.Name, b)
}

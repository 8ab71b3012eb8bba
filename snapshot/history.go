package snapshot

import (
	"context"
	"errors"
	"fmt"

	"github.com/shoaldb/shoal/client"
)

// TruncateHistory removes stream's events before the version of its newest
// snapshot in r's codec: the events a Load no longer replays. It returns the
// stream's first version after it, and truncated false, removing nothing,
// when there is no snapshot to load from: none saved, or the newest one
// corrupt (its codec cannot decode it, or the stream never reached its
// version: a *CorruptError) or of another codec (a Load then replays the
// stream from version 0, so every event is still needed; the error is
// returned in those cases).
//
// The snapshot's own version stays: a Load reads from it to tell that the
// stream was not deleted since. From then on that snapshot (or a newer one)
// is the only start a Load has: after a change of codec, or with the snapshot
// lost, Load fails with client.ErrHistoryTruncated (to change the codec of a
// truncated aggregate, load it with the old codec and save its state in the
// new one with SaveState first). A stream must never be
// truncated past its newest snapshot by other means: Load then fails the
// same way (from the shard's format 5 on; before, it could not tell that from
// a delete and a new life, and folded the events left into the initial state;
// docs/guarantees.md, "Truncation"). A concurrent save of a newer snapshot
// is harmless: the truncation removes only what the older one covers; one of
// an older snapshot writes nothing (Store.Save).
// client.Truncate's errors apply (client.ErrShardFormat on a cluster not yet
// upgraded).
//
// The events removed are gone for every reader, not only for Load: a read model
// built from the shard logs (a query.Projection, a client.ReadAll consumer)
// that has not read them yet never will, and is told nothing. Give ReadBy the
// progress of each such reader to truncate only what they all have read.
func (r *Repository[S]) TruncateHistory(ctx context.Context, stream string, opts ...TruncateOption) (start uint64, truncated bool, err error) {
	var o truncateOptions
	for _, opt := range opts {
		opt(&o)
	}
	store := r.cfg.Store
	snap, ok, err := store.latest(ctx, stream, r.cfg.Codec.Name)
	if err != nil || !ok {
		return 0, false, err
	}
	// A Load does not start from a snapshot its codec cannot decode, or from one at a version
	// the stream never reached, either: it replays such a stream from version 0, which after
	// a truncation would fold only the events left into the initial state.
	if _, err := r.cfg.Codec.Decode(snap.State); err != nil {
		return 0, false, store.undecodable(stream, r.cfg.Codec.Name, snap, err)
	}
	kept, err := reached(ctx, store, stream, snap)
	if err != nil {
		return 0, false, err
	}
	if len(o.readBy) > 0 && snap.Version > 0 { // a snapshot at version 0 leaves nothing to remove
		// The stream's events take rising positions in its shard's log, so every event the
		// truncation removes lies below the first one it keeps.
		if kept == nil {
			return 0, false, fmt.Errorf("snapshot: truncate %q with ReadBy: the stream is deleted or absent, so the "+
				"positions of the events a truncation would remove cannot be read (truncate it without ReadBy "+
				"once its readers are past its delete); not truncated: %w", stream, client.ErrStreamNotFound)
		}
		if kept.Position > 0 {
			for i, read := range o.readBy {
				if !read(kept.Shard, kept.Position-1) {
					return 0, false, fmt.Errorf("%w: %q: the reader of ReadBy option %d has not read shard %d up to "+
						"position %d (the events before version %d, which the truncation keeps); not truncated",
						ErrUnread, stream, i, kept.Shard, kept.Position-1, kept.Version)
				}
			}
		}
	}
	start, err = store.c.Truncate(ctx, stream, snap.Version, client.Any)
	if err != nil {
		return 0, false, fmt.Errorf("snapshot: truncate %q before its snapshot's version %d: %w", stream, snap.Version, err)
	}
	return start, true, nil
}

// reached returns a *CorruptError when live stream ends before snap's version (a snapshot saved
// at a version it never reached), as Load finds it. A stream that holds an event at or after
// that version (its own, or a later one's when it was deleted and written again since) passes,
// and reached returns that event; so does one that is deleted or absent, with no event: a
// truncation before the version then removes nothing a load replays (or the truncate answers
// for the stream).
func reached(ctx context.Context, store *Store, stream string, snap Snapshot) (*client.RecordedEvent, error) {
	version := snap.Version
	for ev, err := range readFrom(ctx, store.c, stream, version) { // the first answer says it
		if errors.Is(err, client.ErrStreamNotFound) || errors.Is(err, client.ErrStreamDeleted) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("snapshot: truncate %q: read from its snapshot's version %d: %w", stream, version, err)
		}
		return &ev, nil
	}
	return nil, store.endsBefore(stream, snap)
}

// TruncateOption changes what Repository.TruncateHistory does.
type TruncateOption func(*truncateOptions)

type truncateOptions struct {
	readBy []func(shard uint32, position uint64) bool
}

// ReadBy makes TruncateHistory remove nothing, and return ErrUnread, unless read reports that a
// reader of the shard logs has read every event the truncation would remove: read(shard,
// position) reports whether the reader has read the shard's log up to and including position,
// and is asked for the position just below the stream's first event the truncation keeps (the
// snapshot's own), above which lies none of the events removed. For a projection in this
// process, pass its checkpoint, read as the truncation runs:
//
//	repo.TruncateHistory(ctx, stream, snapshot.ReadBy(func(shard uint32, pos uint64) bool {
//		return proj.Checkpoint().Covers(shard, pos)
//	}))
//
// Give one ReadBy for each read model; all must agree. A deleted or absent stream is not
// truncated with ReadBy (client.ErrStreamNotFound, not ErrUnread: waiting does not help): its
// events' positions cannot be read.
func ReadBy(read func(shard uint32, position uint64) bool) TruncateOption {
	return func(o *truncateOptions) { o.readBy = append(o.readBy, read) }
}

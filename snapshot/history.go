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
func (r *Repository[S]) TruncateHistory(ctx context.Context, stream string) (start uint64, truncated bool, err error) {
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
	if err := reached(ctx, store, stream, snap); err != nil {
		return 0, false, err
	}
	start, err = store.c.Truncate(ctx, stream, snap.Version, client.Any)
	if err != nil {
		return 0, false, fmt.Errorf("snapshot: truncate %q before its snapshot's version %d: %w", stream, snap.Version, err)
	}
	return start, true, nil
}

// reached returns a *CorruptError when live stream ends before snap's version (a snapshot saved
// at a version it never reached), as Load finds it. A stream that holds an event at or after
// that version (its own, or a later one's when it was deleted and written again since), or that
// is deleted or absent, passes: a truncation before the version then removes nothing a load
// replays (or the truncate answers for the stream).
func reached(ctx context.Context, store *Store, stream string, snap Snapshot) error {
	version := snap.Version
	for _, err := range readFrom(ctx, store.c, stream, version) { // the first answer says it
		if errors.Is(err, client.ErrStreamNotFound) || errors.Is(err, client.ErrStreamDeleted) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("snapshot: truncate %q: read from its snapshot's version %d: %w", stream, version, err)
		}
		return nil
	}
	return store.endsBefore(stream, snap)
}

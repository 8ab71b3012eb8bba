package snapshot

import (
	"context"
	"fmt"

	"github.com/shoaldb/shoal/client"
)

// TruncateHistory removes stream's events before the version of its newest
// snapshot in r's codec: the events a Load no longer replays. It returns the
// stream's first version after it, and truncated false, removing nothing,
// when there is no snapshot to load from: none saved, or the newest one
// corrupt or of another codec (a Load then replays the stream from version 0,
// so every event is still needed; the error is returned in those two cases).
//
// The snapshot's own version stays: a Load reads from it to tell that the
// stream was not deleted since. A stream must never be truncated past its
// newest snapshot by other means: a Load could not tell that from a delete
// and a new life, and would fold the events left into the initial state
// (docs/guarantees.md, "Truncation"). A concurrent save of a newer snapshot
// is harmless: the truncation removes only what the older one covers.
// client.Truncate's errors apply (client.ErrShardFormat on a cluster not yet
// upgraded).
func (r *Repository[S]) TruncateHistory(ctx context.Context, stream string) (start uint64, truncated bool, err error) {
	snap, ok, err := r.cfg.Store.latest(ctx, stream, r.cfg.Codec.Name)
	if err != nil || !ok {
		return 0, false, err
	}
	start, err = r.cfg.Store.c.Truncate(ctx, stream, snap.Version, client.Any)
	if err != nil {
		return 0, false, fmt.Errorf("snapshot: truncate %q before its snapshot's version %d: %w", stream, snap.Version, err)
	}
	return start, true, nil
}

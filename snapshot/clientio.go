package snapshot

import (
	"context"
	"errors"
	"iter"

	"github.com/shoaldb/shoal/client"
)

// readLast returns stream's last event; found is false when the stream does
// not exist, is empty, or was deleted (soft or tombstoned: either way it
// holds no usable snapshot).
func readLast(ctx context.Context, c *client.Client, stream string) (ev client.RecordedEvent, found bool, err error) {
	for e, err := range c.Read(ctx, stream, client.FromEnd(), client.Backward(), client.Count(1), client.Linearizable()) {
		if errors.Is(err, client.ErrStreamNotFound) || errors.Is(err, client.ErrStreamDeleted) {
			return ev, false, nil
		}
		if err != nil {
			return ev, false, err
		}
		return e, true, nil
	}
	return ev, false, nil
}

// readFrom iterates stream's events from version from onwards. A missing
// stream yields client.ErrStreamNotFound; one whose history a truncation removed at or after
// from (from the shard's format 5 on) yields client.ErrHistoryTruncated, rather than its
// first event left, which a load would take for a version after a soft delete and fold into
// the initial state.
//
// Both reads are linearizable whatever the client's default (WithStaleReads): a follower that
// has not applied a soft delete would show the snapshot's version still there, and a state
// loaded on deleted history would pass for current.
func readFrom(ctx context.Context, c *client.Client, stream string, from uint64) iter.Seq2[client.RecordedEvent, error] {
	return c.Read(ctx, stream, client.FromVersion(from), client.Linearizable(), client.WholeHistory())
}

package query

import (
	"context"
	"time"

	"github.com/shoaldb/shoal/client"
)

// clientSource reads through the public Go client.
type clientSource struct{ c *client.Client }

func (s clientSource) Shards(ctx context.Context) (uint32, string, error) {
	t, err := s.c.Topology(ctx)
	if err != nil {
		return 0, "", err
	}
	return t.GetSettings().GetShards(), t.GetSettings().GetClusterId(), nil
}

// ReadShard collects one page, deletes included (the projection skips them
// unless its Config asks for them). The client's iterator does not expose
// the server's next position, so the page resumes just past its last entry
// (positions are strictly increasing within a shard): a delete at the end of
// a page is read, so the checkpoint passes it.
func (s clientSource) ReadShard(ctx context.Context, shard uint32, from uint64, count int, wait time.Duration) ([]client.RecordedEvent, uint64, error) {
	var evs []client.RecordedEvent
	next := from
	opts := []client.ReadOption{client.IncludeDeletes()}
	if wait > 0 {
		opts = append(opts, client.Wait(wait))
	}
	for ev, err := range s.c.ReadShard(ctx, shard, from, uint64(count), opts...) {
		if err != nil {
			if len(evs) > 0 {
				break // commit what arrived; the error recurs on the next read
			}
			return nil, from, err
		}
		evs = append(evs, ev)
		next = max(next, ev.Position+1)
	}
	return evs, next, nil
}

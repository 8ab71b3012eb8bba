package query

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/shoaldb/shoal/client"
)

// clientSource reads through the public Go client, with the projection's filters applied by
// the server (Config.StreamPrefix, EventTypes, Deletes).
type clientSource struct {
	c    *client.Client
	opts []client.ReadOption
}

func newClientSource(cfg Config) clientSource {
	var opts []client.ReadOption
	if cfg.Deletes {
		opts = append(opts, client.IncludeDeletes())
	}
	if cfg.StreamPrefix != "" {
		opts = append(opts, client.StreamPrefix(cfg.StreamPrefix))
	}
	if len(cfg.EventTypes) > 0 {
		opts = append(opts, client.EventTypes(cfg.EventTypes...))
	}
	return clientSource{c: cfg.Client, opts: opts}
}

func (s clientSource) Shards(ctx context.Context) (uint32, string, error) {
	t, err := s.c.Topology(ctx)
	if err != nil {
		return 0, "", err
	}
	return t.GetSettings().GetShards(), t.GetSettings().GetClusterId(), nil
}

// ReadShard collects one page of the entries the projection wants. The page resumes where the
// server said (client.ResumeAt): past what it returned and past what the filters skipped, so
// the checkpoint moves on while nothing matches.
func (s clientSource) ReadShard(ctx context.Context, shard uint32, from uint64, count int, wait time.Duration, arrived func()) ([]client.RecordedEvent, uint64, error) {
	var evs []client.RecordedEvent
	var next atomic.Uint64
	opts := append(slices.Clip(s.opts), client.ResumeAt(&next))
	if wait > 0 {
		opts = append(opts, client.Wait(wait))
	}
	size := 0
	for ev, err := range s.c.ReadShard(ctx, shard, from, uint64(count), opts...) {
		if err != nil {
			if len(evs) > 0 && ctx.Err() == nil {
				break // commit what arrived; the error recurs on the next read
			}
			return nil, from, err // nothing, or the run ended: no page to hand on
		}
		if len(evs) == 0 {
			arrived()
		}
		evs = append(evs, ev)
		// Bounded in bytes as well as in events (PageSize of events of up to 4 MiB each
		// would be gigabytes): ResumeAt is past ev, the next page starts after it.
		if size += eventBytes(&ev); size >= MaxPageBytes {
			break
		}
	}
	return evs, next.Load(), nil
}

// eventBytes is what ev counts towards MaxPageBytes: its data, metadata and names.
func eventBytes(ev *client.RecordedEvent) int {
	return len(ev.Data) + len(ev.Metadata) + len(ev.Stream) + len(ev.Type) + len(ev.ContentType)
}

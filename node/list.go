package node

import (
	"context"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/shard"
)

// ListStreams serves a listing of one shard's streams, routed as ReadShard is: to the shard's
// leader, or to any replica of a stale read.
func (s *streamsServer) ListStreams(req *shoalv1.ListStreamsRequest, stream grpc.ServerStreamingServer[shoalv1.ListStreamsResponse]) error {
	st, err := s.n.checkShardRead(req.Shard, req.AllowStale, req.MaxStalenessMs)
	if err == nil {
		err = shard.CheckListBounds(req.Prefix, req.After)
	}
	var release func()
	if err == nil {
		release, err = s.n.holdRead("list")
	}
	if err != nil {
		err = s.n.toStatus(err, "", req.Shard)
	} else {
		err = s.n.listStreams(req, st, stream)
		release()
	}
	if incomingHops(stream.Context()) == 0 {
		s.n.metrics.reads.WithLabelValues("list", resultLabel(err)).Inc()
	}
	return err
}

// listStreams serves a ListStreams request that passed its checks, of staleness st, in pages of
// at most pageEvents streams, each read from a view of its own: a caller slow to take a page
// holds no view of the DB meanwhile.
func (n *Node) listStreams(req *shoalv1.ListStreamsRequest, st staleness, out grpc.ServerStreamingServer[shoalv1.ListStreamsResponse]) error {
	ctx := out.Context()
	sm, err := forwardRead(n, ctx, req.Shard, st, 0, out, func(ctx context.Context, conn *grpc.ClientConn) (grpc.ServerStreamingClient[shoalv1.ListStreamsResponse], error) {
		return shoalv1.NewStreamsClient(conn).ListStreams(ctx, req)
	})
	if sm == nil {
		return n.toStatus(err, "", req.Shard)
	}
	after, left := req.After, req.Count
	for {
		want := uint64(pageEvents)
		if req.Count > 0 {
			want = min(want, left)
		}
		page := &shoalv1.ListStreamsResponse{}
		resume, err := sm.ListStreams(req.Prefix, after, req.IncludeDeleted, want, func(m *shard.StreamSummary) error {
			page.Streams = append(page.Streams, toProtoSummary(m, req.Shard))
			return nil
		})
		if err != nil {
			return n.toStatus(err, "", req.Shard)
		}
		if len(page.Streams) > 0 {
			if err := out.Send(page); err != nil {
				return err
			}
			if req.Count > 0 {
				if left -= uint64(len(page.Streams)); left == 0 {
					return nil
				}
			}
			after = page.Streams[len(page.Streams)-1].Name
		}
		switch {
		case resume != "":
			// The page stopped early over a run of deleted streams: on after them, from a view
			// of its own.
			after = resume
			if err := ctx.Err(); err != nil {
				return err
			}
		case uint64(len(page.Streams)) < want:
			// No more, or the replica was dropped under the listing (its keys deleted).
			if _, err := n.stillServes(req.Shard, sm); err != nil {
				return n.toStatus(err, "", req.Shard)
			}
			return nil
		}
	}
}

func toProtoSummary(m *shard.StreamSummary, id uint32) *shoalv1.StreamSummary {
	return &shoalv1.StreamSummary{Name: m.Name, Shard: id, State: shoalv1.StreamState(m.State), LastVersion: m.Last,
		FirstVersion: m.First, Truncated: m.Truncated, LastPosition: m.LastPosition, LastCreatedUnixNano: m.LastCreated,
		HiddenEvents: m.Hidden}
}

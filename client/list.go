package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"sync"
	"time"
	"unicode/utf8"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/ring"
)

// StreamState is a stream's state in a StreamInfo.
type StreamState uint8

const (
	StreamLive       StreamState = 0 // readable; it has at least one event
	StreamDeleted    StreamState = 1 // soft-deleted: reads say ErrStreamNotFound until the next append
	StreamTombstoned StreamState = 2 // deleted for good: ErrStreamDeleted
)

func (s StreamState) String() string {
	switch s {
	case StreamLive:
		return "live"
	case StreamDeleted:
		return "deleted"
	case StreamTombstoned:
		return "tombstoned"
	}
	return fmt.Sprintf("StreamState(%d)", uint8(s))
}

// StreamInfo is a stream's state, as ListStreams and StreamInfo report it.
type StreamInfo struct {
	Name  string
	Shard uint32
	State StreamState
	// LastVersion is the version of the stream's last event, the one an append expecting
	// Exact names; for a deleted stream, the last version at the delete.
	LastVersion uint64
	// FirstVersion is the first version a read returns: after a soft delete, the first
	// version after it; after a truncation, where it began. LastVersion+1 while deleted
	// (soft-deleted or tombstoned).
	FirstVersion uint64
	// Truncated: a truncation moved FirstVersion (truncations made before the shard reached
	// format 5 left no mark and do not set it). StoredFrom says which versions truncations
	// removed.
	Truncated bool
	// Live streams only: the shard position and commit time of the last event.
	LastPosition uint64
	LastCreated  time.Time
	// HiddenEvents counts the events the stream still holds that no read returns: those a
	// soft delete or a tombstone hid, before FirstVersion. They take space until a
	// truncation before FirstVersion removes them (Retain with Retention.Deleted does).
	HiddenEvents uint64
}

// StoredFrom is the first version the stream still holds, read or hidden by a delete: the
// versions before it were removed, by truncations or retention (0 when none was). Unlike
// Truncated it also counts a truncation that did not move FirstVersion (one of a deleted
// stream's hidden events, below its delete), and those of shards before format 5. It is
// LastVersion+1 for a deleted stream that holds no event any more. Servers from before
// HiddenEvents was reported (2026-12-04) report none, so that against them StoredFrom takes
// the events a delete hid for removed ones; during a rolling upgrade from such a version, read
// Truncated instead.
func (s StreamInfo) StoredFrom() uint64 {
	return s.FirstVersion - min(s.HiddenEvents, s.FirstVersion)
}

// Events is the number of events a read of the stream returns: 0 while it is deleted.
func (s StreamInfo) Events() uint64 {
	if s.State != StreamLive {
		return 0
	}
	return s.LastVersion - s.FirstVersion + 1
}

func streamInfoFromProto(p *shoalv1.StreamSummary) StreamInfo {
	s := StreamInfo{Name: p.GetName(), Shard: p.GetShard(), State: StreamState(p.GetState()), LastVersion: p.GetLastVersion(),
		FirstVersion: p.GetFirstVersion(), Truncated: p.GetTruncated(), LastPosition: p.GetLastPosition(),
		HiddenEvents: p.GetHiddenEvents()}
	if ns := p.GetLastCreatedUnixNano(); ns != 0 {
		s.LastCreated = time.Unix(0, ns)
	}
	return s
}

// listPage is the number of streams a listing asks each shard for at a time.
const listPage = 256

// maxListPrefix is the server's limit on a listing's prefix and after name.
const maxListPrefix = 512

// ListStreams returns the cluster's streams in name order (bytewise), after the name after
// ("" lists from the first): every shard's listing, merged. A listing that stopped resumes
// after the last name it returned. Of opts only StreamPrefix (streams whose names start with
// it), Count (at most that many streams), IncludeDeletes (soft-deleted and tombstoned streams
// too; else only live ones), Linearizable, Stale and MaxStaleness apply.
//
// Each shard is asked for a page of names at a time, the first pages at once. A listing is
// not a snapshot of the cluster: each page is read from its shard as it is then, so a stream
// created or deleted during the listing may or may not be in it. Every shard must answer: a
// shard without a leader fails the listing (ErrUnavailable) unless Stale lets a follower
// answer.
func (c *Client) ListStreams(ctx context.Context, after string, opts ...ReadOption) iter.Seq2[StreamInfo, error] {
	o := readOptions{stale: c.opts.staleReads}
	for _, opt := range opts {
		opt(&o)
	}
	return func(yield func(StreamInfo, error) bool) {
		maxStale, err := o.maxStalenessMS()
		if err == nil {
			err = checkListBounds(o.prefix, after)
		}
		var shards uint32
		if err == nil {
			shards, err = c.Shards(ctx)
		}
		if err != nil {
			yield(StreamInfo{}, err)
			return
		}
		page := uint64(listPage)
		if o.count > 0 {
			page = min(page, o.count)
		}
		cursors := make([]*listCursor, shards)
		for shard := range shards {
			cursors[shard] = &listCursor{req: &shoalv1.ListStreamsRequest{Shard: shard, Prefix: o.prefix, After: after,
				Count: page, IncludeDeleted: o.deletes, AllowStale: o.stale, MaxStalenessMs: maxStale}}
		}
		// The first page of every shard at once: a listing costs one round trip, not one
		// per shard, unless it goes on past them.
		var wg sync.WaitGroup
		for _, cur := range cursors {
			wg.Go(func() { cur.err = cur.fill(ctx, c) })
		}
		wg.Wait()
		for listed := uint64(0); o.count == 0 || listed < o.count; listed++ {
			var next *listCursor
			for _, cur := range cursors {
				if cur.err == nil && len(cur.buf) == 0 && !cur.done {
					cur.err = cur.fill(ctx, c)
				}
				if cur.err != nil {
					yield(StreamInfo{}, cur.err)
					return
				}
				if len(cur.buf) > 0 && (next == nil || cur.buf[0].Name < next.buf[0].Name) {
					next = cur
				}
			}
			if next == nil {
				return
			}
			s := next.buf[0]
			next.buf = next.buf[1:]
			if !yield(s, nil) {
				return
			}
		}
	}
}

// listCursor is one shard's part of a listing: the names it read and not yet merged, and where
// its next page starts (req.After).
type listCursor struct {
	req  *shoalv1.ListStreamsRequest
	buf  []StreamInfo
	done bool // the shard has no names after req.After
	err  error
}

// fill reads the shard's next page into buf.
func (cur *listCursor) fill(ctx context.Context, c *Client) error {
	page, err := c.listShard(ctx, cur.req)
	if err != nil {
		return err
	}
	cur.buf = page
	if uint64(len(page)) < cur.req.Count {
		cur.done = true
	}
	if len(page) > 0 {
		cur.req.After = page[len(page)-1].Name
	}
	return nil
}

// listShard reads one page of a shard's listing, retried as any read is (by any replica when
// req allows a stale one).
func (c *Client) listShard(ctx context.Context, req *shoalv1.ListStreamsRequest) ([]StreamInfo, error) {
	var page []StreamInfo
	err := c.run(ctx, target{kind: byShard, shard: req.Shard, stale: req.AllowStale, idempotent: true}, true, func(ctx context.Context, n *node, w *leaderWatch) (bool, error) {
		page = page[:0]
		rs, err := n.streams.ListStreams(ctx, req)
		if err != nil {
			return false, err
		}
		for {
			resp, err := rs.Recv()
			if errors.Is(err, io.EOF) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			for _, s := range resp.GetStreams() {
				page = append(page, streamInfoFromProto(s))
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return page, nil
}

// StreamInfo returns a stream's state, read from its shard as a read of the stream would be. A
// deleted stream's state says it is deleted. A stream never written fails with
// ErrStreamNotFound. Of opts only Linearizable, Stale and MaxStaleness apply.
func (c *Client) StreamInfo(ctx context.Context, stream string, opts ...ReadOption) (StreamInfo, error) {
	o := readOptions{stale: c.opts.staleReads}
	for _, opt := range opts {
		opt(&o)
	}
	if err := checkStream(stream); err != nil {
		return StreamInfo{}, err
	}
	if len(stream) > maxListPrefix {
		return StreamInfo{}, &InvalidArgumentError{Field: "stream", Limit: "1..512 bytes", Reason: fmt.Sprintf("%d bytes given", len(stream))}
	}
	maxStale, err := o.maxStalenessMS()
	if err != nil {
		return StreamInfo{}, err
	}
	shards, err := c.Shards(ctx)
	if err != nil {
		return StreamInfo{}, err
	}
	// The first name with the stream's name as prefix is the stream's own, when it exists.
	req := &shoalv1.ListStreamsRequest{Shard: ring.ShardOf(stream, shards), Prefix: stream, Count: 1, IncludeDeleted: true,
		AllowStale: o.stale, MaxStalenessMs: maxStale}
	page, err := c.listShard(ctx, req)
	if err != nil {
		return StreamInfo{}, err
	}
	if len(page) == 0 || page[0].Name != stream {
		return StreamInfo{}, fmt.Errorf("%w: %q", ErrStreamNotFound, stream)
	}
	return page[0], nil
}

// checkListBounds refuses a listing's prefix or after name that the server would refuse.
func checkListBounds(prefix, after string) error {
	switch {
	case len(prefix) > maxListPrefix:
		return &InvalidArgumentError{Field: "StreamPrefix", Limit: fmt.Sprintf("at most %d bytes", maxListPrefix),
			Reason: fmt.Sprintf("%d bytes given", len(prefix))}
	case !utf8.ValidString(prefix):
		return notUTF8("StreamPrefix", "the prefix")
	case len(after) > maxListPrefix:
		return &InvalidArgumentError{Field: "after", Limit: fmt.Sprintf("at most %d bytes (a stream name)", maxListPrefix),
			Reason: fmt.Sprintf("%d bytes given", len(after))}
	case !utf8.ValidString(after):
		return notUTF8("after", "the name to list after")
	}
	return nil
}

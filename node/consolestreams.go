package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/ring"
	"github.com/shoaldb/shoal/shard"
)

// consoleStreamList shows a page of the cluster's streams in name order: every shard's
// listing, merged. A shard that does not answer leaves its streams out, and the page says so.
func (n *Node) consoleStreamList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	b := consoleStreamsBody{Prefix: q.Get("prefix"), After: q.Get("after"), Deleted: q.Get("deleted") == "1", Stale: q.Get("stale") == "1"}
	limit, err := limitParam(q)
	if err == nil {
		err = shard.CheckListBounds(b.Prefix, b.After)
	}
	if err != nil {
		n.consoleError(w, http.StatusBadRequest, "bad request", strings.TrimPrefix(err.Error(), "shard: invalid argument: "))
		return
	}
	b.Limit = limit
	s := n.consoleSettings(w)
	if s == nil {
		return
	}
	c, err := n.consoleStreams()
	if err != nil {
		n.consoleCallError(w, "streams", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), consoleTimeout)
	defer cancel()
	policies := make([]*shoalv1.RetentionResponse, s.Shards) // nil where the read failed
	curs := make([]*consoleListCursor, s.Shards)
	chunk := min(limit+1, consoleListChunk)
	// Every shard's first chunk, and its policies, consoleListAtOnce calls at a time.
	sem := make(chan struct{}, consoleListAtOnce)
	var wg sync.WaitGroup
	for id := range s.Shards {
		curs[id] = &consoleListCursor{req: &shoalv1.ListStreamsRequest{Shard: id, Prefix: b.Prefix, After: b.After,
			Count: chunk, IncludeDeleted: b.Deleted, AllowStale: b.Stale}}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			curs[id].fill(ctx, c)
			policies[id], _ = c.Retention(ctx, &shoalv1.RetentionRequest{Shard: id})
		})
	}
	wg.Wait()
	b.Retention = consolePolicies(policies)
	// The shards' names merged in order: the page's limit names, and one more when there are
	// more than the page shows. A shard's next chunk is read once the names before it were
	// taken: at most a chunk of each shard, and the page, are held at once.
	var all []*shoalv1.StreamSummary
	for uint64(len(all)) <= limit {
		var next *consoleListCursor
		for _, cur := range curs {
			if cur.err == nil && len(cur.buf) == 0 && !cur.done {
				cur.fill(ctx, c)
			}
			if cur.err == nil && len(cur.buf) > 0 && (next == nil || cur.buf[0].Name < next.buf[0].Name) {
				next = cur
			}
		}
		if next == nil {
			break
		}
		all = append(all, next.buf[0])
		next.buf = next.buf[1:]
	}
	for id, cur := range curs {
		if err := cur.err; err != nil {
			if status.Code(err) == codes.Canceled && r.Context().Err() != nil {
				return // the browser went away
			}
			b.Missing = append(b.Missing, fmt.Sprintf("shard %d: %s", id, status.Convert(err).Message()))
		}
	}
	if uint64(len(all)) > limit {
		all = all[:limit]
		b.Next = streamListLink(b.Prefix, all[len(all)-1].Name, b.Deleted, b.Stale, limit)
	}
	for _, m := range all {
		b.Streams = append(b.Streams, streamRow(m, b.Stale))
	}
	b.First = streamListLink(b.Prefix, "", b.Deleted, b.Stale, limit)
	n.consoleRender(w, http.StatusOK, "streams", "streams", 0, b)
}

type consoleStreamsBody struct {
	Prefix, After  string
	Deleted, Stale bool
	Limit          uint64
	Streams        []consoleStreamRow
	Missing        []string // the shards that did not answer, and why
	First, Next    string   // links; Next "" on the last page
	Retention      []string // the cluster's retention policies, one line each
}

// consolePolicies describes the retention policies the shards hold, one line per form of each
// prefix's policy, saying when only some of the shards that answered hold it and when some did
// not answer (a nil response).
func consolePolicies(resps []*shoalv1.RetentionResponse) []string {
	held := map[string]int{}
	answered := 0
	for _, r := range resps {
		if r == nil {
			continue
		}
		answered++
		for _, p := range r.Policies {
			held[policyLine(p)]++
		}
	}
	var out []string
	for line, k := range held {
		if k < answered {
			line += fmt.Sprintf(" (held by %d of %d shards: set or remove it again)", k, answered)
		}
		out = append(out, line)
	}
	slices.Sort(out)
	if len(out) > 0 && answered < len(resps) {
		out = append(out, fmt.Sprintf("(%d of %d shards did not answer)", len(resps)-answered, len(resps)))
	}
	return out
}

// policyLine describes p as shoal retention list does.
func policyLine(p *shoalv1.RetentionPolicy) string {
	prefix := fmt.Sprintf("%q", p.Prefix)
	if p.Prefix == "" {
		prefix = "every stream"
	}
	return prefix + ": " + p.Describe()
}

type consoleStreamRow struct {
	Name, Link string
	State      string
	Versions   string
	Events     uint64
	Truncated  bool
	StoredFrom uint64 // the first version still stored, when Truncated
	AllRemoved bool   // truncated to the last event included (a deleted stream's)
	Hidden     uint64 // events a delete hid, still stored
	Shard      uint32
	ShardLink  string // the shard's log from the stream's last event
	Time       string // the last event's, "" for a deleted stream
}

// streamRow is m as a row of the listing; its links keep stale.
func streamRow(m *shoalv1.StreamSummary, stale bool) consoleStreamRow {
	row := consoleStreamRow{Name: m.Name, Link: streamLink(m.Name, 0, false, false, stale, consoleDefaultLimit),
		State: stateName(m.State), Shard: m.Shard, ShardLink: shardLink(m.Shard, m.LastPosition, false, false, stale, consoleDefaultLimit),
		Versions: fmt.Sprintf("none (at version %d)", m.LastVersion), Hidden: m.HiddenEvents,
		// Versions before the first one stored were removed (client.StreamInfo.StoredFrom): a
		// truncation of a deleted stream's hidden events does not set m.Truncated.
		StoredFrom: m.FirstVersion - min(m.HiddenEvents, m.FirstVersion)}
	row.Truncated, row.AllRemoved = row.StoredFrom > 0, row.StoredFrom > m.LastVersion
	if m.State == shoalv1.StreamState_STREAM_STATE_LIVE {
		row.Versions = fmt.Sprintf("%d..%d", m.FirstVersion, m.LastVersion)
		row.Events = m.LastVersion - m.FirstVersion + 1
		row.Time = time.Unix(0, m.LastCreatedUnixNano).UTC().Format("2006-01-02 15:04:05.000")
	}
	return row
}

// consoleStreamInfo returns stream name's state as its shard lists it (the first name of the
// shard with name as prefix is the stream's own when it exists), nil when it does not exist or
// the listing failed.
func (n *Node) consoleStreamInfo(ctx context.Context, name string, stale bool) *consoleStreamRow {
	s := n.settings.Load()
	c, err := n.consoleStreams()
	if s == nil || err != nil {
		return nil
	}
	page, err := consoleListShard(ctx, c, &shoalv1.ListStreamsRequest{Shard: ring.ShardOf(name, s.Shards), Prefix: name, Count: 1,
		IncludeDeleted: true, AllowStale: stale})
	if err != nil || len(page) == 0 || page[0].Name != name {
		return nil
	}
	row := streamRow(page[0], stale)
	return &row
}

func stateName(s shoalv1.StreamState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STREAM_STATE_"))
}

const (
	// consoleListChunk is how many names the stream listing asks a shard for at a time.
	consoleListChunk = 64
	// consoleListAtOnce is how many shards the stream listing asks at once.
	consoleListAtOnce = 32
)

// consoleListCursor is one shard's place in the stream listing: the names read and not yet
// taken, after which the next chunk starts.
type consoleListCursor struct {
	req  *shoalv1.ListStreamsRequest
	buf  []*shoalv1.StreamSummary
	done bool  // the shard has no more names
	err  error // the shard did not answer: its names from there on are left out
}

// fill reads the cursor's next chunk.
func (cur *consoleListCursor) fill(ctx context.Context, c shoalv1.StreamsClient) {
	page, err := consoleListShard(ctx, c, cur.req)
	if err != nil {
		cur.err = err
		return
	}
	cur.buf, cur.done = page, uint64(len(page)) < cur.req.Count
	if len(page) > 0 {
		cur.req.After = page[len(page)-1].Name
	}
}

// consoleListShard reads a shard's listing on this node's gRPC port.
func consoleListShard(ctx context.Context, c shoalv1.StreamsClient, req *shoalv1.ListStreamsRequest) ([]*shoalv1.StreamSummary, error) {
	rs, err := c.ListStreams(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*shoalv1.StreamSummary
	for {
		page, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, page.Streams...)
	}
}

// streamListLink is the URL of a page of the stream listing.
func streamListLink(prefix, after string, deleted, stale bool, limit uint64) string {
	v := url.Values{}
	if prefix != "" {
		v.Set("prefix", prefix)
	}
	if after != "" {
		v.Set("after", after)
	}
	setPage(v, 0, limit)
	setFlag(v, "deleted", deleted)
	setFlag(v, "stale", stale)
	return "/console/streams?" + v.Encode()
}

package node

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/buildinfo"
	"github.com/shoaldb/shoal/internal/clusterstatus"
)

// The console: read-only HTML pages on the HTTP port, for an operator with a browser.
//
//	/console/                       the cluster as this node sees it (what `shoal cluster status` prints)
//	/console/stream?name=S          a stream's events: from, backward, end (the latest), limit, stale
//	/console/event?stream=S&version=V   one event in full
//	/console/shard?shard=N          a shard's log: from, deletes, limit, stale
//
// The HTTP port authenticates no one, so:
//   - With ServerTLS the console is off: the gRPC port answers even the overview (Status) only
//     to callers with a certificate.
//   - The overview shows what `shoal cluster status` shows, which a plaintext gRPC port
//     answers anyone. The other pages show events, and are served only with
//     Config.ConsoleData: the HTTP port is often open to more machines (a Prometheus server)
//     than the gRPC port.
//   - Every page answers only requests addressed to an IP address, localhost or one of the
//     node's own hosts (consoleHostAllowed), so that a web page cannot read a console on
//     127.0.0.1 by rebinding its own DNS name there.
//   - At most consoleMaxPages pages that show events are built at once.
//
// The pages read through this node's gRPC port, as a client would, so they are routed,
// forwarded and checked as a client's reads.

// consoleTimeout bounds the calls behind one page.
const consoleTimeout = 10 * time.Second

// Limits of the console's pages.
const (
	consoleDefaultLimit = 100      // events or log entries on a page when the request names none
	consoleMaxLimit     = 1000     // at most, on one page
	consoleMinRefresh   = 5        // seconds between the overview's refreshes, at least
	consoleMaxRefresh   = 3600     // and at most
	consoleMaxPages     = 4        // pages that show events built at once; more are refused (429)
	consoleMaxJSONDepth = 32       // data nested deeper is shown as text, not indented
	consolePreviewRunes = 96       // of an event's data, in a list
	consoleMaxShown     = 64 << 10 // bytes of an event's data or metadata shown on its page
	// consolePageBytes bounds the events' bytes a list page holds: past it, the page ends
	// early, with the server's page that crossed it (1 MiB, or one event of up to
	// shard.MaxEventSize), and links to the next.
	consolePageBytes = 8 << 20
)

//go:embed console/*.html
var consoleFiles embed.FS

var consoleFuncs = template.FuncMap{
	"count":  clusterstatus.Count,
	"join":   func(ss []string) string { return strings.Join(ss, ", ") },
	"int":    func(n uint32) int { return int(n) },
	"uint64": func(n uint64) int { return int(n) },
}

// consolePages holds each page's template, parsed with the layout.
var consolePages = func() map[string]*template.Template {
	pages := map[string]*template.Template{}
	for _, p := range []string{"overview", "stream", "streams", "event", "shard", "error"} {
		pages[p] = template.Must(template.New(p).Funcs(consoleFuncs).ParseFS(consoleFiles, "console/layout.html", "console/"+p+".html"))
	}
	return pages
}()

// consolePage is what the layout shows around a page's body.
type consolePage struct {
	Title   string
	Node    string
	NodeID  uint64
	Version string
	Ready   string // "" when the node is ready, else why not (as /readyz)
	Refresh int    // seconds; 0: no refresh
	DataOff string // "" when the data pages are served, else why not
	Body    any
}

// consoleRoutes adds the console's pages to mux; "/" leads to it.
func (n *Node) consoleRoutes(mux *http.ServeMux) {
	slots := make(chan struct{}, consoleMaxPages)
	// The overview asks every live node for its status: as many at once as the data pages.
	overviews := make(chan struct{}, consoleMaxPages)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusFound)
	})
	mux.HandleFunc("GET /console/{$}", n.consoleGuard(overviews, false, n.consoleOverview))
	mux.HandleFunc("GET /console/stream", n.consoleGuard(slots, true, n.consoleStream))
	mux.HandleFunc("GET /console/event", n.consoleGuard(slots, true, n.consoleEvent))
	mux.HandleFunc("GET /console/shard", n.consoleGuard(slots, true, n.consoleShard))
	mux.HandleFunc("GET /console/streams", n.consoleGuard(slots, true, n.consoleStreamList))
}

// consoleGuard serves page unless the console is off (ServerTLS) or the request is addressed
// to a host the node does not answer as, while it holds one of slots. A page that shows
// events (data) is served only with Config.ConsoleData.
func (n *Node) consoleGuard(slots chan struct{}, data bool, page http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if n.cfg.ServerTLS != nil {
			n.consoleError(w, http.StatusForbidden, "console off", "this node serves TLS on its gRPC port, "+
				"which answers only callers with a certificate; its HTTP port authenticates no one, so it serves no console: "+
				"use `shoal cluster status` and `shoal read` with a certificate")
			return
		}
		if !n.consoleHostAllowed(r.Host) {
			n.consoleError(w, http.StatusMisdirectedRequest, "host not served", fmt.Sprintf("this console answers requests "+
				"addressed to an IP address, localhost or this node's own host names (--advertise, --listen, --http), not %q: "+
				"a guard against a web page that rebinds its name to this address", r.Host))
			return
		}
		if off := n.consoleDataOff(); data && off != "" {
			n.consoleError(w, http.StatusForbidden, "events not shown", off)
			return
		}
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		default:
			what := "overview pages"
			if data {
				what = "pages that show events"
			}
			n.consoleError(w, http.StatusTooManyRequests, "busy", fmt.Sprintf(
				"%d %s are being built (the limit): try again in a moment", cap(slots), what))
			return
		}
		page(w, r)
	}
}

// consoleHostAllowed reports whether a request's Host (host or host:port) names this node: an
// IP address, localhost, the machine's host name, or the host of one of its addresses.
func (n *Node) consoleHostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if net.ParseIP(host) != nil || strings.EqualFold(host, "localhost") {
		return true
	}
	for _, a := range []string{n.addr, n.httpAddr, n.cfg.Advertise, n.cfg.Listen, n.cfg.HTTP} {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" && strings.EqualFold(h, host) {
			return true
		}
	}
	// The machine's own name, which a node listening on :PORT answers as too: read last, once
	// the node's addresses did not match.
	h, err := os.Hostname()
	return err == nil && strings.EqualFold(h, host)
}

// consoleRender writes page with body, answering code; a template that fails answers 500
// instead of half a page.
func (n *Node) consoleRender(w http.ResponseWriter, code int, page, title string, refresh int, body any) {
	p := consolePage{Title: title, Node: n.Name(), NodeID: n.ID(), Version: buildinfo.Version,
		Ready: n.notReady(), Refresh: refresh, DataOff: n.consoleDataOff(), Body: body}
	var buf bytes.Buffer
	if err := consolePages[page].ExecuteTemplate(&buf, "layout", p); err != nil {
		n.log.Error("console: cannot render a page", "page", page, "err", err)
		http.Error(w, "console: cannot render the page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// No script, no frame, no resource from elsewhere: event data is shown as text only.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// consoleSettings returns the cluster's settings, or answers 503 and returns nil while this
// node does not know them or has not finished starting.
func (n *Node) consoleSettings(w http.ResponseWriter) *Settings {
	s := n.settings.Load()
	switch {
	case s == nil:
		n.consoleError(w, http.StatusServiceUnavailable, "cluster unknown",
			"this node does not know its cluster's settings yet: it is still joining")
	case !n.started.Load():
		n.consoleError(w, http.StatusServiceUnavailable, "starting",
			"this node is still starting (joining gossip, opening its shards): ask again in a moment, or ask another node")
		return nil
	}
	return s
}

// consoleError answers code with a page that says msg.
func (n *Node) consoleError(w http.ResponseWriter, code int, title, msg string) {
	n.consoleRender(w, code, "error", title, 0, msg)
}

// consoleDataOff says why the pages that show events are not served, "" when they are.
func (n *Node) consoleDataOff() string {
	if !n.cfg.ConsoleData {
		return "this node does not show events on its HTTP port: start it with --console-data " +
			"(Config.ConsoleData) to allow it; the HTTP port authenticates no one"
	}
	return ""
}

// consoleOverview shows the cluster as this node sees it, merged with the views of the
// members it reaches.
func (n *Node) consoleOverview(w http.ResponseWriter, r *http.Request) {
	refresh, err := uintParam(r.URL.Query(), "refresh", 0, consoleMaxRefresh)
	if err == nil && refresh > 0 && refresh < consoleMinRefresh {
		err = fmt.Errorf("refresh: 0 (none) or %d to %d seconds, not %d", consoleMinRefresh, consoleMaxRefresh, refresh)
	}
	if err != nil {
		n.consoleError(w, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	if n.consoleSettings(w) == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), consoleTimeout)
	defer cancel()
	resp, err := n.status(ctx)
	if err != nil {
		n.consoleError(w, http.StatusServiceUnavailable, "no status", fmt.Sprintf("no status from this node: %v", err))
		return
	}
	st := clusterstatus.New(resp)
	body := consoleOverviewBody{Status: st}
	for _, sh := range st.Shards {
		cs := consoleShardRow{Info: sh, Link: shardLink(sh.Shard, 0, true, false, false, consoleDefaultLimit)}
		switch sh.State {
		case "ok":
			cs.Class = "ok"
		case "degraded", "under-replicated":
			cs.Class = "warn"
		default:
			cs.Class = "bad"
		}
		if sh.Leader == "" && sh.LeaderlessMS > 0 {
			cs.Leaderless = (time.Duration(sh.LeaderlessMS) * time.Millisecond).Round(100 * time.Millisecond).String()
		}
		body.Shards = append(body.Shards, cs)
	}
	n.consoleRender(w, http.StatusOK, "overview", "cluster", int(refresh), body)
}

type consoleOverviewBody struct {
	Status *clusterstatus.Status
	Shards []consoleShardRow
}

type consoleShardRow struct {
	Info       clusterstatus.Shard
	Link       string // the shard's latest log entries
	Class      string // the state's colour: ok, warn, bad
	Leaderless string // how long no leader has been known, "" when one is
}

// consoleStream shows a page of a stream's events.
func (n *Node) consoleStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := q.Get("name")
	from, err := uintParam(q, "from", 0, math.MaxUint64)
	var limit uint64
	if err == nil {
		limit, err = limitParam(q)
	}
	if err == nil && name == "" {
		err = errors.New("name: a stream name is required")
	}
	if err != nil {
		n.consoleError(w, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	b := consoleStreamBody{Name: name, From: from, Backward: q.Get("backward") == "1", Stale: q.Get("stale") == "1", Limit: limit}
	fromEnd := q.Get("end") == "1"
	if fromEnd {
		b.Backward = true
	}
	ctx, cancel := context.WithTimeout(r.Context(), consoleTimeout)
	defer cancel()
	evs, cut, err := n.consoleRead(ctx, &shoalv1.ReadRequest{Stream: name, FromVersion: from, FromEnd: fromEnd,
		Backward: b.Backward, Count: limit, AllowStale: b.Stale})
	if err == nil || status.Code(err) == codes.NotFound {
		b.Info = n.consoleStreamInfo(ctx, name, b.Stale)
	}
	if err != nil && b.Info == nil {
		n.consoleCallError(w, "stream "+name, err)
		return
	}
	// A deleted stream's page shows its state, and no event, answering 404 as its read did.
	code := http.StatusOK
	if err != nil {
		code, b.Gone = http.StatusNotFound, true
	}
	if fromEnd && len(evs) > 0 {
		b.From = evs[0].Version
	}
	for _, e := range evs {
		b.Events = append(b.Events, consoleRow(e, b.Stale))
	}
	if len(evs) > 0 {
		b.Shard = evs[0].Shard
	}
	b.First = streamLink(name, 0, false, false, b.Stale, limit)
	b.Latest = streamLink(name, 0, false, true, b.Stale, limit)
	if uint64(len(evs)) == limit || cut {
		last := evs[len(evs)-1].Version
		switch {
		case !b.Backward:
			b.Next = streamLink(name, last+1, false, false, b.Stale, limit)
		case last > 0:
			b.Next = streamLink(name, last-1, true, false, b.Stale, limit)
		}
	}
	n.consoleRender(w, code, "stream", "stream "+name, 0, b)
}

type consoleStreamBody struct {
	Name                string
	Info                *consoleStreamRow // the stream's state; nil when its listing failed
	Gone                bool              // deleted: its read answered not found
	From                uint64
	Backward, Stale     bool
	Limit               uint64
	Shard               uint32
	Events              []consoleEventRow
	First, Latest, Next string // links; Next "" on the last page
}

// consoleEventRow is an event (or, in a shard's log, a delete) as a row of a list.
type consoleEventRow struct {
	Stream     string
	Version    uint64
	Position   uint64
	Type       string
	ID         string
	Time       string
	Size       int
	Preview    string
	Deletion   string // what a delete did; "" for an event
	Link       string // the event's page
	StreamLink string
}

// consoleRow is e as a row of a list; its links keep stale (reads that accept a follower).
func consoleRow(e *shoalv1.RecordedEvent, stale bool) consoleEventRow {
	row := consoleEventRow{Stream: e.Stream, Version: e.Version, Position: e.Position, Type: e.Type,
		ID: eventID(e.Id), Time: eventTime(e.CreatedUnixNano), Size: len(e.Data) + len(e.Metadata), Preview: preview(e.Data),
		Link: eventLink(e.Stream, e.Version, stale), StreamLink: streamLink(e.Stream, 0, false, false, stale, consoleDefaultLimit)}
	switch e.Deletion {
	case shoalv1.Deletion_DELETION_SOFT:
		row.Deletion = fmt.Sprintf("soft delete: versions up to %d hidden", e.Version)
	case shoalv1.Deletion_DELETION_TOMBSTONE:
		row.Deletion = "tombstone: the stream is deleted for good"
	}
	return row
}

// consoleEvent shows one event in full.
func (n *Node) consoleEvent(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := q.Get("stream")
	version, err := uintParam(q, "version", 0, math.MaxUint64)
	if err == nil && name == "" {
		err = errors.New("stream: a stream name is required")
	}
	if err == nil && q.Get("version") == "" {
		err = errors.New("version: an event's version is required")
	}
	if err != nil {
		n.consoleError(w, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	stale := q.Get("stale") == "1"
	ctx, cancel := context.WithTimeout(r.Context(), consoleTimeout)
	defer cancel()
	// The event and the next one, for the page's link to it.
	evs, _, err := n.consoleRead(ctx, &shoalv1.ReadRequest{Stream: name, FromVersion: version, Count: 2, AllowStale: stale})
	if err != nil {
		n.consoleCallError(w, "stream "+name, err)
		return
	}
	if len(evs) == 0 || evs[0].Version != version {
		msg := fmt.Sprintf("stream %q has no event at version %d", name, version)
		if len(evs) > 0 {
			msg += fmt.Sprintf(" (deleted or truncated); its next is version %d", evs[0].Version)
		}
		n.consoleError(w, http.StatusNotFound, "no such event", msg)
		return
	}
	e := evs[0]
	b := consoleEventBody{consoleEventRow: consoleRow(e, stale), Shard: e.Shard, ContentType: e.ContentType,
		Data: showData(e.Data), Metadata: showData(e.Metadata),
		ShardLink: shardLink(e.Shard, e.Position, false, false, stale, consoleDefaultLimit)}
	b.StreamLink = streamLink(name, e.Version, false, false, stale, consoleDefaultLimit)
	if len(evs) > 1 {
		b.NextVersion, b.NextLink = evs[1].Version, eventLink(name, evs[1].Version, stale)
	}
	if version > 0 { // the one before, if a delete or a truncation left it
		prev, _, err := n.consoleRead(ctx, &shoalv1.ReadRequest{Stream: name, FromVersion: version, Backward: true, Count: 2, AllowStale: stale})
		if err != nil {
			n.consoleCallError(w, "stream "+name, err)
			return
		}
		if len(prev) > 1 {
			b.PrevVersion, b.PrevLink = prev[1].Version, eventLink(name, prev[1].Version, stale)
		}
	}
	n.consoleRender(w, http.StatusOK, "event", fmt.Sprintf("%s@%d", name, version), 0, b)
}

type consoleEventBody struct {
	consoleEventRow
	Shard              uint32
	ContentType        string
	Data, Metadata     consoleData
	ShardLink          string
	PrevVersion        uint64
	NextVersion        uint64
	PrevLink, NextLink string // "" when there is no event before, or after
}

// consoleShard shows a page of a shard's log.
func (n *Node) consoleShard(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id, err := uintParam(q, "shard", 0, math.MaxUint32)
	var from, limit uint64
	if err == nil {
		from, err = uintParam(q, "from", 0, math.MaxUint64)
	}
	if err == nil {
		limit, err = limitParam(q)
	}
	if err == nil && q.Get("shard") == "" {
		err = errors.New("shard: a shard number is required")
	}
	if err != nil {
		n.consoleError(w, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	b := consoleShardBody{Shard: uint32(id), From: from, Deletes: q.Get("deletes") == "1", Stale: q.Get("stale") == "1", Limit: limit}
	ctx, cancel := context.WithTimeout(r.Context(), consoleTimeout)
	defer cancel()
	if q.Get("end") == "1" { // the latest entries: the log's end, then a page before it
		end, err := n.consoleShardEnd(ctx, b.Shard, b.Stale)
		if err != nil {
			n.consoleCallError(w, fmt.Sprintf("shard %d", id), err)
			return
		}
		b.From = end - min(end, limit)
	}
	evs, next, cut, err := n.consoleReadShard(ctx, &shoalv1.ReadShardRequest{Shard: b.Shard, FromPosition: b.From, Count: limit,
		IncludeDeletes: b.Deletes, AllowStale: b.Stale})
	if err != nil {
		n.consoleCallError(w, fmt.Sprintf("shard %d", id), err)
		return
	}
	for _, e := range evs {
		b.Events = append(b.Events, consoleRow(e, b.Stale))
	}
	b.First = shardLink(b.Shard, 0, false, b.Deletes, b.Stale, limit)
	b.Latest = shardLink(b.Shard, 0, true, b.Deletes, b.Stale, limit)
	if uint64(len(evs)) == limit || cut {
		b.Next = shardLink(b.Shard, next, false, b.Deletes, b.Stale, limit)
	}
	n.consoleRender(w, http.StatusOK, "shard", fmt.Sprintf("shard %d", id), 0, b)
}

type consoleShardBody struct {
	Shard               uint32
	From                uint64
	Deletes, Stale      bool
	Limit               uint64
	Events              []consoleEventRow
	First, Latest, Next string
}

// consoleStreams returns a Streams client on this node's own gRPC port: the console reads as
// a client does. It dials the port where it listens (the loopback address for all interfaces), not the
// advertised address, which may only be reachable from elsewhere (NAT, a container's
// published port).
func (n *Node) consoleStreams() (shoalv1.StreamsClient, error) {
	addr := n.grpcLis.Addr().String()
	if ta, ok := n.grpcLis.Addr().(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		loop := "127.0.0.1"
		if ta.IP.To4() == nil {
			loop = "::1" // [::] listens on IPv6, and on IPv4 too unless the host turned that off
		}
		addr = net.JoinHostPort(loop, strconv.Itoa(ta.Port))
	}
	conn, err := n.peers.get(addr)
	if err != nil {
		return nil, err
	}
	return shoalv1.NewStreamsClient(conn), nil
}

// consoleRead reads a stream's events as req asks (req.Count of them at most); cut when it
// stopped at consolePageBytes, before req.Count.
func (n *Node) consoleRead(ctx context.Context, req *shoalv1.ReadRequest) (evs []*shoalv1.RecordedEvent, cut bool, err error) {
	open := func(ctx context.Context, c shoalv1.StreamsClient) (grpc.ServerStreamingClient[shoalv1.ReadResponse], error) {
		return c.Read(ctx, req)
	}
	cut, err = consoleRecv(n, ctx, open, func(resp *shoalv1.ReadResponse) []*shoalv1.RecordedEvent {
		evs = append(evs, resp.Events...)
		return resp.Events
	})
	return evs, cut, err
}

// consoleReadShard reads a shard's log as req asks, and returns where the next page starts;
// cut as consoleRead's.
func (n *Node) consoleReadShard(ctx context.Context, req *shoalv1.ReadShardRequest) (evs []*shoalv1.RecordedEvent, next uint64, cut bool, err error) {
	open := func(ctx context.Context, c shoalv1.StreamsClient) (grpc.ServerStreamingClient[shoalv1.ReadShardResponse], error) {
		return c.ReadShard(ctx, req)
	}
	next = req.FromPosition
	cut, err = consoleRecv(n, ctx, open, func(resp *shoalv1.ReadShardResponse) []*shoalv1.RecordedEvent {
		evs = append(evs, resp.Events...)
		next = max(next, resp.NextPosition) // a page's end: pages arrive whole
		return resp.Events
	})
	return evs, next, cut, err
}

// consoleShardEnd returns the position a shard's log assigns next: a read from its end
// returns no entry, only where it stands.
func (n *Node) consoleShardEnd(ctx context.Context, id uint32, stale bool) (uint64, error) {
	_, next, _, err := n.consoleReadShard(ctx, &shoalv1.ReadShardRequest{Shard: id, FromEnd: true, Count: 1, AllowStale: stale})
	return next, err
}

// consoleRecv opens a read on this node's gRPC port (consoleStreams) and receives its pages,
// passing each to page, until the read ends or the events page returned reach
// consolePageBytes in all (cut: the read is ended there).
func consoleRecv[T any](n *Node, ctx context.Context, open func(context.Context, shoalv1.StreamsClient) (grpc.ServerStreamingClient[T], error),
	page func(*T) []*shoalv1.RecordedEvent,
) (cut bool, err error) {
	c, err := n.consoleStreams()
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(ctx) // ends the read when the page is full
	defer cancel()
	rs, err := open(ctx, c)
	if err != nil {
		return false, err
	}
	size := 0
	for {
		m, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		for _, e := range page(m) {
			size += len(e.Data) + len(e.Metadata)
		}
		if size >= consolePageBytes {
			return true, nil
		}
	}
}

// consoleCallError shows a failed read: the status the node's gRPC port answered, as the
// nearest HTTP status.
func (n *Node) consoleCallError(w http.ResponseWriter, what string, err error) {
	st := status.Convert(err)
	code := http.StatusBadGateway
	if errors.Is(err, ErrClosed) { // the node is closing
		code = http.StatusServiceUnavailable
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		code = http.StatusBadRequest
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.FailedPrecondition:
		code = http.StatusConflict
	case codes.ResourceExhausted:
		code = http.StatusTooManyRequests
	case codes.Unavailable:
		code = http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		code = http.StatusGatewayTimeout
	}
	n.consoleError(w, code, what+": "+strings.ToLower(http.StatusText(code)), st.Message())
}

// uintParam parses q's name as a whole number up to limit, def when absent; the error names
// the parameter and its range.
func uintParam(q url.Values, name string, def, limit uint64) (uint64, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > limit {
		return 0, fmt.Errorf("%s: a whole number from 0 to %d, not %q", name, limit, s)
	}
	return v, nil
}

// limitParam parses q's limit: 1 to consoleMaxLimit entries on a page.
func limitParam(q url.Values) (uint64, error) {
	v, err := uintParam(q, "limit", consoleDefaultLimit, consoleMaxLimit)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("limit: a whole number from 1 to %d, not %q", consoleMaxLimit, q.Get("limit"))
	}
	return v, nil
}

// streamLink is the URL of a page of stream name's events, as consoleStream reads them.
func streamLink(name string, from uint64, backward, end, stale bool, limit uint64) string {
	v := url.Values{"name": {name}}
	setPage(v, from, limit)
	setFlag(v, "backward", backward)
	setFlag(v, "end", end)
	setFlag(v, "stale", stale)
	return "/console/stream?" + v.Encode()
}

// eventLink is the URL of an event's page.
func eventLink(stream string, version uint64, stale bool) string {
	v := url.Values{"stream": {stream}, "version": {strconv.FormatUint(version, 10)}}
	setFlag(v, "stale", stale)
	return "/console/event?" + v.Encode()
}

// shardLink is the URL of a page of shard id's log, as consoleShard reads it.
func shardLink(id uint32, from uint64, end, deletes, stale bool, limit uint64) string {
	v := url.Values{"shard": {strconv.FormatUint(uint64(id), 10)}}
	setPage(v, from, limit)
	setFlag(v, "end", end)
	setFlag(v, "deletes", deletes)
	setFlag(v, "stale", stale)
	return "/console/shard?" + v.Encode()
}

// setPage sets a page's first position or version and its size, when not the defaults.
func setPage(v url.Values, from, limit uint64) {
	if from > 0 {
		v.Set("from", strconv.FormatUint(from, 10))
	}
	if limit != consoleDefaultLimit {
		v.Set("limit", strconv.FormatUint(limit, 10))
	}
}

// setFlag sets v's name to 1 when on: a box ticked.
func setFlag(v url.Values, name string, on bool) {
	if on {
		v.Set(name, "1")
	}
}

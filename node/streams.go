package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/ring"
	"github.com/shoaldb/shoal/shard"
)

// readViewHold is how long a stream read keeps its view of the shard while its caller has not
// taken a page: past it the view is released and the read ends ABORTED once the page is taken
// (the Go client reads on from where it was). One slow or stuck reader would otherwise keep the
// memtables and tables of its time on the node for as long as it kept the stream open.
const readViewHold = time.Minute

// streamsServer implements shoalv1.StreamsServer.
type streamsServer struct {
	shoalv1.UnimplementedStreamsServer
	n *Node
	// pipelineAppend, when set by a test, runs each AppendPipeline item
	// instead of Append.
	pipelineAppend atomic.Pointer[pipelineAppendFunc]
	// pipelineFinishing, when set by a test, runs each time a finishing
	// AppendPipeline sender found no answer to send, before its last look.
	pipelineFinishing atomic.Pointer[func(*pipeline)]
}

type pipelineAppendFunc func(context.Context, *shoalv1.AppendRequest) (*shoalv1.AppendResponse, error)

// Append serves an append. Like Delete, Read and ReadShard, it counts in the request metrics
// (shoal_appends_total, shoal_append_duration_seconds) on the node its client called only: a
// call that node forwarded is not counted again where it went. Its events count where they
// are written (Node.append).
func (s *streamsServer) Append(ctx context.Context, req *shoalv1.AppendRequest) (*shoalv1.AppendResponse, error) {
	start := time.Now()
	resp, err := s.n.append(ctx, req)
	if incomingHops(ctx) == 0 {
		s.n.metrics.appends.WithLabelValues(resultLabel(err)).Inc()
		if err == nil {
			s.n.metrics.appendLatency.Observe(time.Since(start).Seconds())
		}
	}
	return resp, err
}

func (s *streamsServer) Delete(ctx context.Context, req *shoalv1.DeleteRequest) (*shoalv1.DeleteResponse, error) {
	resp, err := s.n.delete(ctx, req)
	if incomingHops(ctx) == 0 {
		s.n.metrics.deletes.WithLabelValues(resultLabel(err)).Inc()
	}
	return resp, err
}

func (s *streamsServer) Truncate(ctx context.Context, req *shoalv1.TruncateRequest) (*shoalv1.TruncateResponse, error) {
	resp, err := s.n.truncate(ctx, req)
	if incomingHops(ctx) == 0 {
		s.n.metrics.truncates.WithLabelValues(resultLabel(err)).Inc()
	}
	return resp, err
}

// Read and ReadShard check the request before it takes a place of a limit (holdSubscription,
// holdShardRead): at the limit an invalid one was refused as RESOURCE_EXHAUSTED, which clients
// retry, and its caller learnt what was wrong with it only once a place was free, if ever.
func (s *streamsServer) Read(req *shoalv1.ReadRequest, stream grpc.ServerStreamingServer[shoalv1.ReadResponse]) error {
	id, st, err := s.n.checkRead(req)
	if err == nil {
		var release func()
		if release, err = s.n.holdSubscription(req.Follow, "stream"); err == nil {
			err = s.n.read(req, id, st, stream)
			release()
		}
	}
	if incomingHops(stream.Context()) == 0 {
		s.n.metrics.reads.WithLabelValues("stream", resultLabel(err)).Inc()
	}
	return err
}

func (s *streamsServer) ReadShard(req *shoalv1.ReadShardRequest, stream grpc.ServerStreamingServer[shoalv1.ReadShardResponse]) error {
	st, err := s.n.checkReadShard(req)
	if err == nil {
		var release func()
		if release, err = s.n.holdShardRead(req); err == nil {
			err = s.n.readShard(req, st, stream)
			release()
		}
	}
	if incomingHops(stream.Context()) == 0 {
		s.n.metrics.reads.WithLabelValues("shard", resultLabel(err)).Inc()
	}
	return err
}

// shardOf validates the stream name and returns its shard.
func (n *Node) shardOf(stream string) (uint32, error) {
	if err := shard.CheckStreamName(stream); err != nil {
		return 0, err
	}
	s := n.settings.Load()
	if s == nil {
		return 0, &NoLeaderError{Shard: 0, Cause: errors.New("cluster settings unknown")}
	}
	return ring.ShardOf(stream, s.Shards), nil
}

func fromProtoExpected(e *shoalv1.ExpectedVersion) (shard.Expected, error) {
	if e == nil {
		return shard.Expected{Kind: shard.ExpectAny}, nil
	}
	switch e.Kind {
	case shoalv1.ExpectedVersion_KIND_ANY, shoalv1.ExpectedVersion_KIND_NO_STREAM, shoalv1.ExpectedVersion_KIND_EXISTS:
		// proto3's default kind is ANY: a caller that gives a version and forgets the kind
		// would write with no check at all.
		if e.Version != 0 {
			return shard.Expected{}, &shard.InvalidError{Field: "expected.version", Limit: "0 unless kind is EXACT",
				Reason: fmt.Sprintf("version %d given with kind %v, which checks no version", e.Version, e.Kind)}
		}
		return shard.Expected{Kind: shard.ExpectedKind(e.Kind)}, nil
	case shoalv1.ExpectedVersion_KIND_EXACT:
		return shard.Expected{Kind: shard.ExpectedKind(e.Kind), Version: e.Version}, nil
	}
	return shard.Expected{}, &shard.InvalidError{Field: "expected.kind", Limit: "one of ANY, NO_STREAM, EXISTS, EXACT",
		Reason: fmt.Sprintf("unknown expected-version kind %d", e.Kind)}
}

func appendCommand(req *shoalv1.AppendRequest) (*shard.AppendCommand, error) {
	exp, err := fromProtoExpected(req.Expected)
	if err != nil {
		return nil, err
	}
	c := &shard.AppendCommand{Stream: req.Stream, Expected: exp, Events: make([]shard.Event, len(req.Events))}
	for i, e := range req.Events {
		if len(e.Id) != 16 {
			return nil, &shard.InvalidError{Field: fmt.Sprintf("events[%d].id", i), Limit: "exactly 16 bytes",
				Reason: fmt.Sprintf("event ID is %d bytes; it must be a 16-byte UUID", len(e.Id))}
		}
		ev := &c.Events[i]
		copy(ev.ID[:], e.Id)
		ev.Type, ev.Data, ev.Metadata, ev.ContentType = e.Type, e.Data, e.Metadata, e.ContentType
	}
	return c, shard.ValidateAppend(c)
}

func (n *Node) append(ctx context.Context, req *shoalv1.AppendRequest) (*shoalv1.AppendResponse, error) {
	id, err := n.shardOf(req.Stream)
	if err != nil {
		return nil, n.toStatus(err, req.Stream, id)
	}
	cmd, err := appendCommand(req)
	if err != nil {
		return nil, n.toStatus(err, req.Stream, id)
	}
	release, err := n.limits.appendBytes.take(n.dir.id.Name, int64(proto.Size(req)), n.metrics.appendBytesRefused)
	if err != nil {
		return nil, err
	}
	defer release()
	lost := false // a proposal of this call was taken by raft, and its answer lost (appendedHere)
	res, retried, err := n.write(ctx, id, true, func(g *replica.Group, pctx context.Context) (any, error) {
		if err := n.appendRoom(g); err != nil {
			return nil, err
		}
		cmd.Time = time.Now().UnixNano()
		res, err := g.Propose(pctx, shard.EncodeAppend(cmd))
		if nle := (*replica.NotLeaderError)(nil); errors.As(err, &nle) && !nle.Refused {
			lost = true
		}
		return res, err
	}, func(conn *grpc.ClientConn, fctx context.Context) (any, error) {
		return shoalv1.NewStreamsClient(conn).Append(fctx, req)
	})
	if err != nil {
		return nil, n.toStatus(appendOutcome(id, retried, err), req.Stream, id)
	}
	if k := appendedHere(res, len(cmd.Events), lost); k > 0 {
		n.metrics.eventsAppended.Add(float64(k))
	}
	switch r := res.(type) {
	case *shoalv1.AppendResponse:
		return r, nil
	case *shard.AppendResult:
		return &shoalv1.AppendResponse{Shard: id, FirstVersion: r.FirstVersion, LastVersion: r.LastVersion,
			Position: r.Position, LastPosition: r.LastPosition, Duplicate: r.Duplicate}, nil
	case error:
		return nil, n.toStatus(r, req.Stream, id)
	}
	return nil, status.Errorf(codes.Internal, "append: unexpected result %T", res)
}

// appendedHere returns how many of an append's k events this node counts as written
// (shoal_events_appended_total), given res, write's answer to it. The node that wrote them
// counts them, as the shard's leader: res is then its state machine's result, not a duplicate.
// An append forwarded to the leader is counted there, and not again here, also when a repeat
// of the forward answers as a duplicate of the first. lost reports that a proposal of this call
// was taken by raft and then its answer lost to a leadership change: if it was applied, no node
// counted it, and its repeat answers as a duplicate (here or on the new leader), counted here.
func appendedHere(res any, k int, lost bool) int {
	switch r := res.(type) {
	case *shard.AppendResult:
		if !r.Duplicate || lost {
			return k
		}
	case *shoalv1.AppendResponse:
		if r.Duplicate && lost {
			return k
		}
	}
	return 0
}

// streamWrite returns the shard of a write to stream and its expected version e, or the
// write's answer (a status) when either is invalid.
func (n *Node) streamWrite(stream string, e *shoalv1.ExpectedVersion) (uint32, shard.Expected, error) {
	id, err := n.shardOf(stream)
	if err != nil {
		return id, shard.Expected{}, n.toStatus(err, stream, id)
	}
	exp, err := fromProtoExpected(e)
	if err != nil {
		return id, shard.Expected{}, n.toStatus(err, stream, id)
	}
	return id, exp, nil
}

func (n *Node) delete(ctx context.Context, req *shoalv1.DeleteRequest) (*shoalv1.DeleteResponse, error) {
	id, exp, err := n.streamWrite(req.Stream, req.Expected)
	if err != nil {
		return nil, err
	}
	cmd := &shard.DeleteCommand{Stream: req.Stream, Expected: exp, Tombstone: req.Tombstone}
	if err := shard.ValidateDelete(cmd); err != nil {
		return nil, n.toStatus(err, req.Stream, id)
	}
	// A delete expecting an exact version is safe to repeat: once it took effect, or once
	// another writer appended, the version no longer matches and a repeat deletes nothing.
	safe := exp.Kind == shard.ExpectExact
	res, retried, err := n.write(ctx, id, safe, func(g *replica.Group, pctx context.Context) (any, error) {
		cmd.Time = time.Now().UnixNano()
		return g.Propose(pctx, shard.EncodeDelete(cmd))
	}, func(conn *grpc.ClientConn, fctx context.Context) (any, error) {
		return shoalv1.NewStreamsClient(conn).Delete(fctx, req)
	})
	if res, err = deleteVerdict(id, res, retried, err); err != nil {
		return nil, n.toStatus(err, req.Stream, id)
	}
	switch r := res.(type) {
	case *shoalv1.DeleteResponse:
		return r, nil
	case *shard.DeleteResult:
		return &shoalv1.DeleteResponse{Shard: id, Position: r.Position, Logged: r.Logged}, nil
	}
	return nil, status.Errorf(codes.Internal, "delete: unexpected result %T", res)
}

// readBarrier makes a linearizable read possible on local group g: the
// leader confirms its leadership (ReadIndex) and waits until it applied up to
// the read index.
func (n *Node) readBarrier(ctx context.Context, g *replica.Group) (timedOut bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, n.noLeaderWait())
	defer cancel()
	err = g.ReadIndex(rctx)
	return err != nil && rctx.Err() != nil && ctx.Err() == nil, err
}

// readRoute returns the local state machine to read from, or the node to
// forward the read to, waiting for a leader until deadline.
func (n *Node) readRoute(ctx context.Context, id uint32, st staleness, deadline time.Time) (*shard.Shard, *forwardTarget, error) {
	for attempt := 0; ; attempt++ {
		g, tgt, err := n.route(ctx, id, st, deadline)
		if err != nil || tgt != nil {
			return nil, tgt, err
		}
		sm, _, ok := n.shardSM(id)
		if !ok {
			return nil, nil, &NoLeaderError{Shard: id, Cause: errors.New("local replica closed")}
		}
		if n.servesStale(st, g) && (st.max == 0 || !g.IsLeader()) {
			return sm, nil, nil
		}
		// A linearizable read, or a bounded one on the leader, which might be deposed
		// without knowing it yet.
		timedOut, err := n.readBarrier(ctx, g)
		switch {
		case err == nil:
			return sm, nil, nil
		case timedOut:
			return nil, nil, &NoLeaderError{Shard: id, Cause: errors.New("read index not confirmed")}
		case errors.Is(err, replica.ErrNotLeader) && attempt < 2:
			continue
		default:
			return nil, nil, err
		}
	}
}

func toProtoEvent(e *shard.RecordedEvent, id uint32) *shoalv1.RecordedEvent {
	if e.Deletion != shard.DeletionNone {
		return &shoalv1.RecordedEvent{Stream: e.Stream, Version: e.Version, CreatedUnixNano: e.Created,
			Shard: id, Position: e.Position, Deletion: shoalv1.Deletion(e.Deletion)}
	}
	return &shoalv1.RecordedEvent{
		Stream: e.Stream, Version: e.Version, Id: e.ID[:], Type: e.Type, Data: e.Data,
		Metadata: e.Metadata, ContentType: e.ContentType, CreatedUnixNano: e.Created,
		Shard: id, Position: e.Position,
	}
}

// checkRead checks a Read request and returns the shard of its stream and its staleness, or its
// refusal as a gRPC status.
func (n *Node) checkRead(req *shoalv1.ReadRequest) (uint32, staleness, error) {
	id, err := n.shardOf(req.Stream)
	if err != nil {
		return id, staleness{}, n.toStatus(err, req.Stream, id)
	}
	st, err := readStaleness(req.AllowStale, req.MaxStalenessMs)
	if err != nil {
		return id, st, n.toStatus(err, req.Stream, id)
	}
	if req.Follow && (req.Backward || req.Count != 0) {
		return id, st, n.toStatus(&shard.InvalidError{Field: "follow", Limit: "forwards, with count 0",
			Reason: "a subscription reads forwards until cancelled"}, req.Stream, id)
	}
	if req.WholeHistory && (req.Backward || req.FromEnd) {
		return id, st, n.toStatus(&shard.InvalidError{Field: "whole_history", Limit: "forwards, from a version",
			Reason: "it asks for the history from from_version on"}, req.Stream, id)
	}
	return id, st, nil
}

// read serves a Read request that checkRead passed: id is its shard, st its staleness.
func (n *Node) read(req *shoalv1.ReadRequest, id uint32, st staleness, out grpc.ServerStreamingServer[shoalv1.ReadResponse]) error {
	ctx := out.Context()
	sm, err := forwardRead(n, ctx, id, st, 0, out, func(ctx context.Context, conn *grpc.ClientConn) (grpc.ServerStreamingClient[shoalv1.ReadResponse], error) {
		return shoalv1.NewStreamsClient(conn).Read(ctx, req)
	})
	if sm == nil {
		return n.toStatus(err, req.Stream, id)
	}
	if req.Follow {
		return n.toStatus(n.followStream(ctx, req, id, sm, st, out), req.Stream, id)
	}
	// The pages come from one view of the shard (shard.View), each read with an iterator of its
	// own and sent once that is closed: a caller slow to take a page holds no iterator, which
	// would keep the memtables of its time in memory for as long as the caller kept the stream
	// open, and the read still sees one state of the stream.
	view := &heldView{view: sm.NewView()}
	defer view.release()
	from, fromEnd, remaining := req.FromVersion, req.FromEnd, req.Count
	for {
		page := &shoalv1.ReadResponse{}
		size := 0
		var last uint64
		err := sm.ReadStreamIn(view.view, req.Stream, from, fromEnd, req.Backward, remaining, req.WholeHistory, func(e *shard.RecordedEvent) error {
			es := eventSize(e)
			if pageFull(len(page.Events), size, es) {
				return errPageFull
			}
			page.Events = append(page.Events, toProtoEvent(e, id))
			size += es
			last = e.Version
			if len(page.Events) >= pageEvents || size >= pageBytes {
				return errPageFull
			}
			return nil
		})
		full := errors.Is(err, errPageFull)
		if err != nil && !full {
			return n.toStatus(err, req.Stream, id)
		}
		released := false
		if len(page.Events) > 0 {
			hold := time.AfterFunc(n.cfg.readViewHold, view.release)
			err := out.Send(page)
			released = !hold.Stop()
			if err != nil {
				return err
			}
		}
		if !full {
			return nil
		}
		if req.Count != 0 {
			if remaining -= uint64(len(page.Events)); remaining == 0 {
				return nil
			}
		}
		switch {
		case !req.Backward:
			from = last + 1
		case last == 0:
			return nil
		default:
			from = last - 1
		}
		if released { // with more to read
			view.release() // the timer's call may still be under way
			return status.Errorf(codes.Aborted, "the read's view of stream %q was released: its caller took more than %v "+
				"to take a page; read on from the version after the last event received", req.Stream, n.cfg.readViewHold)
		}
		fromEnd = false
		if err := ctx.Err(); err != nil {
			return n.toStatus(err, req.Stream, id)
		}
	}
}

// heldView is a stream read's view of its shard, which a timer releases when the read's caller
// takes longer than Config.readViewHold over a page: a view keeps the memtables of its time, and
// then the tables holding the shard's keys, from being freed, for as long as it is open.
type heldView struct {
	mu   sync.Mutex
	view *shard.View // nil once released
}

// release closes the view once; it is safe from any goroutine.
func (h *heldView) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.view != nil {
		h.view.Close()
		h.view = nil
	}
}

// followStream serves a subscription to a stream (ReadRequest.follow) from the local replica
// sm: its events from the request's version on, then each new one as sm applies it.
func (n *Node) followStream(ctx context.Context, req *shoalv1.ReadRequest, id uint32, sm *shard.Shard, st staleness,
	out grpc.ServerStreamingServer[shoalv1.ReadResponse]) (err error) {
	f, err := n.newFollower(ctx, id, sm, st)
	if err != nil {
		return err
	}
	ended := f.subscribed("stream")
	defer func() { ended(err) }()
	from := req.FromVersion
	if req.FromEnd {
		exists, last, deleted, tombstoned, err := sm.StreamInfo(req.Stream)
		switch {
		case err != nil:
			return err
		case tombstoned:
			return shard.ErrStreamDeleted
		case exists || deleted:
			from = last + 1 // after the last event; a soft-deleted stream continues there
		default:
			from = 0 // a stream not created yet: its first event, whatever from_version says
		}
	}
	// Woken by commits of this stream only (and of streams sharing its slot), not by every
	// commit of the shard: a shard with many stream subscriptions would wake them all.
	defer sm.WatchStreams()()
	for {
		changed := sm.StreamChanged(req.Stream) // before the read: a change after it closes this
		page := &shoalv1.ReadResponse{}
		size := 0
		add := func(e *shard.RecordedEvent) error {
			es := eventSize(e)
			if pageFull(len(page.Events), size, es) {
				return errPageFull
			}
			page.Events = append(page.Events, toProtoEvent(e, id))
			if size += es; size >= pageBytes {
				return errPageFull
			}
			return nil
		}
		var err error
		if req.WholeHistory { // every read: a truncation may pass from while the subscriber lags
			err = sm.ReadStreamWhole(req.Stream, from, pageEvents, add)
		} else {
			err = sm.ReadStream(req.Stream, from, false, false, pageEvents, add)
		}
		full := errors.Is(err, errPageFull)
		if err != nil && !full && !errors.Is(err, shard.ErrStreamNotFound) {
			return err // a tombstone ends the subscription, as a truncated history does; an absent stream is waited for
		}
		if err := f.checkDue(); err != nil {
			return err
		}
		if k := len(page.Events); k > 0 {
			from = page.Events[k-1].Version + 1
			page.CaughtUp, page.NextVersion = !full && k < pageEvents, from
			if err := out.Send(page); err != nil {
				return err
			}
			n.metrics.subsEvents.Add(float64(k))
			f.sent(page.CaughtUp)
			continue
		}
		heartbeat, err := f.await(changed)
		if err != nil {
			return err
		}
		if heartbeat {
			if err := out.Send(&shoalv1.ReadResponse{CaughtUp: true, NextVersion: from}); err != nil {
				return err
			}
			f.sent(true)
		}
	}
}

// checkReadShard checks a ReadShard request and returns its staleness, or its refusal as a
// gRPC status.
func (n *Node) checkReadShard(req *shoalv1.ReadShardRequest) (staleness, error) {
	st, err := n.checkShardRead(req.Shard, req.AllowStale, req.MaxStalenessMs)
	if err == nil {
		err = checkShardRequest(req)
	}
	if err != nil {
		return st, n.toStatus(err, "", req.Shard)
	}
	return st, nil
}

// localReplica returns this node's replica of shard id for a local_only read, or an error
// saying it holds none (also for a replica removed from the group, which no longer follows it).
func (n *Node) localReplica(id uint32) (*shard.Shard, error) {
	sm, g, ok := n.shardSM(id)
	if ok && !g.Removed() {
		return sm, nil
	}
	return nil, shoalv1.NoLocalReplicaError(fmt.Sprintf("node %s holds no replica of shard %d (local_only reads are not forwarded)",
		n.Name(), id), id)
}

// checkShardRead checks the shard and staleness of a read of one shard (ReadShard,
// ListStreams), and returns the staleness.
func (n *Node) checkShardRead(id uint32, allowStale bool, maxStalenessMS uint32) (staleness, error) {
	s := n.settings.Load()
	if s == nil || id >= s.Shards {
		shards := uint32(0)
		if s != nil {
			shards = s.Shards
		}
		return staleness{}, &shard.InvalidError{Field: "shard", Limit: fmt.Sprintf("less than %d", shards),
			Reason: fmt.Sprintf("shard %d does not exist", id)}
	}
	return readStaleness(allowStale, maxStalenessMS)
}

// readShard serves a ReadShard request that checkReadShard passed, of staleness st.
func (n *Node) readShard(req *shoalv1.ReadShardRequest, st staleness, out grpc.ServerStreamingServer[shoalv1.ReadShardResponse]) (retErr error) {
	ctx := out.Context()
	var sm *shard.Shard
	var err error
	if req.LocalOnly {
		sm, err = n.localReplica(req.Shard)
	} else {
		sm, err = forwardRead(n, ctx, req.Shard, st, time.Duration(req.WaitMs)*time.Millisecond, out, func(ctx context.Context, conn *grpc.ClientConn) (grpc.ServerStreamingClient[shoalv1.ReadShardResponse], error) {
			return shoalv1.NewStreamsClient(conn).ReadShard(ctx, req)
		})
	}
	if sm == nil {
		return n.toStatus(err, "", req.Shard)
	}
	var f *follower // subscription or long poll
	if req.Follow || req.WaitMs > 0 {
		if f, err = n.newFollower(ctx, req.Shard, sm, st); err != nil {
			return n.toStatus(err, "", req.Shard)
		}
		if req.Follow {
			ended := f.subscribed("shard")
			defer func() { ended(retErr) }()
		}
	}
	waitUntil := time.Now().Add(time.Duration(req.WaitMs) * time.Millisecond)
	if dl, ok := ctx.Deadline(); ok {
		// Answered before the caller's deadline, however long the wait it asked: an empty page
		// past the deadline never arrives, and the caller learns no position to resume from.
		if latest := dl.Add(-min(longPollMargin, time.Until(dl)/10)); latest.Before(waitUntil) {
			waitUntil = latest
		}
	}
	from, remaining := req.FromPosition, req.Count
	if req.FromEnd {
		from = sm.LastPosition()
	}
	if end := sm.LastPosition(); !st.allowed && from > end {
		// Served by the leader after a read index: every position handed out is at or below
		// the end. (A replica's stale read may lag a position a reader saw.)
		return shoalv1.PositionAheadError(fmt.Sprintf("shard %d: position %d is past the shard's end, %d: the shard no longer has "+
			"the history it came from (a position kept across a restore from an older backup?) or it is another cluster's; "+
			"read from %d or before", req.Shard, from, end, end), req.Shard, from, end)
	}
	sent := false // a page was sent
	for {
		var changed <-chan struct{}
		if f != nil {
			changed = sm.Changed() // before the read: a change after it closes this
		}
		want := uint64(pageEvents)
		page := &shoalv1.ReadShardResponse{}
		size := 0
		entries := uint64(0)     // log entries read: events, and deletes even when skipped (end of log detection)
		end := sm.LastPosition() // before the read, which sees at least the entries before it
		next, err := sm.ReadLog(from, want, func(e *shard.RecordedEvent) error {
			if size >= pageBytes || req.Count != 0 && uint64(len(page.Events)) >= remaining {
				return errPageFull
			}
			if !wantedEntry(req, e) {
				entries++
				return nil
			}
			es := eventSize(e)
			if pageFull(len(page.Events), size, es) {
				return errPageFull // not taken: the next page starts with it
			}
			entries++
			page.Events = append(page.Events, toProtoEvent(e, req.Shard))
			size += es
			return nil
		})
		full := errors.Is(err, errPageFull)
		if err != nil && !full {
			return n.toStatus(err, "", req.Shard)
		}
		page.NextPosition = next
		// A read that skipped a long run of truncated events returns early: the log goes on. It
		// moved past from, and stopped short of the entries it was sure to see (end): not one
		// that found no more (at the end, or over a replica dropped under it, whose keys are gone
		// while the state machine still reports its last position), nor one that read up to
		// entries applied since it began.
		more := !full && next > from && next < end
		atEnd := !full && entries < want && !more
		if req.WaitMs > 0 && !sent && len(page.Events) == 0 && time.Until(waitUntil) > 0 {
			// Nothing for the caller yet (entries it skips do not count): read on, or at the
			// end wait, in steps that check the replica still serves, until the wait is up.
			// Then the page goes, empty or not, saying where to resume: a long run of skipped
			// entries must not keep a long poll from answering within its wait (the caller's
			// deadline could end it before any position came back). Past that first page the
			// read goes on as a plain one does, a page per run of entries.
			from = next
			var werr error
			if atEnd {
				_, werr = f.wait(changed, min(time.Until(waitUntil), followHeartbeat))
			}
			if werr == nil {
				werr = f.checkDue()
			}
			if werr != nil {
				return n.toStatus(werr, "", req.Shard)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		if err := f.checkDue(); err != nil {
			return n.toStatus(err, "", req.Shard)
		}
		if entries == 0 && !more {
			if req.Follow {
				heartbeat, err := f.await(changed)
				if err != nil {
					return n.toStatus(err, "", req.Shard)
				}
				if heartbeat {
					page.CaughtUp = true
					if err := out.Send(page); err != nil {
						return err
					}
					f.sent(true)
				}
				continue
			}
			if _, err := n.stillServes(req.Shard, sm); err != nil {
				return n.toStatus(err, "", req.Shard)
			}
			if !sent {
				// Tell the caller where to resume even when nothing is new.
				return out.Send(page)
			}
			return nil
		}
		page.CaughtUp = req.Follow && atEnd
		if req.Follow && len(page.Events) == 0 && f.quiet() {
			// Only entries the caller does not want: the next heartbeat carries the position.
			from = next
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		if err := out.Send(page); err != nil {
			return err
		}
		if req.Follow {
			n.metrics.subsEvents.Add(float64(len(page.Events)))
			f.sent(page.CaughtUp)
		}
		sent = true
		from = next
		if req.Count != 0 {
			// The count is of what the caller gets, as before deletes took positions: a
			// reader that resumes after its last event must not stall on a run of deletes.
			remaining -= uint64(len(page.Events))
			if remaining == 0 {
				return nil
			}
		}
		if atEnd && !req.Follow {
			if _, err := n.stillServes(req.Shard, sm); err != nil {
				return n.toStatus(err, "", req.Shard)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// wantedEntry reports whether a ReadShard returns log entry e: deletes only with
// include_deletes, and only entries that pass the request's filters.
func wantedEntry(req *shoalv1.ReadShardRequest, e *shard.RecordedEvent) bool {
	switch {
	case e.Deletion != shard.DeletionNone && !req.IncludeDeletes:
		return false
	case !strings.HasPrefix(e.Stream, req.StreamPrefix):
		return false
	case e.Deletion == shard.DeletionNone && len(req.EventTypes) > 0:
		return slices.Contains(req.EventTypes, e.Type)
	}
	return true
}

// Limits of a ReadShard request's filters.
const (
	maxFilterPrefix = 512
	maxFilterTypes  = 100
	maxFilterType   = 256
)

// checkShardRequest refuses a ReadShard request whose follow, wait_ms or filters do not go with
// the rest or pass their limits.
func checkShardRequest(req *shoalv1.ReadShardRequest) error {
	if len(req.StreamPrefix) > maxFilterPrefix {
		return &shard.InvalidError{Field: "stream_prefix", Limit: fmt.Sprintf("at most %d bytes", maxFilterPrefix),
			Reason: fmt.Sprintf("%d bytes given", len(req.StreamPrefix))}
	}
	if len(req.EventTypes) > maxFilterTypes {
		return &shard.InvalidError{Field: "event_types", Limit: fmt.Sprintf("at most %d types", maxFilterTypes),
			Reason: fmt.Sprintf("%d given", len(req.EventTypes))}
	}
	for i, t := range req.EventTypes {
		if len(t) == 0 || len(t) > maxFilterType {
			return &shard.InvalidError{Field: "event_types", Limit: fmt.Sprintf("1..%d bytes each", maxFilterType),
				Reason: fmt.Sprintf("type %d is %d bytes", i, len(t))}
		}
	}
	switch {
	case req.Follow && req.Count != 0:
		return &shard.InvalidError{Field: "count", Limit: "0 with follow",
			Reason: fmt.Sprintf("a subscription reads until cancelled; %d given", req.Count)}
	case req.Follow && req.WaitMs != 0:
		return &shard.InvalidError{Field: "wait_ms", Limit: "0 with follow",
			Reason: "a subscription already waits for new entries"}
	case req.WaitMs > maxWaitMS:
		return &shard.InvalidError{Field: "wait_ms", Limit: fmt.Sprintf("at most %d", maxWaitMS),
			Reason: fmt.Sprintf("%d given", req.WaitMs)}
	case req.LocalOnly && (!req.AllowStale || req.MaxStalenessMs != 0):
		return &shard.InvalidError{Field: "local_only", Limit: "with allow_stale and without max_staleness_ms",
			Reason: "a read of this node's replica as it is, which only a stale read unbounded in age can be"}
	}
	return nil
}

package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// Append appends events to stream, all or nothing, if the stream satisfies
// expected. Events with a zero ID (uuid.Nil, which Go cannot tell from an ID
// not given) get a time-ordered UUID (version 7) before the first attempt;
// every retry resends the same IDs, so a retried append that had in fact
// succeeded returns the original result with Duplicate set instead of
// writing twice. The caller's events are not modified.
//
// Errors: ErrWrongExpectedVersion (*WrongExpectedVersionError),
// ErrStreamDeleted, ErrInvalidArgument (*InvalidArgumentError), ErrIDConflict
// (*IDConflictError), ErrUnavailable, ErrClosed, or the context's error.
// ErrUnavailable and the context's error come wrapped in an
// *OutcomeUnknownError (ErrOutcomeUnknown) when an attempt may have been
// applied: without it, nothing was written. The *OutcomeUnknownError holds
// the event IDs sent (EventIDs): append again with them to settle it.
func (c *Client) Append(ctx context.Context, stream string, expected ExpectedVersion, events ...Event) (AppendResult, error) {
	if err := checkStream(stream); err != nil {
		return AppendResult{}, err
	}
	if len(events) == 0 {
		return AppendResult{}, &InvalidArgumentError{Field: "events", Limit: "1..10000 events", Reason: "an append needs at least one event"}
	}
	req := &shoalv1.AppendRequest{Stream: stream, Expected: expected.proto(), Events: make([]*shoalv1.EventData, len(events))}
	ids := make([]uuid.UUID, len(events))
	for i, ev := range events {
		switch {
		case ev.Type == "":
			return AppendResult{}, &InvalidArgumentError{Field: fmt.Sprintf("events[%d].type", i), Limit: "1..256 bytes", Reason: "the event type is empty"}
		case !utf8.ValidString(ev.Type):
			return AppendResult{}, notUTF8(fmt.Sprintf("events[%d].type", i), "the event type")
		case !utf8.ValidString(ev.ContentType):
			return AppendResult{}, notUTF8(fmt.Sprintf("events[%d].content_type", i), "the content type")
		}
		id := ev.ID
		if id == uuid.Nil {
			id = uuid.Must(uuid.NewV7())
		}
		ids[i] = id
		req.Events[i] = &shoalv1.EventData{Id: id[:], Type: ev.Type, Data: ev.Data, Metadata: ev.Metadata, ContentType: ev.ContentType}
	}
	if size := proto.Size(req); size > maxMessageSize {
		// gRPC would refuse to send it; the server's own limit on an append's data and
		// metadata (16 MiB) is lower still, and refuses what passes this with its name.
		return AppendResult{}, &InvalidArgumentError{Field: "events", Limit: fmt.Sprintf("requests of at most %d MiB", maxMessageSize>>20),
			Reason: fmt.Sprintf("the append encodes to %d bytes", size)}
	}
	var resp *shoalv1.AppendResponse
	err := c.run(ctx, target{kind: byStream, stream: stream, idempotent: true, lostAnswerRetry: true}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		r, err := n.appends.append(ctx, req)
		resp = r
		return false, err
	})
	if err != nil {
		if ou, ok := errors.AsType[*OutcomeUnknownError](err); ok {
			ou.EventIDs = ids
		}
		return AppendResult{}, err
	}
	return AppendResult{
		Shard:        resp.GetShard(),
		FirstVersion: resp.GetFirstVersion(),
		LastVersion:  resp.GetLastVersion(),
		Position:     resp.GetPosition(),
		// Servers before last_position send 0: the batch's last position then follows from
		// its first (what they always reported).
		LastPosition: max(resp.GetLastPosition(), resp.GetPosition()+resp.GetLastVersion()-resp.GetFirstVersion()),
		Duplicate:    resp.GetDuplicate(),
	}, nil
}

// checkStream refuses a stream name that is empty or not UTF-8 (a protobuf string, which gRPC
// cannot send: on the append pipeline that would end the stream every caller shares). The
// server checks the rest of its limits, and names them.
func checkStream(stream string) error {
	switch {
	case stream == "":
		return &InvalidArgumentError{Field: "stream", Limit: "1..512 bytes", Reason: "the stream name is empty"}
	case !utf8.ValidString(stream):
		return notUTF8("stream", "the stream name")
	}
	return nil
}

// notUTF8 refuses field, a protobuf string, that is not UTF-8; what names it in the reason.
func notUTF8(field, what string) error {
	return &InvalidArgumentError{Field: field, Limit: "valid UTF-8", Reason: what + " is not valid UTF-8"}
}

// Delete deletes stream if it satisfies expected (NoStream is invalid
// here). Without Tombstone the delete is soft.
//
// With an Exact expected version, a delete is retried like an append (a
// repeat cannot apply twice: once the delete took effect, or another writer
// appended, the version no longer matches); a repeat, after an attempt that
// may have been applied, that the server refuses as the applied attempt
// would make it (stream not found or deleted, wrong expected version) ends
// with ErrOutcomeUnknown rather than that refusal. With Any or StreamExists, a
// repeat could delete what another writer appended after the first one took
// effect, so such a delete is retried only after failures that prove it was
// not applied (a node that is not the leader, a connection that could not be
// made); any other failure ends it with ErrOutcomeUnknown. Such a delete
// waiting on a node that stopped answering is also not abandoned when its
// shard elects a new leader: it waits for the attempt timeout
// (RetryPolicy.AttemptTimeout), the caller's deadline or gRPC's keepalive.
func (c *Client) Delete(ctx context.Context, stream string, expected ExpectedVersion, opts ...DeleteOption) error {
	if err := checkStream(stream); err != nil {
		return err
	}
	if expected == NoStream {
		return &InvalidArgumentError{Field: "expected", Limit: "any, stream exists or an exact version", Reason: "a delete cannot expect no stream"}
	}
	var o deleteOptions
	for _, opt := range opts {
		opt(&o)
	}
	req := &shoalv1.DeleteRequest{Stream: stream, Expected: expected.proto(), Tombstone: o.tombstone}
	exact := expected.proto().GetKind() == shoalv1.ExpectedVersion_KIND_EXACT
	return c.run(ctx, target{kind: byStream, stream: stream, idempotent: exact, lostAnswerRetry: exact, once: !exact, ownRefusal: true}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		resp, err := n.streams.Delete(ctx, req)
		if err == nil && o.result != nil {
			*o.result = DeleteResult{Shard: resp.GetShard(), Position: resp.GetPosition(), Logged: resp.GetLogged()}
		}
		return false, err
	})
}

// Truncate removes stream's events before version before, for good, if the
// stream satisfies expected (NoStream is invalid here), and returns the
// stream's first version after it. The events are gone from Read, from the
// shard's log (ReadShard, ReadAll, subscriptions and projections that have
// not read them yet skip them) and, within seconds, from the servers' disks.
// Their event IDs are forgotten with them (shard format 7): a retry of a
// truncated append is answered as a new append would be (written again, or
// refused by its expected version, an ID conflict with its events still
// stored, or a tombstone): truncate only events older than writers' retries.
//
// A live stream keeps its last event, so that its versions go on: before is
// capped at the last version, and the returned start says where the stream
// now begins. A soft-deleted or tombstoned stream can lose every event
// (math.MaxUint64 removes all), which reclaims the space its hidden history
// holds. A truncate is idempotent and retried like an append: it changes
// neither the stream's version nor its state, so a repeat after an applied
// attempt answers as it did, unless another writer changed the stream in
// between: a repeat then refused (ErrWrongExpectedVersion) ends with
// ErrOutcomeUnknown, as the first attempt may have removed the events.
//
// A shard whose replicas do not all run a version with truncation (shard
// format 4) refuses it with ErrShardFormat until they do.
//
// Errors: ErrStreamNotFound, ErrWrongExpectedVersion, ErrShardFormat,
// ErrInvalidArgument, ErrUnavailable, ErrOutcomeUnknown, ErrClosed, or the
// context's error.
func (c *Client) Truncate(ctx context.Context, stream string, before uint64, expected ExpectedVersion) (start uint64, err error) {
	if err := checkStream(stream); err != nil {
		return 0, err
	}
	if expected == NoStream {
		return 0, &InvalidArgumentError{Field: "expected", Limit: "any, stream exists or an exact version", Reason: "a truncate cannot expect no stream"}
	}
	req := &shoalv1.TruncateRequest{Stream: stream, Before: before, Expected: expected.proto()}
	err = c.run(ctx, target{kind: byStream, stream: stream, idempotent: true, lostAnswerRetry: true, repeatRefusable: true}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		resp, err := n.streams.Truncate(ctx, req)
		if err == nil {
			start = resp.GetStart()
		}
		return false, err
	})
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unimplemented && !errors.Is(err, ErrOutcomeUnknown) {
		// A node of a version without truncation, called or forwarded to (a verdict, not
		// retried): its shards are below format 4 too. After an attempt that may have been
		// applied (on an upgraded leader), the outcome stays unknown.
		err = fmt.Errorf("%w: a node runs a version without truncation (%s)", ErrShardFormat, st.Message())
	}
	return start, err
}

// Read returns the events of stream, forwards from version 0 unless opts
// say otherwise. The sequence pulls pages from one server stream as the
// caller ranges over it (memory is bounded by a page); after a transient
// error it resumes after the last event yielded, so no event is yielded twice
// or skipped. An error ends the sequence: it is yielded once, with a zero
// event. Breaking out of the loop cancels the read.
//
//	for ev, err := range c.Read(ctx, "order-42") {
//		if err != nil { return err }
//		...
//	}
//
// Each server stream reads one view of the stream. A read that resumes asks
// for the last event it yielded again, to tell whether the stream was deleted
// in between: deleted and not written since, the read ends with
// ErrStreamNotFound (ErrStreamDeleted once tombstoned); written again, its
// versions going on from the deleted ones, with ErrStreamChanged, as what
// follows is another history than the one yielded so far. (A stale read
// whose replica lacks that event ends there instead, as stale reads may.)
//
// Errors: ErrStreamNotFound, ErrStreamDeleted, ErrStreamChanged,
// ErrHistoryTruncated (WholeHistory), ErrInvalidArgument, ErrUnavailable,
// ErrClosed, or the context's error.
func (c *Client) Read(ctx context.Context, stream string, opts ...ReadOption) iter.Seq2[RecordedEvent, error] {
	o := readOptions{stale: c.opts.staleReads}
	for _, opt := range opts {
		opt(&o)
	}
	o.streamStart()
	return func(yield func(RecordedEvent, error) bool) {
		if err := checkStream(stream); err != nil {
			yield(RecordedEvent{}, err)
			return
		}
		maxStale, err := o.maxStalenessMS()
		if err == nil {
			err = o.checkStreamRead()
		}
		if err != nil {
			yield(RecordedEvent{}, err)
			return
		}
		req := &shoalv1.ReadRequest{
			Stream: stream, FromVersion: o.from, FromEnd: o.fromEnd,
			Backward: o.backward, Count: o.count, AllowStale: o.stale, MaxStalenessMs: maxStale,
			Follow: o.follow, WholeHistory: o.whole,
		}
		if o.fromEnd {
			// The server resolves the end; a subscription resumes where its next_version said
			// that was (below, max with this), not at a FromVersion given before FromEnd.
			req.FromVersion = 0
		}
		stopped := false       // the caller broke out, or the read is complete
		yielded := false       // an event went to the caller, on this attempt or an earlier one
		var last RecordedEvent // the last event yielded
		var changed error      // the stream was deleted since last (StreamChangedError)
		err = c.run(ctx, target{kind: byStream, stream: stream, stale: o.stale, idempotent: true}, false, func(ctx context.Context, n *node, w *leaderWatch) (bool, error) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			sub := newSubscription(ctx, cancel, o.follow)
			// A read resumed after it yielded events asks for the last one again: the stream
			// was deleted since (and maybe written again, its versions going on from where the
			// read stopped) when that event is gone. Each attempt reads one view of the stream;
			// two attempts must read the same history, or the caller would get two.
			overlap := yielded && !o.follow
			attempt := req
			if overlap {
				attempt = proto.Clone(req).(*shoalv1.ReadRequest)
				attempt.FromVersion, attempt.FromEnd = last.Version, false
				// The history from last on is what the overlap checks: a truncation past last
				// (or a delete) ends the read with ErrStreamChanged, one before it passes.
				attempt.WholeHistory = false
				if attempt.Count > 0 {
					attempt.Count++
				}
			}
			open := func() (grpc.ServerStreamingClient[shoalv1.ReadResponse], error) { return n.streams.Read(ctx, attempt) }
			rs, err := watched(w, open)
			if err != nil {
				return false, err
			}
			progress := false
			for {
				page, err := recvPage(sub, w, rs.Recv)
				if o.follow && streamNotFound(err) {
					err = io.EOF // a server from before subscriptions: poll until the stream exists
				}
				if err == io.EOF && o.follow {
					if rs, err = reopen(sub, w, open); err != nil {
						return progress || sub.lived(), err
					}
					continue
				}
				if err == io.EOF && overlap && !o.stale {
					changed = &StreamChangedError{Stream: stream, Version: last.Version}
					return progress, nil
				}
				if err == io.EOF {
					return progress, nil
				}
				if err != nil && o.stale && !o.follow && yielded && streamNotFound(err) {
					// A stale read resumed on a replica that has not applied the stream's first
					// events yet (it lags the one that served them): this read ends here, as a
					// stale read may end before what its replica has not applied, rather than
					// say that the stream it read from does not exist. (So does one whose
					// replica lacks the last event read, below.)
					return progress, nil
				}
				if err != nil {
					return progress || sub.lived(), err
				}
				w.answer()
				sub.received(len(page.GetEvents()))
				if page.GetCaughtUp() {
					sub.caughtUp()
					// Resume where the server goes on (it resolved FromEnd).
					req.FromVersion, req.FromEnd = max(req.FromVersion, page.GetNextVersion()), false
				}
				for _, pe := range page.GetEvents() {
					ev := recordedFromProto(pe)
					if overlap {
						overlap = false
						switch {
						case ev.Version == last.Version && ev.ID == last.ID:
							continue // read already
						case o.stale && req.Backward && ev.Version+1 == last.Version:
							// A stale replica that has not applied the last event read, but
							// the one before it: the read goes on with it.
						case o.stale && req.Backward && ev.Version < last.Version:
							// A stale replica further behind: going on with its latest event
							// would skip those between. The read ends here, as a stale read
							// may end before what its replica has not applied.
							return progress, nil
						default:
							changed = &StreamChangedError{Stream: stream, Version: last.Version}
							return progress, nil // the call's end, not the attempt's failure
						}
					}
					// Progress (which resets the retries' backoff and time limit) is an event
					// not yielded before: an attempt that only read the last one again made none.
					progress = true
					// Move the resume point past ev before yielding it.
					end := false
					if req.Backward {
						req.FromEnd = false
						if ev.Version == 0 {
							end = true
						} else {
							req.FromVersion = ev.Version - 1
						}
					} else {
						req.FromVersion, req.FromEnd = ev.Version+1, false
					}
					if req.Count > 0 {
						req.Count--
						end = end || req.Count == 0
					}
					yielded, last = true, ev
					if !yield(ev, nil) || end {
						stopped = true
						return progress, nil
					}
				}
			}
		})
		if err == nil {
			err = changed
		}
		if err != nil && !stopped {
			yield(RecordedEvent{}, err)
		}
	}
}

// ReadPage reads up to Count events (DefaultPageSize when Count is not
// given; Count(0), all of them, is refused: that is Read's) into a slice. It
// takes the same options and returns the same errors as Read; on error it
// returns no events.
func (c *Client) ReadPage(ctx context.Context, stream string, opts ...ReadOption) ([]RecordedEvent, error) {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.countSet && o.count == 0 {
		return nil, &InvalidArgumentError{Field: "Count", Limit: "1 or more for ReadPage (none: DefaultPageSize)",
			Reason: "Count(0) reads every event, which ReadPage would hold in memory at once; use Read to go through a whole stream"}
	}
	if o.count == 0 {
		opts = append(opts[:len(opts):len(opts)], Count(DefaultPageSize))
	}
	var out []RecordedEvent
	for ev, err := range c.Read(ctx, stream, opts...) {
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// ReadShard returns the events of one shard's log (every stream of the
// shard) in position order, starting at position from; count 0 reads to the
// log's current end, else at most count entries (events, and deletes with
// IncludeDeletes). It pages and resumes like Read. Of opts only
// Linearizable, Stale, MaxStaleness, IncludeDeletes, Follow, Wait, FromEnd,
// StreamPrefix, EventTypes and ResumeAt apply. Without
// IncludeDeletes the deletes' positions are skipped: positions then have
// gaps, and a reader that resumes after its last event reads past them.
// Projections use it with a checkpoint of next positions per shard; see
// Shards for the shard count. A linearizable read from past the shard's end
// (the position its next entry takes) fails with ErrPositionAhead: no
// position the cluster handed out is past it.
func (c *Client) ReadShard(ctx context.Context, shard uint32, from, count uint64, opts ...ReadOption) iter.Seq2[RecordedEvent, error] {
	o := readOptions{stale: c.opts.staleReads}
	for _, opt := range opts {
		opt(&o)
	}
	return func(yield func(RecordedEvent, error) bool) {
		maxStale, err := o.maxStalenessMS()
		var waitMS uint32
		if err == nil {
			waitMS, err = o.waitMS()
		}
		if err == nil {
			err = o.checkFilters()
		}
		if err == nil && o.follow && count != 0 {
			err = &InvalidArgumentError{Field: "count", Limit: "0 with Follow", Reason: "a subscription reads until cancelled"}
		}
		if err != nil {
			yield(RecordedEvent{}, err)
			return
		}
		if o.resume != nil && !o.fromEnd {
			o.resume.Store(from)
		}
		req := &shoalv1.ReadShardRequest{Shard: shard, FromPosition: from, Count: count, AllowStale: o.stale,
			MaxStalenessMs: maxStale, IncludeDeletes: o.deletes, Follow: o.follow, WaitMs: waitMS, FromEnd: o.fromEnd,
			StreamPrefix: o.prefix, EventTypes: o.types}
		if o.fromEnd {
			req.FromPosition = 0 // the server's next_position says where the end was
		}
		stopped := false
		err = c.run(ctx, target{kind: byShard, shard: shard, stale: o.stale, idempotent: true}, false, func(ctx context.Context, n *node, w *leaderWatch) (bool, error) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			sub := newSubscription(ctx, cancel, o.follow)
			open := func() (grpc.ServerStreamingClient[shoalv1.ReadShardResponse], error) {
				return n.streams.ReadShard(ctx, req)
			}
			rs, err := watched(w, open)
			if err != nil {
				return false, err
			}
			progress := false
			first := true // the first page of a long poll may take req.WaitMs
			for {
				var page *shoalv1.ReadShardResponse
				if first && req.WaitMs > 0 {
					w.release()
					page, err = watchedAfter(w, time.Duration(req.WaitMs)*time.Millisecond+leaderWatchAfter, rs.Recv)
				} else {
					page, err = recvPage(sub, w, rs.Recv)
				}
				first = false
				if err == io.EOF && o.follow {
					if rs, err = reopen(sub, w, open); err != nil {
						return progress || sub.lived(), err
					}
					continue
				}
				if err == io.EOF {
					return progress, nil
				}
				if err != nil {
					return progress || sub.lived(), err
				}
				w.answer()
				sub.received(len(page.GetEvents()))
				if page.GetCaughtUp() {
					sub.caughtUp()
				}
				// Resume at the page's next position (a server error can
				// only come between pages); fall back to the last event's.
				prev := req.FromPosition
				if next := page.GetNextPosition(); next > req.FromPosition {
					req.FromPosition = next
				} else if evs := page.GetEvents(); len(evs) > 0 {
					req.FromPosition = max(req.FromPosition, evs[len(evs)-1].GetPosition()+1)
				}
				// FromEnd is resolved: go on from the page's position. Skipped deletes are
				// progress too.
				req.FromEnd = false
				progress = progress || req.FromPosition > prev
				events := page.GetEvents()
				for i, pe := range events {
					progress = true
					end := false
					if req.Count > 0 {
						req.Count--
						end = req.Count == 0
					}
					// Past this entry once it is handled; past the whole page after its last.
					past := pe.GetPosition() + 1
					if i == len(events)-1 {
						past = max(past, req.FromPosition)
					}
					if !o.wanted(pe) { // a server from before filters
						o.advance(past)
						if end {
							stopped = true
							return progress, nil
						}
						continue
					}
					more := yield(recordedFromProto(pe), nil)
					if more || o.unhandled == nil || !o.unhandled() {
						o.advance(past)
					}
					if !more || end {
						stopped = true
						return progress, nil
					}
				}
				if len(events) == 0 {
					o.advance(req.FromPosition)
				}
			}
		})
		if err != nil && !stopped {
			yield(RecordedEvent{}, err)
		}
	}
}

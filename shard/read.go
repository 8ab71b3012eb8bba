package shard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
)

// StreamInfo reports the stream's state from the DB. A soft-deleted stream
// reports exists=false, deleted=true and its last version; a tombstoned one
// also tombstoned=true. An absent stream reports all false and a nil error.
func (s *Shard) StreamInfo(stream string) (exists bool, last uint64, deleted, tombstoned bool, err error) {
	it, m, found, err := s.openStream(stream)
	if err != nil || !found {
		return false, 0, false, false, err
	}
	if err := it.Close(); err != nil {
		return false, 0, false, false, err
	}
	return m.state == stateLive, m.last, m.state != stateLive, m.state == stateTombstoned, nil
}

// openStream reads the stream record with a new iterator and returns the record and, when
// the stream exists, that iterator bounded to the stream's visible events (from the record's
// first visible version to the stream's last event), for the caller to position: the record
// and the events come from one view of the DB. A live stream's last version is set from its
// last event key (visibleEvents). The caller closes the iterator; it is nil when the stream is
// absent or err is set.
func (s *Shard) openStream(stream string) (*pebble.Iterator, streamMeta, bool, error) {
	return s.openStreamIn(s.db, stream)
}

// openStreamIn is openStream over r, the DB or a snapshot of it.
func (s *Shard) openStreamIn(r pebble.Reader, stream string) (*pebble.Iterator, streamMeta, bool, error) {
	if err := CheckStreamName(stream); err != nil {
		return nil, streamMeta{}, false, err
	}
	key := s.keys.stream(nil, stream)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: key, UpperBound: append(key[:len(key):len(key)], 0)})
	if err != nil {
		return nil, streamMeta{}, false, err
	}
	fail := func(err error) (*pebble.Iterator, streamMeta, bool, error) {
		if cerr := it.Close(); err == nil {
			err = cerr
		}
		return nil, streamMeta{}, false, err
	}
	m, found, err := streamRecord(it, key)
	if err != nil || !found {
		return fail(err)
	}
	if err := s.visibleEvents(it, &m, stream); err != nil { // the same view, other keys
		return fail(err)
	}
	return it, m, true, nil
}

// visibleEvents bounds it to the visible events of stream, whose record is m (from its first
// visible version to its last event). For a live stream it sets m.last from the last event
// key, which is right in every format (the record's may be behind from Format3 on), and leaves
// it positioned there.
func (s *Shard) visibleEvents(it *pebble.Iterator, m *streamMeta, stream string) error {
	it.SetBounds(s.keys.event(nil, m.id, m.start), s.keys.eventStreamEnd(nil, m.id))
	if m.state != stateLive {
		return nil
	}
	last, ok, err := lastEvent(it)
	switch {
	case err != nil:
		return err
	case !ok:
		return errCorrupt(fmt.Sprintf("live stream %q has no visible event", stream))
	}
	m.last = last
	return nil
}

// ReadStream calls fn for up to count events of stream (0 = all), starting
// at version from (or at the last event when fromEnd), forward or backward.
// Events hidden by a soft delete are skipped. It returns ErrStreamNotFound
// for absent and soft-deleted streams, ErrStreamDeleted for tombstoned ones,
// and fn's error if fn stops the read. fn may retain the event. Memory is
// bounded by one event at a time. The record and the events are read from
// one view of the DB.
func (s *Shard) ReadStream(stream string, from uint64, fromEnd, backward bool, count uint64,
	fn func(*RecordedEvent) error) error {
	return s.readStream(s.db, stream, from, fromEnd, backward, count, false, fn)
}

// A View is a read-only view of the shard's keys as of its creation, for a read in several
// parts that must see one state: between the parts it holds no iterator. It is a Pebble
// eventually-file-only snapshot of the shard's span: it keeps the memtables of its time only
// until they are flushed, and then the tables of its time that hold the shard's keys (as an
// iterator would, without the memory). A plain snapshot would not do: an excise (a raft
// snapshot installed over the shard) shows through it. Close it when done.
type View struct {
	snap *pebble.EventuallyFileOnlySnapshot
}

// NewView returns a view of the shard's keys as of now.
func (s *Shard) NewView() *View {
	lo, hi := s.keys.span()
	return &View{snap: s.db.NewEventuallyFileOnlySnapshot([]pebble.KeyRange{{Start: lo, End: hi}})}
}

// Close releases v.
func (v *View) Close() error { return v.snap.Close() }

// ReadStreamIn is ReadStream, ReadStreamWhole when whole, over view v.
func (s *Shard) ReadStreamIn(v *View, stream string, from uint64, fromEnd, backward bool, count uint64, whole bool,
	fn func(*RecordedEvent) error) error {
	return s.readStream(v.snap, stream, from, fromEnd, backward, count, whole, fn)
}

// ReadStreamWhole is ReadStream forwards from version from, for a caller that needs the
// stream's history from there complete (an aggregate's state folded from a snapshot at from,
// or from the start): it refuses with a *HistoryTruncatedError, calling fn for no event, when
// a truncation removed events of the stream's current history at or after from. Versions a
// soft delete hid are not its history: a read from below them starts after them, as
// ReadStream does. Truncations applied before Format5 left no mark and are not told.
func (s *Shard) ReadStreamWhole(stream string, from, count uint64, fn func(*RecordedEvent) error) error {
	return s.readStream(s.db, stream, from, false, false, count, true, fn)
}

func (s *Shard) readStream(r pebble.Reader, stream string, from uint64, fromEnd, backward bool, count uint64, whole bool,
	fn func(*RecordedEvent) error) error {
	it, m, found, err := s.openStreamIn(r, stream)
	switch {
	case err != nil:
		return err
	case !found:
		return ErrStreamNotFound
	case m.state != stateLive:
		if err := it.Close(); err != nil {
			return err
		}
		if m.state == stateTombstoned {
			return ErrStreamDeleted
		}
		return ErrStreamNotFound
	case whole && m.truncated && from < m.start:
		if err := it.Close(); err != nil {
			return err
		}
		return &HistoryTruncatedError{Stream: stream, From: from, Start: m.start}
	}
	if count == 0 {
		count = math.MaxUint64
	}
	// it covers the visible versions: m.start to the last event.
	var valid bool
	switch {
	case fromEnd:
		valid = it.Last()
	case backward && from < math.MaxUint64:
		valid = it.SeekLT(s.keys.event(nil, m.id, from+1))
	case backward:
		valid = it.Last()
	default:
		valid = it.SeekGE(s.keys.event(nil, m.id, max(from, m.start)))
	}
	step := it.Next
	if backward {
		step = it.Prev
	}
	for n := uint64(0); valid && n < count; valid, n = step(), n+1 {
		ev := &RecordedEvent{Stream: stream}
		if err := s.decodeEvent(it, ev); err != nil {
			it.Close()
			return err
		}
		if err := fn(ev); err != nil {
			it.Close()
			return err
		}
	}
	return it.Close()
}

func (s *Shard) decodeEvent(it *pebble.Iterator, ev *RecordedEvent) error {
	var err error
	if ev.Version, err = eventVersion(it.Key()); err != nil {
		return err
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return err
	}
	return decodeRecord(v, ev)
}

// maxLogSkip bounds the truncated events one ReadLog skips: past it the read returns early,
// so that a read over a long truncated run answers in bounded time (a variable for tests).
var maxLogSkip = 4096

// ReadLog calls fn for up to count entries (0 = all) of the shard log in
// position order, starting at position from. It returns the position after
// the last entry fn accepted (from if none) or, past it, after the truncated
// events the read skipped, and fn's error if fn stopped the read. The log
// includes events of streams deleted later (it is the shard's history; check
// StreamInfo to filter), but not the events a TruncateCommand removed. A read
// that skips 4096 of those returns early, with fewer than count
// entries: next below LastPosition says the log goes on. From Format2 on it also
// holds the deletes, each at its own position, as RecordedEvents with
// Deletion set (see RecordedEvent); they count toward count. Memory is
// bounded by one event at a time plus the names of the streams seen.
func (s *Shard) ReadLog(from, count uint64, fn func(*RecordedEvent) error) (next uint64, err error) {
	if count == 0 {
		count = math.MaxUint64
	}
	next = from
	// The log, its events and the streams' names are read through clones of one iterator: one
	// view of the DB, which a group dropped or replaced by a snapshot meanwhile does not change
	// under the read (an entry pointing at an event gone from a later view).
	lo, hi := s.keys.tagSpan(tagLog)
	lit, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return next, err
	}
	defer lit.Close()
	elo, ehi := s.keys.tagSpan(tagEvent)
	eit, err := lit.Clone(pebble.CloneOptions{IterOptions: &pebble.IterOptions{LowerBound: elo, UpperBound: ehi}})
	if err != nil {
		return next, err
	}
	defer eit.Close()
	nlo, nhi := s.keys.tagSpan(tagName)
	nit, err := lit.Clone(pebble.CloneOptions{IterOptions: &pebble.IterOptions{LowerBound: nlo, UpperBound: nhi}})
	if err != nil {
		return next, err
	}
	defer nit.Close()
	starts := streamStarts{s: s, lit: lit}
	defer starts.close()

	// Find the log entry covering from: the last one starting at or before it.
	var le logEntry
	valid := false
	if from < math.MaxUint64 && lit.SeekLT(s.keys.log(nil, from+1)) {
		k := lit.Key()
		if len(k) != prefixLen+1+8 {
			return next, errCorrupt("log key")
		}
		pos := binary.BigEndian.Uint64(k[prefixLen+1:])
		v, err := lit.ValueAndErr()
		if err != nil {
			return next, err
		}
		if err := le.decode(v); err != nil {
			return next, err
		}
		valid = pos+le.span() > from
	} else if err := lit.Error(); err != nil {
		return next, err
	}
	if !valid {
		valid = lit.SeekGE(s.keys.log(nil, from))
	}
	names := make(map[uint64]string)
	var delivered uint64
	skipped := 0 // truncated events
	var want []byte
	for ; valid && delivered < count; valid = lit.Next() {
		k := lit.Key()
		if len(k) != prefixLen+1+8 {
			return next, errCorrupt("log key")
		}
		pos := binary.BigEndian.Uint64(k[prefixLen+1:])
		v, err := lit.ValueAndErr()
		if err != nil {
			return next, err
		}
		if err := le.decode(v); err != nil {
			return next, err
		}
		name, ok := names[le.stream]
		if !ok {
			nk := s.keys.name(nil, le.stream)
			if !nit.SeekGE(nk) || !bytes.Equal(nit.Key(), nk) {
				if err := nit.Error(); err != nil {
					return next, err
				}
				return next, errCorrupt("shard log names a stream without a name record")
			}
			nv, err := nit.ValueAndErr()
			if err != nil {
				return next, err
			}
			name = string(nv)
			names[le.stream] = name
		}
		if le.deletion != DeletionNone {
			ev := &RecordedEvent{Stream: name, Version: le.first, Position: pos, Created: le.time, Deletion: le.deletion}
			if err := fn(ev); err != nil {
				return next, err
			}
			delivered++
			next = pos + 1
			continue
		}
		skip := uint64(0)
		if from > pos {
			skip = from - pos
		}
		want = s.keys.event(want[:0], le.stream, le.first+skip)
		evalid := eit.SeekGE(want)
		for j := skip; j < le.count && delivered < count; j++ {
			want = s.keys.event(want[:0], le.stream, le.first+j)
			if !evalid || string(eit.Key()) != string(want) {
				if err := eit.Error(); err != nil {
					return next, err
				}
				// Missing: truncated (below the stream's start) or lost.
				start, err := starts.of(le.stream, name)
				if err != nil {
					return next, err
				}
				if le.first+j >= start {
					return next, errCorrupt("shard log points at a missing event")
				}
				next = pos + j + 1 // skipped for good: a resumed read need not look again
				if skipped++; skipped >= maxLogSkip {
					return next, nil
				}
				continue
			}
			ev := &RecordedEvent{Stream: name}
			if err := s.decodeEvent(eit, ev); err != nil {
				return next, err
			}
			if err := fn(ev); err != nil {
				return next, err
			}
			delivered++
			next = pos + j + 1
			evalid = eit.Next()
		}
	}
	// The loop also ends when the iterator fails: a storage error, not the log's end.
	return next, lit.Error()
}

// streamStarts looks up, through a clone of a read's log iterator (one view of the DB), the
// start (first version kept) of the streams whose events the shard log names but the view
// lacks: below its start, an event was truncated; at or after it, it was lost.
type streamStarts struct {
	s     *Shard
	lit   *pebble.Iterator
	it    *pebble.Iterator // cloned at the first lookup
	start map[uint64]uint64
}

func (ss *streamStarts) of(id uint64, name string) (uint64, error) {
	if v, ok := ss.start[id]; ok {
		return v, nil
	}
	if ss.it == nil {
		lo, hi := ss.s.keys.tagSpan(tagStream)
		it, err := ss.lit.Clone(pebble.CloneOptions{IterOptions: &pebble.IterOptions{LowerBound: lo, UpperBound: hi}})
		if err != nil {
			return 0, err
		}
		ss.it, ss.start = it, make(map[uint64]uint64)
	}
	m, found, err := streamRecord(ss.it, ss.s.keys.stream(nil, name))
	switch {
	case err != nil:
		return 0, err
	case !found:
		return 0, errCorrupt("shard log names a stream without a stream record")
	case m.id != id:
		return 0, errCorrupt("stream record and name record disagree on the stream ID")
	}
	ss.start[id] = m.start
	return m.start, nil
}

// streamRecord positions it at key, a stream record's, and decodes the record; found is false
// when it holds no such key.
func streamRecord(it *pebble.Iterator, key []byte) (m streamMeta, found bool, err error) {
	if !it.SeekGE(key) || !bytes.Equal(it.Key(), key) {
		return m, false, it.Error()
	}
	v, err := it.ValueAndErr()
	if err == nil {
		err = m.decode(v)
	}
	return m, err == nil, err
}

func (ss *streamStarts) close() error {
	if ss.it == nil {
		return nil
	}
	return ss.it.Close()
}

// TruncateStep returns where the next step of a truncation of stream before version before
// ends, so that each step removes at most as many events as one truncation forgets the IDs of
// (Format7), as the committed state has it: the version after the first forgetIDsMax events
// (within forgetIDsBytes) stored from version from on (0, or the previous step's end), and
// true; false when a truncation at before removes no more than that from there. Truncating at
// each step's end in turn, then at before, removes the same events as one truncation at before,
// and forgets every ID among them. It reads at most one step's events.
func (s *Shard) TruncateStep(stream string, from, before uint64) (uint64, bool, error) {
	it, m, found, err := s.openStream(stream) // a live stream's last version from its events
	if err != nil || !found {
		return 0, false, err
	}
	from = max(from, storedFrom(&m))
	if m.state == stateLive {
		before = min(before, m.last) // a truncation keeps a live stream's last event
	}
	if before <= from {
		return 0, false, it.Close()
	}
	it.SetBounds(s.keys.event(nil, m.id, from), s.keys.event(nil, m.id, before)) // the same view
	// As removeEvents counts: a step ends after the event that reaches either bound.
	n, bytes := 0, 0
	for valid := it.First(); valid; valid = it.Next() {
		if forgetFull(n, bytes) {
			v, err := eventVersion(it.Key())
			return v, err == nil, errors.Join(err, it.Close())
		}
		lv := it.LazyValue()
		n, bytes = n+1, bytes+lv.Len()
	}
	return 0, false, errors.Join(it.Error(), it.Close())
}

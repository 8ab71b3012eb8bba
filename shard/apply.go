package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// applyAppend returns the verdict (result or verdict error) and, separately,
// a storage error.
func (s *Shard) applyAppend(b *pebble.Batch, c *AppendCommand) (any, error) {
	if err := ValidateAppend(c); err != nil {
		return err, nil
	}
	m, found, err := s.lookup(b, c.Stream)
	if err != nil {
		return nil, err
	}
	// Idempotency first (DESIGN §1.3): a retry of an append that was stored succeeds, as a
	// duplicate, even once the stream was tombstoned since; anything else into a tombstoned
	// stream is refused. Then the expected version.
	tombstoned := found && m.state == stateTombstoned
	res, err := s.checkIDs(b, c, m, found)
	_, duplicate := res.(*AppendResult)
	switch {
	case err != nil:
		return nil, err
	case duplicate, res != nil && !tombstoned:
		return res, nil
	case tombstoned:
		return ErrStreamDeleted, nil
	}
	if v := checkExpected(c.Stream, c.Expected, m, found); v != nil {
		return v, nil
	}

	k := &s.keys
	// From Format3 on the stream record is written only when the stream is created or its
	// state changes; a live stream's last version is then its last event key's.
	writeRecord := !found || m.state != stateLive || s.pendFormat < Format3
	if !found {
		s.addName(c.Stream)
		m = streamMeta{id: s.meta.nextStreamID, state: stateLive}
		s.meta.nextStreamID++
		s.keyBuf = k.name(s.keyBuf[:0], m.id)
		if err := b.Set(s.keyBuf, []byte(c.Stream), nil); err != nil {
			return nil, err
		}
	} else {
		m.last++
		m.state = stateLive
	}
	first := m.last
	if !found {
		first = 0
	}
	pos := s.meta.nextPosition
	n := uint64(len(c.Events))
	for i := range c.Events {
		e := &c.Events[i]
		ver, p := first+uint64(i), pos+uint64(i)
		s.keyBuf = k.event(s.keyBuf[:0], m.id, ver)
		s.valBuf, s.scratchBuf = appendRecord(s.valBuf[:0], e, c.Time, p, s.scratchBuf)
		if err := b.Set(s.keyBuf, s.valBuf, nil); err != nil {
			return nil, err
		}
		s.keyBuf = k.id(s.keyBuf[:0], &e.ID)
		ie := idEntry{stream: m.id, version: ver, position: p}
		s.valBuf = ie.encode(s.valBuf[:0])
		if err := b.Set(s.keyBuf, s.valBuf, nil); err != nil {
			return nil, err
		}
		s.addID(&e.ID)
	}
	le := logEntry{stream: m.id, first: first, count: n}
	s.keyBuf = k.log(s.keyBuf[:0], pos)
	s.valBuf = le.encode(s.valBuf[:0])
	if err := b.Set(s.keyBuf, s.valBuf, nil); err != nil {
		return nil, err
	}
	m.last = first + n - 1
	if writeRecord {
		if err := s.putStream(b, c.Stream, m); err != nil {
			return nil, err
		}
	} else {
		s.pending[c.Stream] = m
	}
	s.meta.nextPosition += n
	if err := s.metaChanged(b); err != nil {
		return nil, err
	}
	return &AppendResult{FirstVersion: first, LastVersion: m.last, Position: pos, LastPosition: pos + n - 1}, nil
}

func (s *Shard) putStream(b *pebble.Batch, name string, m streamMeta) error {
	s.keyBuf = s.keys.stream(s.keyBuf[:0], name)
	s.valBuf = m.encode(s.valBuf[:0])
	if err := b.Set(s.keyBuf, s.valBuf, nil); err != nil {
		return err
	}
	s.pending[name] = m
	return nil
}

// checkIDs implements idempotency. It returns a non-nil verdict when some of
// c's IDs are already stored: *AppendResult{Duplicate} when all of them are
// stored in this stream at consecutive versions in batch order, else an
// *IDConflictError. (nil, nil) means no ID is stored.
func (s *Shard) checkIDs(b *pebble.Batch, c *AppendCommand, m streamMeta, found bool) (any, error) {
	var (
		hits     int
		firstHit idEntry
		lastHit  idEntry
		firstIdx int
		run      = true // all hits so far form a consecutive run of this stream from events[0]
	)
	filter, _ := s.filters() // nil while it is built: look every ID up
	for i := range c.Events {
		id := &c.Events[i].ID
		if filter != nil && !filter.mayContain(idHash(id)) {
			run = false
			continue
		}
		s.keyBuf = s.keys.id(s.keyBuf[:0], id)
		v, closer, err := b.Get(s.keyBuf)
		if errors.Is(err, pebble.ErrNotFound) {
			if filter == nil {
				s.m.inc(func(sm *shardMetrics) prometheus.Counter { return sm.idUnfiltered })
			} else {
				s.m.inc(func(sm *shardMetrics) prometheus.Counter { return sm.idFalsePos })
			}
			run = false
			continue
		}
		if err != nil {
			return nil, err
		}
		var e idEntry
		err = e.decode(v)
		closer.Close()
		if err != nil {
			return nil, err
		}
		if s.pendFormat >= Format7 {
			// Known only while its event is stored: a truncation that removed more events
			// than it forgot IDs of left this entry behind.
			if stored, err := s.eventStored(b, e.stream, e.version); err != nil {
				return nil, err
			} else if !stored {
				s.m.inc(func(sm *shardMetrics) prometheus.Counter { return sm.idGone })
				run = false
				continue
			}
		}
		s.m.inc(func(sm *shardMetrics) prometheus.Counter { return sm.idFound })
		if hits == 0 {
			firstHit, firstIdx = e, i
		}
		lastHit = e
		hits++
		if !found || e.stream != m.id || i != hits-1 || e.version != firstHit.version+uint64(i) {
			run = false
		}
	}
	if hits == 0 {
		return nil, nil
	}
	if run && hits == len(c.Events) {
		return &AppendResult{
			FirstVersion: firstHit.version,
			LastVersion:  firstHit.version + uint64(hits) - 1,
			Position:     firstHit.position,
			LastPosition: lastHit.position,
			Duplicate:    true,
		}, nil
	}
	existing := c.Stream
	if !found || firstHit.stream != m.id {
		name, err := s.streamName(b, firstHit.stream)
		if err != nil {
			return nil, err
		}
		existing = name
	}
	return &IDConflictError{
		Stream:          c.Stream,
		ID:              c.Events[firstIdx].ID,
		ExistingStream:  existing,
		ExistingVersion: firstHit.version,
	}, nil
}

// checkExpected returns a *WrongExpectedVersionError if exp does not hold.
// A soft-deleted stream counts as absent for NoStream/Exists, but ExpectExact
// matches its last version (a writer that knew the stream may continue it).
func checkExpected(stream string, exp Expected, m streamMeta, found bool) error {
	live := found && m.state == stateLive
	ok := false
	switch exp.Kind {
	case ExpectAny:
		ok = true
	case ExpectNoStream:
		ok = !live
	case ExpectExists:
		ok = live
	case ExpectExact:
		ok = found && m.last == exp.Version
	}
	if ok {
		return nil
	}
	e := &WrongExpectedVersionError{Stream: stream, Expected: exp, Exists: live}
	if found {
		e.Actual = m.last
		e.Deleted = m.state == stateDeleted // soft-deleted (a truncation may find a tombstone here)
	}
	return e
}

func (s *Shard) applyDelete(b *pebble.Batch, c *DeleteCommand) (any, error) {
	if err := ValidateDelete(c); err != nil {
		return err, nil
	}
	m, found, err := s.lookup(b, c.Stream)
	if err != nil {
		return nil, err
	}
	switch {
	case !found:
		return ErrStreamNotFound, nil
	case m.state == stateTombstoned:
		return ErrStreamDeleted, nil
	case m.state == stateDeleted && !c.Tombstone:
		return ErrStreamNotFound, nil
	}
	if v := checkExpected(c.Stream, c.Expected, m, found); v != nil {
		return v, nil
	}
	kind := DeletionSoft
	if c.Tombstone {
		m.state, kind = stateTombstoned, DeletionTombstone
	} else {
		m.state = stateDeleted
		m.start, m.truncated = m.last+1, false
	}
	if err := s.putStream(b, c.Stream, m); err != nil {
		return nil, err
	}
	pos := s.meta.nextPosition
	if s.pendFormat < Format2 {
		return &DeleteResult{Position: pos}, nil
	}
	le := logEntry{stream: m.id, first: m.last, deletion: kind, time: c.Time}
	s.keyBuf = s.keys.log(s.keyBuf[:0], pos)
	s.valBuf = le.encode(s.valBuf[:0])
	if err := b.Set(s.keyBuf, s.valBuf, nil); err != nil {
		return nil, err
	}
	s.meta.nextPosition++
	if err := s.metaChanged(b); err != nil {
		return nil, err
	}
	return &DeleteResult{Position: pos, Logged: true}, nil
}

// applyTruncate removes the events of c.Stream before c.Before (capped: see TruncateCommand)
// (removeEvents), and moves the stream's start there. Every event below the start
// may be gone from then on; ReadLog relies on that to tell a truncated event from a lost one.
func (s *Shard) applyTruncate(b *pebble.Batch, c *TruncateCommand) (any, error) {
	if s.pendFormat < Format4 {
		return NeedsFormat("truncating a stream", Format4, s.id, s.pendFormat), nil
	}
	if c.Policy != nil && s.pendFormat < Format6 {
		return NeedsFormat("a retention policy's truncation", Format6, s.id, s.pendFormat), nil
	}
	if err := ValidateTruncate(c); err != nil {
		return err, nil
	}
	m, found, err := s.lookup(b, c.Stream)
	if err != nil {
		return nil, err
	}
	if !found {
		return ErrStreamNotFound, nil
	}
	if v := checkExpected(c.Stream, c.Expected, m, found); v != nil {
		return v, nil
	}
	if c.Policy != nil {
		if v, err := s.checkGoverning(b, c.Stream, c.Policy); v != nil || err != nil {
			return v, err
		}
	}
	limit := m.last + 1 // a deleted stream may lose every event
	if m.state == stateLive {
		limit = m.last // a live stream's last version is its last event key (Format3)
	}
	before := min(c.Before, limit)
	// Events below the start that a soft delete hid (all of a soft-deleted stream's) may still
	// be on disk: the range removes them too, and the start moves only when before passes it.
	if from := storedFrom(&m); before > from {
		sp := span{lo: s.keys.event(nil, m.id, from), hi: s.keys.event(nil, m.id, before)}
		if err := s.removeEvents(b, sp, s.pendFormat >= Format7); err != nil {
			return nil, err
		}
	}
	if before > m.start {
		m.start, m.truncated = before, s.pendFormat >= Format5
		if err := s.putStream(b, c.Stream, m); err != nil {
			return nil, err
		}
	}
	return &TruncateResult{Start: m.start}, nil
}

// truncatePointDeletes is the most events a truncation removes one key at a time; past it, it
// writes one range deletion. Every range deletion in a memtable is fragmented again by each
// iterator opened after it was added, until the memtable is flushed: thousands of small
// truncations (a retention round) made each read cost time in proportion to them, most of a
// leader's CPU. A key's deletion costs iterators nothing of the kind.
const truncatePointDeletes = 256

// truncatePointBytes bounds the bytes of events a truncation deletes key by key: a range
// deletion's span is compacted at once (compact.go), a deleted key's space comes back only as
// Pebble's own compactions reach it.
const truncatePointBytes = 4 << 20

// storedFrom returns the lowest version of stream m that may still be stored: its start when a
// truncation marked it (Format5: every event below was removed, and a soft delete clears the
// mark), else 0.
func storedFrom(m *streamMeta) uint64 {
	if m.truncated {
		return m.start
	}
	return 0
}

// forgetIDsMax and forgetIDsBytes bound the events whose ID index entries one truncation deletes
// (Format7), reading each one's record: the apply of a truncation of millions of events (on the
// node's apply loop, which all its shards share) would otherwise read them all. The entries of
// the others stay, as garbage: an append's idempotency check skips an entry whose event is gone.
// A proposer splits a larger truncation into steps within them (TruncateStep), so that none is
// left. Variables for tests; forgetFull applies them.
var (
	forgetIDsMax   = 65536
	forgetIDsBytes = 64 << 20
)

// forgetFull reports whether a truncation that read n events of bytes bytes has forgotten the
// IDs of as many as it may: removeEvents and TruncateStep count alike.
func forgetFull(n, bytes int) bool { return n >= forgetIDsMax || bytes >= forgetIDsBytes }

// eventStored reports whether the event at version of stream id is stored in r.
func (s *Shard) eventStored(r pebble.Reader, id, version uint64) (bool, error) {
	_, closer, err := r.Get(s.keys.event(nil, id, version))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, closer.Close()
}

// removeEvents deletes the event keys in sp from b: each one when there are at most
// truncatePointDeletes holding at most truncatePointBytes, else with one range deletion, whose
// span the shard compacts once it commits. Both leave the same keys readable, so replicas of
// versions that chose differently hold the same state. With forget (Format7) it also deletes
// the ID index entries of the events, reading their records, of the first forgetIDsMax within
// forgetIDsBytes, in the same pass. An event's entry points at it for as long as it is stored:
// an append finds its ID taken until then (checkIDs), and a new event with the ID, possible
// only once this one is gone, writes its own entry.
func (s *Shard) removeEvents(b *pebble.Batch, sp span, forget bool) error {
	it, err := b.NewIter(&pebble.IterOptions{LowerBound: sp.lo, UpperBound: sp.hi})
	if err != nil {
		return err
	}
	var (
		keys    [][]byte // for key deletions
		bytes   int
		ids     [][16]byte
		idBytes int
		ev      RecordedEvent
		points  = true // within the bounds of key deletions so far
		fail    = func(err error) error { return errors.Join(err, it.Close()) }
	)
	for valid := it.First(); valid; valid = it.Next() {
		points = points && len(keys) <= truncatePointDeletes && bytes <= truncatePointBytes
		forgetting := forget && !forgetFull(len(ids), idBytes)
		if !points && !forgetting {
			break
		}
		lv := it.LazyValue()
		if points {
			keys, bytes = append(keys, slices.Clone(it.Key())), bytes+lv.Len()
		}
		if forgetting {
			rec, err := it.ValueAndErr()
			if err != nil {
				return fail(err)
			}
			if err := decodeRecordHeader(rec, &ev); err != nil {
				return fail(err)
			}
			ids, idBytes = append(ids, ev.ID), idBytes+lv.Len()
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	for i := range ids {
		s.keyBuf = s.keys.id(s.keyBuf[:0], &ids[i])
		if err := b.Delete(s.keyBuf, nil); err != nil {
			return err
		}
	}
	if s.m != nil && len(ids) > 0 {
		s.m.idsForgotten.Add(float64(len(ids)))
	}
	s.forgotten += len(ids)
	if len(keys) > truncatePointDeletes || bytes > truncatePointBytes {
		s.pendCompact = append(s.pendCompact, sp)
		return b.DeleteRange(sp.lo, sp.hi, nil)
	}
	if s.reclaimNow() {
		s.pendCompact = append(s.pendCompact, sp)
	}
	for _, k := range keys {
		if err := b.Delete(k, nil); err != nil {
			return err
		}
	}
	return nil
}

// NeedsFormat is the ErrNeedsFormat verdict for what, which needs format need of shard id, at have.
func NeedsFormat(what string, need uint64, id uint32, have uint64) error {
	return fmt.Errorf("%w: %s needs shard format %d, shard %d is at format %d "+
		"(the shard's leader raises it once every replica runs a version that has it)", ErrNeedsFormat, what, need, id, have)
}

// applySetFormat raises the shard's format to c.Format (at most MaxFormat,
// checked by Apply); a lower or equal format changes nothing.
func (s *Shard) applySetFormat(b *pebble.Batch, c *SetFormatCommand) (any, error) {
	if c.Format <= s.pendFormat {
		return &FormatResult{Format: s.pendFormat}, nil
	}
	s.keyBuf = s.keys.format(s.keyBuf[:0])
	s.valBuf = binary.BigEndian.AppendUint64(s.valBuf[:0], c.Format)
	if err := b.Set(s.keyBuf, s.valBuf, nil); err != nil {
		return nil, err
	}
	if s.pendFormat < Format3 && c.Format >= Format3 {
		// The applied index moves into the shard meta record: Apply writes it there after
		// this entry (setApplied), or FinishBatch does.
		s.keyBuf = s.keys.applied(s.keyBuf[:0])
		if err := b.Delete(s.keyBuf, nil); err != nil {
			return nil, err
		}
	}
	s.pendFormat = c.Format
	return &FormatResult{Format: c.Format}, nil
}

package shard

import (
	"bytes"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/cockroachdb/pebble/v2"
)

// StreamState is a stream's state in a StreamSummary.
type StreamState uint8

// Stream states. A soft-deleted stream that is appended to again is live.
const (
	StreamLive       StreamState = StreamState(stateLive)
	StreamDeleted    StreamState = StreamState(stateDeleted)    // soft-deleted: hidden until the next append
	StreamTombstoned StreamState = StreamState(stateTombstoned) // deleted for good
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

// StreamSummary is a stream's state as ListStreams reports it.
type StreamSummary struct {
	Name  string
	State StreamState
	// Last is the version of the last event; for a deleted stream, the last version at the
	// delete.
	Last uint64
	// First is the first version a read returns: after a soft delete, the first version after
	// it; after a truncation, where it began. Last+1 while the stream is deleted (soft-deleted or
	// tombstoned).
	First uint64
	// Truncated: a truncation moved First (from Format5 on; see TruncateCommand).
	Truncated bool
	// LastPosition and LastCreated are the shard position and commit time of the last event,
	// for a live stream; 0 for a deleted one.
	LastPosition uint64
	LastCreated  int64
	// Hidden counts the events the stream still holds that no read returns: those a soft
	// delete or a tombstone hid, before First. A truncation before First removes them.
	Hidden uint64

	id uint64 // the stream's ID, for the shard's own reads of its events (RetentionCuts)
}

// MaxListPrefix bounds the prefix and the after name of ListStreams: a stream name's limit.
const MaxListPrefix = MaxStreamNameLen

// CheckListBounds refuses a prefix or an after name of ListStreams longer than MaxListPrefix, or
// not valid UTF-8 (as no stream name is).
func CheckListBounds(prefix, after string) error {
	if len(prefix) > MaxListPrefix {
		return invalid("prefix", fmt.Sprintf("at most %d bytes", MaxListPrefix), "%d bytes given", len(prefix))
	}
	if len(after) > MaxListPrefix {
		return invalid("after", fmt.Sprintf("at most %d bytes (a stream name)", MaxListPrefix), "%d bytes given", len(after))
	}
	if !utf8.ValidString(prefix) {
		return invalid("prefix", "valid UTF-8", "not UTF-8")
	}
	if !utf8.ValidString(after) {
		return invalid("after", "valid UTF-8", "not UTF-8")
	}
	return nil
}

// maxListSkip bounds the deleted streams one ListStreams without includeDeleted skips: past it
// the listing returns early, saying where it stopped (a prefix of millions of deleted streams
// held one view of the DB, and the caller, for as long as it took to read them all).
var maxListSkip = 4096

// ListStreams calls fn for up to count streams (0 = all) whose names start with prefix and
// come after after (bytewise; "" = from the first), in name order, from one view of the DB.
// Deleted streams (soft-deleted and tombstoned) are skipped unless includeDeleted; after
// maxListSkip of them it stops early and returns the last name it looked at as resume, for
// the caller to list on after it ("" when it did not stop so). It returns fn's error if fn
// stops the listing. Each stream costs a seek to its first stored event, and a live one
// another to its last.
func (s *Shard) ListStreams(prefix, after string, includeDeleted bool, count uint64, fn func(*StreamSummary) error) (resume string, err error) {
	if err := CheckListBounds(prefix, after); err != nil {
		return "", err
	}
	lo := s.keys.stream(nil, prefix)
	hi := prefixEnd(lo)
	if after >= prefix {
		lo = append(s.keys.stream(nil, after), 0) // the first name after it
	}
	if bytes.Compare(lo, hi) >= 0 {
		return "", nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return "", err
	}
	// events reads each stream's first stored event and a live one's last from the same view as
	// the records.
	events, err := it.Clone(pebble.CloneOptions{})
	if err != nil {
		it.Close()
		return "", err
	}
	resume, err = s.listStreams(it, events, includeDeleted, count, fn)
	if cerr := events.Close(); err == nil {
		err = cerr
	}
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	return resume, err
}

func (s *Shard) listStreams(it, events *pebble.Iterator, includeDeleted bool, count uint64, fn func(*StreamSummary) error) (resume string, _ error) {
	if count == 0 {
		count = math.MaxUint64
	}
	nameAt := prefixLen + 1
	var ev RecordedEvent
	skipped := 0
	for valid, n := it.First(), uint64(0); valid && n < count; valid = it.Next() {
		var m streamMeta
		v, err := it.ValueAndErr()
		if err == nil {
			err = m.decode(v)
		}
		if err != nil {
			return "", err
		}
		if m.state != stateLive && !includeDeleted {
			if skipped++; skipped >= maxListSkip {
				return string(it.Key()[nameAt:]), nil
			}
			continue
		}
		sum := &StreamSummary{Name: string(it.Key()[nameAt:]), State: StreamState(m.state), Last: m.last, First: m.start,
			Truncated: m.truncated, id: m.id}
		if m.state != stateLive {
			sum.First = m.last + 1 // a tombstone leaves the record's start where it was
		}
		// The events below First still stored (truncations remove a stream's first events, so
		// those left are the versions from the first stored one on). Below a start a truncation
		// marked none is: the probe then does not step over what it removed.
		events.SetBounds(s.keys.event(nil, m.id, storedFrom(&m)), s.keys.event(nil, m.id, max(sum.First, storedFrom(&m))))
		if events.First() {
			v, err := eventVersion(events.Key())
			if err != nil {
				return "", err
			}
			sum.Hidden = sum.First - v
		} else if err := events.Error(); err != nil {
			return "", err
		}
		if m.state == stateLive {
			if err := s.visibleEvents(events, &m, sum.Name); err != nil {
				return "", err
			}
			sum.Last = m.last
			rec, err := events.ValueAndErr() // the last event's
			if err != nil {
				return "", err
			}
			if err := decodeRecordHeader(rec, &ev); err != nil {
				return "", err
			}
			sum.LastPosition, sum.LastCreated = ev.Position, ev.Created
		}
		if err := fn(sum); err != nil {
			return "", err
		}
		n++
	}
	return "", it.Error()
}

// prefixEnd returns the first key after every key that starts with p (p holds a byte below
// 0xff, as every shard key's tag is).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	panic("shard: prefixEnd of a key of 0xff bytes")
}

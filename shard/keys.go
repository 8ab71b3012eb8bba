package shard

import "encoding/binary"

// Key tags: the byte after the S|shard prefix. Append-only; see doc.go.
const (
	tagLog     byte = 'A' // S|shard|A|position         -> log entry (streamID, first version, count)
	tagEvent   byte = 'E' // S|shard|E|streamID|version -> event record
	tagID      byte = 'I' // S|shard|I|uuid             -> (streamID, version, position)
	tagName    byte = 'M' // S|shard|M|streamID         -> stream name
	tagStream  byte = 'N' // S|shard|N|name             -> stream state
	tagPolicy  byte = 'P' // S|shard|P|prefix           -> retention policy (Format6 on)
	tagFormat  byte = 'V' // S|shard|V                  -> format version (absent: Format1)
	tagApplied byte = 'X' // S|shard|X                  -> applied raft index (up to Format2)
	tagMeta    byte = 'Z' // S|shard|Z                  -> shard meta (next position, next stream ID; applied index from Format3 on)
)

const prefixLen = 5 // 'S' + shard id (4 bytes BE)

// keys builds the keys of one shard. The zero value is not usable; use newKeys.
type keys struct {
	prefix [prefixLen]byte
}

func newKeys(shard uint32) keys {
	var k keys
	k.prefix[0] = 'S'
	binary.BigEndian.PutUint32(k.prefix[1:], shard)
	return k
}

// span returns [lo, hi) covering every state key of the shard.
func (k keys) span() (lo, hi []byte) {
	lo = append([]byte(nil), k.prefix[:]...)
	id := binary.BigEndian.Uint32(k.prefix[1:])
	if id == ^uint32(0) {
		return lo, []byte{'S' + 1}
	}
	hi = []byte{'S', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hi[1:], id+1)
	return lo, hi
}

// tagSpan returns [lo, hi) covering every key with the given tag.
func (k keys) tagSpan(tag byte) (lo, hi []byte) {
	lo = append(append(make([]byte, 0, prefixLen+1), k.prefix[:]...), tag)
	hi = append(append(make([]byte, 0, prefixLen+1), k.prefix[:]...), tag+1)
	return lo, hi
}

func (k keys) appendTag(dst []byte, tag byte) []byte {
	return append(append(dst, k.prefix[:]...), tag)
}

// event appends S|shard|E|streamID|version to dst.
func (k keys) event(dst []byte, streamID, version uint64) []byte {
	dst = k.appendTag(dst, tagEvent)
	dst = binary.BigEndian.AppendUint64(dst, streamID)
	return binary.BigEndian.AppendUint64(dst, version)
}

// eventStream appends S|shard|E|streamID to dst (the prefix of a stream's events).
func (k keys) eventStream(dst []byte, streamID uint64) []byte {
	return binary.BigEndian.AppendUint64(k.appendTag(dst, tagEvent), streamID)
}

// eventStreamEnd appends the key just past every event of streamID to dst.
func (k keys) eventStreamEnd(dst []byte, streamID uint64) []byte {
	if streamID == ^uint64(0) {
		return k.appendTag(dst, tagEvent+1)
	}
	return k.eventStream(dst, streamID+1)
}

// eventVersion returns the version in an event key (S|shard|E|streamID|version).
func eventVersion(key []byte) (uint64, error) {
	if len(key) != prefixLen+1+16 {
		return 0, errCorrupt("event key")
	}
	return binary.BigEndian.Uint64(key[prefixLen+1+8:]), nil
}

// log appends S|shard|A|position to dst.
func (k keys) log(dst []byte, position uint64) []byte {
	return binary.BigEndian.AppendUint64(k.appendTag(dst, tagLog), position)
}

// id appends S|shard|I|uuid to dst.
func (k keys) id(dst []byte, id *[16]byte) []byte {
	return append(k.appendTag(dst, tagID), id[:]...)
}

// name appends S|shard|M|streamID to dst.
func (k keys) name(dst []byte, streamID uint64) []byte {
	return binary.BigEndian.AppendUint64(k.appendTag(dst, tagName), streamID)
}

// stream appends S|shard|N|name to dst.
func (k keys) stream(dst []byte, name string) []byte {
	return append(k.appendTag(dst, tagStream), name...)
}

// policy appends S|shard|P|prefix to dst.
func (k keys) policy(dst []byte, prefix string) []byte {
	return append(k.appendTag(dst, tagPolicy), prefix...)
}

func (k keys) applied(dst []byte) []byte { return k.appendTag(dst, tagApplied) }
func (k keys) meta(dst []byte) []byte    { return k.appendTag(dst, tagMeta) }
func (k keys) format(dst []byte) []byte  { return k.appendTag(dst, tagFormat) }

// Stream states stored in the stream record. Append-only.
const (
	stateLive       byte = 0
	stateDeleted    byte = 1 // soft-deleted: hidden until the next append
	stateTombstoned byte = 2 // permanently deleted
)

// truncatedMark is the bit of the stream record's state byte that says its start was set by a
// truncation (Format5 on): the versions below it are removed, not hidden by a delete.
const truncatedMark byte = 0x80

// streamMeta is the decoded stream record (value of S|shard|N|name).
type streamMeta struct {
	id    uint64 // per-shard stream ID, assigned from the counter at creation
	last  uint64 // version of the last event (a stream has at least one event); see lookup for Format3
	start uint64 // first visible version (after a soft delete: last+1 at the time of the delete)
	state byte
	// truncated: start is where a truncation moved it, after any delete's (Format5 on; a
	// soft delete clears it). A truncation at Format4 left no mark.
	truncated bool
}

const streamMetaLen = 1 + 8 + 8 + 8

func (m *streamMeta) encode(dst []byte) []byte {
	st := m.state
	if m.truncated {
		st |= truncatedMark
	}
	dst = append(dst, st)
	dst = binary.BigEndian.AppendUint64(dst, m.id)
	dst = binary.BigEndian.AppendUint64(dst, m.last)
	return binary.BigEndian.AppendUint64(dst, m.start)
}

func (m *streamMeta) decode(b []byte) error {
	if len(b) != streamMetaLen || b[0]&^truncatedMark > stateTombstoned {
		return errCorrupt("stream record")
	}
	m.state, m.truncated = b[0]&^truncatedMark, b[0]&truncatedMark != 0
	m.id = binary.BigEndian.Uint64(b[1:])
	m.last = binary.BigEndian.Uint64(b[9:])
	m.start = binary.BigEndian.Uint64(b[17:])
	return nil
}

// idEntry is the value of S|shard|I|uuid.
type idEntry struct{ stream, version, position uint64 }

const idEntryLen = 24

func (e *idEntry) encode(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, e.stream)
	dst = binary.BigEndian.AppendUint64(dst, e.version)
	return binary.BigEndian.AppendUint64(dst, e.position)
}

func (e *idEntry) decode(b []byte) error {
	if len(b) != idEntryLen {
		return errCorrupt("event ID record")
	}
	e.stream = binary.BigEndian.Uint64(b)
	e.version = binary.BigEndian.Uint64(b[8:])
	e.position = binary.BigEndian.Uint64(b[16:])
	return nil
}

// logEntry is the value of S|shard|A|position: one append batch occupying
// positions position..position+count-1 = versions first..first+count-1 of
// stream, or (from Format2 on) one delete of stream occupying one position,
// with first the stream's last version at the delete.
type logEntry struct {
	stream, first, count uint64
	deletion             Deletion // DeletionNone for an append; then time is 0
	time                 int64    // the delete's time (unix nanos)
}

const (
	logEntryLen    = 24
	deleteEntryLen = 24 + 1 + 8
)

// span is the number of positions e occupies.
func (e *logEntry) span() uint64 {
	if e.deletion != DeletionNone {
		return 1
	}
	return e.count
}

func (e *logEntry) encode(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, e.stream)
	dst = binary.BigEndian.AppendUint64(dst, e.first)
	dst = binary.BigEndian.AppendUint64(dst, e.count)
	if e.deletion == DeletionNone {
		return dst
	}
	dst = append(dst, byte(e.deletion))
	return binary.BigEndian.AppendUint64(dst, uint64(e.time))
}

func (e *logEntry) decode(b []byte) error {
	if len(b) != logEntryLen && len(b) != deleteEntryLen {
		return errCorrupt("log record")
	}
	e.stream = binary.BigEndian.Uint64(b)
	e.first = binary.BigEndian.Uint64(b[8:])
	e.count = binary.BigEndian.Uint64(b[16:])
	e.deletion, e.time = DeletionNone, 0
	if len(b) == deleteEntryLen {
		e.deletion = Deletion(b[24])
		e.time = int64(binary.BigEndian.Uint64(b[25:]))
		if e.count != 0 || (e.deletion != DeletionSoft && e.deletion != DeletionTombstone) {
			return errCorrupt("log record of a delete")
		}
		return nil
	}
	if e.count == 0 {
		return errCorrupt("log record")
	}
	return nil
}

// shardMeta is the value of S|shard|Z: 16 bytes up to Format2, 24 from Format3 on, where
// the applied raft index follows (and 'X' is absent).
type shardMeta struct{ nextPosition, nextStreamID uint64 }

const (
	shardMetaLen        = 16
	shardMetaAppliedLen = 24
)

// encode appends the record; withApplied (Format3 on) appends applied too.
func (m *shardMeta) encode(dst []byte, withApplied bool, applied uint64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, m.nextPosition)
	dst = binary.BigEndian.AppendUint64(dst, m.nextStreamID)
	if withApplied {
		dst = binary.BigEndian.AppendUint64(dst, applied)
	}
	return dst
}

// decode decodes either length; hasApplied says whether the record held the applied index.
func (m *shardMeta) decode(b []byte) (applied uint64, hasApplied bool, err error) {
	if len(b) != shardMetaLen && len(b) != shardMetaAppliedLen {
		return 0, false, errCorrupt("shard meta record")
	}
	m.nextPosition = binary.BigEndian.Uint64(b)
	m.nextStreamID = binary.BigEndian.Uint64(b[8:])
	if len(b) == shardMetaAppliedLen {
		return binary.BigEndian.Uint64(b[16:]), true, nil
	}
	return 0, false, nil
}

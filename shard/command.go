package shard

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Limits enforced by validation (ValidateAppend, ValidateDelete, Apply).
const (
	MaxStreamNameLen   = 512      // bytes, valid UTF-8, no control chars, not empty, must not start with '$'
	MaxEventTypeLen    = 256      // bytes, not empty, valid UTF-8, no control chars
	MaxEventsPerAppend = 10000    // events in one append
	MaxEventSize       = 4 << 20  // data+metadata of one event, bytes
	MaxAppendSize      = 16 << 20 // data+metadata of all events of one append, bytes
	MaxContentTypeLen  = 128      // bytes, valid UTF-8, no control chars, may be empty
)

// ExpectedKind is the kind of an optimistic-concurrency check. Wire values:
// append-only, never renumber.
type ExpectedKind uint8

const (
	ExpectAny      ExpectedKind = iota // 0: no check
	ExpectNoStream                     // 1: stream absent or soft-deleted
	ExpectExists                       // 2: stream present and not soft-deleted
	ExpectExact                        // 3: stream present and its last version == Version
)

// Expected is an expected-version check; Version is used with ExpectExact.
type Expected struct {
	Kind    ExpectedKind
	Version uint64
}

func (e Expected) String() string {
	switch e.Kind {
	case ExpectAny:
		return "any"
	case ExpectNoStream:
		return "no-stream"
	case ExpectExists:
		return "exists"
	case ExpectExact:
		return fmt.Sprintf("exact %d", e.Version)
	}
	return fmt.Sprintf("kind(%d)", uint8(e.Kind))
}

// Event is an event to append.
type Event struct {
	ID             [16]byte
	Type           string
	Data, Metadata []byte
	ContentType    string
}

// RecordedEvent is a stored event as returned by reads. In the shard log
// (ReadLog) of a shard at Format2 or later it may instead be a delete of
// Stream: Deletion says which, Version is the stream's last version at the
// delete, Position and Created are the delete's, and the other fields are
// empty.
type RecordedEvent struct {
	Stream         string
	Version        uint64
	Position       uint64
	Created        int64 // unix nanos, stamped by the proposer
	ID             [16]byte
	Type           string
	Data, Metadata []byte
	ContentType    string
	Deletion       Deletion
}

// Deletion tells a delete in the shard log from an event. Stored values:
// append-only.
type Deletion uint8

const (
	DeletionNone      Deletion = 0 // an event
	DeletionSoft      Deletion = 1 // a soft delete: versions up to Version are hidden
	DeletionTombstone Deletion = 2 // a tombstone: the stream is gone for good
)

// Shard formats: what a shard's state machine writes, raised for the whole
// group by a SetFormatCommand in its log (so every replica changes at the
// same entry). A shard without a stored format is at Format1.
const (
	// Format1: deletes take no position in the shard log.
	Format1 uint64 = 1
	// Format2: each delete takes a position in the shard log (ReadLog
	// returns it as a RecordedEvent with Deletion set).
	Format2 uint64 = 2
	// Format3: fewer keys per append. The stream record is written when
	// the stream is created and when its state changes (a delete, or an
	// append that follows a soft delete), no longer on every append: a live
	// stream's last version is its last event key. The applied raft index
	// moves into the shard meta record ('Z'), written once per batch, and
	// the 'X' key is deleted.
	Format3 uint64 = 3
	// Format4: streams can be truncated (TruncateCommand). Nothing else
	// changes; the format keeps the command from a replica that cannot
	// decode it.
	Format4 uint64 = 4
	// Format5: a truncation marks the stream record when it moves the
	// stream's start (a soft delete clears the mark), so that a read can
	// tell versions a truncation removed from versions a delete hid
	// (ReadStreamWhole). The record's state byte carries the mark, which a
	// replica of an older version would take for corruption.
	Format5 uint64 = 5
	// Format6: retention policies (SetRetentionCommand), kept in 'P' keys.
	// Nothing else changes; the format keeps the command from a replica that
	// cannot decode it.
	Format6 uint64 = 6
	// Format7: a stream's event IDs are known only while its events are
	// stored. A truncation deletes the ID index entries of the events it
	// removes (of the first forgetIDsMax within forgetIDsBytes, the others'
	// entries staying as garbage: proposers split larger truncations with
	// TruncateStep), and an append's idempotency check counts an entry only
	// when its event is still stored, so a retry of an append whose events
	// were truncated is a new append, and the index no longer grows without
	// bound under retention. A replica of an older version would answer such
	// a retry as a duplicate.
	Format7 uint64 = 7
	// MaxFormat is the highest format this version applies and reads.
	MaxFormat = Format7
)

// SetFormatCommand raises the shard's format to Format (no effect when the
// shard is at Format or later). The proposer must know that every replica
// of the shard runs a version whose MaxFormat is at least Format.
type SetFormatCommand struct {
	Format uint64
}

// FormatResult is Apply's verdict for a SetFormatCommand: the shard's format
// after it.
type FormatResult struct {
	Format uint64
}

// AppendCommand appends events to a stream. Time (unix nanos) is stamped by
// the proposer so that apply is deterministic.
type AppendCommand struct {
	Stream   string
	Expected Expected
	Events   []Event
	Time     int64
}

// DeleteCommand soft-deletes (Tombstone false) or tombstones a stream.
type DeleteCommand struct {
	Stream    string
	Expected  Expected
	Tombstone bool
	Time      int64
}

// TruncateCommand removes a stream's events before version Before, for
// good: from stream reads, from the shard log (ReadLog skips them) and from
// disk (key by key up to 256 events, else a range deletion, whose span the
// shard compacts in the background once it commits). A live stream keeps
// its last event, so Before is capped at the last version and the stream's
// versions go on; a soft-deleted or tombstoned stream can lose every event
// (Before capped at last+1), which reclaims the space its hidden history
// holds. From Format7 on the removed events' IDs are forgotten: a retry of a
// truncated append is a new append (below it, still a duplicate). Needs the
// shard at Format4 (ErrNeedsFormat).
type TruncateCommand struct {
	Stream   string
	Before   uint64
	Expected Expected
	// Policy, when set, makes it a retention policy's truncation (from Format6 on): applied
	// only while the policy governing Stream is still that one, else refused with
	// ErrPolicyChanged, so that a policy removed or relaxed meanwhile removes nothing more.
	Policy *RetentionRef
}

// RetentionRef names a retention policy as it was set: its prefix and RetentionPolicy.Set.
type RetentionRef struct {
	Prefix string
	Set    int64
}

// TruncateResult is Apply's verdict for a truncate: Start is the stream's
// first version after it (every event before it may be gone; last+1 for a
// soft-deleted stream). A truncate at or below the current start changes no
// read and returns the current start; it removes from disk the events a
// soft delete hid below it.
type TruncateResult struct {
	Start uint64
}

// AppendResult is Apply's verdict for a successful append. Events got
// versions FirstVersion..LastVersion and positions Position..LastPosition
// (Position+n-1). Duplicate reports an idempotent retry: nothing was written
// and the original versions and positions are returned; the events may then
// have been written by several appends, and LastPosition is the last one's
// position, with others' events between.
type AppendResult struct {
	FirstVersion, LastVersion, Position, LastPosition uint64
	Duplicate                                         bool
}

// DeleteResult is Apply's verdict for a successful delete. Every event at a
// lower position than Position precedes the delete. From Format2 on
// (Logged), Position is the delete's own position in the shard log; before,
// a delete took no position and Position is the next event's.
type DeleteResult struct {
	Position uint64
	Logged   bool
}

// Command type bytes: the first byte of every encoded command. Append-only.
const (
	cmdAppend         byte = 1
	cmdDelete         byte = 2
	cmdSetFormat      byte = 3
	cmdTruncate       byte = 4
	cmdSetRetention   byte = 5
	cmdPolicyTruncate byte = 6 // a TruncateCommand with a Policy
)

// EncodeAppend encodes c for a raft entry (see the command table in doc.go).
// It does not validate c.
func EncodeAppend(c *AppendCommand) []byte {
	n := 1 + binary.MaxVarintLen64 + len(c.Stream) + 1 + binary.MaxVarintLen64 + 8 + binary.MaxVarintLen64
	for i := range c.Events {
		e := &c.Events[i]
		n += 16 + 4*binary.MaxVarintLen64 + len(e.Type) + len(e.ContentType) + len(e.Data) + len(e.Metadata)
	}
	b := make([]byte, 0, n)
	b = append(b, cmdAppend)
	b = appendString(b, c.Stream)
	b = append(b, byte(c.Expected.Kind))
	b = binary.AppendUvarint(b, c.Expected.Version)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Time))
	b = binary.AppendUvarint(b, uint64(len(c.Events)))
	for i := range c.Events {
		e := &c.Events[i]
		b = append(b, e.ID[:]...)
		b = appendString(b, e.Type)
		b = appendString(b, e.ContentType)
		b = binary.AppendUvarint(b, uint64(len(e.Data)))
		b = append(b, e.Data...)
		b = binary.AppendUvarint(b, uint64(len(e.Metadata)))
		b = append(b, e.Metadata...)
	}
	return b
}

// EncodeDelete encodes c for a raft entry. It does not validate c.
func EncodeDelete(c *DeleteCommand) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(c.Stream)+1+binary.MaxVarintLen64+8+1)
	b = append(b, cmdDelete)
	b = appendString(b, c.Stream)
	b = append(b, byte(c.Expected.Kind))
	b = binary.AppendUvarint(b, c.Expected.Version)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Time))
	var flags byte
	if c.Tombstone {
		flags |= 1
	}
	return append(b, flags)
}

// EncodeTruncate encodes c for a raft entry. It does not validate c.
func EncodeTruncate(c *TruncateCommand) []byte {
	n := 1 + binary.MaxVarintLen64 + len(c.Stream) + binary.MaxVarintLen64 + 1 + binary.MaxVarintLen64
	typ := cmdTruncate
	if c.Policy != nil {
		typ, n = cmdPolicyTruncate, n+binary.MaxVarintLen64+len(c.Policy.Prefix)+8
	}
	b := make([]byte, 0, n)
	b = append(b, typ)
	b = appendString(b, c.Stream)
	b = binary.AppendUvarint(b, c.Before)
	b = append(b, byte(c.Expected.Kind))
	b = binary.AppendUvarint(b, c.Expected.Version)
	if c.Policy != nil {
		b = appendString(b, c.Policy.Prefix)
		b = binary.BigEndian.AppendUint64(b, uint64(c.Policy.Set))
	}
	return b
}

// EncodeSetFormat encodes c for a raft entry.
func EncodeSetFormat(c *SetFormatCommand) []byte {
	return binary.AppendUvarint([]byte{cmdSetFormat}, c.Format)
}

// DecodeCommand decodes an encoded command into *AppendCommand,
// *DeleteCommand, *TruncateCommand, *SetFormatCommand or *SetRetentionCommand. Event Data and Metadata alias data. It never panics; bad
// input yields an *InvalidError for field "command". It does not validate
// the command's contents (use ValidateAppend / ValidateDelete).
func DecodeCommand(data []byte) (any, error) {
	if len(data) == 0 {
		return nil, errCommand("empty")
	}
	d := decoder{b: data[1:]}
	switch data[0] {
	case cmdAppend:
		c := &AppendCommand{}
		c.Stream = d.string()
		c.Expected.Kind = ExpectedKind(d.byte())
		c.Expected.Version = d.uvarint()
		c.Time = int64(d.uint64())
		if d.err == nil && c.Expected.Kind > ExpectExact {
			return nil, unknownEncoding("expected-version kind %d", uint8(c.Expected.Kind))
		}
		n := d.uvarint()
		// Every event needs at least 16+4 bytes; bound the allocation by the input.
		if d.err == nil && n > uint64(len(d.b))/20 {
			return nil, errCommand("event count %d exceeds input size", n)
		}
		if d.err == nil && n > 0 {
			c.Events = make([]Event, n)
		}
		for i := range c.Events {
			if d.err != nil {
				break
			}
			e := &c.Events[i]
			copy(e.ID[:], d.bytes(16))
			e.Type = d.string()
			e.ContentType = d.string()
			e.Data = d.lenBytes()
			e.Metadata = d.lenBytes()
		}
		if d.err != nil {
			return nil, d.err
		}
		if len(d.b) != 0 {
			return nil, errCommand("%d trailing bytes", len(d.b))
		}
		return c, nil
	case cmdDelete:
		c := &DeleteCommand{}
		c.Stream = d.string()
		c.Expected.Kind = ExpectedKind(d.byte())
		c.Expected.Version = d.uvarint()
		c.Time = int64(d.uint64())
		flags := d.byte()
		if d.err != nil {
			return nil, d.err
		}
		if c.Expected.Kind > ExpectExact {
			return nil, unknownEncoding("expected-version kind %d", uint8(c.Expected.Kind))
		}
		if flags&^1 != 0 {
			return nil, unknownEncoding("delete flags %#x", flags)
		}
		c.Tombstone = flags&1 != 0
		if len(d.b) != 0 {
			return nil, errCommand("%d trailing bytes", len(d.b))
		}
		return c, nil
	case cmdTruncate, cmdPolicyTruncate:
		c := &TruncateCommand{}
		c.Stream = d.string()
		c.Before = d.uvarint()
		c.Expected.Kind = ExpectedKind(d.byte())
		c.Expected.Version = d.uvarint()
		if data[0] == cmdPolicyTruncate {
			c.Policy = &RetentionRef{Prefix: d.string(), Set: int64(d.uint64())}
		}
		if d.err != nil {
			return nil, d.err
		}
		if c.Expected.Kind > ExpectExact {
			return nil, unknownEncoding("expected-version kind %d", uint8(c.Expected.Kind))
		}
		if len(d.b) != 0 {
			return nil, errCommand("%d trailing bytes", len(d.b))
		}
		return c, nil
	case cmdSetRetention:
		return decodeSetRetention(&d)
	case cmdSetFormat:
		c := &SetFormatCommand{Format: d.uvarint()}
		if d.err != nil {
			return nil, d.err
		}
		if len(d.b) != 0 {
			return nil, errCommand("%d trailing bytes", len(d.b))
		}
		if c.Format < Format1 {
			return nil, errCommand("format %d", c.Format)
		}
		return c, nil
	}
	return nil, unknownEncoding("command type %d", data[0])
}

// unknownEncoding is DecodeCommand's error for a command type, delete flag or expected-version
// kind this version does not know: a later version's encoding (doc.go: encodings are
// append-only). It is an *InvalidError that also wraps ErrUnsupportedFormat, so that Apply
// fails on it (ApplyFailure) rather than record a refusal where a replica of that later
// version applies the command, and the replicas diverge.
func unknownEncoding(format string, args ...any) error {
	return fmt.Errorf("%w (written by a later version; upgrade this node): %w", ErrUnsupportedFormat,
		errCommand("unknown "+format, args...))
}

func errCommand(format string, args ...any) error {
	return invalid("command", "a command encoded by EncodeAppend/EncodeDelete/EncodeTruncate/EncodeSetFormat/EncodeSetRetention", format, args...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoder reads from b; the first error sticks and later reads return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = errCommand("truncated or corrupt %s", what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uint64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail("fixed64")
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	// Reject overlong encodings too: one command has exactly one encoding.
	if n <= 0 || (n > 1 && d.b[n-1] == 0) {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil || n > uint64(len(d.b)) || n > math.MaxInt {
		d.fail("length-prefixed field")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) lenBytes() []byte {
	v := d.bytes(d.uvarint())
	if len(v) == 0 {
		return nil
	}
	return v
}

func (d *decoder) string() string { return string(d.bytes(d.uvarint())) }

package client

import (
	"strconv"
	"time"

	"github.com/google/uuid"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// ExpectedVersion is the optimistic-concurrency condition of a write. The
// zero value is Any. Build one with Any, NoStream, StreamExists or Exact.
type ExpectedVersion struct {
	kind    shoalv1.ExpectedVersion_Kind
	version uint64
}

var (
	// Any performs no check.
	Any = ExpectedVersion{kind: shoalv1.ExpectedVersion_KIND_ANY}
	// NoStream requires that the stream does not exist yet (or was
	// soft-deleted). Not valid for Delete.
	NoStream = ExpectedVersion{kind: shoalv1.ExpectedVersion_KIND_NO_STREAM}
	// StreamExists requires that the stream exists.
	StreamExists = ExpectedVersion{kind: shoalv1.ExpectedVersion_KIND_EXISTS}
)

// Exact requires that the stream's last event has version v (versions start
// at 0, so Exact(0) means "the stream holds exactly one event").
func Exact(v uint64) ExpectedVersion {
	return ExpectedVersion{kind: shoalv1.ExpectedVersion_KIND_EXACT, version: v}
}

// Exact returns the version e requires and true when e was built by Exact.
func (e ExpectedVersion) Exact() (version uint64, ok bool) {
	return e.version, e.kind == shoalv1.ExpectedVersion_KIND_EXACT
}

// String returns "any", "no stream", "stream exists" or "version N".
func (e ExpectedVersion) String() string {
	switch e.kind {
	case shoalv1.ExpectedVersion_KIND_ANY:
		return "any"
	case shoalv1.ExpectedVersion_KIND_NO_STREAM:
		return "no stream"
	case shoalv1.ExpectedVersion_KIND_EXISTS:
		return "stream exists"
	case shoalv1.ExpectedVersion_KIND_EXACT:
		return "version " + strconv.FormatUint(e.version, 10)
	default:
		return "kind " + strconv.Itoa(int(e.kind))
	}
}

func (e ExpectedVersion) proto() *shoalv1.ExpectedVersion {
	return &shoalv1.ExpectedVersion{Kind: e.kind, Version: e.version}
}

func expectedFromProto(p *shoalv1.ExpectedVersion) ExpectedVersion {
	if p == nil {
		return Any
	}
	e := ExpectedVersion{kind: p.GetKind()}
	if e.kind == shoalv1.ExpectedVersion_KIND_EXACT {
		e.version = p.GetVersion()
	}
	return e
}

// Event is an event to append. A zero ID is replaced by a time-ordered
// (version 7) UUID before the first attempt, so that retries of the append
// are recognised by the server as the same events. Any unique ID works;
// time-ordered ones are cheaper for the server, whose ID index then grows
// at its end instead of at random places.
type Event struct {
	// ID identifies the event for idempotency (docs/guarantees.md). The zero
	// UUID (uuid.Nil, 00000000-0000-0000-0000-000000000000) means "make one":
	// Append gives the event a new time-ordered UUID, so the nil UUID itself
	// can never be an event's ID. Set it to make your own retries idempotent.
	ID          uuid.UUID
	Type        string // 1..256 bytes, required
	Data        []byte
	Metadata    []byte
	ContentType string // e.g. "application/json"; empty means unspecified
}

// RecordedEvent is an event as stored: its stream, version within the
// stream, and position within its shard's log.
type RecordedEvent struct {
	Stream      string
	Version     uint64 // 0-based, dense within the stream
	Position    uint64 // position in the shard log
	Shard       uint32
	ID          uuid.UUID
	Type        string
	Data        []byte
	Metadata    []byte
	ContentType string
	Created     time.Time // commit time stamped by the shard's leader
	// Deletion is set only by ReadShard with IncludeDeletes: this entry of the
	// shard log is a delete of Stream, Version is the stream's last version at
	// the delete, Created the delete's time, and ID, Type, Data, Metadata and
	// ContentType are empty.
	Deletion Deletion
}

// Deletion tells a delete in a shard log from an event.
type Deletion uint8

const (
	NotDeleted  Deletion = 0 // an event
	SoftDeleted Deletion = 1 // a soft delete: the stream's versions up to Version are hidden
	Tombstoned  Deletion = 2 // a tombstone: the stream is gone for good
)

func (d Deletion) String() string {
	switch d {
	case NotDeleted:
		return "event"
	case SoftDeleted:
		return "soft delete"
	case Tombstoned:
		return "tombstone"
	}
	return "deletion(" + strconv.Itoa(int(d)) + ")"
}

// DeleteResult describes an acknowledged delete. Every event of the shard at a
// lower position than Position precedes the delete. With Logged (shards at
// format 2 and later) the delete took Position in the shard log, where
// ReadShard with IncludeDeletes returns it; without, it took no position and
// Position is the shard's next one.
type DeleteResult struct {
	Shard    uint32
	Position uint64
	Logged   bool
}

// AppendResult describes an acknowledged append.
type AppendResult struct {
	Shard        uint32
	FirstVersion uint64 // version of the batch's first event
	// LastVersion is the version of the batch's last event: the stream's last version
	// after the append, but for a Duplicate the version its last event was stored at
	// then, which later appends may have passed (expect the stream's current version
	// from a read, not from a duplicate's LastVersion).
	LastVersion uint64
	Position    uint64 // shard position of the batch's first event
	// LastPosition is the shard position of the batch's last event: Position +
	// (LastVersion - FirstVersion), except for a Duplicate of events that several
	// appends wrote, whose later events are at higher positions.
	LastPosition uint64
	Duplicate    bool // every event ID was already stored; nothing was written
}

func recordedFromProto(p *shoalv1.RecordedEvent) RecordedEvent {
	ev := RecordedEvent{
		Stream:      p.GetStream(),
		Version:     p.GetVersion(),
		Position:    p.GetPosition(),
		Shard:       p.GetShard(),
		Type:        p.GetType(),
		Data:        p.GetData(),
		Metadata:    p.GetMetadata(),
		ContentType: p.GetContentType(),
	}
	if id, err := uuid.FromBytes(p.GetId()); err == nil {
		ev.ID = id
	}
	if ns := p.GetCreatedUnixNano(); ns != 0 {
		ev.Created = time.Unix(0, ns)
	}
	if d := p.GetDeletion(); d != shoalv1.Deletion_DELETION_NONE {
		ev.Deletion, ev.ID = Deletion(d), uuid.UUID{}
	}
	return ev
}

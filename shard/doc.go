// Package shard is the deterministic state machine of one shard: it applies
// append and delete commands (in raft log order) to a key prefix of a shared
// Pebble DB and serves stream and shard-log reads. It knows nothing of raft
// or the network.
//
// # Caller duties
//
// The proposer (node):
//
//  1. Validates with ValidateAppend / ValidateDelete / ValidateTruncate /
//     ValidateRetention, stamps Time (unix nanos; RetentionPolicy.Set),
//     encodes with the matching Encode function and proposes the bytes.
//     Event IDs must be set (zero is invalid): the client makes them.
//
// The replica's apply loop (one goroutine per shard; Apply, SetApplied,
// Committed and Reload are never called concurrently):
//
//  1. Opens one indexed batch (db.NewIndexedBatch) per group of committed
//     entries; every uncommitted Apply must go into that same batch.
//  2. For each entry in log order calls Apply(b, index, data) (or
//     SetApplied(b, index) for entries without a command) and keeps the
//     result for the proposer. A result wrapping ErrStorage is not a verdict:
//     discard the batch, Reload, and stop (or retry from Applied()+1).
//     ApplyFailure tells the two apart (the replica stops the node on one).
//     Optionally, BeginBatch(b) before the first Apply and FinishBatch(b)
//     after the last: the applied index ('X', or 'Z' from Format3 on) and
//     shard meta ('Z') are then written once per batch instead of once per
//     entry (same final state).
//  3. Commits b (NoSync is fine: the raft log is the durable record; after a
//     crash, entries after Applied() are re-applied and get the same verdicts).
//  4. Calls Committed(), which makes the in-memory stream metadata
//     authoritative and advances Applied() and LastPosition(). Only then
//     answers the proposers.
//  5. After installing a snapshot over Span() (or discarding a batch), calls
//     Reload().
//
// Readers (any goroutine) use ReadStream, ReadLog, StreamInfo, LastPosition
// and Applied; they read committed state from the DB. Linearizable reads are
// the caller's business (raft ReadIndex, then read).
//
// # Semantics
//
// Versions are dense per stream from 0; positions are dense per shard from 0,
// one per event and, from Format2 on, one per delete (see Formats below). Apply checks, in order:
// validation (*InvalidError), idempotency (all IDs stored as a consecutive run of this
// stream in batch order: the original result with Duplicate=true, even once the stream was
// tombstoned since), tombstone (ErrStreamDeleted, which also answers an append whose IDs
// are only partly stored into a tombstoned stream; otherwise some or misplaced IDs are an
// *IDConflictError), then the expected version (*WrongExpectedVersionError). NoStream accepts an absent or
// soft-deleted stream, Exists a live one, Exact N a present stream (live or
// soft-deleted) whose last version is N. A soft delete hides versions up to
// the current last; a later append continues the versions and un-hides the
// stream from the next version on. A tombstone is permanent. The shard log
// (ReadLog) keeps events of deleted streams.
//
// # Key layout
//
// Every key starts with the shard prefix; integers are big-endian so that
// byte order is numeric order. Tags are append-only.
//
//	+-----+-----------+-----+-----------------------+-------------------------------------------+
//	| 'S' | shard (4) | tag | rest of key           | value                                     |
//	+-----+-----------+-----+-----------------------+-------------------------------------------+
//	| 'S' | shard     | 'A' | position (8)          | log entry: streamID(8) first ver(8) n(8)  |
//	| 'S' | shard     | 'E' | streamID (8) ver (8)  | event record (below)                      |
//	| 'S' | shard     | 'I' | event UUID (16)       | streamID(8) version(8) position(8)        |
//	| 'S' | shard     | 'M' | streamID (8)          | stream name (bytes)                       |
//	| 'S' | shard     | 'N' | stream name (bytes)   | stream record (below)                     |
//	| 'S' | shard     | 'P' | stream prefix (bytes) | retention policy: flags(1: bit 0 deleted) |
//	|     |           |     |                       | keep-last(uvarint) max-age ns(uvarint)    |
//	|     |           |     |                       | set time(8); from Format6 on              |
//	| 'S' | shard     | 'V' |                       | format (8); absent: Format1               |
//	| 'S' | shard     | 'X' |                       | applied raft index (8); up to Format2     |
//	| 'S' | shard     | 'Z' |                       | next position (8) next streamID (8)       |
//	|     |           |     |                       | from Format3 on: applied raft index (8)   |
//	+-----+-----------+-----+-----------------------+-------------------------------------------+
//
// One 'A' entry covers one append: positions p..p+n-1 are versions
// first..first+n-1 of the stream; from Format2 on, a delete's 'A' entry
// (33 bytes) is streamID(8) last version(8) 0(8) kind(1: 1 soft, 2 tombstone)
// time(8) and covers one position. Stream IDs come from a per-shard counter,
// so event keys are 22 bytes whatever the stream name. 'R'|shard is reserved
// for the replica's raft log; Span() covers 'S'|shard only.
//
// Stream record ('N' value, 25 bytes):
//
//	+-----------+--------------+-----------------+------------------------------+
//	| state (1) | streamID (8) | last version (8)| first visible version (8)    |
//	+-----------+--------------+-----------------+------------------------------+
//	state: 0 live, 1 soft-deleted, 2 tombstoned (append-only)
//
// Up to Format2 every append rewrites the stream record. From Format3 on it
// is written when the stream is created and when its state changes (a
// delete, or the append that follows a soft delete), so a live stream's
// last version in it may be behind: its last 'E' key holds the last version
// (Apply's stream cache keeps it in memory; a read or a cache miss seeks it).
// A deleted stream's record is right in every format.
//
// # Event record ('E' value)
//
//	+--------+---------+-------------------------------------------------------+
//	| offset | size    | field                                                 |
//	+--------+---------+-------------------------------------------------------+
//	| 0      | 1       | format = 1                                            |
//	| 1      | 1       | flags: bit 0 = payload is zstd; other bits must be 0  |
//	| 2      | 8       | created, unix nanos (int64)                           |
//	| 10     | 8       | position                                              |
//	| 18     | 16      | event ID                                              |
//	| 34     | uvarint | len(type), then type                                  |
//	|        | uvarint | len(content type), then content type                  |
//	|        | uvarint | len(data), uncompressed                               |
//	|        | uvarint | len(metadata), uncompressed                           |
//	|        | rest    | data||metadata, raw or one zstd frame (with checksum) |
//	+--------+---------+-------------------------------------------------------+
//
// The payload is compressed (klauspost zstd, single-threaded so the bytes are
// deterministic) when data+metadata exceeds 4 KiB and compression saves
// space. Stream and version come from the key. Pebble checksums its blocks,
// so the record carries no CRC of its own.
//
// # Command encoding (raft entry data)
//
//	append: 0x01 | uvarint len, stream | kind (1) | uvarint version | time (8)
//	        | uvarint n | n × ( id (16) | uvarint len, type | uvarint len, content type
//	                          | uvarint len, data | uvarint len, metadata )
//	delete: 0x02 | uvarint len, stream | kind (1) | uvarint version | time (8) | flags (1: bit 0 tombstone)
//	format: 0x03 | uvarint format
//	truncate: 0x04 | uvarint len, stream | uvarint before | kind (1) | uvarint version
//	policy truncate: 0x06 | as truncate | uvarint len, policy prefix | policy set time (8)
//	retention: 0x05 | uvarint len, prefix | flags (1: bit 0 deleted, bit 1 remove)
//	           | uvarint keep-last | uvarint max-age ns | set time (8)
//
// The leading type byte and ExpectedKind values are append-only. Varints must
// be minimal and nothing may trail, so a command has exactly one encoding.
//
// # Formats
//
// What the state machine writes is versioned per shard, so that every
// replica of a group changes at the same log entry and a group never mixes
// versions that would write different state. A SetFormatCommand in the log
// raises the format ('V' key; a snapshot carries it). Format1: deletes take
// no position. Format2: each delete takes the next position and appears in
// ReadLog. Format3: an append writes 'E' and 'I' per event and one 'A', and
// the batch one 'Z', where Format2 also wrote 'N' per append and 'X' per
// batch; the 'X' key is deleted when the shard is raised to it. Format4:
// TruncateCommand, which deletes a stream's first 'E' keys and moves its
// start; every event below a stream's start may be gone from then on, and
// ReadLog skips the log's events that are. Format5: a truncation marks the
// stream record. Format6: SetRetentionCommand and the 'P' keys. Format7: a
// truncation deletes the 'I' keys of the events it removes (of its first
// forgetIDsMax), and checkIDs counts an 'I' entry only while its 'E' key is
// stored. The
// proposer raises a shard's format only when every replica runs
// a version that knows it (MaxFormat), and never places a replica on a node
// that does not. Open refuses a shard above MaxFormat (no downgrade); a
// SetFormatCommand above MaxFormat is a failure (ErrUnsupportedFormat), not
// a verdict: the replica's node stops at it (and at every restart) instead
// of diverging, until it runs a version that knows the format. Versions
// from before formats do not check, and would diverge.
//
// # Performance notes
//
// Apply keeps the metadata of streams it touched in memory (pending until
// Committed, then a committed map bounded by Options.MaxCachedStreams) so an
// append to a known stream does no stream read. Fresh event IDs and new
// stream names are screened by in-memory scalable bloom filters (1.25–5
// bytes per event appended or stream, ~1% false positives per stage), so the
// idempotency check reads Pebble only for retries and false positives, and
// the first append to a stream reads nothing to learn that it is new. Open
// and Reload start a background scan of the 'I' and 'N' keys that rebuilds
// the filters (O(events + streams), about 0.6 µs per key) and return at once;
// until it ends, Apply reads Pebble for every event ID and uncached stream.
// Close stops the scan: close every shard before closing the DB.
// Reads iterate with bounded memory.
package shard

// Package snapshot stores aggregate snapshots for event sourcing in shoal
// itself: the state of an aggregate after version V of its stream is
// appended, compressed and checksummed, to a companion stream, and loading
// the aggregate starts from the newest snapshot and replays only the events
// after it.
//
// Three layers, pick the highest that fits:
//
//	Repository[S]    Load (snapshot + replay) and save a new snapshot when the
//	                 replay was at least Policy.Every events; Append with the
//	                 loaded version as exact expected version; Update, a
//	                 command: load, decide, append, and again on a conflict.
//	Load, SaveState  the same, generic over a Codec[S], without a policy.
//	Store            Save/Latest of raw state bytes.
//
// # Companion streams
//
// The snapshots of stream X live in CompanionStream(prefix, X):
//
//	prefix + "~" + X                  when it fits in 512 bytes
//	prefix + "#" + hex(sha256(X))     otherwise
//
// with prefix DefaultPrefix ("snapshot") unless Options.Prefix says
// otherwise. Stream names starting with '$' are the server's, and every
// other name is a legal user stream, so the scheme reserves the two forms
// above by convention: do not create user streams starting with
// "snapshot~" or "snapshot#". Every record names its source stream, and a
// record naming another stream is refused as corrupt, so even a violated
// convention cannot feed one aggregate another's state.
//
// # Record format
//
// One snapshot is one event of type EventType whose data is:
//
//	+--------+--------+------+------+-------------+-------------+---------+---------+---------+--------+
//	| field  | magic  | fmt  | comp | stream      | codec       | version | raw len | payload | crc    |
//	+--------+--------+------+------+-------------+-------------+---------+---------+---------+--------+
//	| bytes  | 4      | 1    | 1    | uvarint + n | uvarint + n | 8 BE    | uvarint | rest    | 4 BE   |
//	| value  | "SHSN" | 1    | 1=zstd | source    | Codec.Name  | V       | state   | zstd    | crc32c |
//	+--------+--------+------+------+-------------+-------------+---------+---------+---------+--------+
//
// fmt (FormatVersion) and comp (CompressionZstd) are append-only enums. The
// CRC-32C (Castagnoli) covers every byte before it. The event ID is UUID v5
// of (companion, V, codec, fmt), so saving the same version twice in the same
// codec and format writes once, and a save in another codec or format is a
// record of its own. A companion's records go up in version: a save below the
// newest record's version writes nothing, and a save appends right after the
// record it read (an expected version), so a slow save of an older version
// never becomes the newest after a newer one.
//
// # Caller duties
//
//  1. Choose a Codec whose Name changes whenever the state type or its
//     encoding changes; old snapshots are then skipped, not mis-decoded.
//  2. Make ApplyFunc deterministic: Load with a snapshot must give the same
//     state as a full replay. Only save a state that really is the fold of
//     events 0..V.
//  3. Treat a snapshot as a cache: Latest returning ErrCorrupt or
//     ErrCodecMismatch means "replay from the start" (Load and Repository do
//     this themselves and report it in Loaded.SnapshotErr).
//  4. Append new events with Loaded.Expected() (exact expected version) so
//     decisions made on a loaded state are never based on a stale one: an
//     append by another writer since the load fails it. A soft delete since
//     the load does not (an exact expected version matches a soft-deleted
//     stream's last version, and the append goes on after it), so a state
//     whose decisions must not outlive a delete checks for one first, or
//     uses hard deletes. Append only to the stream the state was loaded from
//     (Loaded.Stream): another stream at the same version passes the check.
//     Repository.Append refuses any other (client.ErrInvalidArgument), and
//     a Loaded naming no stream unless it is a new stream's (Exists false);
//     an append made with the client itself is the caller's to match.
//     Repository.Update does the load, the append and the retry after a
//     conflict for a command.
//  5. Keep companion-stream names out of your own naming (see above).
//
// # Deleted streams
//
// A soft delete hides a stream's events, and appends after it go on at the next version,
// so a snapshot taken before the delete would fold events the stream no longer has into its
// new life with no gap in the versions to show it. Load therefore reads from the snapshot's
// own version V, not V+1: event V is still visible unless the stream was deleted since, and
// then the read starts at the first version after the delete, which Load replays from the
// initial state (Loaded.SnapshotErr is ErrDeletedHistory; Repository saves a fresh
// snapshot). A stream deleted and not written since reads as absent. A read that resumes
// after a failover asks for the last event it read again (client.Read), and a stream deleted
// in between ends it with client.ErrStreamChanged: Load then starts over, up to three times
// (ErrVersionGap).
//
// Snapshot and stream reads are linearizable (served by the leader)
// whatever the client's default (client.WithStaleReads): a follower that has
// not applied a delete would show a snapshot's version still there.
//
// # Pruning
//
// A save prunes its companion stream to the newest Options.Keep snapshots
// (default DefaultKeep, 1: Latest reads only the companion's last event),
// truncating it (client.Truncate) before its record's version + 1 - Keep;
// a negative Keep turns pruning off, and the companion then grows by one
// event per save. A truncation keeps a stream's last event, so a newer
// snapshot saved concurrently is never removed. Truncation needs the
// companion's shard at format 4: until then, and whenever a truncation
// fails, the save still succeeds, the failure is counted
// (shoal_snapshot_prune_errors_total) and logged, and the next save's
// truncation removes every older snapshot, the ones left behind too.
//
// The aggregate's own stream can be truncated too, up to its newest
// snapshot's version and no further: Repository.TruncateHistory. Load reads
// with client.WholeHistory, so a stream truncated past its newest snapshot
// (or truncated without one) fails the load with client.ErrHistoryTruncated.
// A truncation made before its shard reached format 5 left no mark: such a
// stream cannot be told from one deleted and written again, and a Load folds
// what is left into the initial state.
package snapshot

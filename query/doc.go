// Package query builds CQRS read models from shoal's event log and answers
// queries over them.
//
// A Projection follows every shard's log with client.ReadShard (a long poll,
// client.Wait, once a shard is caught up, so new events arrive within
// milliseconds; its StreamPrefix and EventTypes are applied by the server, so
// the events it does not want are not sent), hands each event to a Handler, and commits the handler's read-model writes together
// with the new checkpoint in one Pebble batch in the projection's own
// database, one batch per page.
//
// # Delivery guarantee
//
// shoal delivers at least once: after a crash, a failed commit, a stopped
// Run or a handler error, the events of the uncommitted page are read and
// handled again. The read model is nevertheless effectively exactly-once,
// because the checkpoint that says "these events are done" is written in the
// same atomic batch as the model changes they caused: either both are
// durable or neither is. This holds only for writes made through the Batch;
// side effects outside it (emails, calls to other services) are
// at-least-once and must be idempotent (ev.ID is a good key).
//
// There is no order across shards; within a shard events arrive in
// position order, so within a stream in version order. The checkpoint is a
// vector of shard positions (Checkpoint), never a single global number.
//
// Deletes reach the Handler only with Config.Deletes: then a delete of a
// stream arrives at its position in the shard log, as a RecordedEvent whose
// Deletion is client.SoftDeleted or client.Tombstoned. The events of a
// deleted stream stay in the log, so without it a projection keeps what it
// built from them. Deletes take positions from the shard's format 2 on,
// which the cluster reaches by itself once every node runs a version that
// knows it; a delete made before was not logged and is never seen (a model
// that must forget such streams needs the deleting code to append an event
// of its own, as before).
//
// A truncation (client.Truncate) takes no position and reaches no Handler: the
// events it removed are gone from the log, so a projection that had not read
// them yet never sees them (a model rebuilt from scratch lacks them too), while
// one that had keeps what it built from them. Nothing tells a projection that
// it missed some: truncate only what it has read. snapshot.Repository's
// TruncateHistory does that when given snapshot.ReadBy with the projection's
// Checkpoint().Covers; before a client.Truncate, check that the Checkpoint
// covers the position just below the first event it keeps.
//
// Without StreamPrefix or EventTypes a projection sees every stream, the
// companion streams of aggregate snapshots too (package snapshot: streams
// under its prefix, "snapshot" by default, of events of type
// "shoal.snapshot"): a handler that fails on event types it does not know
// stops Run at the first of them. Skip them, or filter.
//
// # Caller duties
//
//  1. Give each projection its own Dir; Open it, Run it (it blocks until ctx
//     ends or a handler fails), Close it after Run returned.
//  2. Write the read model only through the *Batch passed to Handle. Calls
//     are serialized across shards, so read-modify-write through
//     Batch.Get/Set is safe; keep handlers deterministic and quick (they
//     hold the commit lock).
//  3. Return an error from Handle only for events you cannot process: Run
//     stops with a *HandlerError naming the event, nothing of its page is
//     committed, and the next Run retries the same event.
//  4. To rebuild a model from scratch, delete the directory (there is no
//     in-place reset). A database is bound to the cluster ID and shard count
//     it was built from (ErrClusterMismatch otherwise), and to the filters
//     (StreamPrefix, EventTypes, Deletes) its checkpoint was built under:
//     Open refuses other ones (ErrFilterMismatch), since the checkpoint has
//     passed the events the old filters skipped; to change them, build the
//     model in a new or empty directory. A model rebuilt from
//     scratch lacks what truncations and retention removed from the log
//     since it was first built: keep snapshots of it (below) instead.
//  5. For read-your-writes, pass an append's AppendResult to WaitForAppend,
//     a delete's DeleteResult (client.DeleteResultTo) to WaitForDelete, or a
//     shard and position to WaitFor, before querying. Once Run has returned
//     they answer ErrNotRunning (wrapping Run's failure, if any) for what is
//     not applied yet, rather than wait until their ctx ends.
//
// # Snapshots
//
// WriteSnapshot writes a projection's whole database (read model,
// checkpoint, the cluster it is bound to) as of one moment to an io.Writer,
// zstd-compressed and checksummed, while Run goes on; Restore makes a new
// projection directory of it, which Open and Run take up from that
// checkpoint. Use them to move a read model to another machine, to keep it
// against the loss of its disk, or to start more instances of it, without
// reading every shard's log from the start again (which no longer holds the
// events that truncations and retention removed). Restore checks the whole
// snapshot before the directory is usable; a damaged or truncated one
// returns ErrBadSnapshot and leaves nothing behind.
//
// # Database layout
//
//	+--------+------------------+---------------------------------------+
//	| prefix | rest             | value                                 |
//	+--------+------------------+---------------------------------------+
//	| 'm'    | model key        | model value (the handler's writes)    |
//	| 'c'    | shard (4 BE)     | next shard position to read (8 BE)    |
//	| 'i'    | (none)           | uvarint shard count, cluster ID       |
//	| 'f'    | (none)           | the filters the checkpoint was built  |
//	|        |                  | under: flags (bit 0 Deletes), uvarint |
//	|        |                  | len + StreamPrefix, uvarint count +   |
//	|        |                  | per type uvarint len + type (sorted)  |
//	+--------+------------------+---------------------------------------+
//
// Prefixes are append-only. Get and Scan see only the 'm' keys, without the
// prefix.
//
// Subpackage saga drives multi-step sagas with compensation on shoal
// streams.
package query

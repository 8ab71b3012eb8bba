// Package replica runs one raft group (go.etcd.io/raft/v3) per shard, all driven by a single
// event-loop goroutine per node (a Host), with the raft log stored in the node's Pebble DB.
//
// # Keys
//
// Every group owns the R|shard prefix; its state machine owns its own span (S|shard).
// Integers are big-endian so that iteration order is numeric order.
//
//	key                                  value
//	-----------------------------------  -------------------------------------------------
//	'R' | shard (4B) | 'L' | index (8B)  entry: type (1B) | term (8B) | data
//	'R' | shard (4B) | 'H'               hard state: term (8B) | vote (8B) | commit (8B)
//	'R' | shard (4B) | 'C'               conf state (raftpb.ConfState, protobuf) as of applied
//	'R' | shard (4B) | 'T'               truncated (snapshot) index (8B) | its term (8B)
//	'R' | shard (4B) | 'A'               raft-level applied index (8B), written with C
//	'R' | shard (4B) | 'D'               term of a replica deleted here (8B): no message of a
//	                                     lower term creates the replica again (DropGroup)
//
// L is written in synced batches, and so is H, but only when its term or vote changes: the
// commit index alone is volatile in raft and is not stored each time it moves. C and A are
// written in the (unsynced) apply batch together with the state machine's changes, so they
// describe the same applied index; A only when the batch changes C or compacts the log (T),
// as a stale A merely makes a restart replay entries the state machine already holds (none of
// them a conf change). raft hands out for applying only entries that are durable here, and an
// append batch enters Pebble's WAL before the apply batch of the same iteration, so after a
// crash everything at or below A and T is committed: the stored commit index is raised to them
// when the group opens.
// The log holds the entries (T.index, last]. Entry data of a proposal is prefixed by a
// 16-byte header, proposer node ID (8B) | proposal ID (8B); the state machine sees only what
// follows. Conf changes (ConfChangeV2) carry the same header in their Context.
//
// # The loop
//
// raft runs with AsyncStorageWrites: the loop never waits for a disk. Each iteration of
// Host's loop, woken by queued work or by the tick timer (every TickInterval):
//
//  1. runs queued requests (open group, read index, conf changes, snapshot installs,
//     unreachable/snapshot reports), steps the storage responses released by the syncer
//     (below), steps queued peer messages (creating unknown groups through the
//     GroupFactory), steps queued proposals (one MsgProp per group, each data wrapped with
//     its header and registered with a waiter) and, on a tick, ticks every group. While
//     maxSyncsInFlight synced batches await their fsync, proposals and peers' MsgApp stay
//     queued, so that they are written together once one fsync ends (group commit);
//  2. collects the Ready of every group that has one and sends at once the messages that
//     need no durability (a leader's MsgApp and heartbeats, vote requests); MsgSnap goes
//     through Transport.SendSnapshot. A leader's empty MsgApp to a follower in replicate
//     state, which only carries a new commit index, is held until the next MsgApp to that
//     follower supersedes it or the next tick sends it (Group.holdCommitOnly), or the loss
//     of the leadership does (it may be a removed follower's only news of its removal);
//  3. writes every group's MsgStorageAppend (snapshot metadata: log reset, T, C; entries;
//     hard state when its term or vote changed) into ONE Pebble batch, handed over with
//     DB.ApplyNoSyncWait and pebble.Sync when anything must be durable (entries, term, vote,
//     snapshot), unsynced otherwise. The syncer goroutine waits for these batches in order
//     (Batch.SyncWait) and then releases their responses: acknowledgements to the leader and
//     votes through the Transport, the group's own MsgStorageAppendResp back to the loop
//     (step 1). Pebble syncs whatever its
//     WAL holds when the previous fsync ends, so concurrent groups share fsyncs, and a leader
//     writes its log while its followers write theirs (raft thesis §10.2.1): commit still
//     needs a quorum of durable copies;
//  4. records leadership changes and resolves finished leadership transfers;
//  5. applies the committed entries of every group's MsgStorageApply (raft hands out only
//     entries durable here) into ONE indexed batch with pebble.NoSync (the state can be
//     rebuilt from the log), skipping entries at or below StateMachine.Applied (after a
//     snapshot install the state may be ahead); conf changes are applied to raft and their
//     ConfState stored in the same batch; log compaction (logtrim.go: a leader down to what
//     every follower holds less a cushion, keeping up to LogRetainEntries for a follower behind,
//     its followers down to the point its appends carry; beyond MaxLogBytes down to applied, on
//     a leader down to what its furthest follower still needs until twice MaxLogBytes) is
//     staged in it too, so it is atomic with the state covering the dropped entries; then calls
//     Committed on every touched state machine,
//     resolves the proposers with Apply's results and steps the MsgStorageApplyResp;
//  6. for a group that lost leadership or changed term, fails its remaining waiters with
//     *NotLeaderError (their entries may still commit); releases read-index waiters whose
//     index is applied; stops groups removed from their configuration (ErrGroupRemoved).
//
// # Quiescence
//
// An idle group stops ticking (quiesce.go), so that an idle node's cost does not grow with its
// group count. On a tick, a leader quiesces when its group appended and applied nothing for
// ElectionTicks ticks, nothing waits (proposals, reads, conf changes, transfers, held commit
// indexes), the configuration is not joint, everything is committed and applied, and every
// follower matches the last index in raft's replicate state, recently active. It then sends
// each follower a quiesce heartbeat: a MsgHeartbeat built outside raft with the leader's term,
// min(match, commit) and the context quiesceCtx. A follower that steps one from its leader is
// quiesced too. A quiesced group is not ticked. Every other message wakes it, as do a
// proposal, ReadIndex, a conf change, a transfer, ReportUnreachable, ReportSnapshot,
// ReportPeerDown (for the groups the peer led) and a snapshot install. For ElectionTicks after
// waking, a leader refuses to remove a voter: until its next CheckQuorum, raft's follower
// activity marks are those of the moment it quiesced (Group.wake); the refusal keeps the group
// from quiescing for 5 s (at least 3*ElectionTicks: stayAwake), so that a retry finds the
// marks renewed. A
// quiesced leader
// repeats its quiesce heartbeats every quiesceRefreshTicks and wakes when a follower did not
// answer the previous ones. A quiesced follower that goes quiesceLapseTicks without one takes
// its leader for gone (Group.lapse): it does what ReportPeerDown does, so that the first
// remaining voter campaigns at once and the others grant it their votes; a quiesced follower
// within a quarter refresh of its own lapse lapses early for a vote request, without
// campaigning itself (lapseForVote).
// Answers to quiesce heartbeats are never stepped into raft, which reads a heartbeat answer's
// context as a read-index position. raft's safety never depends on ticks; reads stay
// linearizable because ReadOnlySafe confirms every read index with a quorum.
//
// # Snapshots
//
// raft's snapshot is metadata only (applied index, term, ConfState). The data is streamed by
// WriteSnapshot from one Pebble iterator over the state machine's span (an iterator, not a
// pebble.Snapshot: an install on the same node excises the span from open snapshots, not from
// open iterators) and installed by ReceiveSnapshot before the MsgSnap is stepped:
//
//	header   "SHS1" | shard (4B) | index (8B) | term (8B) | uvarint len | lo | uvarint len | hi
//	record   0x01 | uvarint len | key | uvarint len | value        (repeated, key order)
//	trailer  0x00 | record count (8B) | xxhash64 of every preceding byte (8B)
//
// (internal/kvframe's framing, which projection snapshots share.)
//
// ReceiveSnapshot never holds the snapshot in memory:
//
//  0. the transport asks SnapshotFits first: a snapshot whose sender's size hint (SnapshotSize,
//     Pebble's estimate of its tables) would leave less than Config.SnapshotMinFreeBytes
//     free, or would take the snapshots being received past Config.MaxSnapshotBytes, is
//     refused (ErrSnapshotTooLarge) before its data flows; one let through holds its hint
//     of Config.MaxSnapshotBytes until the transport releases it after the receive, which
//     counts only what its records take past the hint. ReceiveSnapshot refuses
//     (ErrStaleSnapshot) a snapshot sent at a term before the replica's before
//     reading any of it, and again on the loop before installing it: raft would drop the
//     message, and a deposed leader's snapshot would have replaced the state first;
//  1. it reads the stream through a 64 KiB buffer, refusing (ErrBadSnapshot) an item over
//     64 MiB, a key outside [lo, hi) or not above the previous key, and writes the records
//     into sstables of about 64 MiB each (Pebble's sstable.Writer, the DB's table format) in
//     Config.SnapshotDir on Config.FS; each table is synced when finished. It refuses
//     (ErrSnapshotTooLarge) a stream whose records would take the snapshots being received
//     at once past Config.MaxSnapshotBytes, and a table that would leave less than
//     Config.SnapshotMinFreeBytes free on the file system, counting the tables other
//     receives are writing;
//  2. it checks the trailer's count and the checksum; nothing of a refused stream is applied;
//  3. if the snapshot is ahead of the group's applied and commit indexes (checked on the loop
//     goroutine, which then pauses the group: processReady passes it by, and no group of the
//     shard is created, nor another of its snapshots installed, until the ingest ends),
//     DB.IngestAndExcise replaces the span with the tables in one atomic step, off the loop:
//     an excise of [lo, hi) and the ingestion of the tables, or the excise alone for an empty
//     snapshot. Pebble links the tables into the store, syncs its directory and then the
//     MANIFEST (or, when the span overlaps a memtable, a synced WAL record of a flushable
//     ingest) before returning, so the new state is durable before the MsgSnap is stepped;
//     back on the loop, the state machine is reloaded and the group goes on;
//  4. the scratch tables are gone in every case: Pebble removes those it ingested,
//     ReceiveSnapshot the others. A crash mid-receive leaves files behind for the caller to
//     remove before the next NewHost.
//
// Memory is therefore bounded by the read buffer, the largest key and value, and one sstable
// writer's blocks and buffered index (about 1% of a 64 MiB table), whatever the shard's size.
//
// The transport reports how each send ended with its MsgSnap (ReportSnapshot). raft's own
// report names only the follower, so the host steps it only while raft still waits for that
// snapshot: the group leads in the message's term and its progress of the follower is in
// StateSnapshot at the snapshot's index. The report of a send that outlasted a change of
// leadership, or that raft replaced with a newer snapshot, is dropped (logged at debug) and
// wakes no quiesced group.
//
// # Caller duties
//
//  1. Open the DB at pebble.FormatVirtualSSTables or newer; empty Config.SnapshotDir (a
//     directory of the DB's file system used by this host alone); build a Host with NewHost;
//     hand the Transport the Host as its handler.
//  2. Open every local shard with OpenGroup (bootstrap voters only when creating a cluster);
//     set a GroupFactory so that replicas added by a leader are created on first contact
//     (never by a heartbeat that carries a commit index or a leadership transfer: those were
//     meant for a replica this host deleted; raft would take an empty new one for a lost log,
//     or start an election it cannot win).
//  3. Propose on the leader (others return *NotLeaderError naming the leader); treat
//     ctx.Err() and *NotLeaderError after proposing as "outcome unknown". ErrBusy (the
//     proposal queue is full) and ErrProposalDropped (a leadership transfer under way) propose
//     nothing: try again after a pause.
//  4. Call ReadIndex before a linearizable read of the state machine.
//  5. Change membership one step at a time: AddLearner, wait for it to catch up,
//     PromoteLearner, RemoveMember (transfer leadership away before removing the leader).
//  6. Close the Host before closing the DB.
package replica

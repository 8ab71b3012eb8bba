// Package transport carries raft traffic between shoal nodes over the gRPC
// Raft service (api/shoal/v1), implementing replica.Transport.
//
// # Shape
//
// Every node runs one Transport. Outgoing raft messages of all shards share
// one long-lived client stream (Raft.Send) per ordered peer pair (A→B is
// A's stream, B→A is B's, so each direction keeps its own order and
// back-pressure); snapshots travel on
// their own streaming RPC (Raft.Snapshot) over a dedicated connection, so
// megabytes of state never queue in front of heartbeats.
//
//	replica event loop                                          peer node
//	      │ Send([]ShardMessage)  (never blocks)
//	      ▼
//	┌──────────────┐  per peer  ┌──────────┐ RaftBatch ... ┌───────────────────────┐
//	│ route by To  ├──────────► │ queue    ├──────────────►│ server.Send           │
//	└──────────────┘  (bounded) │ goroutine│  Raft.Send    │  check cluster, to    │
//	   full queue: drop,        └──────────┘  one stream   │  Handler.HandleMessages│
//	   count, report unreachable                           └───────────────────────┘
//
// # Caller duties
//
//  1. Build with New(Config) — NodeID and Resolve are required — and call
//     SetHandler (a *replica.Host) before traffic flows.
//  2. Register the transport on the node's gRPC server, created with
//     grpcopt.ServerOptions() (message sizes, keepalive policy).
//  3. Call Send with the messages of a Ready and SendSnapshot with each
//     MsgSnap (a MsgSnap given to Send is passed to SendSnapshot). Neither
//     blocks; the messages must not be modified afterwards.
//  4. Expect Handler.ReportUnreachable(shard, peer) for messages that were
//     dropped (full queue, unknown address, failed dial or stream),
//     Handler.ReportSnapshot(msg, ok) for each MsgSnap sent (not for one that
//     a newer snapshot of its shard replaced while it waited, below) and
//     Handler.ReportPeerDown(peer) when a broken stream is followed by a
//     refused connection (below); all are called from transport goroutines,
//     never from inside Send.
//  5. Close the transport after the replica host stops sending, and stop the
//     gRPC server to end incoming streams.
//
// # Raft.Send: one stream per peer pair
//
// The client sends RaftBatch messages; the server answers only when the
// stream ends (RaftAck, or an error status that the client logs).
//
//	RaftBatch
//	┌────────┬──────────────┬──────────────────────────────────────────────┐
//	│ field  │ type         │ meaning                                      │
//	├────────┼──────────────┼──────────────────────────────────────────────┤
//	│ 1      │ uint64       │ from: sender node ID (non-zero)              │
//	│ 2      │ uint64       │ to: receiver node ID; must equal its NodeID  │
//	│ 3      │ string       │ cluster_id: must match unless either is ""   │
//	│ 4      │ repeated u32 │ shards[i]: shard of messages[i]              │
//	│ 5      │ repeated b   │ messages[i]: proto-marshalled raftpb.Message │
//	│ 6      │ repeated u32 │ waited_us[i]: µs messages[i] waited in queue │
//	└────────┴──────────────┴──────────────────────────────────────────────┘
//
// A batch holds up to Config.MaxBatchMessages messages and MaxBatchBytes
// bytes (a single larger message goes alone; one above MaxMessageSize is
// dropped). Append messages (MsgApp) keep the order in which Send queued
// them, per peer; every other message (heartbeats, votes, answers) goes in the
// next batch, ahead of queued appends, so that a shard's megabytes of entries
// do not delay every shard's heartbeats into elections.
// The two queues hold Config.QueueSize messages each, and the appends' one at
// most Config.QueueBytes of entries (one larger append goes alone); a message
// that finds its queue full is dropped, counted and reported unreachable, and
// raft sends it again once the peer answers.
// Refusals: cluster mismatch and wrong node → FailedPrecondition; malformed
// batch → InvalidArgument; no handler → Unavailable.
//
// Reconnects: a failed dial or broken stream drops the in-flight batch and
// the queue (reported unreachable), then backs off exponentially with ±50%
// jitter (Config.BackoffInitial..BackoffMax); messages arriving during the
// back-off are dropped and reported too, so raft probes instead of
// pipelining into a dead peer. The address is resolved again at every dial;
// a successful send on a stream older than a second resets the back-off (a
// refusing peer accepts the first sends before ending the stream).
//
// Idle peers: after Config.IdleTimeout without a message, a peer's stream is
// ended cleanly (CloseSend, then the receiver's RaftAck once it has handled
// every batch) and its connection closed; after another IdleTimeout the peer
// is removed with its goroutine, queue and metric series (nodes replaced by
// new IDs must not accumulate). The next Send to that node starts a new peer.
// Send queues under Transport.mu and a peer leaves only under it, with its
// queue empty and no probe running, so a queued message is never stranded.
//
// Down peers: when an established stream breaks (other than by a refusal),
// a goroutine tries plain connections to the peer's address with
// Config.ProbeDial, at once and after 20, 100 and 300 ms. The first refused
// (or timed-out) attempt reports the peer down (Handler.ReportPeerDown,
// counted in peer_down_total): its process is gone, and its raft groups need
// not wait out an election timeout. Several attempts, because a killed
// process resets its connections a moment before its listener closes (an
// attempt reset while it connects, taken by the dying listener, counts as
// neither answer); a peer that accepts them all is left to raft's timeouts,
// and so is one whose dial fails for a local reason. A stream that breaks while a probe runs
// has the probe run again.
//
// # Raft.Snapshot: one stream per snapshot
//
//	chunk 0   from, to, cluster_id, shard, message = marshalled MsgSnap,
//	          size_hint = Handler.SnapshotSize (data empty)
//	chunk 1.. data = next ≤ SnapshotChunkSize bytes of one zstd stream
//	          holding whatever Handler.WriteSnapshot wrote
//	end       client CloseSend; server answers RaftAck or the error of
//	          Handler.ReceiveSnapshot
//
// The receiver validates chunk 0 like a batch (the message must be a MsgSnap
// from the chunk's sender to this node), asks Handler.SnapshotFits whether it
// has room for size_hint bytes (a refusal ends the stream before its data
// flows; a sender of an earlier version sends no hint, which is never
// refused), then decompresses the data chunks
// through an io.Pipe into Handler.ReceiveSnapshot(msg, reader). A sender that
// fails mid-stream cancels the RPC, so the reader sees an error, never a clean
// end.
//
// Fairness: each destination node has one sender goroutine while it has
// snapshots to receive, which sends them one at a time, in call order; a
// call for a shard whose snapshot is still waiting replaces it (raft wants
// only the newest, and no longer waits for the one replaced, which is not
// reported). The senders share
// Config.MaxSnapshotSends slots, taken in turn, so a receiver that is slow
// (up to SnapshotStallTimeout per chunk, 10× for its final answer) holds at
// most one slot, and snapshots to other nodes use the rest. After a failed
// snapshot, the next to the same node waits out a backoff (SnapshotBackoffInitial
// doubling to SnapshotBackoffMax, ±50% jitter, ended by a success) without a
// slot: raft asks again a heartbeat after a failure, and a node that keeps
// refusing would be sent the shard ten times a second.
//
// # Concurrency
//
// Transport methods are safe for concurrent use. Each peer's connection state
// is owned by its goroutine; Transport.mu guards the peer map, the waiting
// snapshots and the closed flag, and is held by Send while it queues. Lock
// order: Transport.mu, then the reporter's. Handler methods are called from
// peer, reporter, snapshot and gRPC server goroutines, never while a
// transport lock is held.
package transport

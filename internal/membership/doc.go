// Package membership wraps hashicorp/memberlist: who is in the cluster,
// alive or dead, and what each member says about itself (Meta). Gossip is
// advisory: raft configuration, not this package, decides who votes.
//
// # Caller duties
//
//  1. Give every node a unique Name and a NodeID drawn when its data
//     directory was created. A wiped node keeps its name but gets a new
//     NodeID; membership then treats it as a new member and replaces the old
//     entry.
//  2. Call Start with Join = seeds to join, or no seeds to start a cluster.
//     Start fails if no seed answers (retry with Join) and wraps
//     ErrClusterMismatch if the seeds belong to another cluster.
//  3. A fresh node may start with an empty ClusterID, learn the cluster's ID
//     from its peers' Meta and adopt it with UpdateMeta. A set ClusterID never
//     changes.
//  4. React to OnChange by reading Members(); calls are coalesced and come
//     from one goroutine, so a slow callback delays only later callbacks.
//  5. Dead members stay listed (Alive=false, Changed = when they died) until
//     they come back, the caller calls Forget, or they have been dead for
//     ForgetAfter (72 h; the reconnect loop drops them).
//  6. On shutdown call Leave (peers see "left" at once), then Close. Close
//     without Leave looks like a crash to peers.
//
// # Cluster isolation
//
// Both sides refuse a peer whose ClusterID differs when both are non-empty:
// the MergeDelegate cancels a join's push/pull merge, and the AliveDelegate
// drops gossip (periodic push/pull syncs included) about such nodes. The
// joiner's Join returns a *ClusterMismatchError naming both IDs when a seed it
// dialled was refused (a refusal of another node at the same moment is not
// blamed on the seed); the seed logs a warning. Nodes with an undecodable Meta
// are refused too.
//
// # Failure detection
//
// Based on memberlist.DefaultLANConfig, tightened for fast detection (see the
// Default* constants): probe every 500 ms with a 250 ms timeout, suspicion
// multiplier 3 (dead about 1.5-3 s after a crash in a small cluster; measured
// ~2.2 s on loopback with three nodes), gossip every 100 ms, push/pull every
// 10 s. With SecretKey set all gossip is AES-GCM encrypted and unencrypted or
// wrongly keyed peers cannot join. memberlist's log lines go to the
// configured slog.Logger at their bracketed level.
//
// # Meta encoding (at most MaxMetaSize = 512 bytes)
//
//	+---------+------------------------------------------------------------+
//	| field   | encoding                                                   |
//	+---------+------------------------------------------------------------+
//	| version | 1 byte; 1 today, 0 invalid; later versions only append     |
//	| NodeID  | uvarint                                                    |
//	| Name    | uvarint length + UTF-8 bytes                               |
//	| Zone    | uvarint length + UTF-8 bytes                               |
//	| GRPCAddr| uvarint length + UTF-8 bytes                               |
//	| HTTPAddr| uvarint length + UTF-8 bytes                               |
//	| Cluster | uvarint length + UTF-8 bytes (ClusterID)                   |
//	| Version | uvarint length + UTF-8 bytes                               |
//	| Shards  | uvarint (<= 2^32-1)                                        |
//	| Replic. | uvarint (<= 2^32-1)                                        |
//	| flags   | 1 byte: bit 0 Decommissioning, bit 1 Stopping, bit 2       |
//	|         | DiskLow, bit 3 DiskSlow; other bits reserved (0, and       |
//	|         | ignored when read)                                         |
//	| Format  | uvarint: highest shard format the node applies; absent     |
//	|         | (read as 0) from nodes that predate it                     |
//	| Epoch   | uvarint: ReplicationEpoch; absent from nodes that predate  |
//	|         | it (FollowsReplication false)                              |
//	| Sync    | uvarint: SyncMicros; absent (read as 0) from nodes that    |
//	|         | predate it                                                 |
//	| ...     | fields of later versions; ignored by this decoder          |
//	+---------+------------------------------------------------------------+
//
// # Concurrency
//
// Membership's methods are safe for concurrent use. memberlist calls the
// delegates from its goroutines, sometimes holding its node lock; they take
// only Membership.mu and never call back into memberlist, and OnChange runs
// on its own goroutine. Lock order: leaveMu, then memberlist's locks; mu is
// never held while calling memberlist.
package membership

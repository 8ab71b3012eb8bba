// Package node is one shoal server process: it wires the data directory,
// Pebble, the raft host (replica) and its gRPC transport, gossip
// (internal/membership), the Streams and Cluster gRPC services and the HTTP
// endpoints (health, metrics, pprof and the web console, console.go), and
// routes requests to shard leaders.
//
// # Data directory
//
//	path                      content
//	------------------------  ----------------------------------------------------------
//	LOCK                      flock(LOCK_EX|LOCK_NB) held while the node runs
//	identity.json             {"node_id": random non-zero uint64, "name": "..."}
//	                          created once; a wiped directory gets a new node ID
//	cluster.json              {"cluster_id": uuid, "shards": N, "replication": R, "replication_epoch": E}
//	                          written when the cluster is created or joined, and when the
//	                          replication factor changes (replication.go); ID and shards never change
//	groups.json               [shard, ...]: the raft groups this node holds (reopened on
//	                          restart); appended to when a leader adds a replica here
//	peers.json                [gossip addr, ...]: the peers last seen alive; a restart
//	                          joins them (with --join's seeds) and retries while alone
//	decommissioning           present once Decommission was requested for this node (until Recommission)
//	pebble/                   the node's single Pebble instance (R| raft, S| state)
//	snapshots/                sstables of raft snapshots being received, until Pebble
//	                          ingests them; emptied at start (a crash leaves partial files)
//	new-cluster               the ID of the cluster NewCluster made of this directory
//	backups/                  Backup's copies, one directory each (Config.BackupDir's default)
//	backup.json               in a backup only: whose copy it is; a start on it needs
//	                          Config.Restore, and removes it once the restore check passed
//	restored.json             where the replicas stood when the node started on a restored
//	                          backup, and the peers heard from since (restorehold.go)
//
// Every file is replaced atomically: write a temp file, fsync, rename, fsync
// the directory.
//
// # Start-up
//
//  1. Validate the Config; open (create) and lock the data directory; load or
//     create the identity; refuse a stored identity or cluster that contradicts
//     Config.Name, Config.Shards or Config.Replication.
//     A directory holding backup.json (a restored backup) needs Config.Restore.
//     With Config.NewCluster, once Pebble is open: every shard's raft state is reset to
//     this node alone at what it applied, and the cluster gets a new ID (newcluster.go).
//  2. Open Pebble, the transport and the raft host; serve gRPC (Streams,
//     Cluster, Raft) so peers can reach this node while it joins.
//  3. Start gossip. No cluster.json and no Join: create the cluster (every
//     shard a one-voter group led by this node), then write cluster.json.
//     No cluster.json and Join: wait (Config.JoinTimeout) until a live member
//     gossips the cluster's settings, persist them, gossip them too.
//  4. On a restored backup (Config.Restore, without NewCluster): the restore check, which holds
//     the shards closed until every voter peer shows the cluster did not go on after the
//     backup (restorehold.go). Reopen the groups of groups.json; serve HTTP.
//
// # Routing
//
//  1. stream -> shard with ring.ShardOf over the cluster's shard count.
//  2. Writes run on the shard's leader: this node when it leads, else the
//     request is forwarded (one pooled connection per peer) with a hop count in
//     the "shoal-hops" metadata; a request that already made two hops gets
//     NotLeader instead. A shard without a known leader for 3 s (30 ticks
//     where the tick is past 100 ms) answers UNAVAILABLE "shard N has no
//     leader (quorum lost?)".
//  3. Reads are linearizable (leader: ReadIndex, then read the local state);
//     allow_stale reads are served by any local replica. Results come in pages
//     of at most 256 events or about 1 MiB.
//  4. Errors leave as gRPC statuses with details (see toStatus).
//
// # Hooks for placement
//
// Members (alive and dead, with the time of their last change), DesiredReplicas
// (ring assignment over the eligible members), Host/Groups (the local raft
// groups, whose leaders drive membership changes), Settings and DeadAfter.
//
// # Lock order
//
// Node.mu is never held while calling the raft host, which calls the group
// factory (taking Node.mu) on its loop goroutine.
package node

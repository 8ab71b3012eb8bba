// Package peers holds the benchmark adapters for the systems shoal is
// compared with — NATS JetStream and PostgreSQL with a message-db style
// schema — behind bench.Target, so that the same workload runs against each.
//
// It is its own Go module so that shoal's server binary and go.mod stay free
// of the peers' dependencies. The peerbench command (cmd/peerbench) starts
// each peer on loopback in a throwaway directory, runs the workload and
// writes the same JSON report as `shoal bench`. With --processes every NATS
// server runs in a process of its own (peerbench started again, see
// ServeNATSChild), as every `shoal server` node does; make bench uses it so
// that neither system shares a Go runtime with its load generator or peers.
//
// Every adapter states what an acknowledged append survives:
//
//	system             durability label                      meaning
//	nats (always)      "fsync before ack"                    sync_interval: always
//	nats (default)     "not durable at ack (fsync every 2m)" the server's default
//	nats-r3 (always)   "fsync on a raft quorum (replication 3)"  three servers, R3
//	postgres           "fsync before ack"                    synchronous_commit=on, fsync=on
//
// Optimistic concurrency: NATS checks Nats-Expected-Last-Subject-Sequence
// (one subject per stream); PostgreSQL's write_message checks the stream's
// last position under an advisory lock, as message-db does. A batch is one
// atomic append in both: one JetStream atomic batch publish, the expectation
// on its first message (NATS.publishBatch), and one PostgreSQL transaction.
package peers

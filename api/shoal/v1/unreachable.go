package shoalv1

import (
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NodeUnreachableReason is the google.rpc.ErrorInfo reason of a node's answer to a call it
// forwarded to another node that did not answer (an operator's request about a node, run by
// that node: Decommission, Recommission). The node that answered is not at fault: a client
// must not count the answer against it, as it would its own silence.
const NodeUnreachableReason = "NODE_UNREACHABLE"

// NodeUnreachableError is such an answer: code (UNAVAILABLE or DEADLINE_EXCEEDED) with msg and
// a google.rpc.ErrorInfo of reason NodeUnreachableReason naming the node.
func NodeUnreachableError(code codes.Code, msg, node string) error {
	return errorWithInfo(code, msg, NodeUnreachableReason, map[string]string{"node": node})
}

// IsNodeUnreachable reports whether st is such an answer (NodeUnreachableError).
func IsNodeUnreachable(st *status.Status) bool { return hasReason(st, NodeUnreachableReason) }

// NoLocalReplicaReason is the google.rpc.ErrorInfo reason of a refusal (FAILED_PRECONDITION) of
// a local_only ReadShard by a node that holds no replica of the shard.
const NoLocalReplicaReason = "NO_LOCAL_REPLICA"

// NoLocalReplicaError is such a refusal, with msg and the shard.
func NoLocalReplicaError(msg string, shard uint32) error {
	return errorWithInfo(codes.FailedPrecondition, msg, NoLocalReplicaReason, map[string]string{"shard": strconv.FormatUint(uint64(shard), 10)})
}

// IsNoLocalReplica reports whether st is such a refusal (NoLocalReplicaError).
func IsNoLocalReplica(st *status.Status) bool { return hasReason(st, NoLocalReplicaReason) }

// ShardFormatReason is the google.rpc.ErrorInfo reason of a refusal (FAILED_PRECONDITION) of
// a command that the stream's shard is not at the format for yet: a replica of it runs a
// version without the command. It passes once every replica is upgraded and the shard's
// leader raises the format.
const ShardFormatReason = "SHARD_FORMAT"

// ShardFormatError is such a refusal, with msg and the shard.
func ShardFormatError(msg string, shard uint32) error {
	return errorWithInfo(codes.FailedPrecondition, msg, ShardFormatReason, map[string]string{"shard": strconv.FormatUint(uint64(shard), 10)})
}

// IsShardFormat reports whether st is such a refusal (ShardFormatError).
func IsShardFormat(st *status.Status) bool { return hasReason(st, ShardFormatReason) }

// DiskLowReason is the google.rpc.ErrorInfo reason of a refusal (RESOURCE_EXHAUSTED) of an
// append by a shard's leader because a majority of the shard's voters have less free space on
// their data directory's disk than their --min-free-disk. Unlike overload, retrying soon meets
// it again: it passes once space is freed on them (or the floor lowered).
const DiskLowReason = "DISK_LOW"

// DiskLowError is such a refusal, with msg, a node short of space and the shard.
func DiskLowError(msg, node string, shard uint32) error {
	return errorWithInfo(codes.ResourceExhausted, msg, DiskLowReason,
		map[string]string{"node": node, "shard": strconv.FormatUint(uint64(shard), 10)})
}

// IsDiskLow reports whether st is such a refusal (DiskLowError).
func IsDiskLow(st *status.Status) bool { return hasReason(st, DiskLowReason) }

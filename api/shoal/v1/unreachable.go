package shoalv1

import (
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

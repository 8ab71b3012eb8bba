package shoalv1

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
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
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: NodeUnreachableReason, Domain: "shoal",
		Metadata: map[string]string{"node": node}}); err == nil {
		st = d
	}
	return st.Err()
}

// IsNodeUnreachable reports whether st is such an answer (NodeUnreachableError).
func IsNodeUnreachable(st *status.Status) bool {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == NodeUnreachableReason {
			return true
		}
	}
	return false
}

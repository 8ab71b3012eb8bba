package shoalv1

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ClusterIDHeader is the gRPC metadata key in which a client names the cluster it dialled (the
// cluster ID of its first topology). A node of another cluster refuses the call with
// FailedPrecondition and a google.rpc.ErrorInfo whose reason is WrongClusterReason: a cluster
// re-created at the same addresses, or an address that now serves another cluster, must not
// take a client's writes for streams it knows under other shards and versions. A call without
// the header is served (an older client; the first topology request of a new one).
const ClusterIDHeader = "shoal-cluster-id"

// WrongClusterReason is the google.rpc.ErrorInfo reason of a call refused for naming another
// cluster (ClusterIDHeader).
const WrongClusterReason = "WRONG_CLUSTER"

// WrongClusterError is the refusal of a call that names cluster dialled (ClusterIDHeader) made
// to a node of cluster: FailedPrecondition with msg and a google.rpc.ErrorInfo whose reason is
// WrongClusterReason.
func WrongClusterError(msg, cluster, dialled string) error {
	return errorWithInfo(codes.FailedPrecondition, msg, WrongClusterReason,
		map[string]string{"cluster_id": cluster, "dialled_cluster_id": dialled})
}

// errorWithInfo is a status error of code and msg carrying a google.rpc.ErrorInfo of reason
// in the shoal domain, with metadata.
func errorWithInfo(code codes.Code, msg, reason string, metadata map[string]string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "shoal", Metadata: metadata}); err == nil {
		st = d
	}
	return st.Err()
}

// hasReason reports whether st carries a google.rpc.ErrorInfo of reason.
func hasReason(st *status.Status, reason string) bool {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == reason {
			return true
		}
	}
	return false
}

// IsWrongCluster reports whether st is such a refusal (WrongClusterError): FailedPrecondition
// with an ErrorInfo of reason WrongClusterReason. Unlike a wrong expected version, also
// FailedPrecondition, it is no verdict on the call.
func IsWrongCluster(st *status.Status) bool {
	return st.Code() == codes.FailedPrecondition && hasReason(st, WrongClusterReason)
}

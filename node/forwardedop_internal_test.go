package node

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// TestForwardedOpErr: a forwarded operator's request that did not reach the node it names is
// answered with the same code, a message naming that node, and NodeUnreachableReason, which a
// client's breaker for this node does not count; the named node's own answers pass as they are.
func TestForwardedOpErr(t *testing.T) {
	for _, c := range []codes.Code{codes.Unavailable, codes.DeadlineExceeded} {
		err := forwardedOpErr(status.Error(c, "connection refused"), "n3", "decommission", "10.0.0.3:7400")
		st := status.Convert(err)
		if st.Code() != c || !shoalv1.IsNodeUnreachable(st) {
			t.Fatalf("%v: %v (details %v), want %v with NodeUnreachableReason", c, err, st.Details(), c)
		}
		if want := `node "n3", alive in gossip, did not answer at 10.0.0.3:7400`; !strings.Contains(st.Message(), want) {
			t.Fatalf("%v: message %q lacks %q", c, st.Message(), want)
		}
	}
	own := status.Error(codes.FailedPrecondition, "n3 is the last replica")
	if err := forwardedOpErr(own, "n3", "decommission", "10.0.0.3:7400"); !errors.Is(err, own) && err != own {
		t.Fatalf("the named node's answer became %v", err)
	}
	if shoalv1.IsNodeUnreachable(status.Convert(own)) {
		t.Fatal("a plain answer taken for an unreachable node")
	}
}

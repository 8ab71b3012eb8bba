package node

import (
	"context"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// A call naming another cluster (shoalv1.ClusterIDHeader) is refused with FailedPrecondition and
// an ErrorInfo (WRONG_CLUSTER), unary and streaming, writing nothing; one naming this cluster,
// or none, is served.
func TestCallNamingAnotherClusterRefused(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	conn := dial(t, n.Addr())
	streams := shoalv1.NewStreamsClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other := metadata.AppendToOutgoingContext(ctx, shoalv1.ClusterIDHeader, "another-cluster")
	_, err := streams.Append(other, &shoalv1.AppendRequest{Stream: "s", Events: events("A")})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("append naming another cluster: %v, want FailedPrecondition", err)
	}
	found := false
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == shoalv1.WrongClusterReason {
			found = true
		}
	}
	if !found {
		t.Fatalf("refusal without a %s ErrorInfo: %v", shoalv1.WrongClusterReason, st.Details())
	}
	rd, err := streams.Read(other, &shoalv1.ReadRequest{Stream: "s"})
	if err == nil {
		_, err = rd.Recv()
	}
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("read naming another cluster: %v, want FailedPrecondition", err)
	}
	own := metadata.AppendToOutgoingContext(ctx, shoalv1.ClusterIDHeader, n.Settings().ClusterID)
	for i, c := range []context.Context{own, ctx} { // naming this cluster, naming none
		res, err := streams.Append(c, &shoalv1.AppendRequest{Stream: "s", Events: events("A")})
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if res.GetFirstVersion() != uint64(i) {
			t.Fatalf("append %d at version %d: the refused append wrote something", i, res.GetFirstVersion())
		}
	}
}

// A call this node forwards names its cluster, as a client's does: a node of another cluster
// (at an address a stale leader view points to) refuses it, where it served it before, and
// nothing is written there; a node of this cluster serves it.
func TestForwardedCallNamesTheCluster(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	other := startNode(t, testConfig(t, t.TempDir())) // a cluster of its own
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fctx := n.forwardContext(ctx)
	req := &shoalv1.AppendRequest{Stream: "s", Events: events("A")}
	if _, err := shoalv1.NewStreamsClient(dial(t, other.Addr())).Append(fctx, req); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a call forwarded to a node of another cluster: %v, want FailedPrecondition", err)
	}
	if res, err := shoalv1.NewStreamsClient(dial(t, other.Addr())).Append(ctx, req); err != nil || res.GetFirstVersion() != 0 {
		t.Fatalf("the refused forward wrote something there: %v, version %d", err, res.GetFirstVersion())
	}
	if _, err := shoalv1.NewStreamsClient(dial(t, n.Addr())).Append(fctx, req); err != nil {
		t.Fatalf("a forwarded call to a node of its cluster: %v", err)
	}
}

// TestForwardRefusedByAnotherClusterAfterUnknownAttempt: an append this node forwards, after an
// attempt that may have been applied (a proposal lost to a leadership change, a forward whose
// answer was lost), to an address a stale leader view points to and a node of another cluster
// now serves, is refused there (WRONG_CLUSTER). That refusal is no verdict on the append: its
// repeat on the shard's leader would answer as a duplicate, never so. Relayed as is, it tells
// the client that nothing was written (it ends with ErrWrongCluster, not ErrOutcomeUnknown);
// the answer is UNKNOWN. Without such an attempt the refusal stands: nothing ran.
func TestForwardRefusedByAnotherClusterAfterUnknownAttempt(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	other := startNode(t, testConfig(t, t.TempDir())) // a cluster of its own
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &shoalv1.AppendRequest{Stream: "s", Events: events("A")}
	_, refusal := shoalv1.NewStreamsClient(dial(t, other.Addr())).Append(n.forwardContext(ctx), req)
	if status.Code(refusal) != codes.FailedPrecondition {
		t.Fatalf("a call forwarded to a node of another cluster: %v, want FailedPrecondition", refusal)
	}
	id, _ := n.shardOf("s")
	if st := status.Convert(n.toStatus(appendOutcome(id, true, refusal), "s", id)); st.Code() != codes.Unknown {
		t.Fatalf("another cluster's refusal of a forward after an unknown attempt answered %v (%q), want UNKNOWN",
			st.Code(), st.Message())
	}
	if code := status.Code(n.toStatus(appendOutcome(id, false, refusal), "s", id)); code != codes.FailedPrecondition {
		t.Fatalf("another cluster's refusal of a first attempt answered %v, want FAILED_PRECONDITION", code)
	}
	// A verdict of the stream after an unknown attempt still stands.
	wev := withDetails(codes.FailedPrecondition, "wrong expected version", &shoalv1.WrongExpectedVersion{Stream: "s"})
	if code := status.Code(n.toStatus(appendOutcome(id, true, wev), "s", id)); code != codes.FailedPrecondition {
		t.Fatalf("a forwarded verdict after an unknown attempt answered %v, want FAILED_PRECONDITION", code)
	}
}

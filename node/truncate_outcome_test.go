package node

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// TestTruncateRefusedAfterUnknownAttempt: a truncate is repeated after an attempt whose outcome
// is unknown (here: proposed and applied, and the proposer told it lost its leadership). A
// truncate's repeat does not always answer as the applied attempt did: another writer may have
// appended since, and a repeat expecting the version the attempt saw is then refused. That
// refusal must answer UNKNOWN, not FAILED_PRECONDITION (wrong expected version), which says
// "refused, nothing removed" of a truncation that removed events. Without the unknown attempt
// the refusal stands.
func TestTruncateRefusedAfterUnknownAttempt(t *testing.T) {
	n, c, id, _ := exactDeleteSetup(t) // "s" at version 1
	ctx := context.Background()
	if _, _, err := n.write(ctx, id, true, func(g *replica.Group, pctx context.Context) (any, error) {
		return g.Propose(pctx, shard.EncodeSetFormat(&shard.SetFormatCommand{Format: shard.Format4}))
	}, nil); err != nil {
		t.Fatal(err)
	}
	cmd := &shard.TruncateCommand{Stream: "s", Before: 1, Expected: shard.Expected{Kind: shard.ExpectExact, Version: 1}}
	calls := 0
	res, retried, err := n.write(ctx, id, true, func(g *replica.Group, pctx context.Context) (any, error) {
		calls++
		r, err := g.Propose(pctx, shard.EncodeTruncate(cmd))
		if calls > 1 {
			return r, err
		}
		if tr, ok := r.(*shard.TruncateResult); !ok || err != nil || tr.Start != 1 {
			t.Fatalf("first attempt: %v, %v", r, err)
		}
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Expected: anyVersion(), Events: events("c")}); err != nil {
			t.Fatal(err)
		}
		return nil, &replica.NotLeaderError{Shard: id}
	}, nil)
	if !retried || calls != 2 {
		t.Fatalf("write: %d attempts, retried %t; want 2, true", calls, retried)
	}
	_, verr := truncateVerdict(id, res, retried, err)
	if code := status.Code(n.toStatus(verr, "s", id)); code != codes.Unknown {
		t.Fatalf("the repeat's refusal after an applied attempt answered %v (%v), want UNKNOWN", code, verr)
	}
	// The same refusal without an earlier unknown attempt is definite.
	_, verr = truncateVerdict(id, res, false, err)
	if code := status.Code(n.toStatus(verr, "s", id)); code != codes.FailedPrecondition {
		t.Fatalf("a refusal of a first attempt answered %v (%v), want FAILED_PRECONDITION", code, verr)
	}
	// A forwarded refusal maps the same way; a forwarded success stands.
	fwd := status.Error(codes.FailedPrecondition, "wrong expected version")
	if _, verr := truncateVerdict(id, nil, true, fwd); status.Code(n.toStatus(verr, "s", id)) != codes.Unknown {
		t.Fatalf("a forwarded refusal after an unknown attempt: %v, want UNKNOWN", verr)
	}
	if r, verr := truncateVerdict(id, &shoalv1.TruncateResponse{Start: 1}, true, nil); verr != nil || r == nil {
		t.Fatalf("a forwarded answer after an unknown attempt: %v, %v", r, verr)
	}
}

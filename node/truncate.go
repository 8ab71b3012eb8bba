package node

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// truncate serves a Truncate on the shard's leader, or forwards it there (write).
func (n *Node) truncate(ctx context.Context, req *shoalv1.TruncateRequest) (*shoalv1.TruncateResponse, error) {
	id, exp, err := n.streamWrite(req.Stream, req.Expected)
	if err != nil {
		return nil, err
	}
	cmd := &shard.TruncateCommand{Stream: req.Stream, Before: req.Before, Expected: exp}
	if err := shard.ValidateTruncate(cmd); err != nil {
		return nil, n.toStatus(err, req.Stream, id)
	}
	// A truncate is safe to repeat: it changes neither the stream's version nor its state, so
	// a repeat of an applied one answers as it did, unless another writer changed the stream
	// since; a refusal then leaves the first attempt's outcome unknown (truncateVerdict).
	res, retried, err := n.write(ctx, id, true, func(g *replica.Group, pctx context.Context) (any, error) {
		// A replica of a version without the command would stop at it: proposed only once the
		// shard is at the format that has it, which is raised only when every replica's node
		// runs such a version.
		if err := n.needFormat(pctx, g, id, shard.Format4, "truncating a stream"); err != nil {
			return err, nil
		}
		return n.proposeTruncate(pctx, g, id, cmd)
	}, func(conn *grpc.ClientConn, fctx context.Context) (any, error) {
		return shoalv1.NewStreamsClient(conn).Truncate(fctx, req)
	})
	if res, err = truncateVerdict(id, res, retried, err); err != nil {
		return nil, n.toStatus(err, req.Stream, id)
	}
	switch r := res.(type) {
	case *shoalv1.TruncateResponse:
		return r, nil
	case *shard.TruncateResult:
		return &shoalv1.TruncateResponse{Shard: id, Start: r.Start}, nil
	}
	return nil, status.Errorf(codes.Internal, "truncate: unexpected result %T", res)
}

// proposeTruncate proposes truncation cmd on g, which leads shard id. When the shard forgets the
// IDs of the events a truncation removes (Format7) and one truncation would remove more events
// than it forgets the IDs of, it proposes it in steps (shard.TruncateStep, worked out one at a
// time from this replica's committed state), each a truncation of its own with cmd's expected
// version (a truncation changes neither the stream's version nor its state, so it holds from
// step to step unless another writer changed the stream), the last at cmd.Before. It returns the
// last step's result, or the first step's refusal (nothing written). Once a step was applied, a
// later step's refusal or failure is an *OutcomeUnknownError: part of the truncation was
// applied, and a repeat goes on from there.
func (n *Node) proposeTruncate(ctx context.Context, g *replica.Group, id uint32, cmd *shard.TruncateCommand) (any, error) {
	sm, _, ok := n.shardSM(id)
	if !ok || sm.Format() < shard.Format7 {
		return g.Propose(ctx, shard.EncodeTruncate(cmd))
	}
	step := *cmd
	var done uint64 // the end of the last step applied; 0: none
	// fail ends the truncation with err, as such before any step was applied, else as an
	// unknown outcome: part of it was applied.
	fail := func(what string, err error) (any, error) {
		if done == 0 {
			return nil, err
		}
		return nil, &OutcomeUnknownError{Shard: id, Cause: fmt.Errorf("the truncation of %q was applied in steps up to version %d, then %s: %v",
			cmd.Stream, done, what, err)}
	}
	for {
		end, more, err := sm.TruncateStep(cmd.Stream, done, cmd.Before)
		if err != nil {
			return fail("reading the next step failed", err)
		}
		step.Before = cmd.Before
		if more {
			step.Before = end
		}
		res, err := g.Propose(ctx, shard.EncodeTruncate(&step))
		if err != nil {
			return fail("a step failed", err)
		}
		verdict, refused := res.(error)
		switch {
		case refused && done > 0:
			return fail("a step was refused", verdict)
		case refused || !more:
			return res, nil
		}
		done = end
	}
}

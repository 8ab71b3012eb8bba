package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// ErrNoLeader is returned (as UNAVAILABLE) when a shard has no known leader
// within the wait bound, typically because it lost its quorum.
var ErrNoLeader = errors.New("node: shard has no leader")

// NoLeaderError names the shard without a leader. Is(ErrNoLeader).
type NoLeaderError struct {
	Shard uint32
	Cause error // what the last attempt returned, may be nil
}

func (e *NoLeaderError) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("shard %d has no leader (quorum lost?): %v", e.Shard, e.Cause)
	}
	return fmt.Sprintf("shard %d has no leader (quorum lost?)", e.Shard)
}

// Is reports target == ErrNoLeader.
func (e *NoLeaderError) Is(target error) bool { return target == ErrNoLeader }

// leaderlessError is a NoLeaderError's cause when the shard's local replica has known no
// leader for longer than an election takes (leaderlessAfter), and no other member names one
// nor, by the leader cache's last refresh, has known none for less (leaderCache.electing):
// the request is answered at once rather than held for an election that is not under way.
// Remote: this node holds no replica (or a removed one), and the replicas that answered its
// topology request said so.
type leaderlessError struct {
	For    time.Duration
	Remote bool
}

func (e *leaderlessError) Error() string {
	who := "this node's replica has"
	if e.Remote {
		who = "the shard's replicas that answered have"
	}
	return fmt.Sprintf("%s known no leader for %v, longer than an election takes: "+
		"the shard lost its quorum (too few of its voters are up and in touch), or its replicas are cut off from them",
		who, e.For.Round(10*time.Millisecond))
}

// shuttingDownMsg is the answer to a call refused because the node is closing (ErrClosed).
const shuttingDownMsg = "node is shutting down"

// OutcomeUnknownError is the answer to a write that is not safe to repeat (a delete expecting
// any version or an existing stream) once it may have been applied but this node cannot tell:
// it was proposed and the leadership was lost, or it did not commit in time, or the node it
// was forwarded to stopped answering after the request was sent. A repeat could delete what
// another writer appended meanwhile, so nothing repeats it; it is answered with code UNKNOWN,
// which clients do not retry.
type OutcomeUnknownError struct {
	Shard uint32
	Cause error
}

func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("shard %d: the write may or may not have been applied: %v", e.Shard, e.Cause)
}

// Unwrap returns the cause.
func (e *OutcomeUnknownError) Unwrap() error { return e.Cause }

// Unwrap returns the cause.
func (e *NoLeaderError) Unwrap() error { return e.Cause }

func toProtoExpected(e shard.Expected) *shoalv1.ExpectedVersion {
	return &shoalv1.ExpectedVersion{Kind: shoalv1.ExpectedVersion_Kind(e.Kind), Version: e.Version}
}

// withDetails builds a status carrying detail; if attaching fails (it cannot
// for our own messages) the plain status is returned.
func withDetails(c codes.Code, msg string, detail protoadapt.MessageV1) error {
	st := status.New(c, msg)
	if ds, err := st.WithDetails(detail); err == nil {
		st = ds
	}
	return st.Err()
}

// toStatus converts an error of the write or read path of stream (in shard
// id) into a gRPC status with details. Statuses pass through unchanged (they
// came from the node we forwarded to).
func (n *Node) toStatus(err error, stream string, id uint32) error {
	if err == nil {
		return nil
	}
	if unk := (*OutcomeUnknownError)(nil); errors.As(err, &unk) {
		// Before the pass-through: its cause may be a forwarded call's status of another code.
		return status.Error(codes.Unknown, unk.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var (
		wev *shard.WrongExpectedVersionError
		inv *shard.InvalidError
		idc *shard.IDConflictError
		nle *replica.NotLeaderError
		nol *NoLeaderError
		hte *shard.HistoryTruncatedError
	)
	switch {
	case errors.As(err, &wev):
		return withDetails(codes.FailedPrecondition, wev.Error(), &shoalv1.WrongExpectedVersion{
			Stream: wev.Stream, Expected: toProtoExpected(wev.Expected),
			StreamExists: wev.Exists, ActualVersion: wev.Actual, StreamDeleted: wev.Deleted,
		})
	case errors.Is(err, shard.ErrWrongExpectedVersion):
		return withDetails(codes.FailedPrecondition, err.Error(), &shoalv1.WrongExpectedVersion{Stream: stream})
	case errors.As(err, &inv):
		return withDetails(codes.InvalidArgument, inv.Error(), &shoalv1.InvalidField{
			Field: inv.Field, Limit: inv.Limit, Reason: inv.Reason,
		})
	case errors.Is(err, shard.ErrInvalid):
		return withDetails(codes.InvalidArgument, err.Error(), &shoalv1.InvalidField{Reason: err.Error()})
	case errors.As(err, &idc):
		return withDetails(codes.AlreadyExists, idc.Error(), &shoalv1.IDConflict{
			Stream: idc.Stream, Id: idc.ID[:], ExistingStream: idc.ExistingStream, ExistingVersion: idc.ExistingVersion,
		})
	case errors.Is(err, shard.ErrIDConflict):
		return withDetails(codes.AlreadyExists, err.Error(), &shoalv1.IDConflict{Stream: stream})
	case errors.Is(err, shard.ErrNeedsFormat):
		return shoalv1.ShardFormatError(err.Error(), id)
	case errors.As(err, &hte):
		return withDetails(codes.FailedPrecondition, hte.Error(), &shoalv1.HistoryTruncated{
			Stream: hte.Stream, FromVersion: hte.From, Start: hte.Start,
		})
	case errors.Is(err, shard.ErrStreamDeleted):
		return withDetails(codes.NotFound, fmt.Sprintf("stream %q is deleted (tombstoned)", stream),
			&shoalv1.StreamDeleted{Stream: stream})
	case errors.Is(err, shard.ErrStreamNotFound):
		return withDetails(codes.NotFound, fmt.Sprintf("stream %q not found", stream),
			&shoalv1.StreamNotFound{Stream: stream})
	case errors.As(err, &nol):
		return withDetails(codes.Unavailable, nol.Error(), &shoalv1.NotLeader{Shard: nol.Shard})
	case errors.As(err, &nle):
		addr, _ := n.resolve(nle.Leader)
		if nle.Leader == 0 {
			addr = ""
		}
		msg := fmt.Sprintf("node %d is not the leader of shard %d", n.ID(), nle.Shard)
		if nle.Leader == 0 {
			msg = fmt.Sprintf("shard %d has no leader (quorum lost?)", nle.Shard)
		} else if addr != "" {
			msg += fmt.Sprintf("; leader is node %d at %s", nle.Leader, addr)
		}
		return withDetails(codes.Unavailable, msg, &shoalv1.NotLeader{Shard: nle.Shard, LeaderId: nle.Leader, LeaderAddr: addr})
	case errors.Is(err, replica.ErrBusy):
		// Overload: retried after a backoff, without a topology refresh (the leader is right).
		return status.Error(codes.ResourceExhausted, fmt.Sprintf("shard %d: %v", id, err))
	case errors.Is(err, replica.ErrStopped), errors.Is(err, replica.ErrGroupRemoved),
		errors.Is(err, replica.ErrProposalDropped):
		return withDetails(codes.Unavailable, fmt.Sprintf("shard %d: %v", id, err), &shoalv1.NotLeader{Shard: id})
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, ErrClosed):
		return status.Error(codes.Unavailable, shuttingDownMsg)
	}
	if held, ok := n.internalErrors.Allow(id); ok {
		n.log.Error("internal error", "shard", id, "stream", stream, "err", err, "held_back", held)
	}
	return status.Error(codes.Internal, err.Error())
}

// resultLabels are the values resultLabel returns (the metrics export each from the start).
var resultLabels = []string{"ok", "wrong_expected_version", "not_found", "invalid", "id_conflict", "unavailable",
	"resource_exhausted", "canceled", "timeout", "outcome_unknown", "shard_format", "history_truncated", "position_ahead",
	"no_local_replica", "aborted", "disk_low", "error"}

// resultLabel classifies an outcome for the metrics.
func resultLabel(err error) string {
	if err == nil {
		return "ok"
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.FailedPrecondition:
			if shoalv1.IsShardFormat(st) {
				return "shard_format"
			}
			if shoalv1.IsNoLocalReplica(st) {
				return "no_local_replica"
			}
			if _, _, _, ok := shoalv1.PositionAhead(st); ok {
				return "position_ahead"
			}
			for _, d := range st.Details() {
				if _, ok := d.(*shoalv1.HistoryTruncated); ok {
					return "history_truncated"
				}
			}
			return "wrong_expected_version"
		case codes.NotFound:
			return "not_found"
		case codes.InvalidArgument:
			return "invalid"
		case codes.AlreadyExists:
			return "id_conflict"
		case codes.Unavailable:
			return "unavailable"
		case codes.Aborted:
			return "aborted" // a stream read whose caller stalled (readViewHold)
		case codes.ResourceExhausted:
			if shoalv1.IsDiskLow(st) {
				return "disk_low"
			}
			return "resource_exhausted" // a limit of the node's, or a shard's proposals backed up (ErrBusy)
		case codes.Canceled:
			return "canceled"
		case codes.DeadlineExceeded:
			// The caller's deadline ran out first: the cluster slow to answer, or a deadline
			// set too short; either way not the caller giving up, so counted apart from it.
			return "timeout"
		case codes.Unknown:
			return "outcome_unknown" // may have been applied: OutcomeUnknownError
		}
	}
	return "error"
}

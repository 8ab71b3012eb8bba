package shoalv1

import (
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PositionAheadReason is the google.rpc.ErrorInfo reason of a linearizable ReadShard refused
// (FAILED_PRECONDITION) because it starts past the shard's end: positions are dense and never
// reused, so a position the cluster handed out is never past it. One that is comes from a
// history the shard no longer has (a checkpoint kept across a restore from a backup taken
// before it) or from another cluster; a reader that waited there would skip the positions
// written from the end up to it.
const PositionAheadReason = "POSITION_AHEAD"

// PositionAheadError is such a refusal, with msg, the shard, the position asked for and the
// shard's end (the position its next entry takes).
func PositionAheadError(msg string, shard uint32, from, end uint64) error {
	return errorWithInfo(codes.FailedPrecondition, msg, PositionAheadReason, map[string]string{
		"shard": strconv.FormatUint(uint64(shard), 10),
		"from":  strconv.FormatUint(from, 10),
		"end":   strconv.FormatUint(end, 10),
	})
}

// PositionAhead reports whether st is such a refusal (PositionAheadError), and its shard,
// position and end.
func PositionAhead(st *status.Status) (shard uint32, from, end uint64, ok bool) {
	for _, d := range st.Details() {
		ei, isInfo := d.(*errdetails.ErrorInfo)
		if !isInfo || ei.GetReason() != PositionAheadReason {
			continue
		}
		m := ei.GetMetadata()
		s, _ := strconv.ParseUint(m["shard"], 10, 32)
		from, _ = strconv.ParseUint(m["from"], 10, 64)
		end, _ = strconv.ParseUint(m["end"], 10, 64)
		return uint32(s), from, end, true
	}
	return 0, 0, 0, false
}

package node

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestStreamReset: what gRPC answers for a forwarded read's stream reset on the way is told from
// the answers of the node it went to, the read's INTERNAL or UNKNOWN verdict among them.
func TestStreamReset(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Canceled, "stream terminated by RST_STREAM with error code: CANCEL"), true},
		{status.Error(codes.Internal, "stream terminated by RST_STREAM with error code: INTERNAL_ERROR"), true},
		{status.Error(codes.Unknown, "stream terminated by RST_STREAM with error code: 42"), true},
		{status.Error(codes.Canceled, "grpc: the client connection is closing"), true},
		{status.Error(codes.Internal, "shard: corrupt event record at position 7"), false},
		{status.Error(codes.Unknown, "shard 1: the write may or may not have been applied"), false},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), false},
		{status.Error(codes.NotFound, `stream "s" is deleted (tombstoned)`), false},
	} {
		if got := streamReset(tc.err); got != tc.want {
			t.Errorf("streamReset(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

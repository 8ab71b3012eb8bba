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

// TestCutBeforeAnswer: a forwarded read cut off on the way before anything was relayed is
// routed again, whatever code gRPC gave the reset (INTERNAL for INTERNAL_ERROR: it was taken for
// the leader's verdict and passed to the client, which ended the read with it); the answers of
// the node it went to, a corrupt record's INTERNAL among them, are not.
func TestCutBeforeAnswer(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Internal, "stream terminated by RST_STREAM with error code: INTERNAL_ERROR"), true},
		{status.Error(codes.Canceled, "stream terminated by RST_STREAM with error code: CANCEL"), true},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), true},
		{status.Error(codes.Internal, "shard: corrupt event record at position 7"), false},
		{status.Error(codes.Unknown, "handler panicked"), false},
		{status.Error(codes.NotFound, `stream "s" is deleted (tombstoned)`), false},
		{status.Error(codes.InvalidArgument, "count: at most 1000"), false},
	} {
		if got := cutBeforeAnswer(tc.err); got != tc.want {
			t.Errorf("cutBeforeAnswer(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

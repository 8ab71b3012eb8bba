package node

import (
	"bytes"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
)

// TestResultLabelsListed: every value resultLabel gives is in resultLabels, which the metrics
// export at zero from the start: a result left out would have no series until it first
// happened, and an alert on its rate none to work on.
func TestResultLabelsListed(t *testing.T) {
	errs := []error{nil, errors.New("not a status")}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		errs = append(errs, status.Error(c, c.String()))
	}
	for _, err := range errs {
		if l := resultLabel(err); !slices.Contains(resultLabels, l) {
			t.Errorf("resultLabel(%v) = %q, not in resultLabels %v", err, l, resultLabels)
		}
	}
}

// TestResultLabelRefusals: the refusals FAILED_PRECONDITION carries are told apart, not all
// counted as wrong expected versions (a projection's checkpoint past a shard's end was); a
// deadline run out is not a cancel, and overload not an internal error (the append alerts
// count the first and leave out the others).
func TestResultLabelRefusals(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{status.Error(codes.FailedPrecondition, "wrong expected version"), "wrong_expected_version"},
		{shoalv1.PositionAheadError("from past the end", 3, 10, 7), "position_ahead"},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), "timeout"},
		{status.Error(codes.Canceled, "context canceled"), "canceled"},
		{status.Error(codes.ResourceExhausted, "shard 3: busy"), "resource_exhausted"},
		{shoalv1.NoLocalReplicaError("node n2 holds no replica of shard 3", 3), "no_local_replica"},
	} {
		if got := resultLabel(tc.err); got != tc.want {
			t.Errorf("resultLabel(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestFollowerLag: the most committed entries another replica lacks; the leader itself, a
// replica ahead of the commit index, and one not heard from recently count nothing.
func TestFollowerLag(t *testing.T) {
	st := replica.Status{ID: 1, Commit: 100, Progress: map[uint64]replica.Progress{
		1: {Match: 100, RecentActive: true}, 2: {Match: 97, RecentActive: true}, 3: {Match: 0, Learner: true, RecentActive: true},
		4: {Match: 101, RecentActive: true}, 5: {Match: 0}, // 5 is not heard from: absent, not behind
	}}
	if got := followerLag(st); got != 100 {
		t.Fatalf("followerLag = %d, want 100 (the learner that has nothing)", got)
	}
	delete(st.Progress, 3)
	if got := followerLag(st); got != 3 {
		t.Fatalf("followerLag = %d, want 3", got)
	}
}

// TestInternalErrorsLogLimited: a failure that fails every request (a failing disk) is logged
// once a period and shard, with the count of those held back, not once a request; another
// shard's failure is not held back by it.
func TestInternalErrorsLogLimited(t *testing.T) {
	var buf bytes.Buffer
	n := &Node{log: slog.New(slog.NewTextHandler(&buf, nil))}
	n.internalErrors.Every = time.Hour
	for range 5 {
		if err := n.toStatus(errors.New("disk on fire"), "s", 1); status.Code(err) != codes.Internal {
			t.Fatalf("toStatus = %v, want INTERNAL", err)
		}
	}
	if got := strings.Count(buf.String(), "internal error"); got != 1 {
		t.Fatalf("%d lines logged for 5 internal errors within the period, want 1:\n%s", got, buf.String())
	}
	n.toStatus(errors.New("index corrupt"), "t", 2)
	if got := strings.Count(buf.String(), "internal error"); got != 2 {
		t.Fatalf("another shard's first internal error was held back by shard 1's:\n%s", buf.String())
	}
	n.internalErrors.Expire(1)
	n.toStatus(errors.New("disk on fire"), "s", 1)
	if !strings.Contains(buf.String(), "held_back=4") {
		t.Fatalf("the next period's line does not count the 4 held back:\n%s", buf.String())
	}
}

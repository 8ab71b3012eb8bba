package client

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// TestErrorMapping sends each server verdict through a real gRPC round
// trip and checks the typed error and that it was not retried.
func TestErrorMapping(t *testing.T) {
	id := uuid.New()
	tests := []struct {
		name  string
		err   error
		is    error // nil: no sentinel matches
		check func(t *testing.T, err error)
	}{
		{"wrong expected version", statusWith(codes.FailedPrecondition, "wev", &shoalv1.WrongExpectedVersion{
			Stream: "s", Expected: &shoalv1.ExpectedVersion{Kind: shoalv1.ExpectedVersion_KIND_NO_STREAM}, StreamExists: true, ActualVersion: 3,
		}), ErrWrongExpectedVersion, func(t *testing.T, err error) {
			var e *WrongExpectedVersionError
			if !errors.As(err, &e) || e.Expected != NoStream || e.Actual != 3 || !e.StreamExists {
				t.Fatalf("%+v", e)
			}
		}},
		{"wrong expected version of a soft-deleted stream", statusWith(codes.FailedPrecondition, "wev", &shoalv1.WrongExpectedVersion{
			Stream: "s", Expected: &shoalv1.ExpectedVersion{Kind: shoalv1.ExpectedVersion_KIND_EXISTS}, StreamDeleted: true, ActualVersion: 5,
		}), ErrWrongExpectedVersion, func(t *testing.T, err error) {
			var e *WrongExpectedVersionError
			if !errors.As(err, &e) || e.Actual != 5 || e.StreamExists || !e.StreamDeleted {
				t.Fatalf("%+v", e)
			}
			if want := "is soft-deleted at version 5"; !strings.Contains(err.Error(), want) {
				t.Fatalf("%q does not say %q", err, want)
			}
		}},
		{"stream not found", statusWith(codes.NotFound, "nf", &shoalv1.StreamNotFound{Stream: "s"}), ErrStreamNotFound, nil},
		{"not found without details", status.Error(codes.NotFound, "nf"), ErrStreamNotFound, nil},
		{"stream deleted", statusWith(codes.NotFound, "gone", &shoalv1.StreamDeleted{Stream: "s"}), ErrStreamDeleted, func(t *testing.T, err error) {
			if errors.Is(err, ErrStreamNotFound) {
				t.Fatal("a tombstone also matched ErrStreamNotFound")
			}
		}},
		{"invalid field", statusWith(codes.InvalidArgument, "bad", &shoalv1.InvalidField{Field: "events[3].type", Limit: "at most 256 bytes", Reason: "the type is too long"}), ErrInvalidArgument, func(t *testing.T, err error) {
			var e *InvalidArgumentError
			if !errors.As(err, &e) || e.Field != "events[3].type" || e.Limit != "at most 256 bytes" {
				t.Fatalf("%+v", e)
			}
			if want := `client: invalid argument "events[3].type": the type is too long (limit: at most 256 bytes)`; err.Error() != want {
				t.Fatalf("Error() = %q", err)
			}
		}},
		{"invalid without details", status.Error(codes.InvalidArgument, "bad input"), ErrInvalidArgument, nil},
		{"ID conflict", statusWith(codes.AlreadyExists, "dup", &shoalv1.IDConflict{Stream: "s", Id: id[:], ExistingStream: "t", ExistingVersion: 9}), ErrIDConflict, func(t *testing.T, err error) {
			var e *IDConflictError
			if !errors.As(err, &e) || e.ID != id || e.ExistingStream != "t" || e.ExistingVersion != 9 {
				t.Fatalf("%+v", e)
			}
		}},
		{"other status passes through", status.Error(codes.PermissionDenied, "no"), nil, func(t *testing.T, err error) {
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("code = %v", status.Code(err))
			}
		}},
		{"message too large", status.Error(codes.ResourceExhausted, "grpc: received message larger than max (9 vs. 4)"), nil, func(t *testing.T, err error) {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("code = %v", status.Code(err))
			}
		}},
	}
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	sentinels := []error{ErrWrongExpectedVersion, ErrStreamNotFound, ErrStreamDeleted, ErrInvalidArgument, ErrIDConflict, ErrUnavailable, ErrClosed}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := fc.nodes[0]
			n.setFault(func(context.Context, string, int) error { return tt.err })
			defer n.setFault(nil)
			before := n.count("Append")
			_, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"})
			if got := n.count("Append") - before; got != 1 {
				t.Fatalf("attempts = %d, want 1", got)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) != (s == tt.is) {
					t.Fatalf("errors.Is(%v, %v) = %v", err, s, !(s == tt.is))
				}
			}
			if tt.check != nil {
				tt.check(t, err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || strings.HasSuffix(msg, ".") {
				t.Fatalf("error is not one plain sentence: %q", msg)
			}
			// Delete and Read map the same way.
			if tt.is != nil {
				if err := c.Delete(testCtx(t), "s", Any); !errors.Is(err, tt.is) {
					t.Fatalf("Delete: %v", err)
				}
				_, err := c.ReadPage(testCtx(t), "s")
				if !errors.Is(err, tt.is) {
					t.Fatalf("Read: %v", err)
				}
			}
		})
	}
}

func TestDeleteAndTombstone(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	ctx := testCtx(t)
	seed(t, c, "s", 2)
	if err := c.Delete(ctx, "s", Exact(1), Tombstone()); err != nil {
		t.Fatal(err)
	}
	var req *shoalv1.DeleteRequest
	for _, r := range fc.nodes[0].requests() {
		if d, ok := r.(*shoalv1.DeleteRequest); ok {
			req = d
		}
	}
	if req == nil || !req.Tombstone || req.Expected.GetKind() != shoalv1.ExpectedVersion_KIND_EXACT || req.Expected.GetVersion() != 1 {
		t.Fatalf("request = %v", req)
	}
	if err := c.Delete(ctx, "s", Any); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestExpectedVersionString(t *testing.T) {
	for ev, want := range map[ExpectedVersion]string{Any: "any", NoStream: "no stream", StreamExists: "stream exists", Exact(4): "version 4"} {
		if got := ev.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", ev, got, want)
		}
	}
	if (ExpectedVersion{}) != Any {
		t.Error("the zero ExpectedVersion is not Any")
	}
}

// Dialling an HTTP/1.1 port (a node's --http given for its gRPC address) fails at once with
// ErrNotGRPC, not after retrying until the deadline as if the node were down; with a gRPC node
// among the seeds, Dial goes on with it.
func TestHTTPPortNotRetried(t *testing.T) {
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	webAddr := strings.TrimPrefix(web.URL, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	c, err := Dial(ctx, []string{webAddr})
	if c != nil {
		c.Close()
	}
	if took := time.Since(start); took > 2*time.Second || !errors.Is(err, ErrNotGRPC) || status.Code(err) != codes.Unavailable {
		t.Fatalf("Dial of an HTTP port = %v after %v, want ErrNotGRPC at once, the gRPC status kept", err, took)
	}
	fc := newFakeCluster(t, 1, 4)
	c, err = Dial(ctx, []string{webAddr, fc.nodes[0].addr})
	if err != nil {
		t.Fatalf("Dial of an HTTP port and a node: %v", err)
	}
	c.Close()
}

// A TLS client dialling a server whose certificate it cannot verify (here a plaintext
// server, as with a server started without TLS) fails at once with ErrTLSHandshake, not
// after retrying for MaxElapsed as if the node were down.
func TestTLSHandshakeFailureNotRetried(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	c, err := Dial(ctx, []string{fc.nodes[0].addr}, WithTLS(&tls.Config{}))
	if c != nil {
		c.Close()
	}
	if took := time.Since(start); took > 2*time.Second || !errors.Is(err, ErrTLSHandshake) {
		t.Fatalf("Dial = %v after %v, want ErrTLSHandshake at once", err, took)
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("status.Code = %v, want the gRPC status kept", status.Code(err))
	}
}

func TestTLSRefusedIsNarrow(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want bool
	}{
		{`connection error: desc = "transport: authentication handshake failed: tls: first record does not look like a TLS handshake"`, true},
		{`connection error: desc = "transport: authentication handshake failed: x509: certificate signed by unknown authority"`, true},
		{`connection error: desc = "transport: authentication handshake failed: EOF"`, false},
		{`connection error: desc = "transport: Error while dialing: dial tcp: connect: connection refused"`, false},
		{`fake: node unavailable`, false},
	} {
		if got := tlsRefused(status.New(codes.Unavailable, tc.msg)); got != tc.want {
			t.Errorf("tlsRefused(%q) = %v, want %v", tc.msg, got, tc.want)
		}
	}
}

// TestPositionAheadMapped: a server's refusal of a shard read past the shard's end
// (POSITION_AHEAD) comes back as a *PositionAheadError naming shard, position and end, after one
// attempt: no retry mends it.
func TestPositionAheadMapped(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	fc.nodes[0].setFault(failFirst("ReadShard", 100, shoalv1.PositionAheadError("shard 2: position 90 is past the shard's end, 40", 2, 90, 40)))
	var got error
	for _, err := range c.ReadShard(testCtx(t), 2, 90, 0) {
		got = err
	}
	var pa *PositionAheadError
	if !errors.As(got, &pa) || !errors.Is(got, ErrPositionAhead) || pa.Shard != 2 || pa.From != 90 || pa.End != 40 {
		t.Fatalf("ReadShard past the end: %v, want a PositionAheadError of shard 2, from 90, end 40", got)
	}
	if n := fc.nodes[0].count("ReadShard"); n != 1 {
		t.Fatalf("the read was sent %d times, want 1", n)
	}
}

// TestOutcomeUnknownMessage: the attempts are counted once in an outcome-unknown error's text,
// by the error that ended the call when it counts them.
func TestOutcomeUnknownMessage(t *testing.T) {
	last := status.Error(codes.Unavailable, "down")
	for _, tc := range []struct {
		err  *OutcomeUnknownError
		want string
	}{
		{&OutcomeUnknownError{Attempts: 2, Err: ctxError(context.DeadlineExceeded, 2, last)},
			"client: the write may or may not have been applied: client: context deadline exceeded after 2 attempts, last error: rpc error: code = Unavailable desc = down"},
		{&OutcomeUnknownError{Attempts: 3, Err: &UnavailableError{Attempts: 3, Elapsed: time.Second, Err: last}},
			"client: the write may or may not have been applied: client: cluster unavailable after 3 attempts in 1s: rpc error: code = Unavailable desc = down"},
		{&OutcomeUnknownError{Attempts: 1, Err: last},
			"client: the write may or may not have been applied (after 1 attempt(s): rpc error: code = Unavailable desc = down)"},
		{&OutcomeUnknownError{Attempts: 1, Err: context.Canceled},
			"client: the write may or may not have been applied (after 1 attempt(s): context canceled)"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

// TestDiskLowNotRetried: a shard's refusal of appends for its voters' disks low on space
// (RESOURCE_EXHAUSTED, DISK_LOW) comes back as ErrDiskLow after one attempt, naming the nodes,
// not retried as overload until the retries run out: it passes only once space is freed.
func TestDiskLowNotRetried(t *testing.T) {
	fc := newFakeCluster(t, 1, 4)
	c := dial(t, fc)
	msg := "append refused: 2 of shard 1's 3 voters (n2 and n3) have less free space on the data directory's disk than --min-free-disk"
	fc.nodes[0].setFault(failFirst("Append", 100, shoalv1.DiskLowError(msg, "n2", 1)))
	_, err := c.Append(testCtx(t), "s", Any, Event{Type: "T"})
	if !errors.Is(err, ErrDiskLow) || errors.Is(err, ErrOutcomeUnknown) || !strings.Contains(err.Error(), "(n2 and n3)") {
		t.Fatalf("append refused DISK_LOW: %v, want ErrDiskLow naming the nodes", err)
	}
	if n := fc.nodes[0].count("Append"); n != 1 {
		t.Fatalf("the append was sent %d times, want 1", n)
	}
}

// An ID stored in the stream the batch goes to is no wrong stream: the message says what a
// retry must resend, where it said the ID was stored, as if that were the fault.
func TestIDConflictMessage(t *testing.T) {
	id := uuid.MustParse("0190a3c4-0000-7000-8000-000000000001")
	same := (&IDConflictError{Stream: "s", ID: id, ExistingStream: "s", ExistingVersion: 1}).Error()
	if !strings.Contains(same, "is already stored as version 1 of stream \"s\", but the batch does not repeat stored events in order") {
		t.Errorf("same stream: %q", same)
	}
	other := (&IDConflictError{Stream: "s", ID: id, ExistingStream: "t", ExistingVersion: 1}).Error()
	if other != "client: event ID "+id.String()+" sent to stream \"s\" is already stored as version 1 of stream \"t\"" {
		t.Errorf("another stream: %q", other)
	}
}

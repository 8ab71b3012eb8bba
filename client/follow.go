package client

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// A subscription (Follow) is a read that does not end: once caught up, its
// server sends each new event as its replica applies it, and an empty
// caught-up page every second while there is none. Silence is then normal, so
// the leader watch, which takes a read waiting 300 ms for its node for a sign
// of trouble, stops once the subscription is live; a live subscription that
// hears nothing, not even a heartbeat, for followStall takes its server for
// hung and subscribes again elsewhere.
var followStall = 3 * time.Second // three heartbeats; a variable for tests

const (
	// followLived: an attempt live this long counts as progress when it fails (the retry
	// policy's budget starts again), as one that yielded events does; a server that fails
	// every subscription just after it caught up is retried with backoff.
	followLived = 2 * time.Second
	// followPollMin and followPollMax bound the polling of a server that predates
	// subscriptions (it ends a followed read at the end).
	followPollMin = 50 * time.Millisecond
	followPollMax = time.Second
)

// errFollowStalled ends a live subscription attempt whose server went silent.
var errFollowStalled = errors.New("client: the subscription's server sent nothing, not even a heartbeat, for too long")

// subscription is the state of one attempt of a followed read; nil for a plain read.
type subscription struct {
	ctx    context.Context
	cancel context.CancelFunc // ends the attempt
	live   time.Time          // when it first caught up; zero before
	pollD  time.Duration      // the next poll's wait (older servers)
	got    bool               // events arrived since the read was (re)opened
}

func newSubscription(ctx context.Context, cancel context.CancelFunc, follow bool) *subscription {
	if !follow {
		return nil
	}
	return &subscription{ctx: ctx, cancel: cancel, pollD: followPollMin}
}

// caughtUp records a caught-up page.
func (s *subscription) caughtUp() {
	if s != nil && s.live.IsZero() {
		s.live = time.Now()
	}
}

// received records a page of n events.
func (s *subscription) received(n int) {
	if s != nil && n > 0 {
		s.got = true
	}
}

// lived reports whether the attempt was live for followLived.
func (s *subscription) lived() bool {
	return s != nil && !s.live.IsZero() && time.Since(s.live) >= followLived
}

// reopen opens a followed read again after its server ended it (a server that predates
// subscriptions): at once when the read returned events (more may be waiting), else after a
// doubling wait.
func reopen[T any](s *subscription, w *leaderWatch, open func() (T, error)) (T, error) {
	if err := s.poll(); err != nil {
		var zero T
		return zero, err
	}
	return watched(w, open)
}

// poll waits before reopen.
func (s *subscription) poll() error {
	s.live = time.Time{}
	got := s.got
	s.got = false
	if got {
		s.pollD = followPollMin
		return nil
	}
	t := time.NewTimer(s.pollD)
	defer t.Stop()
	s.pollD = min(2*s.pollD, followPollMax)
	select {
	case <-t.C:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// recvPage receives a read's next page: under the leader watch, or, for a live subscription,
// under the stall timer.
func recvPage[T any](s *subscription, w *leaderWatch, recv func() (T, error)) (T, error) {
	if s == nil || s.live.IsZero() {
		return watched(w, recv)
	}
	t := time.AfterFunc(followStall, s.cancel)
	m, err := recv()
	if !t.Stop() {
		var zero T
		if err != nil && status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
			// The server's own answer, come as the timer fired: it stands.
			return zero, err
		}
		// The timer cancelled the attempt, perhaps as a page arrived: drop it (the resume
		// point moves only with what is yielded) rather than fail the next receive with
		// the cancellation, which is not retried.
		return zero, errFollowStalled
	}
	return m, err
}

// streamNotFound reports whether err is a server's stream-not-found answer. To a followed read,
// only a server from before subscriptions gives one (a later one waits for the stream).
func streamNotFound(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.NotFound {
		return false
	}
	for _, d := range st.Details() {
		if _, ok := d.(*shoalv1.StreamNotFound); ok {
			return true
		}
	}
	return false
}

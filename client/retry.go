package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxRedirects is how many not-leader answers in a row are followed at once
// before the client backs off (guards against two nodes naming each other).
const maxRedirects = 3

// Breaker outcomes other than success; see Client.breakerSettings.
var (
	errNodeFault = errors.New("client: node fault")
	errExcluded  = errors.New("client: call abandoned by its caller")
)

// fullJitter is exponential backoff with full jitter: the ceiling doubles
// from InitialInterval up to MaxInterval, and each wait is uniform in
// [0, ceiling]. It spreads retries of many clients after a shared failure.
type fullJitter struct {
	ceiling backoff.ExponentialBackOff
}

var _ backoff.BackOff = (*fullJitter)(nil)

func newFullJitter(p RetryPolicy) *fullJitter {
	b := &fullJitter{ceiling: backoff.ExponentialBackOff{
		InitialInterval: p.InitialInterval,
		Multiplier:      2,
		MaxInterval:     p.MaxInterval,
	}}
	b.Reset()
	return b
}

func (b *fullJitter) NextBackOff() time.Duration {
	return time.Duration(rand.Int64N(int64(b.ceiling.NextBackOff()) + 1))
}

func (b *fullJitter) Reset() { b.ceiling.Reset() }

// attempt is one try of a call against node n. progress reports that the
// attempt delivered something to the caller (a read yielded events); it
// restarts the retry budget, so a long read survives many blips. w is the
// attempt's leader watch (nil when the call is not watched), armed for the
// whole of a unary attempt; a streaming one arms it while it waits for its
// node (watched).
type attempt func(ctx context.Context, n *node, w *leaderWatch) (progress bool, err error)

// run executes fn until it succeeds, fails with an error that is not
// retried, the caller's context ends, or the retry policy gives up. unary
// calls get the per-attempt timeout. The returned error is already
// converted to the package's errors. A write (t.write) whose retries or
// context end after an attempt that may have been applied returns its
// failure wrapped in an *OutcomeUnknownError (ErrOutcomeUnknown); one whose
// every attempt was refused before anything was proposed returns it as is.
func (c *Client) run(ctx context.Context, t target, unary bool, fn attempt) error {
	p := c.opts.retry
	bo := newFullJitter(p)
	start := time.Now()
	var (
		attempts  int
		redirects int
		last      error
		avoid     string
		uncertain bool // an attempt failed after it may have been applied
		cutShort  bool // a wait was cut short for the caller's deadline: no second time
		// refusers: the nodes that refused this client as such in this call (nodeRefusal:
		// its TLS handshake, another cluster). One node's certificate (a rotation half done,
		// a readdressed node without a matching name) or one address taken by another
		// cluster does not fail the call while another candidate may accept it; a second
		// refusal by the same node ends it (ErrTLSHandshake, ErrWrongCluster).
		refusers map[string]bool
	)
	// ended is the call's failure err, when its retries or its context end: for a write after
	// an attempt that may have been applied, wrapped in an *OutcomeUnknownError.
	ended := func(err error) error {
		if uncertain && t.write() {
			return &OutcomeUnknownError{Attempts: attempts, Err: err}
		}
		return err
	}
	for {
		if c.closed() {
			return ended(ErrClosed)
		}
		if err := ctx.Err(); err != nil {
			return ended(ctxError(err, attempts, last))
		}
		n, finish, shard, leader, err := c.pick(ctx, t, avoid, refusers)
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return ended(err)
			}
			if errors.Is(err, ErrInvalidArgument) {
				return err
			}
			if cerr := ctx.Err(); cerr != nil {
				return ended(ctxError(cerr, attempts, last))
			}
			// "Every breaker is open" says less than the failure that
			// opened them; keep that one as the cause.
			if last == nil || !errors.Is(err, errAllBreakersOpen) {
				last = err
			}
		} else {
			finish = finishOnce(finish)
			attempts++
			c.stats.attempts.Add(1)
			if attempts > 1 {
				c.stats.retries.Add(1)
			}
			actx, cancel := ctx, context.CancelFunc(func() {})
			if unary && p.AttemptTimeout > 0 {
				actx, cancel = context.WithTimeout(ctx, p.AttemptTimeout)
			}
			var watch *leaderWatch
			if t.idempotent && (t.kind == byStream || t.kind == byShard) {
				actx, watch = c.watchLeader(actx, n, shard, leader, t.stale)
				watch.answered = func() { finish(nil) }
				watch.released = func() { finish(errExcluded) }
				if unary {
					watch.arm()
				}
			}
			progress, err, moved := c.try(actx, n, watch, fn, cancel, finish)
			if moved != nil && err != nil { // an answer that came anyway stands
				// The shard's leader changed while this attempt hung: the
				// node it went to stopped answering (a hung process, a
				// cut connection) or lost its leadership; or, for a stale
				// read, the node was declared dead. Try the new leader (or
				// another replica) now, without backoff (the call is
				// idempotent), unless the policy's time is up.
				finish(errExcluded)
				uncertain = true
				c.stats.leaderMoves.Add(1)
				c.log.Debug("client: attempt moved from its node", "node", n.addr, "shard", shard, "why", moved)
				last = moved
				if progress {
					bo.Reset()
					start = time.Now()
				}
				if elapsed := time.Since(start); p.MaxElapsed < 0 || elapsed > p.MaxElapsed {
					return ended(&UnavailableError{Attempts: attempts, Elapsed: elapsed, Err: last})
				}
				avoid = n.addr
				redirects = 0
				continue
			}
			finish(c.breakerOutcome(ctx, err))
			if err == nil {
				return nil
			}
			if c.closed() {
				// The attempt was under way when Close cut its connection.
				uncertain = uncertain || mayHaveApplied(err)
				return ended(ErrClosed)
			}
			cerr := ctx.Err()
			if cerr == nil && timedOut(err) {
				// Its deadline passed, its timer late: the attempt timed out with it. (Another
				// failure in that window is handled as before, its answer kept.)
				cerr = callerEnded(ctx)
			}
			if cerr != nil {
				// The attempt was under way when the context ended. One that made progress (a
				// subscription that recovered and then ran) ended well: an earlier attempt's
				// error is no cause of the end.
				uncertain = uncertain || mayHaveApplied(err)
				if progress {
					last = nil
				}
				return ended(ctxError(cerr, attempts, last))
			}
			if progress {
				bo.Reset()
				start = time.Now()
			}
			if t.once && (mayHaveApplied(err) || proposalLost(err)) {
				return &OutcomeUnknownError{Attempts: attempts, Err: err}
			}
			v, nodeFault, nl := classify(err)
			if st, ok := status.FromError(err); ok && v == fatal && nodeRefusal(st) && !refusers[n.addr] {
				// Asked again only once every other candidate was (pick puts refusers
				// last), at once: a refusal is no fault of time.
				if refusers == nil {
					refusers = map[string]bool{}
				}
				refusers[n.addr] = true
				c.requestRefresh()
				last, avoid, redirects = err, n.addr, 0
				continue
			}
			if v == fatal && t.lostAnswerRetry && lostAnswer(err) && !(t.ownRefusal && status.Code(err) == codes.Unknown) {
				// The call may have been applied and its answer lost (a stream reset on the
				// way, a server's failure it could not name): repeating an idempotent write
				// answers as the first run did, where returning this error would pass a
				// write that may have been applied for a definite failure. (A delete's
				// UNKNOWN is the server's own verdict that its outcome is unknown.)
				v, nodeFault = retry, true
			}
			if v == fatal && !t.write() && streamReset(err) {
				// A call that changes nothing (a read resumes after its last event) whose stream
				// was cut on the way: no answer of the node's, so no verdict.
				v = retry
			}
			c.log.Debug("client: attempt failed", "node", n.addr, "attempt", attempts, "code", status.Code(err).String(), "err", err)
			// Whether this attempt may have been applied, for the cases below that count it in
			// uncertain (the fatal case reads uncertain as the earlier attempts left it).
			mayApply := mayHaveApplied(err) || t.lostAnswerRetry && proposalLost(err)
			switch v {
			case fatal:
				ce := convertError(err, t.stream)
				// After an attempt that may have been applied, only an append's verdict on the
				// stream settles it; a delete's may be that attempt's own effect, and a refusal
				// of this client (another cluster at the address, a TLS handshake) or any
				// other failure says nothing of it. A delete's UNKNOWN is the server's own.
				settles := streamVerdict(ce) && !t.ownRefusal &&
					!(t.repeatRefusable && (errors.Is(ce, ErrWrongExpectedVersion) || errors.Is(ce, ErrShardFormat)))
				if t.ownRefusal && status.Code(err) == codes.Unknown || uncertain && t.write() && !settles {
					return &OutcomeUnknownError{Attempts: attempts, Err: ce}
				}
				return ce
			case redirect:
				c.requestRefresh()
				if addr := nl.GetLeaderAddr(); addr != n.addr && redirects < maxRedirects {
					redirects++
					c.stats.redirects.Add(1)
					if t.kind == byStream || t.kind == byShard {
						c.setHint(shard, addr, n.addr)
					}
					last = err
					avoid = ""
					// A not-leader answer naming the leader is given before anything is
					// proposed today; one that a server gave after proposing (proposalLost)
					// would still leave the call uncertain.
					uncertain = uncertain || mayApply
					continue // no backoff: the leader is known
				}
			case retry:
				if nodeFault || nl != nil {
					c.requestRefresh()
				}
				if nodeFault {
					avoid = n.addr
				}
			}
			last = err
			uncertain = uncertain || mayApply
		}
		redirects = 0
		next := bo.NextBackOff()
		elapsed := time.Since(start)
		if p.MaxElapsed < 0 || elapsed >= p.MaxElapsed {
			return ended(&UnavailableError{Attempts: attempts, Elapsed: elapsed, Err: last})
		}
		// A wait past the policy's time is cut short: the last attempt comes as MaxElapsed
		// runs out, not a whole backoff (up to MaxInterval) before it.
		next = min(next, p.MaxElapsed-elapsed)
		if dl, ok := ctx.Deadline(); ok {
			if left := time.Until(dl); left < next {
				if cutShort || left < 2*minLastAttempt {
					// No time for another attempt; say so now rather than sleeping
					// into the deadline.
					return ended(ctxError(context.DeadlineExceeded, attempts, last))
				}
				// Likewise, once, before the caller's deadline: one attempt more, with
				// a quarter to a half of the time left (jittered, as every wait is),
				// rather than giving the rest up.
				cutShort = true
				next = left/4 + time.Duration(rand.Int64N(int64(left/4)+1))
			}
		}
		timer := time.NewTimer(next)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return ended(ctxError(ctx.Err(), attempts, last))
		case <-c.done:
			timer.Stop()
			return ended(ErrClosed)
		}
	}
}

// minLastAttempt is the least time before the caller's deadline a retry is made with: with
// less than twice that left, a call whose attempt failed returns the deadline's error (an
// attempt with less would seldom finish, and a write's would leave its outcome unknown).
const minLastAttempt = 50 * time.Millisecond

// lostAnswer reports whether err, a gRPC status, is one an attempt may end with after the
// server applied the call: INTERNAL and CANCELLED (what gRPC makes of an HTTP/2 stream reset,
// by the server, a proxy or the connection), UNKNOWN (a failure the server could not name).
// The caller's own context is checked before.
func lostAnswer(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Internal, codes.Canceled, codes.Unknown:
		return true
	}
	return false
}

// streamReset reports whether err is gRPC's status for an HTTP/2 stream reset on the way (by
// the server's transport, a proxy or the connection): "stream terminated by RST_STREAM", of
// code CANCELLED for CANCEL and INTERNAL for INTERNAL_ERROR. Unlike a server's INTERNAL or
// UNKNOWN answer (a corrupt record), it says nothing of the call.
func streamReset(err error) bool {
	st, ok := status.FromError(err)
	return ok && strings.HasPrefix(st.Message(), "stream terminated by RST_STREAM")
}

// finishOnce makes a breaker admission's finish idempotent: the first outcome counts.
func finishOnce(f func(error)) func(error) {
	var once sync.Once
	return func(err error) { once.Do(func() { f(err) }) }
}

// try runs one attempt, then ends its watch and releases its context (cancel). It returns the
// attempt's outcome and why the watch abandoned it, if it did. Should fn panic (the caller's
// loop body runs inside a read's attempt, and a caller may recover), the watch and context
// are released and the breaker's admission is given back (finish) before the panic goes on:
// otherwise a half-open breaker would keep its one probe slot, and refuse the node, for good.
func (c *Client) try(ctx context.Context, n *node, w *leaderWatch, fn attempt, cancel context.CancelFunc, finish func(error)) (progress bool, err, moved error) {
	defer n.let() // held by pick
	returned := false
	defer func() {
		if !returned {
			w.stop()
			cancel()
			finish(errExcluded)
		}
	}()
	progress, err = fn(ctx, n, w)
	returned = true
	moved = w.stop()
	cancel()
	return progress, err, moved
}

// callerEnded returns ctx's error once it ended, or context.DeadlineExceeded once its deadline
// has passed though its timer has not fired yet: on a busy machine the timer fires late, and an
// attempt bounded by that deadline fails first, while ctx.Err() is still nil. Such a failure is
// the caller's, not the node's (a reviewer's callers with deadlines of a few milliseconds
// opened healthy nodes' breakers, stalling every other caller for seconds).
func callerEnded(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// timedOut reports whether an attempt's err is a deadline's end, its context's or one the
// server answered.
func timedOut(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.DeadlineExceeded
}

// breakerOutcome maps an attempt's error to what the node's breaker records:
// success (nil), a node fault, or nothing (the caller gave up).
func (c *Client) breakerOutcome(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if callerEnded(ctx) != nil || c.closed() {
		return errExcluded
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Canceled {
		return errExcluded
	}
	if _, nodeFault, _ := classify(err); nodeFault {
		return errNodeFault
	}
	return nil
}

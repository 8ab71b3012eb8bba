package client

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// Appends to one node share one AppendPipeline stream: a sender goroutine
// sends every append queued since its last message as one batch, and a
// receiver hands each answer to its caller. Under concurrent callers this
// replaces a gRPC call per append (its headers, trailers, stream set-up and
// at least two socket writes) with a share of one message each way. Each
// append keeps its own deadline, result and error, exactly as the unary
// Append gives them, and goes through the client's retries and breakers as
// before. An append larger than pipelineMaxItemBytes, and every append to a
// server without AppendPipeline, uses the unary call.
const (
	pipelineMaxItems     = 1024    // per message; the server's MaxPipelineBatch
	pipelineMaxItemBytes = 1 << 20 // larger appends go alone, unary
	pipelineMaxBytes     = 4 << 20 // a message's appends, about
	// pipelineRetryUnsupported is how long appends to a server without
	// AppendPipeline stay unary before the client tries the stream again.
	pipelineRetryUnsupported = time.Minute
)

// errPipelineUnsupported says the server has no AppendPipeline (an older
// version), that the pipeline's messages are over a gRPC size limit, or that the
// server refused the stream at its limit of streams: the caller uses the unary
// Append.
var errPipelineUnsupported = errors.New("client: the server does not support AppendPipeline")

// appendPipe is a node's pipeline: its current stream, opened on first use
// and again after a failure.
type appendPipe struct {
	streams shoalv1.StreamsClient
	mu      struct {
		sync.Mutex
		cur              *pipeStream
		opening          *pipeOpen // the open in progress, or nil
		unsupportedUntil time.Time // the server answered Unimplemented (or refused the stream): unary until then
	}
}

// pipeOpen is one attempt to open the stream. It runs in its own goroutine,
// not the caller's: opening waits for the connection, and a caller waits for
// that only as long as its context allows.
type pipeOpen struct {
	done chan struct{} // closed when the attempt ends; then ps or err is set
	ps   *pipeStream
	err  error
}

// pipeStream is one AppendPipeline stream and the appends it carries.
type pipeStream struct {
	pipe   *appendPipe
	stream shoalv1.Streams_AppendPipelineClient
	cancel context.CancelFunc
	kick   chan struct{} // wakes the sender; buffered(1)

	mu      sync.Mutex
	nextID  uint64
	queue   []*pipeCall          // not yet sent
	pending map[uint64]*pipeCall // queued or sent, not answered
	cancels []uint64             // sent items whose callers stopped waiting
	err     error                // the stream failed: every call gets this
}

type pipeCall struct {
	item *shoalv1.AppendItem
	size int             // of the request, in bytes
	done chan pipeResult // buffered(1)
	sent bool            // guarded by pipeStream.mu
}

type pipeResult struct {
	resp *shoalv1.AppendResponse
	err  error
}

// append sends req over the pipeline and waits for its answer or ctx. The
// error is a gRPC status error, as from the unary Append.
func (p *appendPipe) append(ctx context.Context, req *shoalv1.AppendRequest) (*shoalv1.AppendResponse, error) {
	size := proto.Size(req)
	if size > pipelineMaxItemBytes {
		return p.streams.Append(ctx, req)
	}
	ps, err := p.stream(ctx)
	if errors.Is(err, errPipelineUnsupported) {
		return p.streams.Append(ctx, req)
	}
	if err != nil {
		return nil, notSent(err)
	}
	call := &pipeCall{item: &shoalv1.AppendItem{Request: req}, size: size, done: make(chan pipeResult, 1)}
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left < time.Millisecond {
			// Less than a millisecond left: nothing is sent. Return when the context ends,
			// so that its end, not the node, answers for it (the breaker counts nothing).
			<-ctx.Done()
			return nil, notSent(status.FromContextError(ctx.Err()).Err())
		}
		// Rounded up: the server's deadline for the item must not pass before the caller's,
		// whose DEADLINE_EXCEEDED answer, arriving while the caller's context is still live,
		// would count against the node's circuit breaker.
		call.item.TimeoutMs = uint64((left + time.Millisecond - 1) / time.Millisecond)
	}
	if err := ps.enqueue(call); err != nil {
		if errors.Is(err, errPipelineUnsupported) {
			return p.streams.Append(ctx, req)
		}
		return nil, notSent(err)
	}
	select {
	case r := <-call.done:
		if errors.Is(r.err, errPipelineUnsupported) {
			return p.streams.Append(ctx, req)
		}
		return r.resp, r.err
	case <-ctx.Done():
		err := status.FromContextError(ctx.Err()).Err()
		if ps.forget(call.item.Id) {
			return nil, notSent(err)
		}
		return nil, err
	}
}

// notSentError is an append's failure before any of it reached a server: its context ended
// while the pipeline's stream opened or before the sender took it, or it had under a
// millisecond left. No attempt that ends so may have been applied (mayHaveApplied). Its gRPC
// status is err's.
type notSentError struct{ err error }

func notSent(err error) error { return &notSentError{err} }

func (e *notSentError) Error() string              { return e.err.Error() }
func (e *notSentError) Unwrap() error              { return e.err }
func (e *notSentError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// stream returns the open stream, opening one if there is none, or the
// context's error if it ends first.
func (p *appendPipe) stream(ctx context.Context) (*pipeStream, error) {
	p.mu.Lock()
	if time.Now().Before(p.mu.unsupportedUntil) {
		p.mu.Unlock()
		return nil, errPipelineUnsupported
	}
	if ps := p.mu.cur; ps != nil {
		p.mu.Unlock()
		return ps, nil
	}
	op := p.mu.opening
	if op == nil {
		op = &pipeOpen{done: make(chan struct{})}
		p.mu.opening = op
		go p.open(op)
	}
	p.mu.Unlock()
	select {
	case <-op.done:
		// A stream that failed since it opened hands its failure to enqueue,
		// so that the caller backs off before the next attempt.
		return op.ps, op.err
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// open opens a stream for op and makes it the current one.
func (p *appendPipe) open(op *pipeOpen) {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := p.streams.AppendPipeline(ctx)
	p.mu.Lock()
	defer close(op.done)
	defer p.mu.Unlock()
	p.mu.opening = nil
	if err != nil {
		cancel()
		op.err = err
		return
	}
	ps := &pipeStream{pipe: p, stream: st, cancel: cancel, kick: make(chan struct{}, 1), pending: make(map[uint64]*pipeCall)}
	p.mu.cur, op.ps = ps, ps
	go ps.send()
	go ps.receive()
}

// close ends the current stream; its calls fail with err.
func (p *appendPipe) close(err error) {
	p.mu.Lock()
	ps := p.mu.cur
	p.mu.Unlock()
	if ps != nil {
		ps.fail(err)
	}
}

func (ps *pipeStream) enqueue(c *pipeCall) error {
	ps.mu.Lock()
	if ps.err != nil {
		ps.mu.Unlock()
		return ps.err
	}
	ps.nextID++
	c.item.Id = ps.nextID
	ps.pending[c.item.Id] = c
	ps.queue = append(ps.queue, c)
	ps.mu.Unlock()
	ps.wake()
	return nil
}

// wake tells the sender that there is something to send.
func (ps *pipeStream) wake() {
	select {
	case ps.kick <- struct{}{}:
	default:
	}
}

// forget drops a call whose caller stopped waiting: not sent yet, it is not
// sent; sent, the server is asked to cancel it, as a unary call would be. An
// answer that comes anyway is discarded. It reports whether the call was
// dropped before it was sent.
func (ps *pipeStream) forget(id uint64) (unsent bool) {
	ps.mu.Lock()
	c, ok := ps.pending[id]
	if !ok {
		ps.mu.Unlock()
		return false
	}
	delete(ps.pending, id)
	sent := c.sent
	if sent {
		ps.cancels = append(ps.cancels, id)
	} else {
		// Out of the queue now, its request with it, rather than at the sender's next round,
		// which a stream held up by flow control may not reach for long.
		ps.queue = slices.DeleteFunc(ps.queue, func(q *pipeCall) bool { return q == c })
	}
	ps.mu.Unlock()
	ps.wake()
	return !sent
}

// send sends the queued calls, as few messages as the limits allow, until
// the stream fails.
func (ps *pipeStream) send() {
	ctx := ps.stream.Context()
	var queue []*pipeCall
	for {
		select {
		case <-ps.kick:
		case <-ctx.Done():
			return
		}
		// Let the callers that are ready to run enqueue too, so that one
		// message carries them all.
		runtime.Gosched()
		ps.mu.Lock()
		queue, ps.queue = ps.queue, queue[:0]
		live := queue[:0]
		for _, c := range queue {
			if _, ok := ps.pending[c.item.Id]; ok { // not forgotten meanwhile
				c.sent = true
				live = append(live, c)
			}
		}
		clear(queue[len(live):])
		queue = live
		cancels := ps.cancels
		ps.cancels = nil
		ps.mu.Unlock()
		var batch []*pipeCall
		for len(queue) > 0 || len(cancels) > 0 {
			msg := &shoalv1.AppendBatch{Cancel: cancels}
			cancels = nil
			size := 0
			batch = batch[:0]
			for len(queue) > 0 && len(msg.Items) < pipelineMaxItems && size < pipelineMaxBytes {
				msg.Items = append(msg.Items, queue[0].item)
				size += queue[0].size
				batch = append(batch, queue[0])
				queue[0] = nil
				queue = queue[1:]
			}
			if err := ps.stream.Send(msg); err != nil {
				// Send's error says only that the stream ended; receive gets the
				// cause from Recv and fails the calls with it. This message did not
				// reach the server whole (gRPC refused it, over the send limit, or the
				// stream had ended): its calls were not sent, nor were those after it.
				// (Only calls still pending: fail, which took the others, reads their
				// flags after it let go of the lock.)
				ps.mu.Lock()
				for _, c := range slices.Concat(batch, queue) {
					if ps.pending[c.item.Id] == c {
						c.sent = false
					}
				}
				ps.mu.Unlock()
				return
			}
		}
	}
}

// receive hands each answer to its caller until the stream fails.
func (ps *pipeStream) receive() {
	for {
		msg, err := ps.stream.Recv()
		if err != nil {
			// An older server; or a message over gRPC's size limit (the client's
			// MaxCallSendMsgSize, given in WithDialOptions, below pipelineMaxBytes, or the
			// server's receive limit), which the same appends, retried, would make again,
			// until their retries end. Unary, each append goes alone: within the limit it
			// passes, over it it fails at once (classify). Or the server holds as many
			// pipelines as its --max-append-pipelines allows, and refused this one before
			// reading any of it: it still takes unary appends. Ask again later: the server
			// may be upgraded meanwhile, the load lighter.
			if st := status.Convert(err); st.Code() == codes.Unimplemented || st.Code() == codes.ResourceExhausted {
				ps.pipe.mu.Lock()
				ps.pipe.mu.unsupportedUntil = time.Now().Add(pipelineRetryUnsupported)
				ps.pipe.mu.Unlock()
				if overSize(st) {
					// The server may have run the appends sent in earlier messages (a later one
					// went over a size limit): those are answered as by a stream's end, which
					// the caller retries as an attempt that may have been applied (unary now);
					// the calls not sent go unary at once. (A server at its limit of streams
					// refuses one before reading any of it: every call goes unary.)
					ps.failWith(err, errPipelineUnsupported)
					return
				}
				err = errPipelineUnsupported
			}
			ps.fail(err)
			return
		}
		ps.mu.Lock()
		for _, r := range msg.Results {
			c, ok := ps.pending[r.Id]
			if !ok {
				continue
			}
			delete(ps.pending, r.Id)
			switch err := r.Error.Err(); {
			case r.Error != nil && err != nil:
				c.done <- pipeResult{err: err}
			case r.Error == nil && r.Response != nil:
				c.done <- pipeResult{resp: r.Response}
			default: // neither an answer nor an error (or an error saying OK): not a success
				c.done <- pipeResult{err: status.Error(codes.Internal, "client: the pipeline answered an append with neither a response nor an error")}
			}
		}
		ps.mu.Unlock()
	}
}

// fail ends the stream: every call not answered gets an error, and the next
// append opens a new stream. The error is Unavailable whatever ended the
// stream (its cause in the message), unless the server refused the stream as
// a whole (Unauthenticated, PermissionDenied): a stream's end says nothing
// about one append, which the server may have applied (sent) or never seen
// (queued), and Internal, Unknown or Canceled (a proxy's reset, a message
// gRPC failed to encode for another caller) would end it as a definite
// failure. Appends are idempotent, so the client's retry of a call that did
// reach the server is harmless.
func (ps *pipeStream) fail(err error) { ps.failWith(err, nil) }

// failWith is fail, the calls not sent getting unsentErr instead when it is not nil.
func (ps *pipeStream) failWith(err, unsentErr error) {
	if !errors.Is(err, errPipelineUnsupported) {
		switch st, ok := status.FromError(err); {
		case !ok:
			err = status.Error(codes.Unavailable, err.Error())
		case st.Code() == codes.Unavailable, st.Code() == codes.Unauthenticated, st.Code() == codes.PermissionDenied:
		case shoalv1.IsWrongCluster(st): // the node's refusal of the stream, which it repeats: not a reset
		default:
			err = status.Errorf(codes.Unavailable, "append pipeline stream ended (%v): %s", st.Code(), st.Message())
		}
	}
	ps.mu.Lock()
	if ps.err != nil {
		ps.mu.Unlock()
		return
	}
	ps.err = err
	pending := ps.pending
	ps.pending = nil
	ps.queue = nil
	ps.mu.Unlock()
	ps.cancel()
	for _, c := range pending {
		switch {
		case c.sent:
			c.done <- pipeResult{err: err}
		case unsentErr != nil:
			c.done <- pipeResult{err: unsentErr}
		default:
			c.done <- pipeResult{err: notSent(err)}
		}
	}
	ps.pipe.mu.Lock()
	if ps.pipe.mu.cur == ps {
		ps.pipe.mu.cur = nil
	}
	ps.pipe.mu.Unlock()
}

package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// Limits of one AppendPipeline stream.
const (
	// MaxPipelineBatch is the most items one AppendBatch may carry; a larger
	// batch ends the stream with InvalidArgument.
	MaxPipelineBatch = 1024
	// MaxPipelineInFlight is the most items of one stream that the server
	// holds at once, running or answered but not yet sent. At the limit it
	// reads no further item until one is sent (HTTP/2 flow control then
	// holds the client back).
	MaxPipelineInFlight = 4096
)

// errPipelineDrained answers the items that arrive while the node shuts down, and ends the
// stream then. Its message holds shuttingDownMsg, so clients take it for a refusal before
// anything ran (client mayHaveApplied, refusedUnapplied) and retry elsewhere.
var errPipelineDrained = status.Error(codes.Unavailable, shuttingDownMsg+": append pipeline closed")

// AppendPipeline serves many independent appends over one stream: each item
// runs as its own Append (with its own deadline, cancellable by the client)
// while the stream reads on, and the answers that are ready together leave as
// one message. When the client closes its side, or the node starts shutting
// down, the items already started finish and are answered before the stream
// ends; an item that arrives while the node shuts down is answered
// errPipelineDrained. Every item read from the stream is answered on it: once
// the sender has sent its last answer, the receiver reads no further item
// (pipeline.ended). An item still in flight from the client then is failed by
// the stream's end status, errPipelineDrained too: nothing ran it. (The
// stream cannot stay open for it: only the client can end the reading side,
// and the client keeps it open while it has appends to send.) A stream beyond
// Config.MaxAppendPipelines is refused with RESOURCE_EXHAUSTED naming the limit
// before any item is read: nothing it carried runs.
func (s *streamsServer) AppendPipeline(stream grpc.BidiStreamingServer[shoalv1.AppendBatch, shoalv1.AppendResults]) error {
	release, err := s.n.limits.pipelines.hold(s.n.dir.id.Name, s.n.metrics.pipelinesRefused)
	if err != nil {
		return err
	}
	defer release()
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	p := &pipeline{
		s:       s,
		stream:  stream,
		ctx:     ctx,
		out:     make(chan *shoalv1.AppendItemResult, MaxPipelineInFlight),
		slots:   make(chan struct{}, MaxPipelineInFlight),
		finish:  make(chan struct{}),
		cancels: make(map[uint64]context.CancelFunc),
	}
	sent := make(chan error, 1)
	go func() { sent <- p.send() }()
	recvd := make(chan error, 1)
	go func() { recvd <- p.receive() }()

	select {
	case err = <-recvd:
		if errors.Is(err, io.EOF) {
			err = nil
		}
	case <-s.n.done:
		err = errPipelineDrained
	}
	p.mu.Lock()
	p.draining = true
	p.mu.Unlock()
	p.items.Wait() // when the client is gone, ctx is already cancelled and the items end at once
	close(p.finish)
	if serr := <-sent; err == nil {
		err = serr
	}
	return err
}

// pipeline is the state of one AppendPipeline stream.
type pipeline struct {
	s      *streamsServer
	stream grpc.BidiStreamingServer[shoalv1.AppendBatch, shoalv1.AppendResults]
	ctx    context.Context
	// Every item holds a slot from before it starts until the sender takes its
	// answer, so out never holds more than its capacity and never blocks.
	out    chan *shoalv1.AppendItemResult
	slots  chan struct{}
	finish chan struct{} // closed once every started item has answered into out
	items  sync.WaitGroup

	mu       sync.Mutex
	draining bool                          // start no more items: answer them errPipelineDrained
	ended    bool                          // the sender sent its last answer: read no more items
	cancels  map[uint64]context.CancelFunc // items running, by ID
}

// receive reads batches and starts their items until the stream ends.
func (p *pipeline) receive() error {
	recvSizes := p.s.n.metrics.pipelineBatch.WithLabelValues("received")
	for {
		batch, err := p.stream.Recv()
		if err != nil {
			return err
		}
		arrived := time.Now() // items' timeouts count from here, not from when a slot frees
		if n := len(batch.Items); n > MaxPipelineBatch || (n == 0 && len(batch.Cancel) == 0) {
			return withDetails(codes.InvalidArgument,
				fmt.Sprintf("append pipeline: a batch carries 1..%d items (MaxPipelineBatch) or some cancels, got %d items", MaxPipelineBatch, n),
				&shoalv1.InvalidField{Field: "items", Limit: fmt.Sprintf("1..%d per batch, or none with cancels", MaxPipelineBatch),
					Reason: fmt.Sprintf("%d items", n)})
		}
		p.mu.Lock()
		for _, id := range batch.Cancel {
			if cancel, ok := p.cancels[id]; ok {
				cancel()
			}
		}
		p.mu.Unlock()
		if len(batch.Items) > 0 {
			recvSizes.Observe(float64(len(batch.Items)))
		}
		for _, it := range batch.Items {
			select {
			case p.slots <- struct{}{}:
			case <-p.ctx.Done():
				return p.ctx.Err()
			}
			p.mu.Lock()
			if p.ended {
				// No answer can leave any more: leave this item and the rest of the batch to
				// the stream's end status, errPipelineDrained.
				p.mu.Unlock()
				return errPipelineDrained
			}
			if _, dup := p.cancels[it.Id]; dup {
				// Two answers of one ID could not be told apart, nor the two items cancelled
				// one by one: a broken client. The stream ends, as for a batch too large; the
				// items in flight are answered first, this one and the rest of its batch not
				// run. While the pipeline drains too: answered errPipelineDrained, the item
				// would give its ID a refusal as well as the answer of the item in flight, which
				// may have been applied. (The stream then ends with errPipelineDrained.)
				p.mu.Unlock()
				return withDetails(codes.InvalidArgument,
					fmt.Sprintf("append pipeline: item ID %d is already in flight on this stream; IDs must be unique among the items in flight", it.Id),
					&shoalv1.InvalidField{Field: "items[].id", Limit: "unique among the stream's items in flight",
						Reason: fmt.Sprintf("item %d is in flight", it.Id)})
			}
			if p.draining {
				// Queued under mu, so that the sender's last look at out (finished) sees it.
				p.out <- itemResult(it.Id, nil, errPipelineDrained)
				p.mu.Unlock()
				continue
			}
			ictx, cancel := p.itemContext(it, arrived)
			p.cancels[it.Id] = cancel
			p.items.Add(1)
			p.mu.Unlock()
			go func() {
				defer p.items.Done()
				resp, err := p.append(ictx, it)
				p.mu.Lock()
				delete(p.cancels, it.Id)
				p.mu.Unlock()
				cancel()
				p.out <- itemResult(it.Id, resp, err)
			}()
		}
	}
}

// maxItemTimeoutMS is the largest AppendItem.timeout_ms that a time.Duration holds (about 292
// years). A larger one runs without a deadline, as a unary Append does whose grpc-timeout is
// past what a time.Duration holds (gRPC clamps it): converted, it would wrap to a deadline in
// the past.
const maxItemTimeoutMS = uint64(math.MaxInt64 / int64(time.Millisecond))

// itemContext is the context item it runs in: the stream's, bounded by the item's timeout_ms
// from the arrival of its batch when it has one. An item that waited for a slot past that
// deadline (every slot held by appends to a shard without quorum, say) is then not proposed:
// its caller has given up on it.
func (p *pipeline) itemContext(it *shoalv1.AppendItem, arrived time.Time) (context.Context, context.CancelFunc) {
	if it.TimeoutMs > 0 && it.TimeoutMs <= maxItemTimeoutMS {
		return context.WithDeadline(p.ctx, arrived.Add(time.Duration(it.TimeoutMs)*time.Millisecond))
	}
	return context.WithCancel(p.ctx)
}

// append runs one item as the unary Append would.
func (p *pipeline) append(ctx context.Context, it *shoalv1.AppendItem) (*shoalv1.AppendResponse, error) {
	if err := refusedUTF8(it); err != nil {
		return nil, err // its strings were not all UTF-8: serverCodec left only its ID and this
	}
	if it.Request == nil {
		return nil, withDetails(codes.InvalidArgument, "append pipeline: an item carries no request",
			&shoalv1.InvalidField{Field: "items[].request", Limit: "required", Reason: "the item carries no request"})
	}
	if f := p.s.pipelineAppend.Load(); f != nil {
		return (*f)(ctx, it.Request)
	}
	return p.s.Append(ctx, it.Request)
}

// send sends the answers as they come, each message carrying every answer
// ready at the time, until finish is closed and out is empty, or a send fails.
func (p *pipeline) send() error {
	sizes := p.s.n.metrics.pipelineBatch.WithLabelValues("sent")
	take := func(r *shoalv1.AppendItemResult, msg *shoalv1.AppendResults) {
		<-p.slots
		msg.Results = append(msg.Results, r)
	}
	finishing := false
	for {
		msg := &shoalv1.AppendResults{}
		if !finishing {
			select {
			case r := <-p.out:
				take(r, msg)
				// Items finish in groups (a raft batch commits many); let the
				// rest of the group reach out before sending.
				runtime.Gosched()
			case <-p.finish:
				finishing = true
			case <-p.ctx.Done():
				return p.ctx.Err()
			}
		}
	more:
		for len(msg.Results) < MaxPipelineBatch {
			select {
			case r := <-p.out:
				take(r, msg)
			default:
				break more
			}
		}
		if len(msg.Results) == 0 {
			if finishing && p.finished() {
				return nil
			}
			continue
		}
		sizes.Observe(float64(len(msg.Results)))
		if err := p.stream.Send(msg); err != nil {
			return err
		}
	}
}

// finished reports whether out is empty once every started item has answered,
// and then marks the pipeline ended, so that the receiver reads no further
// item: the sender's last look at out. The receiver queues its refusals under
// mu, so none is left behind unsent.
func (p *pipeline) finished() bool {
	if f := p.s.pipelineFinishing.Load(); f != nil {
		(*f)(p)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.out) > 0 {
		return false
	}
	p.ended = true
	return true
}

// itemResult is the answer to item id: resp, or err as the status Append
// would have returned.
func itemResult(id uint64, resp *shoalv1.AppendResponse, err error) *shoalv1.AppendItemResult {
	if err == nil {
		return &shoalv1.AppendItemResult{Id: id, Response: resp}
	}
	return &shoalv1.AppendItemResult{Id: id, Error: shoalv1.ItemStatusOf(err)}
}

package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	// MaxPipelineInFlight is the most items of one stream the server works on
	// at once; an item beyond it is answered ResourceExhausted at once.
	MaxPipelineInFlight = 4096
)

// AppendPipeline serves many independent appends over one stream: each item
// runs as its own Append (with its own deadline) while the stream reads on,
// and the answers that are ready together leave as one message. When the
// client closes its side, the items in flight are finished and answered
// before the stream ends.
func (s *streamsServer) AppendPipeline(stream grpc.BidiStreamingServer[shoalv1.AppendBatch, shoalv1.AppendResults]) error {
	ctx := stream.Context()
	// Every item in flight holds a slot, so out never fills and a finished
	// item never waits for the sender.
	out := make(chan *shoalv1.AppendItemResult, MaxPipelineInFlight)
	slots := make(chan struct{}, MaxPipelineInFlight)
	var items sync.WaitGroup
	sent := make(chan error, 1)
	sentSizes := s.n.metrics.pipelineBatch.WithLabelValues("sent")
	recvSizes := s.n.metrics.pipelineBatch.WithLabelValues("received")
	go func() { sent <- sendResults(stream, out, sentSizes) }()

	var recvErr error
	for {
		batch, err := stream.Recv()
		if err != nil {
			recvErr = err
			break
		}
		if n := len(batch.Items); n == 0 || n > MaxPipelineBatch {
			recvErr = status.Errorf(codes.InvalidArgument,
				"append pipeline: a batch carries 1..%d items (MaxPipelineBatch), got %d", MaxPipelineBatch, n)
			break
		}
		recvSizes.Observe(float64(len(batch.Items)))
		for _, it := range batch.Items {
			select {
			case slots <- struct{}{}:
			default:
				out <- itemResult(it.Id, nil, status.Errorf(codes.ResourceExhausted,
					"append pipeline: more than %d appends in flight on one stream (MaxPipelineInFlight)", MaxPipelineInFlight))
				continue
			}
			items.Add(1)
			go func() {
				defer items.Done()
				resp, err := s.pipelinedAppend(ctx, it)
				out <- itemResult(it.Id, resp, err)
				<-slots
			}()
		}
	}
	if !errors.Is(recvErr, io.EOF) {
		// The client went away or broke the protocol: what is in flight
		// finishes (its context is the stream's) but is not answered.
		return recvErr
	}
	items.Wait()
	close(out)
	return <-sent
}

// pipelinedAppend runs one item as Append would, with the item's deadline.
func (s *streamsServer) pipelinedAppend(ctx context.Context, it *shoalv1.AppendItem) (*shoalv1.AppendResponse, error) {
	if it.Request == nil {
		return nil, status.Error(codes.InvalidArgument, "append pipeline: an item carries no request")
	}
	if it.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(it.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	return s.Append(ctx, it.Request)
}

// sendResults sends the results of out as they come, each message carrying
// every result ready at the time, until out is closed or a send fails.
func sendResults(stream grpc.BidiStreamingServer[shoalv1.AppendBatch, shoalv1.AppendResults], out <-chan *shoalv1.AppendItemResult, sizes prometheus.Observer) error {
	ctx := stream.Context()
	for {
		var r *shoalv1.AppendItemResult
		var ok bool
		select {
		case r, ok = <-out:
			if !ok {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		// Items finish in groups (a raft batch commits many); let the rest of
		// the group reach out before sending.
		runtime.Gosched()
		msg := &shoalv1.AppendResults{Results: []*shoalv1.AppendItemResult{r}}
	more:
		for len(msg.Results) < MaxPipelineBatch {
			select {
			case r, ok = <-out:
				if !ok {
					break more
				}
				msg.Results = append(msg.Results, r)
			default:
				break more
			}
		}
		sizes.Observe(float64(len(msg.Results)))
		if err := stream.Send(msg); err != nil {
			return err
		}
		if !ok {
			return nil
		}
	}
}

// itemResult is the answer to item id: resp, or err as the status Append
// would have returned.
func itemResult(id uint64, resp *shoalv1.AppendResponse, err error) *shoalv1.AppendItemResult {
	if err == nil {
		return &shoalv1.AppendItemResult{Id: id, Response: resp}
	}
	s, ok := status.FromError(err)
	if !ok {
		s = status.FromContextError(err) // as gRPC answers for a unary handler
	}
	st := s.Proto()
	if st.Code == int32(codes.OK) { // not a status: should not happen, but never report success
		st.Code, st.Message = int32(codes.Internal), fmt.Sprintf("append: %v", err)
	}
	return &shoalv1.AppendItemResult{Id: id, Error: &shoalv1.ItemStatus{Code: st.Code, Message: st.Message, Details: st.Details}}
}

package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prometheus/client_golang/prometheus"
	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
)

// TestAppendPipeline sends appends over one AppendPipeline stream and checks
// that each is answered by its ID with what Append would have answered.
func TestAppendPipeline(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	st := openPipeline(t, n)
	const streams = 50
	batch := &shoalv1.AppendBatch{}
	for i := range streams {
		batch.Items = append(batch.Items, &shoalv1.AppendItem{Id: uint64(100 + i),
			Request: &shoalv1.AppendRequest{Stream: fmt.Sprintf("p-%d", i), Expected: noStream(), Events: events("A", "B")}})
	}
	// The same stream twice in one batch with NoStream: exactly one wins.
	batch.Items = append(batch.Items,
		&shoalv1.AppendItem{Id: 1, Request: &shoalv1.AppendRequest{Stream: "p-0", Expected: exact(1), Events: events("C")}, TimeoutMs: 10000},
		&shoalv1.AppendItem{Id: 2, Request: &shoalv1.AppendRequest{Stream: "$bad", Events: events("C")}},
		&shoalv1.AppendItem{Id: 3})
	if err := st.Send(batch); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]*shoalv1.AppendItemResult{}
	msgs := 0
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs++
		for _, r := range m.Results {
			if got[r.Id] != nil {
				t.Fatalf("item %d answered twice", r.Id)
			}
			got[r.Id] = r
		}
	}
	t.Logf("%d results in %d messages", len(got), msgs)
	if len(got) != len(batch.Items) {
		t.Fatalf("got %d results for %d items", len(got), len(batch.Items))
	}
	for i := range streams {
		r := got[uint64(100+i)]
		if r.Error != nil || r.Response.GetFirstVersion() != 0 || r.Response.GetLastVersion() != 1 {
			t.Errorf("item %d: %v", 100+i, r)
		}
	}
	// Item 1 expects version 1 of p-0, which item 100 may or may not have
	// written yet: either it succeeds at version 2 or it is a wrong expected
	// version, never anything else.
	if r := got[1]; r.Error != nil {
		if codes.Code(r.Error.Code) != codes.FailedPrecondition || len(r.Error.Details) != 1 {
			t.Errorf("item 1: %v", r.Error)
		}
	} else if r.Response.GetFirstVersion() != 2 {
		t.Errorf("item 1: %v", r.Response)
	}
	if r := got[2]; codes.Code(r.GetError().GetCode()) != codes.InvalidArgument || len(r.Error.Details) != 1 {
		t.Errorf("item 2 (bad stream name): %v", r)
	}
	if r := got[3]; codes.Code(r.GetError().GetCode()) != codes.InvalidArgument {
		t.Errorf("item 3 (no request): %v", r)
	}
}

// TestAppendPipelineLimits checks that a batch outside 1..MaxPipelineBatch
// items ends the stream with a status naming the limit.
func TestAppendPipelineLimits(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, items := range []int{0, MaxPipelineBatch + 1} {
		st := openPipeline(t, n)
		b := &shoalv1.AppendBatch{}
		for i := range items {
			b.Items = append(b.Items, &shoalv1.AppendItem{Id: uint64(i),
				Request: &shoalv1.AppendRequest{Stream: "limits", Events: events("A")}})
		}
		if err := st.Send(b); err != nil {
			t.Fatal(err)
		}
		_, err := st.Recv()
		if s, _ := status.FromError(err); s.Code() != codes.InvalidArgument || !strings.Contains(s.Message(), "MaxPipelineBatch") {
			t.Fatalf("%d items: got %v, want InvalidArgument naming MaxPipelineBatch", items, err)
		} else if f := invalidField(s); f == nil || f.Field != "items" || !strings.Contains(f.Limit, strconv.Itoa(MaxPipelineBatch)) {
			t.Fatalf("%d items: details %v, want the field items and its limit", items, s.Details())
		}
	}
	// An item without a request is refused, naming what it lacks; the stream goes on.
	st := openPipeline(t, n)
	if err := st.Send(&shoalv1.AppendBatch{Items: []*shoalv1.AppendItem{{Id: 1}}}); err != nil {
		t.Fatal(err)
	}
	res, err := st.Recv()
	if err != nil || len(res.Results) != 1 || res.Results[0].Error == nil {
		t.Fatalf("an item without a request: %v, %v", res, err)
	}
	if s := res.Results[0].Error.Err(); status.Code(s) != codes.InvalidArgument {
		t.Fatalf("an item without a request: %v, want InvalidArgument", s)
	} else if f := invalidField(status.Convert(s)); f == nil || f.Field != "items[].request" {
		t.Fatalf("an item without a request: details %v, want the field items[].request", status.Convert(s).Details())
	}
	// Nothing of the refused batch was written.
	if _, err := readAll(ctx, c, &shoalv1.ReadRequest{Stream: "limits"}); status.Code(err) != codes.NotFound {
		t.Fatalf("read after refused batches: %v", err)
	}
}

// TestAppendPipelineItemTimeoutPastDuration: an item's timeout_ms too large for a
// time.Duration runs without a deadline, as a unary Append's grpc-timeout does, rather than
// wrapping to a deadline already passed (the item answered DEADLINE_EXCEEDED, its event
// written all the same).
func TestAppendPipelineItemTimeoutPastDuration(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := openPipeline(t, n)
	timeouts := []uint64{maxItemTimeoutMS, maxItemTimeoutMS + 1, math.MaxUint64}
	b := &shoalv1.AppendBatch{}
	for i, ms := range timeouts {
		b.Items = append(b.Items, &shoalv1.AppendItem{Id: uint64(i), TimeoutMs: ms,
			Request: &shoalv1.AppendRequest{Stream: fmt.Sprint("timeout-", i), Events: events("A")}})
	}
	if err := st.Send(b); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	got, err := recvAll(st)
	if !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	for i, ms := range timeouts {
		if r := got[uint64(i)]; r.GetError() != nil || r.GetResponse() == nil {
			t.Errorf("timeout_ms %d: answered %v, want written", ms, r)
		}
		if evs, err := readAll(ctx, c, &shoalv1.ReadRequest{Stream: fmt.Sprint("timeout-", i)}); err != nil || len(evs) != 1 {
			t.Errorf("timeout_ms %d: stream holds %d events (%v), want 1", ms, len(evs), err)
		}
	}
}

// TestClientPipelinesConcurrentAppends has many goroutines append through one
// client: every append succeeds with dense versions, errors keep their kind,
// and the appends travel over the pipeline.
func TestClientPipelinesConcurrentAppends(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, []string{n.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, before := pipelineItems(t, n.reg)
	const workers, per = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("c-%d", w)
			for i := range per {
				r, err := cl.Append(ctx, stream, client.Exact(uint64(i)-1), client.Event{Type: "T", Data: []byte("x")})
				if i == 0 {
					r, err = cl.Append(ctx, stream, client.NoStream, client.Event{Type: "T", Data: []byte("x")})
				}
				if err != nil {
					errs <- fmt.Errorf("%s #%d: %w", stream, i, err)
					return
				}
				if r.FirstVersion != uint64(i) {
					errs <- fmt.Errorf("%s #%d: version %d", stream, i, r.FirstVersion)
					return
				}
			}
			_, err := cl.Append(ctx, stream, client.Exact(0), client.Event{Type: "T"})
			var wev *client.WrongExpectedVersionError
			if !errors.As(err, &wev) || wev.Actual != per-1 {
				errs <- fmt.Errorf("%s: stale expected version: got %v", stream, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every append went over the pipeline: the received and sent sides
	// together count more than one message per append only if nothing was
	// grouped, and at least one each.
	sum, count := pipelineItems(t, n.reg)
	if count == before || sum < 2*workers*(per+1) {
		t.Errorf("pipeline: %v items in %d messages, want at least %d items", sum, count-before, 2*workers*(per+1))
	}
	t.Logf("pipeline: %v items (received and answered) in %d messages", sum, count-before)
}

// pipelineItems returns the items and messages counted by
// shoal_append_pipeline_batch_items (both directions).
func pipelineItems(t *testing.T, reg *prometheus.Registry) (items float64, msgs uint64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "shoal_append_pipeline_batch_items" {
			for _, m := range mf.GetMetric() {
				items += m.GetHistogram().GetSampleSum()
				msgs += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return items, msgs
}

// openPipeline opens an AppendPipeline stream to n, ended with the test.
func openPipeline(t *testing.T, n *Node) shoalv1.Streams_AppendPipelineClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	st, err := shoalv1.NewStreamsClient(dial(t, n.Addr())).AppendPipeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// sendItems sends st one batch of items, of IDs ids, each carrying req.
func sendItems(t *testing.T, st shoalv1.Streams_AppendPipelineClient, req *shoalv1.AppendRequest, ids ...uint64) {
	t.Helper()
	b := &shoalv1.AppendBatch{}
	for _, id := range ids {
		b.Items = append(b.Items, &shoalv1.AppendItem{Id: id, Request: req})
	}
	if err := st.Send(b); err != nil {
		t.Fatal(err)
	}
}

// closing starts closing n and returns once n is closing; Close's error arrives on the
// channel.
func closing(n *Node) <-chan error {
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	<-n.Done()
	return closed
}

// blockPipeline makes n's AppendPipeline items wait for their context or for
// release, and reports each item's start on started; released, they answer
// LastVersion 7 without appending.
func blockPipeline(n *Node) (started chan string, release chan struct{}) {
	return holdPipeline(n, func(context.Context, *shoalv1.AppendRequest) (*shoalv1.AppendResponse, error) {
		return &shoalv1.AppendResponse{LastVersion: 7}, nil
	})
}

// holdPipeline makes n's AppendPipeline items wait for their context or for release,
// reporting each item's start on started, and then run as run runs them.
func holdPipeline(n *Node, run pipelineAppendFunc) (started chan string, release chan struct{}) {
	started, release = make(chan string, 16), make(chan struct{})
	f := pipelineAppendFunc(func(ctx context.Context, req *shoalv1.AppendRequest) (*shoalv1.AppendResponse, error) {
		started <- req.Stream
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-release:
		}
		return run(ctx, req)
	})
	n.streams.pipelineAppend.Store(&f)
	return started, release
}

// TestAppendPipelineCancel checks that a cancel from the client ends the item
// as a cancelled unary call ends, while the stream goes on.
func TestAppendPipelineCancel(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	started, release := blockPipeline(n)
	st := openPipeline(t, n)
	req := &shoalv1.AppendRequest{Stream: "c", Events: events("A")}
	sendItems(t, st, req, 1, 2)
	<-started
	<-started
	if err := st.Send(&shoalv1.AppendBatch{Cancel: []uint64{1, 99}}); err != nil {
		t.Fatal(err)
	}
	m, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Results) != 1 || m.Results[0].Id != 1 || codes.Code(m.Results[0].GetError().GetCode()) != codes.Canceled {
		t.Fatalf("after cancelling item 1: %v", m)
	}
	close(release)
	m, err = st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Results) != 1 || m.Results[0].Id != 2 || m.Results[0].Response.GetLastVersion() != 7 {
		t.Fatalf("item 2: %v", m)
	}
}

// TestAppendPipelineDuplicateID checks that an item whose ID is already in flight on the
// stream ends the stream with INVALID_ARGUMENT naming the field, without running it or the
// rest of its batch, while the item in flight is answered first.
func TestAppendPipelineDuplicateID(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	started, release := blockPipeline(n)
	st := openPipeline(t, n)
	req := &shoalv1.AppendRequest{Stream: "dup", Events: events("A")}
	sendItems(t, st, req, 1)
	<-started
	sendItems(t, st, req, 2, 1, 3)
	<-started // item 2 runs: it came before the duplicate
	// Item 2 may start before the receiver reads the duplicate: released at once, item 1 could
	// end first, and ID 1 would no longer be in flight when it is read (CI met that once).
	time.Sleep(300 * time.Millisecond)
	close(release)
	got, end := recvAll(st)
	if len(got) != 2 || got[1].GetResponse().GetLastVersion() != 7 || got[2].GetResponse().GetLastVersion() != 7 {
		t.Errorf("answers %v, want items 1 and 2 applied and nothing else", got)
	}
	s := status.Convert(end)
	if f := invalidField(s); s.Code() != codes.InvalidArgument || f.GetField() != "items[].id" || !strings.Contains(s.Message(), "ID 1 is already in flight") {
		t.Errorf("stream ended with %v (field %v), want INVALID_ARGUMENT naming items[].id", end, f)
	}
	select {
	case s := <-started:
		t.Errorf("an item after the duplicate ran (stream %q)", s)
	default:
	}
}

// TestAppendPipelineDuplicateIDWhileDraining: an item whose ID is in flight, read while the
// node shuts down, is not answered as refused (errPipelineDrained) under that ID, which the
// item in flight answers too, possibly applied: the two answers could not be told apart.
func TestAppendPipelineDuplicateIDWhileDraining(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	started, release := blockPipeline(n)
	st := openPipeline(t, n)
	req := &shoalv1.AppendRequest{Stream: "dup-drain", Events: events("A")}
	sendItems(t, st, req, 1)
	<-started
	closed := closing(n)
	// Item 2, answered as refused, says the pipeline drains.
	sendItems(t, st, req, 2)
	var answers []*shoalv1.AppendItemResult
	for len(answers) == 0 {
		m, err := st.Recv()
		if err != nil {
			t.Fatalf("before item 2's answer: %v", err)
		}
		answers = append(answers, m.Results...)
	}
	if answers[0].Id != 2 || status.Code(answers[0].GetError().Err()) != codes.Unavailable {
		t.Fatalf("item 2, read while draining: %v", answers[0])
	}
	sendItems(t, st, req, 1)
	time.Sleep(300 * time.Millisecond) // the receiver reads it, while item 1 is in flight
	close(release)
	var end error
	for {
		m, err := st.Recv()
		if err != nil {
			end = err
			break
		}
		answers = append(answers, m.Results...)
	}
	var ones []*shoalv1.AppendItemResult
	for _, r := range answers {
		if r.Id == 1 {
			ones = append(ones, r)
		}
	}
	if len(ones) != 1 || ones[0].GetResponse().GetLastVersion() != 7 {
		t.Errorf("ID 1 answered %v, want once, applied", ones)
	}
	if status.Code(end) != codes.Unavailable {
		t.Errorf("stream ended with %v, want Unavailable", end)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestAppendPipelineDrainsOnClose checks that a node shutting down answers
// the items it started, refuses new ones as Unavailable and ends the stream
// as Unavailable, so that the client retries elsewhere at once.
func TestAppendPipelineDrainsOnClose(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	started, release := blockPipeline(n)
	st := openPipeline(t, n)
	req := &shoalv1.AppendRequest{Stream: "d", Events: events("A")}
	sendItems(t, st, req, 1)
	<-started
	closed := closing(n)
	close(release)
	got, end := recvAll(st)
	if r := got[1]; r.GetResponse().GetLastVersion() != 7 {
		t.Errorf("item started before the close: %v", r)
	}
	if status.Code(end) != codes.Unavailable {
		t.Errorf("stream ended with %v, want Unavailable", end)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestAppendPipelineAnswersItemsReadWhileDraining checks that an item read
// while the node shuts down is answered on the stream, even when it arrives
// as the sender is about to send its last answer: answered Unavailable with
// the shutting-down message, which clients take for a refusal before
// anything ran, as they take the stream's end status.
func TestAppendPipelineAnswersItemsReadWhileDraining(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	started, release := blockPipeline(n)
	st := openPipeline(t, n)
	req := &shoalv1.AppendRequest{Stream: "late", Events: events("A")}
	sendItems(t, st, req, 1)
	<-started
	// When the finishing sender first finds nothing to send (item 1's answer
	// has left), item 2 arrives, and the receiver reads it before the
	// sender's last look.
	var once sync.Once
	late := make(chan error, 1)
	hook := func(p *pipeline) {
		once.Do(func() {
			if err := st.Send(&shoalv1.AppendBatch{Items: []*shoalv1.AppendItem{{Id: 2, Request: req}}}); err != nil {
				late <- err
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for len(p.out) == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if len(p.out) == 0 {
				late <- errors.New("the receiver did not answer item 2")
				return
			}
			late <- nil
		})
	}
	n.streams.pipelineFinishing.Store(&hook)
	closed := closing(n)
	close(release)
	got, end := recvAll(st)
	if err := <-late; err != nil {
		t.Fatalf("sending item 2 while the pipeline drains: %v", err)
	}
	if r := got[1]; r.GetResponse().GetLastVersion() != 7 {
		t.Errorf("item started before the close: %v", r)
	}
	r, ok := got[2]
	if !ok {
		t.Fatalf("item 2, read while the pipeline drained, was not answered (stream ended with %v)", end)
	}
	for what, err := range map[string]error{"item 2's answer": r.GetError().Err(), "the stream's end": end} {
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), shuttingDownMsg) {
			t.Errorf("%s: %v, want Unavailable saying %q", what, err, shuttingDownMsg)
		}
		if mayHaveArrived(err) {
			t.Errorf("%s (%v) is taken for an outcome unknown, not for a refusal", what, err)
		}
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// recvAll reads a pipeline's answers, by item ID, until the stream ends, and returns them with
// the stream's end.
func recvAll(st shoalv1.Streams_AppendPipelineClient) (map[uint64]*shoalv1.AppendItemResult, error) {
	got := map[uint64]*shoalv1.AppendItemResult{}
	for {
		m, err := st.Recv()
		if err != nil {
			return got, err
		}
		for _, r := range m.Results {
			got[r.Id] = r
		}
	}
}

// invalidField returns st's InvalidField detail, nil without one.
func invalidField(st *status.Status) *shoalv1.InvalidField {
	for _, d := range st.Details() {
		if f, ok := d.(*shoalv1.InvalidField); ok {
			return f
		}
	}
	return nil
}

// TestAppendPipelineItemTimeoutCountsFromArrival: an item's timeout_ms counts from the arrival
// of its batch, not from when it gets one of the stream's slots. An item that waited behind
// MaxPipelineInFlight appends (to a shard without quorum, say) past its deadline answers
// DEADLINE_EXCEEDED without being run: it was run, and could be proposed, after its caller
// had given up on it.
func TestAppendPipelineItemTimeoutCountsFromArrival(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	var late atomic.Int32 // runs of the item that waited
	var held atomic.Int32 // items holding their slots
	release := make(chan struct{})
	f := pipelineAppendFunc(func(ctx context.Context, req *shoalv1.AppendRequest) (*shoalv1.AppendResponse, error) {
		if req.Stream == "late" {
			late.Add(1)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return &shoalv1.AppendResponse{}, nil
		}
		held.Add(1)
		<-release
		return &shoalv1.AppendResponse{}, nil
	})
	n.streams.pipelineAppend.Store(&f)
	st := openPipeline(t, n)
	req := &shoalv1.AppendRequest{Stream: "held", Events: events("A")}
	id := uint64(0)
	for range MaxPipelineInFlight / MaxPipelineBatch {
		items := make([]*shoalv1.AppendItem, MaxPipelineBatch)
		for i := range items {
			id++
			items[i] = &shoalv1.AppendItem{Id: id, Request: req}
		}
		if err := st.Send(&shoalv1.AppendBatch{Items: items}); err != nil {
			t.Fatal(err)
		}
	}
	lateID := id + 1
	if err := st.Send(&shoalv1.AppendBatch{Items: []*shoalv1.AppendItem{{Id: lateID, TimeoutMs: 100,
		Request: &shoalv1.AppendRequest{Stream: "late", Events: events("A")}}}}); err != nil {
		t.Fatal(err)
	}
	// Every slot held, the receiver reads the late item's batch, already sent, and waits for
	// a slot past the item's deadline. (A fixed sleep from the sends on let a loaded machine
	// read the batch after the release.)
	for deadline := time.Now().Add(30 * time.Second); held.Load() < MaxPipelineInFlight; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d items hold slots after 30s, want %d", held.Load(), MaxPipelineInFlight)
		}
	}
	time.Sleep(500 * time.Millisecond)
	close(release)
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range m.Results {
			if r.Id != lateID {
				continue
			}
			if code := codes.Code(r.GetError().GetCode()); code != codes.DeadlineExceeded || late.Load() != 1 {
				t.Fatalf("the item that waited past its deadline answered %v (%v)", code, r)
			}
			return
		}
	}
}

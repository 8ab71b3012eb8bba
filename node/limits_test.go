package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
)

// subscriptionGoroutines counts the goroutines serving a subscription (or any read) on the
// nodes of this process.
func subscriptionGoroutines() int {
	return goroutinesIn("node.(*Node).followStream", "node.(*Node).readShard")
}

// goroutinesIn counts the goroutines of this process with any of funcs on their stacks.
func goroutinesIn(funcs ...string) int {
	buf := make([]byte, 16<<20)
	buf = buf[:runtime.Stack(buf, true)]
	k := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, f := range funcs {
			if strings.Contains(g, f) {
				k++
				break
			}
		}
	}
	return k
}

// gaugeValue is the value of the unlabelled gauge name on reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// TestSubscriptionLimit: a node holds at most Config.MaxSubscriptions subscriptions, stream and
// shard ones together. One client on one connection opening more is refused each one beyond
// the limit with RESOURCE_EXHAUSTED naming the limit and its value, at no cost to the node (no
// goroutine is left serving it), counted in shoal_subscriptions_refused_total; reads without
// follow and long polls go on; a subscription that ends gives its place back. Without the
// limit every subscription opens, each holding a goroutine of the node for as long as the
// client keeps it (about 30 KiB and a heartbeat a second: 20,000 from one connection took a
// server from 33 MB to 650 MB resident).
func TestSubscriptionLimit(t *testing.T) {
	const limit = 3
	_, reg, c := limitedNode(t, func(cfg *Config) { cfg.MaxSubscriptions = limit })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := subscriptionGoroutines()

	// Opens a subscription and waits for its first page (a heartbeat: open on the server).
	type sub struct {
		recv   func() error
		cancel context.CancelFunc
	}
	subscribe := func(i int, shardKind bool) sub {
		sctx, scancel := context.WithCancel(ctx)
		var recv func() error
		if shardKind {
			rs, err := c.ReadShard(sctx, &shoalv1.ReadShardRequest{Shard: uint32(i % 4), Follow: true})
			if err != nil {
				t.Fatal(err)
			}
			recv = func() error { _, err := rs.Recv(); return err }
		} else {
			rs, err := c.Read(sctx, &shoalv1.ReadRequest{Stream: fmt.Sprint("absent-", i), Follow: true})
			if err != nil {
				t.Fatal(err)
			}
			recv = func() error { _, err := rs.Recv(); return err }
		}
		return sub{recv, scancel}
	}
	var open []sub
	for i := range limit {
		s := subscribe(i, i == limit-1)
		if err := s.recv(); err != nil {
			t.Fatalf("subscription %d of %d: %v", i+1, limit, err)
		}
		open = append(open, s)
	}

	const extra = 100
	for i := range extra {
		s := subscribe(limit+i, i%2 == 1)
		err := s.recv()
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("subscription %d with %d held (limit %d): %v, want RESOURCE_EXHAUSTED", limit+i+1, limit, limit, err)
		}
		if i == 0 {
			msg := status.Convert(err).Message()
			if !strings.Contains(msg, fmt.Sprintf("--max-subscriptions %d", limit)) || !strings.Contains(msg, "solo") {
				t.Fatalf("refusal %q does not name the limit, its value and the node", msg)
			}
			qf := detail[*errdetails.QuotaFailure](t, err, codes.ResourceExhausted)
			if v := qf.GetViolations(); len(v) != 1 || !strings.HasPrefix(v[0].GetDescription(), fmt.Sprintf("max-subscriptions %d", limit)) {
				t.Fatalf("QuotaFailure %v does not name the limit", qf)
			}
		}
		s.cancel()
	}
	if got := subscriptionGoroutines() - base; got != limit {
		t.Fatalf("%d goroutines serve subscriptions after %d were opened, want the %d within the limit", got, limit+extra, limit)
	}
	if held := gaugeValue(t, reg, "shoal_subscriptions_held"); held != limit {
		t.Fatalf("shoal_subscriptions_held %v, want %d", held, limit)
	}
	stream, shard := labelledCounter(t, reg, "shoal_subscriptions_refused_total", "stream"),
		labelledCounter(t, reg, "shoal_subscriptions_refused_total", "shard")
	if stream != extra/2 || shard != extra/2 {
		t.Fatalf("shoal_subscriptions_refused_total stream %v, shard %v, want %d each", stream, shard, extra/2)
	}

	// Reads without follow and long polls hold no place.
	if _, err := readAll(ctx, c, &shoalv1.ReadRequest{Stream: "absent-0"}); status.Code(err) != codes.NotFound {
		t.Fatalf("plain read at the limit: %v, want NOT_FOUND", err)
	}
	lp, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: 0, WaitMs: 10})
	if err == nil {
		_, err = lp.Recv()
	}
	if err != nil {
		t.Fatalf("long poll at the limit: %v", err)
	}

	// A subscription that ends gives its place back.
	open[0].cancel()
	deadline := time.Now().Add(10 * time.Second)
	for gaugeValue(t, reg, "shoal_subscriptions_held") != limit-1 {
		if time.Now().After(deadline) {
			t.Fatal("a cancelled subscription still holds its place")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := subscribe(0, false)
	defer s.cancel()
	if err := s.recv(); err != nil {
		t.Fatalf("subscription after one ended: %v", err)
	}
}

// labelledCounter is the value of the series of counter name whose one label is label.
func labelledCounter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series %s{%s}", name, label)
	return 0
}

// checkRefusal fails t unless err is node solo's refusal of a call at the limit that flag sets
// to limit: RESOURCE_EXHAUSTED, whose message names the node, the flag and the limit, with a
// QuotaFailure naming them too.
func checkRefusal(t *testing.T, err error, flag string, limit int) {
	t.Helper()
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("call past --%s %d: %v, want RESOURCE_EXHAUSTED", flag, limit, err)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, fmt.Sprintf("(--%s %d)", flag, limit)) || !strings.Contains(msg, "node solo") {
		t.Fatalf("refusal %q does not name the limit, its value and the node", msg)
	}
	qf := detail[*errdetails.QuotaFailure](t, err, codes.ResourceExhausted)
	if v := qf.GetViolations(); len(v) != 1 || !strings.HasPrefix(v[0].GetDescription(), fmt.Sprintf("%s %d:", flag, limit)) {
		t.Fatalf("QuotaFailure %v does not name the limit", qf)
	}
}

// waitGauge waits up to 10 s for the unlabelled gauge name on reg to read want.
func waitGauge(t *testing.T, reg *prometheus.Registry, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := gaugeValue(t, reg, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %v, want %v", name, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLongPollLimit: a node holds at most Config.MaxLongPolls long polls (shard reads with
// wait_ms) at once. Past the limit each one is refused at once with RESOURCE_EXHAUSTED naming
// --max-long-polls and its value, leaving no goroutine serving it, counted in
// shoal_long_polls_refused_total; subscriptions and reads that do not wait go on; a long poll
// that ends, cancelled or answered, gives its place back. Without the limit every long poll
// waits, each holding a goroutine for up to a minute, and a client that keeps opening them
// holds as many as it likes.
func TestLongPollLimit(t *testing.T) {
	const limit = 3
	_, reg, c := limitedNode(t, func(cfg *Config) { cfg.MaxLongPolls = limit })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := goroutinesIn("node.(*Node).readShard")

	// poll long-polls shard i from its end (nothing comes: it waits up to wait ms).
	poll := func(ctx context.Context, i int, wait uint32) shoalv1.Streams_ReadShardClient {
		lp, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: uint32(i % 4), FromEnd: true, WaitMs: wait})
		if err != nil {
			t.Fatal(err)
		}
		return lp
	}
	var cancels []context.CancelFunc
	for i := range limit {
		pctx, pcancel := context.WithCancel(ctx)
		defer pcancel()
		poll(pctx, i, 50_000)
		cancels = append(cancels, pcancel)
	}
	waitGauge(t, reg, "shoal_long_polls_held", limit)

	const extra = 20
	for i := range extra {
		_, err := poll(ctx, limit+i, 50_000).Recv()
		if i == 0 {
			checkRefusal(t, err, "max-long-polls", limit)
		} else if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("long poll %d with %d held (limit %d): %v, want RESOURCE_EXHAUSTED", limit+i+1, limit, limit, err)
		}
	}
	if got := goroutinesIn("node.(*Node).readShard") - base; got != limit {
		t.Fatalf("%d goroutines serve long polls after %d were opened, want the %d within the limit", got, limit+extra, limit)
	}
	if held := gaugeValue(t, reg, "shoal_long_polls_held"); held != limit {
		t.Fatalf("shoal_long_polls_held %v, want %d", held, limit)
	}
	if refused := counterValue(t, reg, "shoal_long_polls_refused_total"); refused != extra {
		t.Fatalf("shoal_long_polls_refused_total %v, want %d", refused, extra)
	}

	// Subscriptions and reads that do not wait take no long poll's place.
	subscribeOnce(t, ctx, c, "the long-poll limit")
	plain, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: 1})
	if err == nil {
		_, err = plain.Recv()
	}
	if err != nil {
		t.Fatalf("shard read without wait at the long-poll limit: %v", err)
	}

	// A long poll that ends gives its place back, as does one its wait answered.
	cancels[0]()
	waitGauge(t, reg, "shoal_long_polls_held", limit-1)
	if _, err := poll(ctx, 0, 10).Recv(); err != nil {
		t.Fatalf("long poll after one ended: %v", err)
	}
	waitGauge(t, reg, "shoal_long_polls_held", limit-1)
	if refused := counterValue(t, reg, "shoal_long_polls_refused_total"); refused != extra {
		t.Fatalf("shoal_long_polls_refused_total %v after places freed, want %d", refused, extra)
	}
}

// TestAppendPipelineLimit: a node holds at most Config.MaxAppendPipelines AppendPipeline
// streams at once. Past the limit each one is refused with RESOURCE_EXHAUSTED naming
// --max-append-pipelines and its value before it reads anything: the appends it carried are
// not written, no goroutine is left serving it, and shoal_append_pipelines_refused_total counts
// it; unary appends go on; a stream that ends gives its place back. Without the limit every
// stream opens, each holding three goroutines and its buffers for as long as its client keeps
// it, and the appends of all of them run.
func TestAppendPipelineLimit(t *testing.T) {
	const limit = 2
	n, reg, c := limitedNode(t, func(cfg *Config) { cfg.MaxAppendPipelines = limit })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := goroutinesIn("node.(*pipeline).receive")

	// appendOn sends one append of an event to stream on st and returns the first answer.
	appendOn := func(st shoalv1.Streams_AppendPipelineClient, stream string) (*shoalv1.AppendResults, error) {
		err := st.Send(&shoalv1.AppendBatch{Items: []*shoalv1.AppendItem{{Id: 1,
			Request: &shoalv1.AppendRequest{Stream: stream, Events: events("A")}}}})
		if err != nil && !errors.Is(err, io.EOF) { // io.EOF: the stream ended, Recv says how
			return nil, err
		}
		return st.Recv()
	}
	var open []shoalv1.Streams_AppendPipelineClient
	for i := range limit {
		st := openPipeline(t, n)
		if m, err := appendOn(st, fmt.Sprint("held-", i)); err != nil || len(m.GetResults()) != 1 || m.Results[0].Error != nil {
			t.Fatalf("pipeline %d of %d: %v, %v", i+1, limit, m, err)
		}
		open = append(open, st)
	}

	const extra = 10
	for i := range extra {
		_, err := appendOn(openPipeline(t, n), fmt.Sprint("refused-", i))
		if i == 0 {
			checkRefusal(t, err, "max-append-pipelines", limit)
		} else if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("pipeline %d with %d held (limit %d): %v, want RESOURCE_EXHAUSTED", limit+i+1, limit, limit, err)
		}
	}
	for i := range extra {
		if _, err := readAll(ctx, c, &shoalv1.ReadRequest{Stream: fmt.Sprint("refused-", i)}); status.Code(err) != codes.NotFound {
			t.Fatalf("the append a refused pipeline carried: read %v, want NOT_FOUND (nothing written)", err)
		}
	}
	if got := goroutinesIn("node.(*pipeline).receive") - base; got != limit {
		t.Fatalf("%d pipelines served after %d were opened, want the %d within the limit", got, limit+extra, limit)
	}
	if held := gaugeValue(t, reg, "shoal_append_pipelines_held"); held != limit {
		t.Fatalf("shoal_append_pipelines_held %v, want %d", held, limit)
	}
	if refused := counterValue(t, reg, "shoal_append_pipelines_refused_total"); refused != extra {
		t.Fatalf("shoal_append_pipelines_refused_total %v, want %d", refused, extra)
	}

	// Unary appends take no place.
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "unary", Events: events("A")}); err != nil {
		t.Fatalf("unary append at the pipeline limit: %v", err)
	}

	// A stream that ends gives its place back.
	if err := open[0].CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := open[0].Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("closed pipeline: %v, want its end", err)
	}
	waitGauge(t, reg, "shoal_append_pipelines_held", limit-1)
	if m, err := appendOn(openPipeline(t, n), "after"); err != nil || len(m.GetResults()) != 1 || m.Results[0].Error != nil {
		t.Fatalf("pipeline after one ended: %v, %v", m, err)
	}
}

// TestClientAppendsAtPipelineLimit: a Go client whose pipeline stream a node refuses at its
// --max-append-pipelines appends to it with unary calls instead, at once and without a retry,
// and does not ask for a stream again with each append: its appends succeed, each written
// once. Before, the refusal failed the append that opened the stream as a stream reset; its
// retries met the refusal again until they gave up.
func TestClientAppendsAtPipelineLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, t.TempDir())
	cfg.Registry = reg
	cfg.DisableHTTP = true
	cfg.MaxAppendPipelines = 1
	n := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Another client's stream holds the node's one place.
	st := openPipeline(t, n)
	if err := st.Send(&shoalv1.AppendBatch{Items: []*shoalv1.AppendItem{{Id: 1,
		Request: &shoalv1.AppendRequest{Stream: "other", Events: events("A")}}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := st.Recv(); err != nil || m.Results[0].Error != nil {
		t.Fatalf("the pipeline within the limit: %v, %v", m, err)
	}

	cl, err := client.Dial(ctx, []string{n.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const appends = 5
	for i := range appends {
		exp := client.Exact(uint64(i) - 1)
		if i == 0 {
			exp = client.NoStream
		}
		r, err := cl.Append(ctx, "c", exp, client.Event{Type: "T"})
		if err != nil || r.FirstVersion != uint64(i) {
			t.Fatalf("append %d past the node's pipeline limit: %+v, %v", i, r, err)
		}
	}
	if s := cl.Stats(); s.Retries != 0 {
		t.Errorf("retries: %d, want 0 (the refused stream is not a failure)", s.Retries)
	}
	if refused := counterValue(t, reg, "shoal_append_pipelines_refused_total"); refused != 1 {
		t.Errorf("shoal_append_pipelines_refused_total %v, want 1 (the client asked once)", refused)
	}
	got, err := readAll(ctx, shoalv1.NewStreamsClient(dial(t, n.Addr())), &shoalv1.ReadRequest{Stream: "c"})
	if err != nil || len(got) != appends {
		t.Fatalf("stream c: %d events, %v; want %d", len(got), err, appends)
	}
}

// TestInvalidReadAtLimit: a read that is invalid is refused as such (INVALID_ARGUMENT, naming
// the field) also when the node holds as many subscriptions and long polls as it may. It was
// checked only once it held a place: at the limit it was refused with RESOURCE_EXHAUSTED,
// which clients retry, and its caller never learnt that the request itself was wrong.
func TestInvalidReadAtLimit(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.DisableHTTP = true
	cfg.MaxSubscriptions, cfg.MaxLongPolls = 1, 1
	n := startNode(t, cfg)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Take the only subscription and the only long poll.
	sub, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: 0, Follow: true})
	if err == nil {
		_, err = sub.Recv()
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: 1, FromEnd: true, WaitMs: 50_000}); err != nil {
		t.Fatal(err)
	}
	waitGauge(t, n.reg, "shoal_long_polls_held", 1)

	for _, tc := range []struct {
		name  string
		field string
		open  func() (func() error, error)
	}{
		{"stream subscription backward", "follow", func() (func() error, error) {
			rs, err := c.Read(ctx, &shoalv1.ReadRequest{Stream: "s", Follow: true, Backward: true})
			return func() error { _, err := rs.Recv(); return err }, err
		}},
		{"stream subscription of an empty name", "stream", func() (func() error, error) {
			rs, err := c.Read(ctx, &shoalv1.ReadRequest{Follow: true})
			return func() error { _, err := rs.Recv(); return err }, err
		}},
		{"shard subscription with a count", "count", func() (func() error, error) {
			rs, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: 0, Follow: true, Count: 5})
			return func() error { _, err := rs.Recv(); return err }, err
		}},
		{"shard subscription of a shard out of range", "shard", func() (func() error, error) {
			rs, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: 1 << 20, Follow: true})
			return func() error { _, err := rs.Recv(); return err }, err
		}},
		{"long poll past the longest wait", "wait_ms", func() (func() error, error) {
			rs, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: 0, WaitMs: maxWaitMS + 1})
			return func() error { _, err := rs.Recv(); return err }, err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recv, err := tc.open()
			if err == nil {
				err = recv()
			}
			if f := detail[*shoalv1.InvalidField](t, err, codes.InvalidArgument); f.GetField() != tc.field {
				t.Errorf("at the limits: field %q, want %q (%v)", f.GetField(), tc.field, err)
			}
		})
	}
}

// TestAppendBytesLimit: the appends a node holds at once are bounded by their bytes
// (--max-append-bytes), not only by calls: past it an append, unary or on an append stream, is
// refused with RESOURCE_EXHAUSTED naming the limit, before it is routed, and writes nothing.
// One larger than the limit runs when the node holds no other, and what the appends held is
// given back when they are answered.
func TestAppendBytesLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, t.TempDir())
	cfg.Registry = reg
	cfg.DisableHTTP = true
	const limit = 1 << 20
	cfg.MaxAppendBytes = limit
	n := startNode(t, cfg)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Appends in flight elsewhere hold all but 10 bytes of the limit.
	release, err := n.limits.appendBytes.take(n.Name(), limit-10, n.metrics.appendBytesRefused)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Append(ctx, &shoalv1.AppendRequest{Stream: "refused", Events: events("A")})
	checkRefusal(t, err, "max-append-bytes", limit)
	st := openPipeline(t, n)
	if err := st.Send(&shoalv1.AppendBatch{Items: []*shoalv1.AppendItem{{Id: 1,
		Request: &shoalv1.AppendRequest{Stream: "refused-streamed", Events: events("A")}}}}); err != nil {
		t.Fatal(err)
	}
	m, err := st.Recv()
	if err != nil || len(m.GetResults()) != 1 || codes.Code(m.Results[0].GetError().GetCode()) != codes.ResourceExhausted {
		t.Fatalf("streamed append past --max-append-bytes: %v, %v; want RESOURCE_EXHAUSTED", m, err)
	}
	for _, s := range []string{"refused", "refused-streamed"} {
		if _, err := readAll(ctx, c, &shoalv1.ReadRequest{Stream: s}); status.Code(err) != codes.NotFound {
			t.Fatalf("a refused append to %s: read %v, want NOT_FOUND (nothing written)", s, err)
		}
	}
	if refused := counterValue(t, reg, "shoal_append_bytes_refused_total"); refused != 2 {
		t.Fatalf("shoal_append_bytes_refused_total %v, want 2", refused)
	}
	release()

	// Alone, an append larger than the limit runs; its bytes are given back once answered.
	big := events("A")
	big[0].Data = make([]byte, 2*limit)
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "big", Events: big}); err != nil {
		t.Fatalf("an append larger than --max-append-bytes with none held: %v", err)
	}
	if held := gaugeValue(t, reg, "shoal_append_bytes_held"); held != 0 {
		t.Fatalf("shoal_append_bytes_held %v after every append was answered, want 0", held)
	}
}

// limitedNode starts a node (no HTTP port) with its limits set by limit, and returns it, its
// registry and a client of it.
func limitedNode(t *testing.T, limit func(*Config)) (*Node, *prometheus.Registry, shoalv1.StreamsClient) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, t.TempDir())
	cfg.Registry = reg
	cfg.DisableHTTP = true
	limit(&cfg)
	n := startNode(t, cfg)
	return n, reg, shoalv1.NewStreamsClient(dial(t, n.Addr()))
}

// subscribeOnce opens a subscription of shard 1 and takes its first answer, at (what) a limit
// that does not count it.
func subscribeOnce(t *testing.T, ctx context.Context, c shoalv1.StreamsClient, what string) {
	t.Helper()
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	sub, err := c.ReadShard(sctx, &shoalv1.ReadShardRequest{Shard: 1, Follow: true})
	if err == nil {
		_, err = sub.Recv()
	}
	if err != nil {
		t.Fatalf("subscription at %s: %v", what, err)
	}
}

// TestReadLimit: a node holds at most Config.MaxReads reads that neither follow nor wait
// (stream and shard reads, stream lists) at once: a client that stops taking a read's pages
// holds its place, and past the limit each read is refused with RESOURCE_EXHAUSTED naming
// --max-reads and its value, counted by kind in shoal_reads_refused_total; subscriptions go
// on; a read that ends gives its place back. Without the limit every such read holds a
// goroutine and a page for as long as its client keeps it.
func TestReadLimit(t *testing.T) {
	const limit = 2
	n, reg, c := limitedNode(t, func(cfg *Config) { cfg.MaxReads = limit })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// 8 MiB in one stream: more than a read's flow-control window, so a read whose client
	// takes nothing stays open, its server blocked sending.
	for range 32 {
		evs := events("Big", "Big", "Big", "Big")
		for _, e := range evs {
			e.Data, e.ContentType = make([]byte, 64<<10), ""
		}
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "big", Events: evs}); err != nil {
			t.Fatal(err)
		}
	}
	var cancels []context.CancelFunc
	for range limit {
		rctx, rcancel := context.WithCancel(ctx)
		defer rcancel()
		if _, err := c.Read(rctx, &shoalv1.ReadRequest{Stream: "big"}); err != nil {
			t.Fatal(err)
		}
		cancels = append(cancels, rcancel)
	}
	waitGauge(t, reg, "shoal_reads_held", limit)

	r, err := c.Read(ctx, &shoalv1.ReadRequest{Stream: "big"})
	if err == nil {
		_, err = r.Recv()
	}
	checkRefusal(t, err, "max-reads", limit)
	sr, err := c.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: 0})
	if err == nil {
		_, err = sr.Recv()
	}
	checkRefusal(t, err, "max-reads", limit)
	ls, err := c.ListStreams(ctx, &shoalv1.ListStreamsRequest{Shard: 0})
	if err == nil {
		_, err = ls.Recv()
	}
	checkRefusal(t, err, "max-reads", limit)
	for _, kind := range []string{"stream", "shard", "list"} {
		if got := testutil.ToFloat64(n.metrics.readsRefused.WithLabelValues(kind)); got != 1 {
			t.Fatalf("shoal_reads_refused_total{kind=%q} %v, want 1", kind, got)
		}
	}

	// A subscription takes no read's place.
	subscribeOnce(t, ctx, c, "the read limit")

	// A read that ends gives its place back.
	cancels[0]()
	waitGauge(t, reg, "shoal_reads_held", limit-1)
	got := 0
	r, err = c.Read(ctx, &shoalv1.ReadRequest{Stream: "big"})
	for err == nil {
		var page *shoalv1.ReadResponse
		if page, err = r.Recv(); err == nil {
			got += len(page.GetEvents())
		}
	}
	if err != io.EOF || got != 128 {
		t.Fatalf("read after one ended: %d events, %v; want 128", got, err)
	}
	waitGauge(t, reg, "shoal_reads_held", limit-1)
}

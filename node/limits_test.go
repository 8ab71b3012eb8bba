package node

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// subscriptionGoroutines counts the goroutines serving a subscription (or any read) on the
// nodes of this process.
func subscriptionGoroutines() int {
	buf := make([]byte, 16<<20)
	buf = buf[:runtime.Stack(buf, true)]
	k := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "node.(*Node).followStream") || strings.Contains(g, "node.(*Node).readShard") {
			k++
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
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, t.TempDir())
	cfg.Registry = reg
	cfg.DisableHTTP = true
	const limit = 3
	cfg.MaxSubscriptions = limit
	n := startNode(t, cfg)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
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

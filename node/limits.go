package node

import (
	"fmt"
	"math"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// A node bounds the calls that hold its resources (a goroutine or more, buffers) for as long
// as their clients keep them, each kind by its own Config field and server flag:
//
//	kind                                  Config field         flag                    metric (held)
//	subscriptions (read with follow)      MaxSubscriptions     --max-subscriptions     shoal_subscriptions_held
//	long polls (ReadShard with wait_ms)   MaxLongPolls         --max-long-polls        shoal_long_polls_held
//	other reads (Read, ReadShard, List)   MaxReads             --max-reads             shoal_reads_held
//	AppendPipeline streams                MaxAppendPipelines   --max-append-pipelines  shoal_append_pipelines_held
//	bytes of appends in flight            MaxAppendBytes       --max-append-bytes      shoal_append_bytes_held
//
// A call past its kind's limit is refused before it costs anything, with RESOURCE_EXHAUSTED
// naming the node, the flag and the limit (and a QuotaFailure saying the same), which clients
// retry after a backoff; nothing of it runs. Calls a node relays to another (a read forwarded
// to a shard's leader) hold a place on both.

// heldLimit bounds the calls of one kind that a node holds at once. Its methods are safe for
// concurrent use.
type heldLimit struct {
	held  atomic.Int64 // places taken now
	limit int64
	flag  string // the server flag that sets limit, without dashes: "max-subscriptions"
	one   string // a call of the kind, for the refusal: "subscription"
	many  string // several: "subscriptions"
	what  string // what the limit counts, for the QuotaFailure: "subscriptions (reads with follow) held at once"
	// advice ends the refusal's message: what the client or the operator may do about it.
	advice string
	gauge  prometheus.Gauge // held, exported
}

// hold takes one place until the returned func is called. At the limit it refuses, counting
// the refusal in refused, with the error a client of node name gets.
func (l *heldLimit) hold(name string, refused prometheus.Counter) (release func(), err error) {
	if l.held.Add(1) > l.limit {
		l.held.Add(-1)
		refused.Inc()
		return nil, l.refusal(name)
	}
	l.gauge.Inc()
	return func() {
		l.held.Add(-1)
		l.gauge.Dec()
	}, nil
}

// refusal is the answer to a call refused by node name at the limit: RESOURCE_EXHAUSTED, with
// a QuotaFailure naming the limit.
func (l *heldLimit) refusal(name string) error {
	held := l.many
	if l.limit == 1 {
		held = l.one
	}
	return quotaRefusal(name, fmt.Sprintf("%s refused: node %s holds %d %s, its limit (--%s %d); %s",
		l.one, name, l.limit, held, l.flag, l.limit, l.advice), fmt.Sprintf("%s %d: %s", l.flag, l.limit, l.what))
}

// quotaRefusal is RESOURCE_EXHAUSTED with msg and a QuotaFailure of node name that says what
// (the flag, its value and what it bounds).
func quotaRefusal(name, msg, what string) error {
	st := status.New(codes.ResourceExhausted, msg)
	if ds, err := st.WithDetails(&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
		Subject: "node " + name, Description: what,
	}}}); err == nil {
		st = ds
	}
	return st.Err()
}

// limits are a node's heldLimits, and its bound on the bytes of appends in flight.
type limits struct {
	subscriptions, longPolls, reads, pipelines heldLimit
	appendBytes                                byteLimit
}

// byteLimit bounds the bytes of the calls of one kind a node holds at once. Its methods are
// safe for concurrent use.
type byteLimit struct {
	held  atomic.Int64
	limit int64
	gauge prometheus.Gauge
}

// take holds n bytes until the returned func is called. Past the limit it refuses, counting
// the refusal in refused, unless nothing is held: one call larger than the limit runs alone.
func (l *byteLimit) take(name string, n int64, refused prometheus.Counter) (release func(), err error) {
	if held := l.held.Add(n); held > l.limit && held != n {
		l.held.Add(-n)
		refused.Inc()
		return nil, quotaRefusal(name, fmt.Sprintf("append refused: node %s holds about %d bytes of appends waiting for "+
			"their shards' leaders or commits, and this one's %d would pass its limit (--max-append-bytes %d); retry after a "+
			"backoff, append through another node, or raise the limit", name, held-n, n, l.limit),
			fmt.Sprintf("max-append-bytes %d: bytes of appends held at once", l.limit))
	}
	l.gauge.Add(float64(n))
	return func() {
		l.held.Add(-n)
		l.gauge.Sub(float64(n))
	}, nil
}

// newLimits returns the limits of cfg, exported on m.
func newLimits(cfg *Config, m *metrics) *limits {
	return &limits{
		subscriptions: heldLimit{limit: int64(cfg.MaxSubscriptions), flag: "max-subscriptions",
			one: "subscription", many: "subscriptions", what: "subscriptions (reads with follow) held at once",
			advice: "end some, subscribe through another node, or raise the limit", gauge: m.subsHeld},
		longPolls: heldLimit{limit: int64(cfg.MaxLongPolls), flag: "max-long-polls",
			one: "long poll", many: "long polls", what: "long polls (shard reads with wait_ms) held at once",
			advice: "poll less often or through another node, or raise the limit", gauge: m.longPollsHeld},
		reads: heldLimit{limit: int64(cfg.MaxReads), flag: "max-reads",
			one: "read", many: "reads", what: "reads (without follow or wait_ms) held at once",
			advice: "retry after a backoff, read through another node, or raise the limit", gauge: m.readsHeld},
		pipelines: heldLimit{limit: int64(cfg.MaxAppendPipelines), flag: "max-append-pipelines",
			one: "append pipeline", many: "append pipelines", what: "AppendPipeline streams held at once",
			advice: "append with unary calls, close some, or raise the limit", gauge: m.pipelinesHeld},
		appendBytes: byteLimit{limit: int64(min(cfg.MaxAppendBytes, math.MaxInt64)), gauge: m.appendBytesHeld},
	}
}

// holdSubscription takes, for a read with follow (a subscription of kind stream or shard), one
// of the Config.MaxSubscriptions places of the node until the returned func is called: served
// here or relayed to the shard's leader, a subscription holds a goroutine and its stream's
// state on this node for as long as its client keeps it. Past the limit it refuses the read
// with RESOURCE_EXHAUSTED naming the limit (which clients retry after a backoff), before the
// read costs anything. A read without follow takes one of the Config.MaxReads places
// (holdRead).
func (n *Node) holdSubscription(follow bool, kind string) (release func(), err error) {
	if !follow {
		return n.holdRead(kind)
	}
	return n.limits.subscriptions.hold(n.dir.id.Name, n.metrics.subsRefused.WithLabelValues(kind))
}

// holdRead takes, for a read of kind stream, shard or list that neither follows nor waits, one
// of the Config.MaxReads places of the node until the returned func is called: it holds a
// goroutine and a page while its client takes it, as long as the client lets it. Past the
// limit it refuses as holdSubscription does.
func (n *Node) holdRead(kind string) (release func(), err error) {
	return n.limits.reads.hold(n.dir.id.Name, n.metrics.readsRefused.WithLabelValues(kind))
}

// holdShardRead takes the place a shard read holds until the returned func is called: a
// subscription's (follow: holdSubscription), or one of the Config.MaxLongPolls places of the
// node for a long poll (wait_ms without follow), which, served here or relayed, holds a
// goroutine for up to its wait. Past the limit it refuses the read as holdSubscription does.
// A read that does neither takes one of the Config.MaxReads places (holdRead).
func (n *Node) holdShardRead(req *shoalv1.ReadShardRequest) (release func(), err error) {
	switch {
	case req.Follow:
		return n.holdSubscription(true, "shard")
	case req.WaitMs == 0:
		return n.holdRead("shard")
	}
	return n.limits.longPolls.hold(n.dir.id.Name, n.metrics.longPollsRefused)
}

package node

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's own metrics (the replica host, the transport and
// Pebble register theirs on the same registry).
type metrics struct {
	appends        *prometheus.CounterVec // by result
	deletes        *prometheus.CounterVec // by result
	reads          *prometheus.CounterVec // by kind (stream, shard) and result
	appendLatency  prometheus.Histogram
	eventsAppended prometheus.Counter
	forwarded      *prometheus.CounterVec   // by kind (write, read, decommission)
	forwardsMoved  prometheus.Counter       // forwarded calls abandoned by their watch
	pipelineBatch  *prometheus.HistogramVec // items per AppendPipeline message, by direction
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_appends_total", Help: "Append requests answered, by result.",
		}, []string{"result"}),
		deletes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_deletes_total", Help: "Delete requests answered, by result.",
		}, []string{"result"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_reads_total", Help: "Read requests answered, by kind and result.",
		}, []string{"kind", "result"}),
		appendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_append_duration_seconds",
			Help:    "Latency of successful appends, from receipt to answer (forwarding included).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16), // 0.2ms .. 6.5s
		}),
		eventsAppended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_events_appended_total", Help: "Events written by successful, non-duplicate appends.",
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_forwarded_requests_total", Help: "Requests forwarded to another node, by kind.",
		}, []string{"kind"}),
		forwardsMoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_forwards_moved_total",
			Help: "Forwarded calls abandoned and routed again because the shard's leader changed while they waited for the old one.",
		}),
		pipelineBatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_append_pipeline_batch_items",
			Help:    "Appends per AppendPipeline message: received (the client's batches) and sent (answers grouped by the server).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 .. 1024
		}, []string{"direction"}),
	}
	if r != nil {
		r.MustRegister(m.appends, m.deletes, m.reads, m.appendLatency, m.eventsAppended, m.forwarded, m.forwardsMoved, m.pipelineBatch)
	}
	return m
}

// shardCollector exports the health of the local groups at scrape time.
type shardCollector struct{ n *Node }

var (
	descLeaderKnown = prometheus.NewDesc("shoal_shard_leader_known",
		"1 when this node's replica of the shard knows a leader.", []string{"shard"}, nil)
	descIsLeader = prometheus.NewDesc("shoal_shard_is_leader",
		"1 when this node leads the shard.", []string{"shard"}, nil)
	descVoters = prometheus.NewDesc("shoal_shard_voters",
		"Voters of the shard's raft group as this node sees them.", []string{"shard"}, nil)
	descUnder = prometheus.NewDesc("shoal_shard_under_replicated",
		"1 when the shard has fewer voters than the replication factor, or (zones configured) voters in fewer zones than it.", []string{"shard"}, nil)
	descApplied = prometheus.NewDesc("shoal_shard_applied_index",
		"Last raft index applied by this node's replica.", []string{"shard"}, nil)
)

func (c *shardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLeaderKnown
	ch <- descIsLeader
	ch <- descVoters
	ch <- descUnder
	ch <- descApplied
}

func (c *shardCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	if n.host == nil {
		return
	}
	repl := int(n.Settings().Replication)
	zones := zonesOf(n.Members())
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, g := range n.host.Groups() {
		st := g.Status()
		l := fmt.Sprint(st.Shard)
		ch <- prometheus.MustNewConstMetric(descLeaderKnown, prometheus.GaugeValue, b(st.Leader != 0), l)
		ch <- prometheus.MustNewConstMetric(descIsLeader, prometheus.GaugeValue, b(st.Leader == n.ID()), l)
		ch <- prometheus.MustNewConstMetric(descVoters, prometheus.GaugeValue, float64(len(st.Voters)), l)
		ch <- prometheus.MustNewConstMetric(descUnder, prometheus.GaugeValue, b(underReplicated(st.Voters, repl, zones)), l)
		ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(st.Applied), l)
	}
}

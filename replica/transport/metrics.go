package transport

import "github.com/prometheus/client_golang/prometheus"

// Metrics of one Transport. Peer-labelled series use the peer's node ID.
// Every series of a peer, sent and received, is deleted when the peer is
// removed after two IdleTimeouts without traffic (Config.IdleTimeout), so
// cardinality follows the peers in use, not every node ID ever addressed;
// a peer used again starts its counters from zero.
type Metrics struct {
	MessagesSent     *prometheus.CounterVec // {peer} raft messages written to a stream
	MessagesReceived *prometheus.CounterVec // {peer} raft messages handed to the Handler
	MessagesDropped  *prometheus.CounterVec // {peer, reason}: queue_full, unreachable, too_large, closed, invalid_target
	BatchesSent      *prometheus.CounterVec // {peer} RaftBatch messages sent
	BytesSent        *prometheus.CounterVec // {peer} marshalled raft message bytes sent
	BytesReceived    *prometheus.CounterVec // {peer} marshalled raft message bytes received
	DialErrors       *prometheus.CounterVec // {peer} failed resolves, dials and stream opens
	StreamErrors     *prometheus.CounterVec // {peer} established streams that broke
	PeerDown         *prometheus.CounterVec // {peer} broken streams after which the peer refused a connection (or every attempt timed out)
	SnapshotsSent    *prometheus.CounterVec // {result}: ok, failed
	SnapshotsRecv    *prometheus.CounterVec // {result}: ok, failed
	SnapshotBytes    *prometheus.CounterVec // {dir}: sent, received (compressed bytes)
	// SnapshotSeconds {dir, result}: how long each snapshot stream took, sent or received.
	SnapshotSeconds *prometheus.HistogramVec
}

// Drop reasons (values of the "reason" label).
const (
	dropQueueFull   = "queue_full"
	dropUnreachable = "unreachable"
	dropTooLarge    = "too_large"
	dropClosed      = "closed"
	dropInvalid     = "invalid_target" // node 0 or this node
)

func newMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "shoal", "transport"
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, labels)
	}
	m := &Metrics{
		MessagesSent:     cv("messages_sent_total", "Raft messages written to a peer stream.", "peer"),
		MessagesReceived: cv("messages_received_total", "Raft messages received from a peer.", "peer"),
		MessagesDropped:  cv("messages_dropped_total", "Raft messages dropped before sending.", "peer", "reason"),
		BatchesSent:      cv("batches_sent_total", "Raft batches sent to a peer.", "peer"),
		BytesSent:        cv("bytes_sent_total", "Marshalled raft message bytes sent to a peer.", "peer"),
		BytesReceived:    cv("bytes_received_total", "Marshalled raft message bytes received from a peer.", "peer"),
		DialErrors:       cv("dial_errors_total", "Failed address resolutions, dials and stream opens.", "peer"),
		StreamErrors:     cv("stream_errors_total", "Established peer streams that failed.", "peer"),
		PeerDown:         cv("peer_down_total", "Broken peer streams after which the peer's address refused a connection, or let every attempt to connect time out (reported to raft as a node down).", "peer"),
		SnapshotsSent:    cv("snapshots_sent_total", "Outgoing snapshot streams by result.", "result"),
		SnapshotsRecv:    cv("snapshots_received_total", "Incoming snapshot streams by result.", "result"),
		SnapshotBytes:    cv("snapshot_bytes_total", "Compressed snapshot bytes by direction.", "dir"),
		SnapshotSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "snapshot_duration_seconds",
			Help: "How long snapshot streams took, by direction (sent, received) and result: a learner catches up in this time; one that grows with a shard's size is expected, one that ends failed after long is a link or a disk that cannot keep up.",
			// 10 ms to about 45 minutes.
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 15)}, []string{"dir", "result"}),
	}
	// The snapshot results exist from the start, so that increase() sees the first failure.
	for _, ok := range []bool{true, false} {
		m.SnapshotsSent.WithLabelValues(result(ok))
		m.SnapshotsRecv.WithLabelValues(result(ok))
	}
	if reg != nil {
		reg.MustRegister(m.MessagesSent, m.MessagesReceived, m.MessagesDropped, m.BatchesSent, m.BytesSent,
			m.BytesReceived, m.DialErrors, m.StreamErrors, m.PeerDown, m.SnapshotsSent, m.SnapshotsRecv, m.SnapshotBytes,
			m.SnapshotSeconds)
	}
	return m
}

// deletePeer deletes every series labelled with peer l.
func (m *Metrics) deletePeer(l string) {
	match := prometheus.Labels{"peer": l}
	for _, v := range []*prometheus.CounterVec{m.MessagesSent, m.MessagesReceived, m.MessagesDropped, m.BatchesSent,
		m.BytesSent, m.BytesReceived, m.DialErrors, m.StreamErrors, m.PeerDown} {
		v.DeletePartialMatch(match)
	}
}

func result(ok bool) string {
	if ok {
		return "ok"
	}
	return "failed"
}

var (
	descQueuedMessages = prometheus.NewDesc("shoal_transport_queued_messages",
		"Raft messages waiting in a peer's outbound queues (at most Config.QueueSize in each of two).", []string{"peer"}, nil)
	descQueuedBytes = prometheus.NewDesc("shoal_transport_queued_bytes",
		"Bytes of entries of the appends waiting in a peer's outbound queue (bounded by Config.QueueBytes).", []string{"peer"}, nil)
)

// queueCollector reports each peer's queues as they are at scrape time: a peer whose stream is
// slower than raft shows a queue that grows, before it fills and messages are dropped.
type queueCollector struct{ t *Transport }

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descQueuedMessages
	ch <- descQueuedBytes
}

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	type queued struct {
		peer            string
		messages, bytes float64
	}
	// Read under mu, sent without it: Send, which the raft loop calls, takes mu.
	c.t.mu.Lock()
	if c.t.mu.closed {
		c.t.mu.Unlock()
		return // what was queued was dropped
	}
	qs := make([]queued, 0, len(c.t.mu.peers))
	for _, p := range c.t.mu.peers {
		qs = append(qs, queued{p.label, float64(len(p.queue) + len(p.urgent)), float64(p.queuedBytes.Load())})
	}
	c.t.mu.Unlock()
	for _, q := range qs {
		ch <- prometheus.MustNewConstMetric(descQueuedMessages, prometheus.GaugeValue, q.messages, q.peer)
		ch <- prometheus.MustNewConstMetric(descQueuedBytes, prometheus.GaugeValue, q.bytes, q.peer)
	}
}

package query

import "github.com/prometheus/client_golang/prometheus"

// metrics of one Projection, labelled with its name.
type metrics struct {
	handled    prometheus.Counter
	skipped    prometheus.Counter
	commits    prometheus.Counter
	readErrors prometheus.Counter
	position   *prometheus.GaugeVec
}

func newMetrics(name string) *metrics {
	labels := prometheus.Labels{"projection": name}
	c := func(n, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "shoal", Subsystem: "projection", Name: n, Help: help, ConstLabels: labels})
	}
	return &metrics{
		handled:    c("events_handled_total", "Events passed to the handler and committed."),
		skipped:    c("events_skipped_total", "Events filtered out (checkpoint advanced, no handler call)."),
		commits:    c("commits_total", "Pages committed (model writes plus checkpoint)."),
		readErrors: c("read_errors_total", "Failed shard reads (retried)."),
		position: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "shoal", Subsystem: "projection", Name: "checkpoint_position",
			Help: "Next shard position to read, per shard.", ConstLabels: labels}, []string{"shard"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.handled, m.skipped, m.commits, m.readErrors, m.position}
}

// register registers every metric on r; nil r registers nothing.
func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	for i, c := range m.collectors() {
		if err := r.Register(c); err != nil {
			for _, done := range m.collectors()[:i] {
				r.Unregister(done)
			}
			return err
		}
	}
	return nil
}

// unregister undoes register, so a projection can be reopened.
func (m *metrics) unregister(r prometheus.Registerer) {
	if r == nil {
		return
	}
	for _, c := range m.collectors() {
		r.Unregister(c)
	}
}

package saga

import "github.com/prometheus/client_golang/prometheus"

// metrics of one Coordinator.
type metrics struct {
	started, completed, aborted, retries, conflicts prometheus.Counter
}

func newMetrics() *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "shoal", Subsystem: "saga", Name: name, Help: help})
	}
	return &metrics{
		started:   c("started_total", "Sagas started."),
		completed: c("completed_total", "Sagas completed."),
		aborted:   c("aborted_total", "Sagas aborted after compensation."),
		retries:   c("step_retries_total", "Step action and compensation attempts after the first."),
		conflicts: c("conflicts_total", "Saga appends that lost to another coordinator."),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.started, m.completed, m.aborted, m.retries, m.conflicts}
}

// register registers every metric on r; nil r registers nothing. On error it unregisters
// what it registered, so r is left as it was.
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

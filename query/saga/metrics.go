package saga

import "github.com/prometheus/client_golang/prometheus"

// metrics of one Coordinator.
type metrics struct {
	started, completed, aborted, retries, conflicts, exists prometheus.Counter
	stepFailures, compensationFailures, stopped             prometheus.Counter
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
		conflicts: c("conflicts_total", "Transitions of a running saga that lost to another coordinator's."),
		exists:    c("exists_total", "Starts refused because the saga ID was taken (ErrExists): a command delivered again, or an ID reused."),
		stepFailures: c("step_failures_total",
			"Step actions that failed after their retries: the saga compensates."),
		compensationFailures: c("compensation_failures_total",
			"Compensations that still failed after their retries: the saga stays compensating until Resume."),
		stopped: c("stopped_total",
			"Drives (Start, Resume) that returned before the saga ended, by an error or the caller's context: the saga waits for Resume."),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.started, m.completed, m.aborted, m.retries, m.conflicts, m.exists,
		m.stepFailures, m.compensationFailures, m.stopped}
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

package snapshot

import "github.com/prometheus/client_golang/prometheus"

// metrics of one Store (and the Repositories built on it).
type metrics struct {
	saves       prometheus.Counter
	saveErrors  prometheus.Counter
	savedBytes  prometheus.Counter
	prunes      prometheus.Counter
	pruneErrors prometheus.Counter
	hits        prometheus.Counter
	misses      prometheus.Counter
	corrupt     prometheus.Counter
	replayed    prometheus.Counter
}

func newMetrics() *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "shoal", Subsystem: "snapshot", Name: name, Help: help})
	}
	return &metrics{
		saves:       c("saves_total", "Snapshots saved."),
		saveErrors:  c("save_errors_total", "Snapshot saves that failed."),
		savedBytes:  c("saved_bytes_total", "Bytes of snapshot records written (compressed, with header)."),
		prunes:      c("prunes_total", "Companion-stream truncations after a save (older snapshots removed, if there were any past Options.Keep)."),
		pruneErrors: c("prune_errors_total", "Companion-stream truncations after a save that failed (the save stands; the next save retries)."),
		hits:        c("latest_hits_total", "Latest calls that found a valid snapshot."),
		misses:      c("latest_misses_total", "Latest calls that found no snapshot."),
		corrupt:     c("latest_corrupt_total", "Latest calls that found an untrusted snapshot (corrupt or codec mismatch)."),
		replayed:    c("replayed_events_total", "Events applied by Load after the snapshot."),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.saves, m.saveErrors, m.savedBytes, m.prunes, m.pruneErrors, m.hits, m.misses, m.corrupt, m.replayed}
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

package node

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// registrations registers the node's collectors on its registry and remembers them, so
// that Close (or a failed Start) can take them off again: an embedder that passes its own
// Config.Registry can start a node again on the same registry, after a Close or a failed
// Start, without a duplicate-registration panic.
type registrations struct {
	reg *prometheus.Registry

	mu   sync.Mutex
	done []prometheus.Collector
}

func (r *registrations) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	r.done = append(r.done, c)
	r.mu.Unlock()
	return nil
}

func (r *registrations) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *registrations) Unregister(c prometheus.Collector) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, d := range r.done {
		if d == c {
			r.done = append(r.done[:i], r.done[i+1:]...)
			break
		}
	}
	return r.reg.Unregister(c)
}

// unregisterAll takes every collector registered through r off the registry.
func (r *registrations) unregisterAll() {
	r.mu.Lock()
	done := r.done
	r.done = nil
	r.mu.Unlock()
	for _, c := range done {
		r.reg.Unregister(c)
	}
}

package node

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// registrations registers the node's collectors on its registry and remembers them, so
// that Close (or a failed Start) can take them off again: an embedder that passes its own
// Config.Registry can start a node again on the same registry, after a Close or a failed
// Start, without a duplicate-registration panic.
type registrations struct {
	reg *prometheus.Registry

	mu     sync.Mutex
	done   []prometheus.Collector
	failed error // the first registration that failed (MustRegister)
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

// MustRegister registers cs. Unlike a prometheus.Registry's, it does not panic when one fails
// (the embedder's registry may already hold a collector of the same name); it records the first
// failure for Start to return (err).
func (r *registrations) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			r.mu.Lock()
			if r.failed == nil {
				r.failed = err
			}
			r.mu.Unlock()
		}
	}
}

// registerShared registers process-wide collectors (the Go runtime's, the process's), which
// the embedder's registry may already hold (prometheus.DefaultRegisterer does): one already
// there is left as it is.
func (r *registrations) registerShared(cs ...prometheus.Collector) {
	for _, c := range cs {
		var are prometheus.AlreadyRegisteredError
		if err := r.Register(c); err != nil && !errors.As(err, &are) {
			r.MustRegister(c) // records the failure
		}
	}
}

// err returns the first registration that failed.
func (r *registrations) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
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

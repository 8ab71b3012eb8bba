package snapshot

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/client"
)

// TestNewRegisterFailureRollsBack: when the Registerer refuses one of the store's metrics,
// New leaves it as it was (the metrics registered before are unregistered), so a store made
// once the conflict is gone registers cleanly.
func TestNewRegisterFailureRollsBack(t *testing.T) {
	reg := prometheus.NewRegistry()
	taken := newMetrics().replayed // the last of the store's metrics, registered by another
	reg.MustRegister(taken)
	c := &client.Client{} // New does not use it
	if _, err := New(c, Options{Registerer: reg}); err == nil {
		t.Fatal("New registered a metric the registry already has")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "shoal_snapshot_replayed_events_total" {
			t.Errorf("failed New left %s registered", mf.GetName())
		}
	}
	reg.Unregister(taken)
	if _, err := New(c, Options{Registerer: reg}); err != nil {
		t.Fatalf("New after the conflict is gone: %v", err)
	}
}

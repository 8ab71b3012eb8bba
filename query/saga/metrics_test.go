package saga

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/client"
)

// TestNewCoordinatorRegisterFailureRollsBack: when the Registerer refuses one of the
// coordinator's metrics, NewCoordinator leaves it as it was (the metrics registered before
// are unregistered), so a coordinator made once the conflict is gone registers cleanly.
func TestNewCoordinatorRegisterFailureRollsBack(t *testing.T) {
	reg := prometheus.NewRegistry()
	taken := newMetrics().stopped // the last of the coordinator's metrics, registered by another
	reg.MustRegister(taken)
	cfg := Config{Client: &client.Client{}, Definitions: []*Definition{okDef}, Registerer: reg}
	if _, err := NewCoordinator(cfg); err == nil {
		t.Fatal("NewCoordinator registered a metric the registry already has")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "shoal_saga_stopped_total" {
			t.Errorf("failed NewCoordinator left %s registered", mf.GetName())
		}
	}
	reg.Unregister(taken)
	if _, err := NewCoordinator(cfg); err != nil {
		t.Fatalf("NewCoordinator after the conflict is gone: %v", err)
	}
}

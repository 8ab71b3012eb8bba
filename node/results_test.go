package node

import (
	"errors"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestResultLabelsListed: every value resultLabel gives is in resultLabels, which the metrics
// export at zero from the start: a result left out would have no series until it first
// happened, and an alert on its rate none to work on.
func TestResultLabelsListed(t *testing.T) {
	errs := []error{nil, errors.New("not a status")}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		errs = append(errs, status.Error(c, c.String()))
	}
	for _, err := range errs {
		if l := resultLabel(err); !slices.Contains(resultLabels, l) {
			t.Errorf("resultLabel(%v) = %q, not in resultLabels %v", err, l, resultLabels)
		}
	}
}

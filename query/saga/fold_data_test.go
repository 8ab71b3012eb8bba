package saga

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/shoaldb/shoal/client"
)

// TestFoldData runs testdata/fold.txt: each "fold" case lists saga events,
// one per line ("<type suffix> [step] [error text]"), and expects the folded
// state and the coordinator's next move, or the protocol error. Run with
// -rewrite to regenerate the expectations.
func TestFoldData(t *testing.T) {
	datadriven.RunTest(t, "testdata/fold.txt", func(t *testing.T, d *datadriven.TestData) string {
		if d.Cmd != "fold" {
			t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
		}
		var evs []client.RecordedEvent
		for i, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
			f := strings.Fields(line)
			var r record
			typ := "saga." + f[0]
			switch {
			case typ == TypeSagaStarted:
				r.Saga, r.Steps = "test", f[1:]
			case len(f) > 1:
				n, err := strconv.Atoi(f[1])
				if err != nil {
					t.Fatalf("%s: %q: %v", d.Pos, line, err)
				}
				r.Step = n
				r.Error = strings.Join(f[2:], " ")
			}
			data, _ := json.Marshal(r)
			evs = append(evs, client.RecordedEvent{Version: uint64(i), Type: typ, Data: data})
		}
		st, err := Fold("x", evs)
		if err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "status=%s version=%d", st.Status, st.Version)
		if st.FailedStep >= 0 {
			fmt.Fprintf(&b, " failed=%d (%s)", st.FailedStep, st.Failure)
		}
		b.WriteString("\n")
		for i, s := range st.Steps {
			fmt.Fprintf(&b, "  %d %s:", i, s.Name)
			for _, f := range []struct {
				on   bool
				name string
			}{{s.Started, "started"}, {s.Completed, "completed"}, {s.Failed, "failed"}, {s.Compensated, "compensated"}} {
				if f.on {
					b.WriteString(" " + f.name)
				}
			}
			b.WriteString("\n")
		}
		mv := st.next()
		names := map[moveKind]string{moveDone: "done", moveStartStep: "start-step", moveRunStep: "run-step",
			moveCompensate: "compensate", moveComplete: "complete", moveAbort: "abort"}
		fmt.Fprintf(&b, "next: %s", names[mv.kind])
		if mv.kind == moveStartStep || mv.kind == moveRunStep || mv.kind == moveCompensate {
			fmt.Fprintf(&b, " %d", mv.step)
		}
		return b.String() + "\n"
	})
}

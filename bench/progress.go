package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// IsTerminal reports whether w is a terminal (for Progress.Terminal).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

const barWidth = 24

// startProgress reports e's progress to e.run.Progress.W until the returned
// function is called (which waits for the reporter to finish).
func startProgress(e *engine) (stop func()) {
	lastDone, lastAt := int64(0), e.start
	return report(e.run.Progress, func(now time.Time) string {
		d, ops, failed, conflicts := e.totals()
		rate := float64(d-lastDone) / now.Sub(lastAt).Seconds()
		lastDone, lastAt = d, now
		return e.progressLine(now, rate, ops, failed, conflicts)
	})
}

// report writes line() to p.W every interval (five times less often on a
// plain writer; on a terminal, one line rewritten in place) until the
// returned function is called, which waits for the reporter to finish.
// line is called from the reporter's goroutine only.
func report(p Progress, line func(now time.Time) string) (stop func()) {
	if p.W == nil {
		return func() {}
	}
	interval := p.Interval
	if !p.Terminal {
		interval *= 5
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				if p.Terminal {
					fmt.Fprint(p.W, "\r\x1b[K")
				}
				return
			case now := <-t.C:
				if p.Terminal {
					fmt.Fprintf(p.W, "\r\x1b[K%s", line(now))
				} else {
					fmt.Fprintln(p.W, line(now))
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func (e *engine) progressLine(now time.Time, rate float64, ops, failed, conflicts int64) string {
	var phase string
	var frac float64
	switch {
	case now.Before(e.measureStart):
		phase = "warmup"
		frac = float64(now.Sub(e.start)) / float64(e.measureStart.Sub(e.start))
	case e.run.Count > 0:
		phase = fmt.Sprintf("%s/%s", thousands(ops+failed+conflicts), thousands(e.run.Count))
		frac = float64(ops+failed+conflicts) / float64(e.run.Count)
	default:
		phase = fmt.Sprintf("%s/%s", now.Sub(e.measureStart).Truncate(time.Second), e.run.Duration)
		frac = float64(now.Sub(e.measureStart)) / float64(e.run.Duration)
	}
	frac = min(max(frac, 0), 1)
	filled := int(frac * barWidth)
	bar := "[" + strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled) + "]"
	s := fmt.Sprintf("%s %s %s  %s ops/s  ok %s  errors %s  conflicts %s",
		e.workload, bar, phase, thousands(int64(rate)), thousands(ops), thousands(failed), thousands(conflicts))
	return s
}

package transport

import (
	"context"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/replica"
)

// A peer idle for two IdleTimeouts is removed with its goroutines, connection and metric
// series; the next Send starts it anew (counters from zero) and delivers. Round after round,
// nothing is left behind.
func TestIdlePeerRemoved(t *testing.T) {
	dir := newDirectory()
	reg := prometheus.NewRegistry()
	n1 := startNode(t, 1, "c", dir, func(c *Config) {
		c.IdleTimeout = 50 * time.Millisecond
		c.Registerer = reg
	})
	n2 := startNode(t, 2, "c", dir, nil)
	base := runtime.NumGoroutine()
	for round := range 3 {
		n1.tr.Send([]replica.ShardMessage{msg(0, 1, 2, uint64(round+1), nil), msg(1, 1, 2, uint64(round+1), nil)})
		waitFor(t, 10*time.Second, "delivery", func() bool { return n2.rec.count() == 2*(round+1) })
		if got := peerSeries(t, reg, "2")["shoal_transport_messages_sent_total"]; got != 2 {
			t.Fatalf("round %d: messages_sent_total{peer=2} = %v, want 2 (a new peer's count)", round, got)
		}
		waitFor(t, 10*time.Second, "the idle peer's removal", func() bool { return peerCount(n1.tr) == 0 })
		if s := peerSeries(t, reg, "2"); len(s) != 0 {
			t.Fatalf("round %d: series of the removed peer remain: %v", round, s)
		}
		// The peer's goroutine, its stream watcher and its connection's are gone (and so are
		// the receiving server's for that connection).
		waitFor(t, 10*time.Second, "goroutines to end", func() bool { return runtime.NumGoroutine() <= base })
	}
	if n := n1.rec.unreachableCount(0, 2) + n1.rec.unreachableCount(1, 2); n != 0 {
		t.Fatalf("%d unreachable reports", n)
	}
}

// Sends that race with the peer's removal never strand a message: with an IdleTimeout of a
// millisecond the peer is removed and started again all the time, and every message
// arrives, in order, with no unreachable report. Run it with -count and -cpu 1,2.
func TestSendRacesRemoval(t *testing.T) {
	rng := seed(t)
	dir := newDirectory()
	var removed atomic.Int64
	n1 := startNode(t, 1, "c", dir, func(c *Config) {
		c.IdleTimeout = time.Millisecond
		c.Logger = slog.New(&countingLog{msg: "transport: removed idle peer", n: &removed})
	})
	n2 := startNode(t, 2, "c", dir, nil)
	const total = 400
	for i := range total {
		n1.tr.Send([]replica.ShardMessage{msg(uint32(i%4), 1, 2, uint64(i+1), nil)})
		switch rng.IntN(8) {
		case 0: // long enough for a removal (two idle ticks and a clean stream end)
			time.Sleep(time.Duration(2000+rng.IntN(4000)) * time.Microsecond)
		case 1, 2, 3: // about one tick: lands around the removal
			time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Microsecond)
		}
	}
	waitFor(t, 20*time.Second, "every message", func() bool { return n2.rec.count() >= total })
	got := n2.rec.received()
	if len(got) != total {
		t.Fatalf("%d messages arrived, want %d", len(got), total)
	}
	for i, m := range got {
		if m.Msg.GetIndex() != uint64(i+1) {
			t.Fatalf("message %d has index %d; want every message once, in order", i, m.Msg.GetIndex())
		}
	}
	for s := range uint32(4) {
		if n := n1.rec.unreachableCount(s, 2); n != 0 {
			t.Fatalf("%d unreachable reports for shard %d", n, s)
		}
	}
	t.Logf("peer removed %d times", removed.Load())
	if removed.Load() == 0 {
		t.Fatal("the peer was never removed: the test raced nothing")
	}
}

func peerCount(tr *Transport) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.mu.peers)
}

// peerSeries returns the values of reg's series labelled peer=l, by metric name (summed over
// other labels).
func peerSeries(t *testing.T, reg *prometheus.Registry, l string) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	s := make(map[string]float64)
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "peer" && lp.GetValue() == l {
					s[f.GetName()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return s
}

// countingLog is a slog.Handler that counts the records whose message is msg.
type countingLog struct {
	msg string
	n   *atomic.Int64
}

func (h *countingLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *countingLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}

func (h *countingLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingLog) WithGroup(string) slog.Handler      { return h }

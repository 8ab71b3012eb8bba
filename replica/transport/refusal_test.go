package transport

import (
	"context"
	"errors"
	"log/slog"
	"testing"
)

// levels records the level of each line logged.
type levels []slog.Level

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	*l = append(*l, r.Level)
	return nil
}
func (l *levels) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levels) WithGroup(string) slog.Handler      { return l }

// TestRefusalLogLimited: a sender's refused streams, which it retries about every second, are
// logged at Warn once a minute per sender and kind, the others at Debug.
func TestRefusalLogLimited(t *testing.T) {
	var got levels
	log := slog.New(&got)
	lim := newRefusalLimits()
	err := errors.New("no")
	logRefusal(log, lim, "refusing raft stream", 7, err)
	logRefusal(log, lim, "refusing raft stream", 7, err)
	logRefusal(log, lim, "refusing snapshot", 7, err)
	logRefusal(log, lim, "refusing raft stream", 8, err)
	lim.Expire(refusalKey{7, "refusing raft stream"}) // a minute later
	logRefusal(log, lim, "refusing raft stream", 7, err)
	want := levels{slog.LevelWarn, slog.LevelDebug, slog.LevelWarn, slog.LevelWarn, slog.LevelWarn}
	if len(got) != len(want) {
		t.Fatalf("levels %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("levels %v, want %v", got, want)
		}
	}
}

package replica

import (
	"context"
	"fmt"
	"log/slog"
)

// raftLogger adapts slog to raft.Logger for one group; raft's chatter goes to Debug, warnings
// and errors keep their level. Its lines name the shard: raft's own text names only the
// replica's raft ID, in hex ("44baacb13676eef0 stepped down to follower since quorum is not
// active"), which every group of a node shares.
type raftLogger struct {
	l     *slog.Logger
	shard uint32
}

func (r *raftLogger) out(level slog.Level, s string) {
	r.l.Log(context.Background(), level, s, "src", "raft", "shard", r.shard)
}

func (r *raftLogger) Debug(v ...any)              { r.out(slog.LevelDebug, fmt.Sprint(v...)) }
func (r *raftLogger) Debugf(f string, v ...any)   { r.out(slog.LevelDebug, fmt.Sprintf(f, v...)) }
func (r *raftLogger) Info(v ...any)               { r.out(slog.LevelDebug, fmt.Sprint(v...)) }
func (r *raftLogger) Infof(f string, v ...any)    { r.out(slog.LevelDebug, fmt.Sprintf(f, v...)) }
func (r *raftLogger) Warning(v ...any)            { r.out(slog.LevelWarn, fmt.Sprint(v...)) }
func (r *raftLogger) Warningf(f string, v ...any) { r.out(slog.LevelWarn, fmt.Sprintf(f, v...)) }
func (r *raftLogger) Error(v ...any)              { r.out(slog.LevelError, fmt.Sprint(v...)) }
func (r *raftLogger) Errorf(f string, v ...any)   { r.out(slog.LevelError, fmt.Sprintf(f, v...)) }
func (r *raftLogger) Fatal(v ...any)              { r.Panic(v...) }
func (r *raftLogger) Fatalf(f string, v ...any)   { r.Panicf(f, v...) }
func (r *raftLogger) Panic(v ...any)              { s := fmt.Sprint(v...); r.out(slog.LevelError, s); panic(s) }
func (r *raftLogger) Panicf(f string, v ...any) {
	s := fmt.Sprintf(f, v...)
	r.out(slog.LevelError, s)
	panic(s)
}

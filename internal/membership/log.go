package membership

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/shoaldb/shoal/internal/loglimit"
)

// slogWriter adapts memberlist's *log.Logger output ("[LEVEL] memberlist: msg")
// to slog, mapping the bracketed level, and lowers the level of lines that are
// no trouble here (memberlist's own levels assume otherwise).
type slogWriter struct {
	l    *slog.Logger
	self string // this member's name
	// closing is set once Leave or Close began: memberlist's probes and gossip then race the
	// closing of its sockets.
	closing *atomic.Bool
	// stray, if set, bounds the lines about connections that do not speak gossip to one a
	// minute: a client given the gossip address retries, line after line.
	stray *loglimit.Limiter
}

// strayLogEvery is how often a connection that does not speak gossip is logged at most.
const strayLogEvery = time.Minute

func newStdLogger(w slogWriter) *log.Logger { return log.New(w, "", 0) }

var levels = []struct {
	tag   string
	level slog.Level
}{
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}

func (w slogWriter) Write(p []byte) (int, error) {
	msg := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, lv := range levels {
		if bytes.HasPrefix(msg, []byte(lv.tag)) {
			level = lv.level
			msg = bytes.TrimSpace(msg[len(lv.tag):])
			break
		}
	}
	msg = bytes.TrimPrefix(msg, []byte("memberlist: "))
	if strayConn(msg) {
		// Something that is not a member connected to the gossip port: most often a client given
		// it for a node's gRPC or HTTP address. The node is fine; the line says where to look.
		if w.stray != nil {
			held, ok := w.stray.Allow()
			if !ok {
				return len(p), nil
			}
			if held > 0 {
				msg = fmt.Appendf(msg[:len(msg):len(msg)], " (and %d more such connections since the last line)", held)
			}
		}
		msg = append(msg[:len(msg):len(msg)], strayConnHint...)
	}
	for _, h := range hints {
		if bytes.HasPrefix(msg, []byte(h.prefix)) {
			msg = append(msg[:len(msg):len(msg)], h.hint...)
			level = min(level, h.level)
			break
		}
	}
	w.l.Log(context.Background(), min(level, w.ceiling(msg)), string(msg))
	return len(p), nil
}

// strayConn tells memberlist's line about a connection that did not speak gossip.
func strayConn(msg []byte) bool { return bytes.HasPrefix(msg, []byte("Received invalid msgType")) }

// strayConnHint follows memberlist's line about a connection that did not speak gossip.
const strayConnHint = ": not a shoal node's gossip; a client (shoal --server, a gRPC or HTTP client) " +
	"given this gossip address instead of a node's --listen or --http one?"

// hints follow memberlist's lines that do not say what they mean here, lowered to a level that
// says how much: neither is this node's trouble nor, alone, a failure.
var hints = []struct {
	prefix, hint string
	level        slog.Level
}{
	// A probe's TCP fallback that timed out: the member did not answer within the probe
	// interval. A busy, paused or cut-off member times out, and an overloaded machine's members
	// do so in turn (a crashed one refuses the connection, which memberlist does not log).
	{"Failed fallback TCP ping: timeout ", ": the member did not answer in time (busy, paused or cut off); " +
		"gossip suspects it, and declares it dead if it stays silent", slog.LevelWarn},
	// Another process gossips under a member's name from another address: a server given a
	// name in use, or started on a copy of a member's data directory, which is refused at its
	// start (ErrNameTaken, a stale directory) and says why; or the member itself, restarted at
	// a new address within seconds of its death (memberlist takes the new address later).
	{"Conflicting address for ", ": another process claims this member's name (a second server given its --node, " +
		"one started on a copy of its data directory, both refused at their start; or the member restarted " +
		"at a new address, taken once its death is old enough)", slog.LevelWarn},
}

// ceiling is the highest level msg is logged at.
func (w slogWriter) ceiling(msg []byte) slog.Level {
	switch {
	case bytes.HasPrefix(msg, []byte("Failed push/pull merge: membership: ")):
		return slog.LevelDebug // a refusal of delegate.go's, which logged it in its own words
	case w.closing != nil && w.closing.Load() &&
		(bytes.HasSuffix(msg, []byte("use of closed network connection")) ||
			bytes.HasSuffix(msg, []byte("over TCP but UDP probes failed, network may be misconfigured"))):
		// A probe or gossip that went out as this node stopped: its UDP socket was closed
		// under it (a TCP fallback probe may still have got through).
		return slog.LevelDebug
	case strayConn(msg):
		return slog.LevelWarn // the sender's mistake, not this node's trouble
	case w.self != "" && string(msg) == "Refuting a dead message (from: "+w.self+")":
		// This node's own leave, from before a restart, still going round: every restart
		// meets it.
		return slog.LevelInfo
	}
	return slog.LevelError
}

var _ io.Writer = slogWriter{}

package membership

import (
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/lockedbuf"
	"github.com/shoaldb/shoal/internal/loglimit"
)

// TestLogLevels: memberlist's lines keep their levels but for those that are no trouble here:
// refusals delegate.go logged itself, the probes and gossip that race a stopping node's
// closing of its sockets, a restarted node meeting its own earlier leave, a connection from
// something that is not a member (a client given the gossip address), a probe that timed out
// (a busy member) and another process under a member's name; the last three get a hint.
func TestLogLevels(t *testing.T) {
	const (
		closedGossip = "[ERR] memberlist: Failed to send gossip to 127.0.0.1:7411: write udp 127.0.0.1:7421->127.0.0.1:7411: use of closed network connection"
		closedPing   = "[ERR] memberlist: Failed to send UDP ping: write udp 127.0.0.1:7521->127.0.0.1:7531: use of closed network connection"
		udpFailed    = "[WARN] memberlist: Was able to connect to n3 over TCP but UDP probes failed, network may be misconfigured"
		ownLeave     = "[WARN] memberlist: Refuting a dead message (from: n2)"
		othersDeath  = "[WARN] memberlist: Refuting a dead message (from: n1)"
		suspect      = "[WARN] memberlist: Refuting a suspect message (from: n1)"
		refusal      = "[ERR] memberlist: Failed push/pull merge: membership: cluster mismatch"
		otherErr     = "[ERR] memberlist: Failed to send gossip to 127.0.0.1:7411: write udp: no buffer space available"
		info         = "[INFO] memberlist: Suspect n3 has failed, no acks received"
		stray        = "[ERR] memberlist: Received invalid msgType (80) from=127.0.0.1:38888"
		pingTimeout  = "[ERR] memberlist: Failed fallback TCP ping: timeout 500ms: read tcp 127.0.0.1:58422->127.0.0.1:7741: i/o timeout"
		pingOther    = "[ERR] memberlist: Failed fallback TCP ping: write tcp 127.0.0.1:58422->127.0.0.1:7741: broken pipe"
		conflict     = "[ERR] memberlist: Conflicting address for n1. Mine: 127.0.0.1:7711 Theirs: 127.0.0.1:7781 Old state: 0"
	)
	hinted := map[string]string{stray: "--listen", pingTimeout: "declares it dead", conflict: "--node"}
	for _, tc := range []struct {
		line    string
		closing bool
		want    string
	}{
		{closedGossip, false, "ERROR"},
		{closedGossip, true, "DEBUG"},
		{closedPing, true, "DEBUG"},
		{udpFailed, false, "WARN"},
		{udpFailed, true, "DEBUG"},
		{ownLeave, false, "INFO"},
		{othersDeath, false, "WARN"},
		{suspect, false, "WARN"},
		{refusal, false, "DEBUG"},
		{otherErr, true, "ERROR"},
		{info, false, "INFO"},
		{stray, false, "WARN"},
		{pingTimeout, false, "WARN"},
		{pingOther, false, "ERROR"},
		{conflict, false, "WARN"},
	} {
		var buf lockedbuf.Buffer
		var closing atomic.Bool
		closing.Store(tc.closing)
		w := slogWriter{l: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), self: "n2", closing: &closing}
		if _, err := w.Write([]byte(tc.line + "\n")); err != nil {
			t.Fatal(err)
		}
		msg := tc.line[strings.Index(tc.line, "memberlist: ")+len("memberlist: "):]
		if got := buf.String(); !strings.Contains(got, "level="+tc.want+" ") || !strings.Contains(got, msg) {
			t.Errorf("%q (closing %v) logged as %q, want level %s", tc.line, tc.closing, got, tc.want)
		}
		if hint, ok := hinted[tc.line]; ok && !strings.Contains(buf.String(), hint) {
			t.Errorf("%q logged as %q, without the hint", tc.line, buf.String())
		}
	}
}

// TestStrayLinesLimited: connections that do not speak gossip are logged once a minute, the next
// line counting those held back.
func TestStrayLinesLimited(t *testing.T) {
	var buf lockedbuf.Buffer
	lim := &loglimit.Limiter{Every: time.Hour}
	w := slogWriter{l: slog.New(slog.NewTextHandler(&buf, nil)), stray: lim}
	line := []byte("[ERR] memberlist: Received invalid msgType (80) from=127.0.0.1:38888\n")
	for range 5 {
		w.Write(line)
	}
	if got := strings.Count(buf.String(), "Received invalid msgType"); got != 1 {
		t.Fatalf("5 stray connections logged %d lines, want 1:\n%s", got, buf.String())
	}
	lim.Every = 0
	w.Write(line)
	if !strings.Contains(buf.String(), "and 4 more such connections since the last line") {
		t.Fatalf("the next line does not count those held back:\n%s", buf.String())
	}
}

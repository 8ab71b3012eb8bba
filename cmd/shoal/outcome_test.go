package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/node"
)

// answerDropper is a TCP proxy in front of backend that, once the clients have sent it
// threshold bytes in all, passes nothing more from the server back (until drop is cleared):
// a request of that size reaches the server, and its answer is lost.
type answerDropper struct {
	addr      string
	threshold int64
	up        atomic.Int64 // bytes client -> server
	drop      atomic.Bool
	triggered atomic.Bool
}

func startAnswerDropper(t *testing.T, backend string, threshold int64) *answerDropper {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &answerDropper{addr: l.Addr().String(), threshold: threshold}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			go p.pipe(c, s, true)
			go p.pipe(s, c, false)
		}
	}()
	return p
}

func (p *answerDropper) pipe(from, to net.Conn, up bool) {
	defer to.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if up && p.up.Add(int64(n)) >= p.threshold && p.triggered.CompareAndSwap(false, true) {
				p.drop.Store(true)
			}
			if up || !p.drop.Load() {
				to.Write(buf[:n])
			}
		}
		if err != nil {
			return
		}
	}
}

// TestAppendLostAnswerGivesEventID: an append that reached the server, which stored it, but
// whose answer was lost is not reported as "cannot reach a server" (a retry of the same command
// would append a second copy): the CLI says the outcome is unknown and gives the event's ID, and
// the retry it suggests (--id) writes nothing twice.
func TestAppendLostAnswerGivesEventID(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := l.Addr().String()
	l.Close()
	const size = 1 << 20
	proxy := startAnswerDropper(t, backend, size)

	cfg := node.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Listen, cfg.Advertise = backend, proxy.addr // clients reach the node through the proxy
	cfg.Gossip = "127.0.0.1:0"
	cfg.DisableHTTP = true
	cfg.Name, cfg.Zone = "e2e", "z1"
	cfg.Shards, cfg.Replication = 1, 1
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	n, err := node.Start(sctx, cfg)
	scancel()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	data := filepath.Join(t.TempDir(), "big.bin")
	if err := os.WriteFile(data, []byte(strings.Repeat("x", size)), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"append", "lost-answer", "--type", "T", "--data", "@" + data, "--server", proxy.addr, "--json"}
	var out, errb strings.Builder
	a := newApp(strings.NewReader(""), &out, &errb, func(string) string { return "" })
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	code := a.run(ctx, args)
	cancel()

	// The events stored, read around the proxy; wait > 0 reads a stream not found again for that
	// long (the server may apply the append after the command gave up waiting).
	stored := func(wait time.Duration) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		until := time.Now().Add(wait)
		c, err := client.Dial(ctx, []string{backend}) // not through the proxy
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for {
			var ids []string
			var rerr error
			for ev, err := range c.Read(ctx, "lost-answer") {
				if err != nil {
					rerr = err
					break
				}
				ids = append(ids, ev.ID.String())
			}
			switch {
			case rerr == nil:
				return ids
			case errors.Is(rerr, client.ErrStreamNotFound) && time.Now().After(until):
				return nil
			case errors.Is(rerr, client.ErrStreamNotFound) && ctx.Err() == nil:
				time.Sleep(100 * time.Millisecond)
			default:
				t.Fatalf("read: %v", rerr)
			}
		}
	}
	r := decode(t, strings.TrimSpace(out.String()))
	id, _ := r["id"].(string)
	if r["outcome"] != "unknown" || id == "" {
		t.Fatalf("--json printed %q, want the event ID and outcome unknown (exit %d, stderr %q)", out.String(), code, errb.String())
	}
	// The proxy drops everything the server sends once the request's bytes went up, HTTP/2
	// window updates included: on a loaded machine the request's last frames can wait for
	// one and never arrive. Then nothing was stored and the retry writes the event afresh.
	ids := stored(5 * time.Second)
	if len(ids) > 1 || len(ids) == 1 && ids[0] != id {
		t.Fatalf("stored %v, want at most the event %s", ids, id)
	}
	if len(ids) == 0 {
		t.Logf("the append's request did not reach the server whole (its flow control waited on a dropped window update): the retry writes it")
	}
	msg := errb.String()
	if code != exitError || strings.Contains(msg, "cannot reach") || !strings.Contains(msg, "outcome is unknown") ||
		!strings.Contains(msg, "--id "+id) {
		t.Fatalf("exit %d, stderr %q: want the unknown outcome and the retry with --id %s", code, msg, id)
	}

	// The retry the message suggests.
	proxy.drop.Store(false)
	code, stdout, stderr := runCLI(t, nil, "", append(args, "--id", id)...)
	if r := decode(t, strings.TrimSpace(stdout)); code != exitOK || r["duplicate"] != (len(ids) == 1) || r["id"] != id {
		t.Fatalf("retry with --id: exit %d, stdout %q, stderr %q; want duplicate=%v", code, stdout, stderr, len(ids) == 1)
	}
	if ids := stored(0); len(ids) != 1 {
		t.Fatalf("after the retry, stored %v; want the one event", ids)
	}
}

// TestWriteOutcomeUnknown: failures of a write after the command connected that leave its
// outcome unknown are explained as such (not as "cannot reach a server"), with the event ID
// for an append and how to find out for a delete; verdicts are not.
func TestWriteOutcomeUnknown(t *testing.T) {
	id := uuid.MustParse("01234567-89ab-7def-8123-456789abcdef")
	for _, tc := range []struct {
		name    string
		err     error
		unknown bool
	}{
		{"retries gave up", &client.UnavailableError{Attempts: 3, Err: errors.New("connection reset")}, true},
		{"deadline", fmt.Errorf("client: %w after %d attempts, last error: %w", context.DeadlineExceeded, 1, errors.New("x")), true},
		{"interrupted", fmt.Errorf("client: %w after %d attempts", context.Canceled, 1), true},
		{"no leader", &client.UnavailableError{Err: noLeader(t, 3, 0)}, true},
		{"delete outcome unknown", &client.OutcomeUnknownError{Attempts: 1, Err: errors.New("reset")}, true},
		{"wrong version", &client.WrongExpectedVersionError{Stream: "s", Expected: client.Exact(1), Actual: 2, StreamExists: true}, false},
		{"invalid", &client.InvalidArgumentError{Field: "stream"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			a := &app{stdout: &out}
			_, msg := explain(a.appendFailed(tc.err, "h:1", "s", id, true))
			got := strings.Contains(msg, "outcome is unknown")
			if got != tc.unknown || strings.Contains(msg, "cannot reach") {
				t.Fatalf("append: %q; want the unknown outcome: %v", msg, tc.unknown)
			}
			if tc.unknown && (!strings.Contains(msg, "--id "+id.String()) || !strings.Contains(out.String(), `"id":"`+id.String()+`"`)) {
				t.Fatalf("append: %q, JSON %q: want the event ID and the retry with --id", msg, out.String())
			}
			if !tc.unknown && out.Len() > 0 {
				t.Fatalf("append: a verdict printed JSON %q", out.String())
			}
			_, msg = explain(deleteFailed(tc.err, "h:1", "s"))
			if strings.Contains(msg, "outcome is unknown") != tc.unknown || tc.unknown && !strings.Contains(msg, "shoal read s") {
				t.Fatalf("delete: %q; want the unknown outcome: %v, and how to find out", msg, tc.unknown)
			}
		})
	}
}

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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
// outcome unknown (the client says an attempt may have been applied) are explained as such,
// with the event ID for an append and how to find out for a delete; failures of which every
// attempt was refused before anything was proposed (the client's plain errors) say that
// nothing was written, a shard without a leader included; verdicts are neither.
func TestWriteOutcomeUnknown(t *testing.T) {
	id := uuid.MustParse("01234567-89ab-7def-8123-456789abcdef")
	unknown := func(err error) error { return &client.OutcomeUnknownError{Attempts: 3, Err: err} }
	refused := status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp h:1: connect: connection refused\"")
	deadline := fmt.Errorf("client: %w after %d attempts, last error: %w", context.DeadlineExceeded, 1, refused)
	interrupted := fmt.Errorf("client: %w after %d attempts", context.Canceled, 1)
	for _, tc := range []struct {
		name    string
		err     error
		unknown bool
		want    string // in the message
	}{
		{"retries gave up, an attempt may have been applied", unknown(&client.UnavailableError{Attempts: 3, Err: errors.New("connection reset")}), true, "did not answer in time"},
		{"retries gave up, every attempt refused", &client.UnavailableError{Attempts: 3, Err: refused}, false, "cannot reach a shoal server at h:1"},
		{"deadline, an attempt may have been applied", unknown(deadline), true, "did not answer in time"},
		{"deadline, every attempt refused", deadline, false, "cannot reach a shoal server at h:1"},
		{"interrupted, an attempt under way", unknown(interrupted), true, "interrupted while the request was under way"},
		{"interrupted between refusals", interrupted, false, "interrupted before the request reached the cluster"},
		{"no leader, every attempt refused", &client.UnavailableError{Err: noLeader(t, 3, 0)}, false, "shard 3 has no leader that answers"},
		{"no leader after an attempt that may have been applied", unknown(&client.UnavailableError{Err: noLeader(t, 3, 0)}), true,
			"shard 3 has no leader that answers"},
		{"delete outcome unknown", &client.OutcomeUnknownError{Attempts: 1, Err: errors.New("reset")}, true, "may have reached the cluster"},
		{"wrong version", &client.WrongExpectedVersionError{Stream: "s", Expected: client.Exact(1), Actual: 2, StreamExists: true}, false, "is at version 2"},
		{"invalid", &client.InvalidArgumentError{Field: "stream"}, false, "invalid stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verdict := !tc.unknown && !errors.Is(tc.err, client.ErrUnavailable) && !errors.Is(tc.err, context.DeadlineExceeded) &&
				!errors.Is(tc.err, context.Canceled)
			var out strings.Builder
			a := &app{stdout: &out}
			code, msg := explain(a.appendFailed(tc.err, "h:1", "s", id, true))
			if got := strings.Contains(msg, "outcome is unknown"); got != tc.unknown || !strings.Contains(msg, tc.want) {
				t.Fatalf("append: %q; want the unknown outcome: %v, and %q", msg, tc.unknown, tc.want)
			}
			if tc.unknown && (!strings.Contains(msg, "--id "+id.String()) || !strings.Contains(out.String(), `"id":"`+id.String()+`"`)) {
				t.Fatalf("append: %q, JSON %q: want the event ID and the retry with --id", msg, out.String())
			}
			if !tc.unknown && out.Len() > 0 {
				t.Fatalf("append: a known outcome printed JSON %q", out.String())
			}
			if written := !strings.Contains(msg, "nothing was written"); written != (tc.unknown || verdict) {
				t.Fatalf("append: %q; want \"nothing was written\": %v", msg, !tc.unknown && !verdict)
			}
			if !verdict && code != exitError {
				t.Fatalf("append: exit %d, want %d", code, exitError)
			}
			_, msg = explain(a.deleteFailed(tc.err, "h:1", "s"))
			if strings.Contains(msg, "outcome is unknown") != tc.unknown || tc.unknown && !strings.Contains(msg, "shoal read s") ||
				!strings.Contains(msg, tc.want) {
				t.Fatalf("delete: %q; want the unknown outcome: %v, how to find out, and %q", msg, tc.unknown, tc.want)
			}
		})
	}
}

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/shoaldb/shoal/client"
)

// testSeed returns the test's seed, from SHOAL_E2E_SEED when set (to replay
// a failure), else from the clock; it is logged either way.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SHOAL_E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SHOAL_E2E_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with SHOAL_E2E_SEED=%d)", seed, seed)
	return seed
}

// Writer bounds. An append whose outcome is unknown is retried (same IDs,
// same expected version) until it resolves or unresolvedLimit passes, which
// is a failure: the server neither took nor refused it.
const (
	callTimeout     = 15 * time.Second
	unresolvedLimit = 45 * time.Second
)

// ledger records what the server acknowledged, per stream, in version order.
type ledger struct {
	mu sync.Mutex
	// acked holds the acknowledged events of each stream as written (ID, type and data).
	acked map[string][]client.Event
	acks  int       // acknowledged appends
	dups  int       // acknowledged with Duplicate set (a retry found the first try applied)
	fails int       // calls that returned an error and were retried
	last  time.Time // when the latest acknowledgement arrived
}

func newLedger() *ledger { return &ledger{acked: map[string][]client.Event{}} }

func (l *ledger) ack(stream string, ev client.Event, dup bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[stream] = append(l.acked[stream], ev)
	l.acks++
	if dup {
		l.dups++
	}
	l.last = time.Now()
}

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acks
}

// waitAcks waits until at least n more appends than before are acknowledged
// and returns how long that took, or fails t after timeout.
func (l *ledger) waitAcks(t *testing.T, n int, timeout time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	want := l.count() + n
	for l.count() < want {
		if time.Since(start) > timeout {
			t.Fatalf("%s: %d appends acknowledged, want %d within %v", what, l.count(), want, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// uuidFrom draws a version-4 UUID from rng, so that a seed replays the IDs.
func uuidFrom(rng *rand.Rand) uuid.UUID {
	var id uuid.UUID
	for i := 0; i < 16; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			id[i+j] = byte(v >> (8 * j))
		}
	}
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id
}

// writer appends to the streams it owns with exact expected versions until
// ctx ends. An append whose outcome is unknown (a node died mid-call) is
// retried with the same event ID and the same expected version until it
// resolves: the idempotency rule makes the retry return the original
// versions if the first try was applied.
func writer(ctx context.Context, c *client.Client, l *ledger, streams []string, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	next := map[string]uint64{}
	for ctx.Err() == nil {
		stream := streams[rng.IntN(len(streams))]
		ev := client.Event{ID: uuidFrom(rng), Type: "e2e.Appended", Data: fmt.Appendf(nil, `{"stream":%q,"n":%d}`, stream, next[stream])}
		expected := client.NoStream
		if v := next[stream]; v > 0 {
			expected = client.Exact(v - 1)
		}
		start := time.Now()
		for {
			// The call outlives ctx so that a started append is always resolved.
			actx, cancel := context.WithTimeout(context.Background(), callTimeout)
			res, err := c.Append(actx, stream, expected, ev)
			cancel()
			if err == nil {
				if res.FirstVersion != next[stream] || res.LastVersion != next[stream] {
					return fmt.Errorf("stream %s: append acknowledged at versions %d..%d, want %d", stream, res.FirstVersion, res.LastVersion, next[stream])
				}
				l.ack(stream, ev, res.Duplicate)
				next[stream]++
				break
			}
			if errors.Is(err, client.ErrWrongExpectedVersion) || errors.Is(err, client.ErrIDConflict) ||
				errors.Is(err, client.ErrInvalidArgument) || errors.Is(err, client.ErrStreamDeleted) || errors.Is(err, client.ErrClosed) {
				return fmt.Errorf("stream %s version %d: definitive error on a stream this writer owns: %w", stream, next[stream], err)
			}
			if time.Since(start) > unresolvedLimit {
				return fmt.Errorf("stream %s version %d: append unresolved after %v: %w", stream, next[stream], time.Since(start).Round(time.Millisecond), err)
			}
			l.mu.Lock()
			l.fails++
			l.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// load is a set of writers running against one client.
type load struct {
	l    *ledger
	stop context.CancelFunc
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

// startLoad starts writers goroutines, each owning perWriter streams named
// after prefix.
func startLoad(c *client.Client, seed uint64, prefix string, writers, perWriter int) *load {
	ctx, stop := context.WithCancel(context.Background())
	ld := &load{l: newLedger(), stop: stop}
	for w := range writers {
		streams := make([]string, perWriter)
		for i := range streams {
			streams[i] = fmt.Sprintf("%s-w%d-s%d", prefix, w, i)
		}
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			if err := writer(ctx, c, ld.l, streams, seed+uint64(w)); err != nil {
				ld.mu.Lock()
				ld.errs = append(ld.errs, err)
				ld.mu.Unlock()
			}
		}()
	}
	return ld
}

// finish stops the writers, waits for their last appends to resolve and
// reports their errors on t. It returns false when a writer failed.
func (ld *load) finish(t *testing.T) bool {
	t.Helper()
	ld.stop()
	ld.wg.Wait()
	for _, err := range ld.errs {
		t.Error(err)
	}
	l := ld.l
	t.Logf("%d appends acknowledged (%d as duplicates of a retried first try), %d failed calls retried by the writers",
		l.acks, l.dups, l.fails)
	if len(ld.errs) == 0 && l.acks == 0 {
		t.Error("no append was acknowledged")
	}
	return len(ld.errs) == 0 && l.acks > 0
}

// maxMismatches is how many differences verify lists; it counts the rest.
const maxMismatches = 20

// verify reads every stream back (linearizable reads) and checks that each
// acknowledged event is there exactly once, at its version, with the type and
// data written, with dense versions and nothing else. It reads every stream
// before it fails, once, with counts of what is missing, changed or added and
// the first maxMismatches differences, so that a failure says how much was lost.
func verify(t *testing.T, c *client.Client, l *ledger) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		first                  []string // the first maxMismatches differences
		diffs                  int      // differences found, listed or not
		lost, changed, unacked int      // events missing, different or out of place, never acknowledged
		streams                int      // streams with any difference
	)
	report := func(format string, args ...any) {
		if diffs++; diffs <= maxMismatches {
			first = append(first, fmt.Sprintf(format, args...))
		}
	}
	total := 0
	last := map[string]uint64{} // each stream's last version, as read
	for _, stream := range slices.Sorted(maps.Keys(l.acked)) {
		acked, before := l.acked[stream], diffs
		n := 0
		for ev, err := range c.Read(ctx, stream) {
			if err != nil {
				report("reading %s after %d events: %v", stream, n, err)
				break
			}
			switch {
			case n >= len(acked):
				unacked++
				report("stream %s version %d: id %s type %s, never acknowledged (%d were)", stream, ev.Version, ev.ID, ev.Type, len(acked))
			case ev.Version != uint64(n):
				changed++
				report("stream %s: version %d where %d was expected (versions must be dense)", stream, ev.Version, n)
			case ev.ID != acked[n].ID || ev.Type != acked[n].Type || !bytes.Equal(ev.Data, acked[n].Data):
				changed++
				report("stream %s version %d: id %s type %s data %q, acknowledged id %s type %s data %q",
					stream, n, ev.ID, ev.Type, ev.Data, acked[n].ID, acked[n].Type, acked[n].Data)
			}
			n++
		}
		if n < len(acked) {
			lost += len(acked) - n
			report("stream %s: %d events stored, %d acknowledged: versions %d..%d missing", stream, n, len(acked), n, len(acked)-1)
		}
		if diffs > before {
			streams++
		}
		if n > 0 {
			last[stream] = uint64(n - 1)
		}
		total += len(acked)
	}
	if diffs > 0 {
		more := ""
		if diffs > len(first) {
			more = fmt.Sprintf("\n... and %d more", diffs-len(first))
		}
		t.Errorf("%d of %d streams differ from the %d acknowledged events: %d events missing, %d changed or out of place, %d never acknowledged; %d differences, the first %d:\n%s%s",
			streams, len(l.acked), total, lost, changed, unacked, diffs, len(first), strings.Join(first, "\n"), more)
		return
	}
	// The stream listing agrees with the reads: every stream there, live, at its last version.
	listed := 0
	for s, err := range c.ListStreams(ctx, "") {
		if err != nil {
			t.Fatalf("listing the streams: %v", err)
		}
		v, ok := last[s.Name]
		if !ok {
			continue
		}
		if s.State != client.StreamLive || s.LastVersion != v || s.FirstVersion != 0 {
			t.Errorf("stream %s listed as %s, versions %d..%d; read at versions 0..%d", s.Name, s.State, s.FirstVersion, s.LastVersion, v)
		}
		listed++
	}
	if listed != len(last) {
		t.Errorf("%d of the %d streams read were listed", listed, len(last))
	}
	t.Logf("verified %d acknowledged events in %d streams", total, len(l.acked))
}

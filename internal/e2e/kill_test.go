package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/shoaldb/shoal/client"
)

// ledger records what the server acknowledged, per stream, in version order.
type ledger struct {
	mu     sync.Mutex
	acked  map[string][]uuid.UUID
	counts struct{ acks, retries int }
}

func newLedger() *ledger { return &ledger{acked: map[string][]uuid.UUID{}} }

// writer appends to the streams it owns with exact expected versions. An
// append whose outcome is unknown (the server died mid-call) is retried with
// the same event ID and the same expected version until it resolves: the
// idempotency rule makes the retry return the original versions if the first
// try was applied.
func writer(ctx context.Context, t *testing.T, c *client.Client, l *ledger, streams []string, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	next := map[string]uint64{}
	for ctx.Err() == nil {
		stream := streams[rng.IntN(len(streams))]
		ev := client.Event{ID: uuid.New(), Type: "e2e.Appended", Data: []byte(fmt.Sprintf(`{"n":%d}`, next[stream]))}
		expected := client.NoStream
		if v, ok := next[stream]; ok && v > 0 {
			expected = client.Exact(v - 1)
		}
		for attempt := 0; ; attempt++ {
			// The attempt outlives ctx so that a started append is always resolved.
			actx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			res, err := c.Append(actx, stream, expected, ev)
			cancel()
			if err == nil {
				if res.FirstVersion != next[stream] {
					return fmt.Errorf("stream %s: append acknowledged at version %d, want %d", stream, res.FirstVersion, next[stream])
				}
				l.mu.Lock()
				l.acked[stream] = append(l.acked[stream], ev.ID)
				l.counts.acks++
				l.mu.Unlock()
				next[stream]++
				break
			}
			if errors.Is(err, client.ErrWrongExpectedVersion) || errors.Is(err, client.ErrIDConflict) || errors.Is(err, client.ErrInvalidArgument) {
				return fmt.Errorf("stream %s: definitive error on a stream this writer owns: %w", stream, err)
			}
			if attempt > 20 {
				return fmt.Errorf("stream %s: append unresolved after %d attempts: %w", stream, attempt, err)
			}
			l.mu.Lock()
			l.counts.retries++
			l.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// verify reads every stream back and checks that each acknowledged event is
// there exactly once, at its version, with dense versions.
func verify(t *testing.T, c *client.Client, l *ledger) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	total := 0
	for stream, ids := range l.acked {
		var got []uuid.UUID
		var want uint64
		for ev, err := range c.Read(ctx, stream) {
			if err != nil {
				t.Fatalf("reading %s: %v", stream, err)
			}
			if ev.Version != want {
				t.Fatalf("stream %s: version %d where %d was expected (versions must be dense)", stream, ev.Version, want)
			}
			want++
			got = append(got, ev.ID)
		}
		if len(got) != len(ids) {
			t.Fatalf("stream %s: %d events stored, %d acknowledged", stream, len(got), len(ids))
		}
		for i := range ids {
			if got[i] != ids[i] {
				t.Fatalf("stream %s version %d: id %s, acknowledged %s", stream, i, got[i], ids[i])
			}
		}
		total += len(ids)
	}
	t.Logf("verified %d acknowledged events in %d streams", total, len(l.acked))
}

// TestKill9UnderLoad runs concurrent writers against the real binary, sends
// SIGKILL twice mid-load, restarts it, and checks that nothing acknowledged
// was lost or duplicated and that the server accepts appends afterwards.
func TestKill9UnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	s := newServer(t, "n1", "z1", nil, "--shards", "8")
	s.start()
	s.waitReady(30 * time.Second)

	c, err := client.Dial(context.Background(), []string{s.grpcAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	const writers, perWriter = 24, 8
	l := newLedger()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		streams := make([]string, perWriter)
		for i := range streams {
			streams[i] = fmt.Sprintf("e2e-%d-w%d-s%d", seed%1000, w, i)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := writer(ctx, t, c, l, streams, seed+uint64(w)); err != nil {
				errs <- err
			}
		}()
	}

	for round := range 2 {
		time.Sleep(1500 * time.Millisecond)
		l.mu.Lock()
		acks := l.counts.acks
		l.mu.Unlock()
		t.Logf("round %d: kill -9 after %d acknowledged appends", round, acks)
		s.kill()
		time.Sleep(200 * time.Millisecond)
		s.start()
		s.waitReady(30 * time.Second)
	}
	time.Sleep(1500 * time.Millisecond)
	stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.Log(s.tail())
		return
	}
	t.Logf("%d appends acknowledged, %d retries of unknown outcomes", l.counts.acks, l.counts.retries)
	if l.counts.acks == 0 {
		t.Fatal("no append was acknowledged")
	}
	verify(t, c, l)

	// The server still takes new appends.
	res, err := c.Append(context.Background(), fmt.Sprintf("e2e-after-%d", seed), client.NoStream, client.Event{Type: "e2e.After", Data: []byte(`{}`)})
	if err != nil || res.LastVersion != 0 {
		t.Fatalf("append after the kills: %+v, %v", res, err)
	}
}

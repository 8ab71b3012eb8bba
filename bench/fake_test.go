package bench

import (
	"context"
	"errors"
	"sync"
	"time"
)

// memTarget is an in-memory Target with the expected-version semantics of
// an event store. Safe for concurrent use.
type memTarget struct {
	mu      sync.Mutex
	streams map[string]int64 // event count
	appends int
	// stallAt, if > 0, makes the stallAt-th append (1-based) hold the lock
	// for stall, and opDelay is spent under the lock by every append: the
	// target serves one request at a time, like a single-threaded server.
	stallAt int
	stall   time.Duration
	opDelay time.Duration
	failAll error
	// loseAckAt, if > 0, makes the loseAckAt-th append (1-based) apply and then fail, as a
	// timed-out append that committed.
	loseAckAt int
	// down, when set, is when the target stops answering: every append from then on waits
	// for its context to end (a cluster that lost its quorum).
	down time.Time
}

func newMemTarget() *memTarget { return &memTarget{streams: map[string]int64{}} }

func (m *memTarget) Append(ctx context.Context, stream string, expected int64, events [][]byte) (int64, error) {
	if !m.down.IsZero() && !time.Now().Before(m.down) {
		<-ctx.Done()
		return 0, Classified(KindTimeout, ctx.Err())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failAll != nil {
		return 0, m.failAll
	}
	m.appends++
	if m.opDelay > 0 {
		time.Sleep(m.opDelay)
	}
	if m.appends == m.stallAt {
		time.Sleep(m.stall)
	}
	n := m.streams[stream]
	ok := expected == ExpectAny ||
		(expected == ExpectNoStream && n == 0) ||
		(expected >= 0 && n-1 == expected)
	if !ok {
		return 0, &ConflictError{Stream: stream, Actual: n - 1}
	}
	n += int64(len(events))
	m.streams[stream] = n
	if m.appends == m.loseAckAt {
		return 0, context.DeadlineExceeded
	}
	return n - 1, nil
}

func (m *memTarget) ReadStream(ctx context.Context, stream string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.streams[stream]
	if !ok {
		return 0, Classified(KindNotFound, errors.New("mem: stream not found"))
	}
	return n, nil
}

func (m *memTarget) Describe(context.Context) System {
	return System{Name: "mem", Version: "test", Durability: "none (memory)"}
}

func (m *memTarget) total() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var t int64
	for _, n := range m.streams {
		t += n
	}
	return t
}

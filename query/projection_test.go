package query

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/client"
)

// fakeSource is an in-memory cluster: per shard a log of events. Reads fail
// now and then when flaky is set.
type fakeSource struct {
	mu     sync.Mutex
	shards [][]client.RecordedEvent
	rng    *rand.Rand
	flaky  bool
}

func newFakeSource(shards int, seed uint64) *fakeSource {
	return &fakeSource{shards: make([][]client.RecordedEvent, shards), rng: rand.New(rand.NewPCG(seed, 1))}
}

func (f *fakeSource) Shards(context.Context) (uint32, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return uint32(len(f.shards)), "cluster-1", nil
}

func (f *fakeSource) ReadShard(_ context.Context, shard uint32, from uint64, count int, _ time.Duration, _ func()) ([]client.RecordedEvent, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.flaky && f.rng.IntN(5) == 0 {
		return nil, from, fmt.Errorf("fake: %w", client.ErrUnavailable)
	}
	log := f.shards[shard]
	if from > uint64(len(log)) { // as the servers refuse a linearizable read past the end
		return nil, from, &client.PositionAheadError{Shard: shard, From: from, End: uint64(len(log))}
	}
	if from == uint64(len(log)) {
		return nil, from, nil
	}
	end := min(uint64(len(log)), from+uint64(count))
	return append([]client.RecordedEvent(nil), log[from:end]...), end, nil
}

// add appends n events to random streams; it returns the last position per
// shard touched.
func (f *fakeSource) add(n int) map[uint32]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	last := map[uint32]uint64{}
	for range n {
		s := uint32(f.rng.IntN(len(f.shards)))
		stream := fmt.Sprintf("acct-%d", f.rng.IntN(20))
		typ := "Deposited"
		if f.rng.IntN(4) == 0 {
			typ = "Noise"
		}
		pos := uint64(len(f.shards[s]))
		f.shards[s] = append(f.shards[s], client.RecordedEvent{Stream: stream, Shard: s, Position: pos, ID: uuid.New(), Type: typ, Data: []byte{1}})
		last[s] = pos
	}
	return last
}

// countingHandler counts deliveries per event ID in the model (key "n/"+ID)
// and, read-modify-write, a total per stream (key "s/"+stream).
func countingHandler(ctx context.Context, b *Batch, ev client.RecordedEvent) error {
	for _, key := range [][]byte{[]byte("n/" + ev.ID.String()), []byte("s/" + ev.Stream)} {
		v, ok, err := b.Get(key)
		if err != nil {
			return err
		}
		n := uint64(0)
		if ok {
			n = binary.BigEndian.Uint64(v)
		}
		if err := b.Set(key, binary.BigEndian.AppendUint64(nil, n+1)); err != nil {
			return err
		}
	}
	return nil
}

func testConfig(fs vfs.FS, h Handler) Config {
	cfg := Config{Name: "test", Handler: h, Dir: "proj", FS: fs, PageSize: 7, Concurrency: 3,
		PollMin: time.Millisecond, PollMax: 5 * time.Millisecond, RetryMax: 5 * time.Millisecond, NoSync: true}
	cfg.setDefaults()
	return cfg
}

// TestConfigDefaultsKeepPollOrder: a PollMax below the default PollMin, PollMin left zero,
// takes PollMin down with it rather than leaving a first wait longer than the longest.
func TestConfigDefaultsKeepPollOrder(t *testing.T) {
	cfg := Config{PollMax: 5 * time.Millisecond}
	cfg.setDefaults()
	if cfg.PollMin != 5*time.Millisecond || cfg.PollMax != 5*time.Millisecond {
		t.Fatalf("PollMax 5ms, PollMin unset: PollMin %v, PollMax %v; want both 5ms", cfg.PollMin, cfg.PollMax)
	}
	cfg = Config{PollMin: 2 * time.Second}
	cfg.setDefaults()
	if cfg.PollMin != 2*time.Second || cfg.PollMax != 2*time.Second {
		t.Fatalf("PollMin 2s, PollMax unset: PollMin %v, PollMax %v; want both 2s", cfg.PollMin, cfg.PollMax)
	}
}

// runUntil runs p in the background until every position in want is
// covered, then stops it.
func runUntil(t *testing.T, p *Projection, want map[uint32]uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	runInBackground(ctx, p, done)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	for s, pos := range want {
		if err := p.WaitFor(wctx, s, pos); err != nil {
			cancel()
			t.Fatalf("waiting for shard %d position %d: %v (checkpoint %v, run: %v)", s, pos, err, p.Checkpoint(), <-done)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

// runInBackground runs p in a goroutine, its result sent to done, and returns once that Run
// started or returned: a WaitFor called after sees it, not the end of the Run before.
func runInBackground(ctx context.Context, p *Projection, done chan<- error) {
	p.mu.Lock()
	prev := p.mu.stopped
	p.mu.Unlock()
	go func() { done <- p.Run(ctx) }()
	for {
		p.mu.Lock()
		started := p.mu.stopped != prev || p.mu.running // a new Run cleared it, or set its own
		p.mu.Unlock()
		if started {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func merge(a, b map[uint32]uint64) map[uint32]uint64 {
	for k, v := range b {
		a[k] = max(a[k], v)
	}
	return a
}

func checkExactlyOnce(t *testing.T, p *Projection, src *fakeSource, filter func(client.RecordedEvent) bool) {
	t.Helper()
	perStream := map[string]uint64{}
	src.mu.Lock()
	defer src.mu.Unlock()
	for _, log := range src.shards {
		for _, ev := range log {
			v, err := p.Get([]byte("n/" + ev.ID.String()))
			if !filter(ev) {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("filtered event %s@%d was handled", ev.Stream, ev.Position)
				}
				continue
			}
			if err != nil || binary.BigEndian.Uint64(v) != 1 {
				t.Fatalf("event %s shard %d pos %d: count %x, err %v", ev.ID, ev.Shard, ev.Position, v, err)
			}
			perStream[ev.Stream]++
		}
	}
	n := 0
	err := p.Scan([]byte("s/"), func(k, v []byte) error {
		n++
		if got := binary.BigEndian.Uint64(v); got != perStream[string(k[2:])] {
			return fmt.Errorf("stream %s total %d, want %d", k[2:], got, perStream[string(k[2:])])
		}
		return nil
	})
	if err != nil || n != len(perStream) {
		t.Fatalf("scan: %v (%d streams, want %d)", err, n, len(perStream))
	}
}

func TestProjectionExactlyOnceAcrossRestarts(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	src := newFakeSource(5, seed)
	src.flaky = true
	fs := vfs.NewMem()
	cfg := testConfig(fs, HandlerFunc(countingHandler))
	cfg.EventTypes = []string{"Deposited"}
	cfg.Registerer = prometheus.NewRegistry() // reopening must re-register cleanly
	want := map[uint32]uint64{}
	for round := range 4 {
		p, err := open(cfg, src)
		if err != nil {
			t.Fatal(err)
		}
		merge(want, src.add(150))
		runUntil(t, p, want)
		if err := p.Close(); err != nil {
			t.Fatalf("round %d close: %v", round, err)
		}
	}
	p, err := open(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	checkExactlyOnce(t, p, src, func(ev client.RecordedEvent) bool { return ev.Type == "Deposited" })
	cp := p.Checkpoint()
	for s, log := range src.shards {
		if cp[s] != uint64(len(log)) {
			t.Fatalf("checkpoint %v, shard %d has %d events", cp, s, len(log))
		}
	}
}

// A stop in the middle of a page (ctx cancelled inside the handler) must not
// commit the page: its events are delivered again after restart, and the
// model still counts each once.
func TestProjectionStopMidPage(t *testing.T) {
	src := newFakeSource(2, 7)
	want := src.add(60)
	fs := vfs.NewMem()
	var (
		mu    sync.Mutex
		calls int
	)
	ctx, cancel := context.WithCancel(context.Background())
	h := HandlerFunc(func(hctx context.Context, b *Batch, ev client.RecordedEvent) error {
		mu.Lock()
		calls++
		if calls == 20 {
			cancel()
		}
		mu.Unlock()
		return countingHandler(hctx, b, ev)
	})
	p, err := open(testConfig(fs, h), src)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	runUntil(t, p, want)
	checkExactlyOnce(t, p, src, func(client.RecordedEvent) bool { return true })
	if calls <= 60 {
		t.Fatalf("handler called %d times for 60 events; the cut page should have been redelivered", calls)
	}
	p.Close()
}

func TestProjectionHandlerErrorStopsWithoutCommit(t *testing.T) {
	src := newFakeSource(3, 11)
	want := src.add(40)
	poison := src.shards[1][2]
	fs := vfs.NewMem()
	failing := HandlerFunc(func(ctx context.Context, b *Batch, ev client.RecordedEvent) error {
		if ev.ID == poison.ID {
			return errors.New("boom")
		}
		return countingHandler(ctx, b, ev)
	})
	p, err := open(testConfig(fs, failing), src)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Run(context.Background())
	var he *HandlerError
	if !errors.As(err, &he) || !errors.Is(err, ErrHandler) || he.Shard != 1 || he.Position != 2 || he.Stream != poison.Stream {
		t.Fatalf("Run = %v, want HandlerError at shard 1 position 2", err)
	}
	if p.Checkpoint()[1] > 2 {
		t.Fatalf("checkpoint %v passed the poison event", p.Checkpoint())
	}
	p.Close()
	// Fixed handler: resumes and ends exactly once.
	p, err = open(testConfig(fs, HandlerFunc(countingHandler)), src)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, p, want)
	checkExactlyOnce(t, p, src, func(client.RecordedEvent) bool { return true })
	p.Close()
}

func TestProjectionClusterMismatch(t *testing.T) {
	fs := vfs.NewMem()
	src := newFakeSource(2, 1)
	p, err := open(testConfig(fs, HandlerFunc(countingHandler)), src)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, p, src.add(3))
	p.Close()
	p, err = open(testConfig(fs, HandlerFunc(countingHandler)), newFakeSource(4, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var me *ClusterMismatchError
	if err := p.Run(context.Background()); !errors.As(err, &me) || me.StoredShards != 2 || me.Shards != 4 {
		t.Fatalf("Run = %v, want ClusterMismatchError", err)
	}
}

// TestProjectionCheckpointAhead: a model whose checkpoint is past its shard's end (a cluster
// restored from a backup older than the model, same ID and shards) is not run: Run returns
// ErrCheckpointAhead, rather than wait at the checkpoint and skip what the cluster writes up to
// it.
func TestProjectionCheckpointAhead(t *testing.T) {
	fs := vfs.NewMem()
	src := newFakeSource(2, 1)
	p, err := open(testConfig(fs, HandlerFunc(countingHandler)), src)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, p, src.add(20))
	p.Close()
	restored := newFakeSource(2, 1)
	restored.add(5)
	p, err = open(testConfig(fs, HandlerFunc(countingHandler)), restored)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Run(ctx); !errors.Is(err, ErrCheckpointAhead) || !errors.Is(err, client.ErrPositionAhead) {
		t.Fatalf("Run over a cluster shorter than the checkpoint: %v, want ErrCheckpointAhead", err)
	}
}

// TestHandlerStopsWithRun: once Run's context ends, the handler is not called on the rest of
// a page, which is not committed: its side effects would only run again after a restart.
func TestHandlerStopsWithRun(t *testing.T) {
	src := newFakeSource(1, 3)
	src.add(7) // one page (PageSize 7)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	p, err := open(testConfig(vfs.NewMem(), HandlerFunc(func(context.Context, *Batch, client.RecordedEvent) error {
		calls++
		cancel() // Run ends while the page is handled
		return nil
	})), src)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if calls != 1 || p.Checkpoint()[0] != 0 {
		t.Fatalf("handler called %d times, checkpoint %d after Run ended on the first event; want 1 and 0", calls, p.Checkpoint()[0])
	}
}

func TestConfigValidate(t *testing.T) {
	var c Config
	if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("zero config: %v", err)
	}
	if _, err := Open(Config{Name: "x"}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Open: %v", err)
	}
	// Filters past what the servers take are refused here, not by the first read.
	base := Config{Name: "x", Handler: HandlerFunc(countingHandler), Dir: t.TempDir(), Client: &client.Client{}}
	for field, mod := range map[string]func(*Config){
		"StreamPrefix": func(c *Config) { c.StreamPrefix = strings.Repeat("p", 513) },
		"EventTypes":   func(c *Config) { c.EventTypes = []string{"A", ""} },
		// PollMax defaults to PollMin: a long poll past client.MaxWait that the first one
		// refused, after a catch-up of hours perhaps, naming the client's Wait.
		"PollMin": func(c *Config) { c.PollMin = 2 * time.Minute },
	} {
		c := base
		mod(&c)
		var ce *ConfigError
		if err := c.Validate(); !errors.As(err, &ce) || ce.Field != field {
			t.Errorf("%s: %v, want a ConfigError on it", field, err)
		}
	}
}

// TestConfigValidateRefusesNonUTF8Filters: a StreamPrefix or event type that is not valid
// UTF-8, which every read refuses (client.ErrInvalidArgument, which Run returns), is refused
// by Validate like the filters' other limits, so Open fails instead of a Run that binds the
// database to the cluster and then ends at its first read.
func TestConfigValidateRefusesNonUTF8Filters(t *testing.T) {
	base := Config{Name: "x", Handler: HandlerFunc(countingHandler), Dir: t.TempDir(), Client: &client.Client{}}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"StreamPrefix", func(c *Config) { c.StreamPrefix = "order-\xff" }},
		{"EventTypes", func(c *Config) { c.EventTypes = []string{"Placed", "Paid\xc3"} }},
	} {
		c := base
		tc.mod(&c)
		var ce *ConfigError
		if err := c.Validate(); !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%s not valid UTF-8: %v, want a ConfigError on it", tc.field, err)
		}
	}
}

func TestCheckpointCovers(t *testing.T) {
	cp := Checkpoint{0, 5}
	for _, tc := range []struct {
		shard uint32
		pos   uint64
		want  bool
	}{{0, 0, false}, {1, 4, true}, {1, 5, false}, {2, 0, false}} {
		if got := cp.Covers(tc.shard, tc.pos); got != tc.want {
			t.Errorf("Covers(%d, %d) = %v", tc.shard, tc.pos, got)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want string }{{"m", "n"}, {"m\xff", "n"}, {"ma", "mb"}, {"\xff\xff", ""}} {
		if got := string(prefixEnd([]byte(tc.in))); got != tc.want {
			t.Errorf("prefixEnd(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestProjectionReadsAfterClose: Get and Scan on a closed projection answer ErrClosed, as
// its calls promise, rather than use the closed database (a panic, or a use after close when
// they ran with Close).
// caughtUpProjection opens a projection over ten events in two shards and runs it until it
// has applied them.
func caughtUpProjection(t *testing.T) *Projection {
	t.Helper()
	src := newFakeSource(2, 5)
	want := src.add(10)
	p, err := open(testConfig(vfs.NewMem(), HandlerFunc(countingHandler)), src)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, p, want)
	return p
}

func TestProjectionReadsAfterClose(t *testing.T) {
	p := caughtUpProjection(t)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get([]byte("k")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if err := p.Scan(nil, func(_, _ []byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Scan after Close: %v, want ErrClosed", err)
	}
}

// TestProjectionCloseWakesWaitFor: a WaitFor pending when the projection is closed, or
// called after, returns ErrClosed rather than wait (and hold its goroutine) until its ctx
// ends.
func TestProjectionCloseWakesWaitFor(t *testing.T) {
	p := caughtUpProjection(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pending := make(chan error, 1)
	go func() { pending <- p.WaitFor(ctx, 0, 1<<40) }() // a position no commit reaches
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// Whether it was already waiting when Close ran or starts after, it must see the close.
	if err := <-pending; !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitFor pending over Close = %v, want ErrClosed", err)
	}
	if err := p.WaitFor(ctx, 0, 1<<40); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitFor after Close = %v, want ErrClosed", err)
	}
}

// TestProjectionCloseDuringScanWithNestedGet: a Scan callback that calls Get (a join) while
// Close waits neither deadlocks nor reads a closed database. The nested Get answers ErrClosed
// once Close began, Close waits for the Scan, and the Scan finishes on the open database.
func TestProjectionCloseDuringScanWithNestedGet(t *testing.T) {
	p := caughtUpProjection(t)
	var keys int
	if err := p.Scan([]byte("s/"), func(_, _ []byte) error { keys++; return nil }); err != nil || keys < 2 {
		t.Fatalf("scan before Close: %d keys, %v; want at least 2", keys, err)
	}

	inScan := make(chan struct{})
	closeDone := make(chan error, 1)
	scanDone := make(chan error, 1)
	go func() {
		seen := 0
		err := p.Scan([]byte("s/"), func(k, _ []byte) error {
			seen++
			if seen > 1 {
				return nil // the rest of the scan reads the database Close is waiting to close
			}
			close(inScan)
			// Get until Close has begun: a nested Get must then answer ErrClosed, not wait
			// for Close, which waits for this Scan.
			for {
				_, err := p.Get(k)
				if errors.Is(err, ErrClosed) {
					break
				}
				if err != nil {
					return fmt.Errorf("nested Get: %w", err)
				}
				time.Sleep(time.Millisecond)
			}
			select {
			case err := <-closeDone:
				return fmt.Errorf("Close returned (%v) under a running Scan", err)
			default:
			}
			return nil
		})
		if err == nil && seen != keys {
			err = fmt.Errorf("scan saw %d keys, want %d", seen, keys)
		}
		scanDone <- err
	}()
	<-inScan
	go func() { closeDone <- p.Close() }()
	timeout := time.After(10 * time.Second)
	select {
	case err := <-scanDone:
		if err != nil {
			t.Fatalf("Scan with a nested Get over Close: %v", err)
		}
	case <-timeout:
		t.Fatal("Scan with a nested Get over Close: deadlocked")
	}
	select {
	case err := <-closeDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-timeout:
		t.Fatal("Close did not return after the Scan")
	}
	if _, err := p.Get([]byte("s/acct-1")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
}

// TestProjectionSecondCloseWaitsForFirst: a Close while another waits for a Scan returns only
// once the database is closed (it returned at once, and a caller reopening the directory met
// Pebble's lock).
func TestProjectionSecondCloseWaitsForFirst(t *testing.T) {
	p := caughtUpProjection(t)
	release, inScan := make(chan struct{}), make(chan struct{})
	scanned := make(chan error, 1)
	go func() {
		scanned <- p.Scan([]byte("s/"), func(_, _ []byte) error {
			select {
			case <-inScan:
			default:
				close(inScan)
				<-release
			}
			return nil
		})
	}()
	<-inScan
	first, second := make(chan error, 1), make(chan error, 1)
	go func() { first <- p.Close() }()
	for waiting := false; !waiting; time.Sleep(time.Millisecond) { // the first Close waits for the Scan
		p.reads.Lock()
		waiting = p.reads.idle != nil
		p.reads.Unlock()
	}
	go func() { second <- p.Close() }()
	time.Sleep(20 * time.Millisecond) // time to return early, were it to
	select {
	case err := <-second:
		t.Fatalf("second Close returned %v while the first waits for a Scan, the database open", err)
	default:
	}
	close(release)
	if err := <-scanned; err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
}

// downAtStart is a fakeSource whose cluster answers no topology request until up is closed.
type downAtStart struct {
	*fakeSource
	up    chan struct{}
	tries atomic.Int32
}

func (d *downAtStart) Shards(ctx context.Context) (uint32, string, error) {
	d.tries.Add(1)
	select {
	case <-d.up:
		return d.fakeSource.Shards(ctx)
	default:
		return 0, "", fmt.Errorf("fake: %w", client.ErrUnavailable)
	}
}

// TestRunWaitsForClusterAtStart: a cluster unavailable when Run starts (a projection started
// beside its cluster, or during an outage longer than the client's retry budget) is retried
// with backoff like a failed read, not returned: Run ends only with its context or a handler.
func TestRunWaitsForClusterAtStart(t *testing.T) {
	src := &downAtStart{fakeSource: newFakeSource(2, 3), up: make(chan struct{})}
	want := src.add(10)
	p, err := open(testConfig(vfs.NewMem(), HandlerFunc(countingHandler)), src)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	for src.tries.Load() < 3 {
		select {
		case err := <-done:
			t.Fatalf("Run = %v while the cluster was unavailable, want it to keep trying", err)
		case <-time.After(time.Millisecond):
		}
	}
	close(src.up)
	for s, pos := range want {
		if err := p.WaitFor(ctx, s, pos); err != nil {
			t.Fatalf("shard %d position %d: %v", s, pos, err)
		}
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

// TestWaitForNoSuchShard: WaitFor for a shard the cluster does not have returns ErrNoShard
// once the shard count is known, where it waited until its ctx ended.
func TestWaitForNoSuchShard(t *testing.T) {
	p := caughtUpProjection(t) // 2 shards
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, 2, 0); !errors.Is(err, ErrNoShard) {
		t.Fatalf("WaitFor(shard 2) of a 2-shard cluster = %v, want ErrNoShard", err)
	}
	if err := p.WaitFor(ctx, 1, 0); err != nil {
		t.Fatalf("WaitFor(shard 1, position 0) = %v", err)
	}
}

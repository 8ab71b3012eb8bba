package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/shard"
)

// companionVersions reads the versions the companion stream of stream holds, from version 0
// on (a truncated stream's read starts at its first version left).
func companionVersions(t testing.TB, store *Store, stream string) []uint64 {
	t.Helper()
	var out []uint64
	for ev, err := range store.Client().Read(testCtx(t), store.Companion(stream)) {
		if err != nil {
			t.Fatalf("reading %q: %v", store.Companion(stream), err)
		}
		out = append(out, ev.Version)
	}
	return out
}

// counter returns the value of the counter name in reg (0 when reg has none).
func counter(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// newPruneStore returns a Store over c with keep and its own registry.
func newPruneStore(t testing.TB, c *client.Client, keep int, logger *slog.Logger) (*Store, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	store, err := New(c, Options{Keep: keep, Registerer: reg, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return store, reg
}

// TestSavePrunes: on a shard at the latest format, a save leaves the newest Options.Keep
// snapshots in the companion stream (default 1), a negative Keep leaves every one, a later
// save (a duplicate too) removes what earlier saves left, and loads go on from the newest.
func TestSavePrunes(t *testing.T) {
	c := testnode.Client(t)
	testnode.WaitMaxFormat(t, c, 30*time.Second)
	ctx := testCtx(t)
	const saves = 5
	saveN := func(t *testing.T, store *Store, stream string, versions ...uint64) {
		t.Helper()
		for _, v := range versions {
			if err := store.Save(ctx, stream, v, fmt.Appendf(nil, "state@%d", v)); err != nil {
				t.Fatalf("save %q@%d: %v", stream, v, err)
			}
		}
	}
	for _, tc := range []struct {
		name string
		keep int
		want string // the companion's versions after saves at 10, 20, .., 50
	}{
		{"default keeps 1", 0, "[4]"},
		{"keep 1", 1, "[4]"},
		{"keep 2", 2, "[3 4]"},
		{"keep more than saved", 10, "[0 1 2 3 4]"},
		{"negative keeps all", -1, "[0 1 2 3 4]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, reg := newPruneStore(t, c, tc.keep, nil)
			stream := fmt.Sprintf("prune-keep%d", tc.keep)
			saveN(t, store, stream, 10, 20, 30, 40, 50)
			if got := fmt.Sprint(companionVersions(t, store, stream)); got != tc.want {
				t.Fatalf("companion after %d saves with Keep %d: versions %s, want %s", saves, tc.keep, got, tc.want)
			}
			snap, ok, err := store.Latest(ctx, stream)
			if err != nil || !ok || snap.Version != 50 || string(snap.State) != "state@50" {
				t.Fatalf("Latest after pruning: %+v, %v, %v; want the version 50 snapshot", snap, ok, err)
			}
			wantPrunes := float64(0)
			switch {
			case tc.keep >= 0 && tc.keep <= 1:
				wantPrunes = saves - 1 // the first save (companion version 0) has nothing to prune
			case tc.keep == 2:
				wantPrunes = saves - 2
			}
			if n := counter(t, reg, "shoal_snapshot_prunes_total"); n != wantPrunes {
				t.Errorf("prunes_total = %v, want %v", n, wantPrunes)
			}
			if n := counter(t, reg, "shoal_snapshot_prune_errors_total"); n != 0 {
				t.Errorf("prune_errors_total = %v, want 0", n)
			}
		})
	}

	// What saves without pruning left (as failed prunes do) goes with the next pruning save,
	// a duplicate of the newest record too.
	t.Run("later save prunes what earlier ones left", func(t *testing.T) {
		const stream = "prune-later"
		all, _ := newPruneStore(t, c, -1, nil)
		one, _ := newPruneStore(t, c, 1, nil)
		saveN(t, all, stream, 10, 20, 30)
		if got := fmt.Sprint(companionVersions(t, all, stream)); got != "[0 1 2]" {
			t.Fatalf("companion after 3 saves without pruning: %s", got)
		}
		saveN(t, one, stream, 30) // a duplicate: nothing written
		if got := fmt.Sprint(companionVersions(t, one, stream)); got != "[2]" {
			t.Fatalf("companion after a duplicate save with Keep 1: %s, want [2]", got)
		}
		saveN(t, all, stream, 40, 50)
		saveN(t, one, stream, 60)
		if got := fmt.Sprint(companionVersions(t, one, stream)); got != "[5]" {
			t.Fatalf("companion after a save with Keep 1: %s, want [5]", got)
		}
	})

	// A Repository on a pruning Store loads from the newest snapshot every time, the
	// companion holding only it.
	t.Run("repository loads", func(t *testing.T) {
		const stream = "prune-acct"
		store, _ := newPruneStore(t, c, 1, nil)
		repo, err := NewRepository(RepositoryConfig[account]{Store: store, Codec: accountCodec,
			Initial: func() account { return account{} }, Apply: applyAccount, Policy: Policy{Every: 10}})
		if err != nil {
			t.Fatal(err)
		}
		for round := range 4 {
			appendEvents(t, c, stream, round*20, 20)
			l, err := repo.Load(ctx, stream) // replays at least 20: saves
			if err != nil || l.Version != uint64(round*20+19) {
				t.Fatalf("round %d: load %+v, %v", round, l, err)
			}
			if got := fmt.Sprint(companionVersions(t, store, stream)); got != fmt.Sprintf("[%d]", round) {
				t.Fatalf("round %d: companion versions %s, want [%d]", round, got, round)
			}
			l, err = repo.Load(ctx, stream)
			if err != nil || !l.FromSnapshot || l.SnapshotVersion != uint64(round*20+19) || l.Replayed != 0 || l.State != replay(t, c, stream) {
				t.Fatalf("round %d: load after the save: %+v (SnapshotErr %v), %v", round, l, l.SnapshotErr, err)
			}
		}
		l, err := Load(ctx, store, stream, account{}, applyAccount, accountCodec)
		if err != nil || !l.FromSnapshot || l.SnapshotVersion != 79 || l.State != replay(t, c, stream) {
			t.Fatalf("Load: %+v, %v", l, err)
		}
	})
}

// logRecords is a slog.Handler keeping every record's message and "err" attribute.
type logRecords struct {
	mu   sync.Mutex
	errs []error
	msgs []string
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecords) WithGroup(string) slog.Handler            { return h }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "err" {
			h.errs = append(h.errs, err)
		}
		return true
	})
	return nil
}

// TestSavePruneFailureKeepsSave: on a shard below format 4 (its placement loop, which raises
// it, held off) every truncation is refused with client.ErrShardFormat; the saves still
// succeed and are loaded, every snapshot stays, and each failed prune is counted and logged.
func TestSavePruneFailureKeepsSave(t *testing.T) {
	cl := testnode.Start(t, 1, testnode.Options{Shards: 1, Replication: 1, Configure: func(_ int, cfg *node.Config) {
		cfg.PlacementInterval = time.Hour // the shard stays at the format it was created at
	}})
	ctx := testCtx(t)
	c, err := client.Dial(ctx, []string{cl.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.GetTopology().GetShards() {
		if s.GetFormat() >= shard.Format4 {
			t.Fatalf("shard %d at format %d: the test needs one below %d", s.GetShard(), s.GetFormat(), shard.Format4)
		}
	}

	logs := &logRecords{}
	store, reg := newPruneStore(t, c, 1, slog.New(logs))
	const stream = "prune-old-format"
	appendEvents(t, c, stream, 0, 30)
	for i, v := range []uint64{9, 19, 29} {
		if err := SaveState(ctx, store, stream, v, replayTo(t, c, stream, v), accountCodec); err != nil {
			t.Fatalf("save %d (@%d) with its prune refused: %v", i, v, err)
		}
	}
	if got := fmt.Sprint(companionVersions(t, store, stream)); got != "[0 1 2]" {
		t.Fatalf("companion after refused prunes: versions %s, want [0 1 2]", got)
	}
	l, err := Load(ctx, store, stream, account{}, applyAccount, accountCodec)
	if err != nil || !l.FromSnapshot || l.SnapshotVersion != 29 || l.Replayed != 0 || l.State != replay(t, c, stream) {
		t.Fatalf("Load after refused prunes: %+v (SnapshotErr %v), %v", l, l.SnapshotErr, err)
	}
	// The first save, at companion version 0, has nothing to prune; the other two failed.
	for name, want := range map[string]float64{
		"shoal_snapshot_saves_total":        3,
		"shoal_snapshot_save_errors_total":  0,
		"shoal_snapshot_prunes_total":       0,
		"shoal_snapshot_prune_errors_total": 2,
	} {
		if n := counter(t, reg, name); n != want {
			t.Errorf("%s = %v, want %v", name, n, want)
		}
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if len(logs.errs) != 2 {
		t.Fatalf("logged %d errors (%q), want the 2 failed prunes", len(logs.errs), logs.msgs)
	}
	for _, err := range logs.errs {
		if !errors.Is(err, client.ErrShardFormat) {
			t.Errorf("logged prune error %v, want client.ErrShardFormat", err)
		}
	}
}

// replayTo folds stream's events 0..v.
func replayTo(t testing.TB, c *client.Client, stream string, v uint64) account {
	t.Helper()
	var a account
	for ev, err := range c.Read(testCtx(t), stream, client.Count(v+1)) {
		if err != nil {
			t.Fatal(err)
		}
		var aerr error
		if a, aerr = applyAccount(a, ev); aerr != nil {
			t.Fatal(aerr)
		}
	}
	return a
}

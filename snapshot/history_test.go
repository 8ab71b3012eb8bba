package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/query"
)

// historyRepo returns a client of a one-node server whose shards are at the latest format, a
// Store over it, and an account Repository with policy.
func historyRepo(t *testing.T, policy Policy) (*client.Client, *Store, *Repository[account]) {
	t.Helper()
	c := testnode.Client(t)
	testnode.WaitMaxFormat(t, c, 30*time.Second)
	store, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := NewRepository(RepositoryConfig[account]{Store: store, Codec: accountCodec,
		Initial: func() account { return account{} }, Apply: applyAccount, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	return c, store, repo
}

// TestTruncateHistory: Repository.TruncateHistory removes an aggregate's events before its
// newest snapshot's version, after which a load from that snapshot still gives the state a
// full replay gave before; without a snapshot to load from (none, or one of another codec) it
// removes nothing.
func TestTruncateHistory(t *testing.T) {
	c, store, repo := historyRepo(t, Policy{Every: 10})
	ctx := testCtx(t)
	versions := func(stream string) string {
		var out []uint64
		for ev, err := range c.Read(ctx, stream) {
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, ev.Version)
		}
		if len(out) == 0 {
			return "none"
		}
		return fmt.Sprintf("%d..%d", out[0], out[len(out)-1])
	}

	const stream = "history-acct"
	appendEvents(t, c, stream, 0, 25)
	if l, err := repo.Load(ctx, stream); err != nil || l.Version != 24 {
		t.Fatalf("load: %+v, %v", l, err) // replayed 25: saves a snapshot at 24
	}
	appendEvents(t, c, stream, 25, 5)
	want := replay(t, c, stream)
	start, truncated, err := repo.TruncateHistory(ctx, stream)
	if err != nil || !truncated || start != 24 {
		t.Fatalf("TruncateHistory: start %d, truncated %v, %v; want 24", start, truncated, err)
	}
	if got := versions(stream); got != "24..29" {
		t.Fatalf("stream after TruncateHistory: versions %s, want 24..29", got)
	}
	l, err := repo.Load(ctx, stream)
	if err != nil || !l.FromSnapshot || l.SnapshotVersion != 24 || l.Replayed != 5 || l.State != want {
		t.Fatalf("load after TruncateHistory: %+v (SnapshotErr %v), %v; want the state %+v from the snapshot at 24", l, l.SnapshotErr, err, want)
	}

	// No snapshot: nothing to load from, so nothing removed.
	const bare = "history-bare"
	appendEvents(t, c, bare, 0, 5)
	if start, truncated, err := repo.TruncateHistory(ctx, bare); err != nil || truncated || start != 0 {
		t.Fatalf("TruncateHistory without a snapshot: start %d, truncated %v, %v; want nothing", start, truncated, err)
	}
	// The newest snapshot in another codec: a load replays from version 0, so nothing goes.
	if err := SaveState(ctx, store, bare, 4, replay(t, c, bare), JSONCodec[account]("account/json/v2")); err != nil {
		t.Fatal(err)
	}
	if _, truncated, err := repo.TruncateHistory(ctx, bare); !errors.Is(err, ErrCodecMismatch) || truncated {
		t.Fatalf("TruncateHistory over another codec's snapshot: truncated %v, %v; want ErrCodecMismatch", truncated, err)
	}
	if got := versions(bare); got != "0..4" {
		t.Fatalf("stream after the refused TruncateHistory: versions %s, want 0..4", got)
	}
}

// TestTruncateHistoryUnusableSnapshot: a snapshot a Load does not start from (one at a version
// the stream never reached, one its codec cannot decode) makes TruncateHistory remove nothing,
// as a load replays such a stream from version 0: truncated, it would fold only the events
// left into the initial state.
func TestTruncateHistoryUnusableSnapshot(t *testing.T) {
	c, store, repo := historyRepo(t, Policy{Disabled: true})
	ctx := testCtx(t)
	for _, tc := range []struct {
		stream string
		save   func(stream string) error
	}{
		{"history-ahead", func(stream string) error { // saved at a version the stream never reached
			return SaveState(ctx, store, stream, 9, account{Balance: 1}, accountCodec)
		}},
		{"history-undecodable", func(stream string) error { // its codec's name, not its encoding
			return store.save(ctx, stream, 4, accountCodec.Name, []byte("not json"), 0)
		}},
	} {
		appendEvents(t, c, tc.stream, 0, 5)
		want := replay(t, c, tc.stream)
		if err := tc.save(tc.stream); err != nil {
			t.Fatal(err)
		}
		if l, err := repo.Load(ctx, tc.stream); err != nil || l.FromSnapshot || l.SnapshotErr == nil || l.State != want {
			t.Fatalf("%s: load before: %+v, %v; want a full replay", tc.stream, l, err)
		}
		if _, truncated, err := repo.TruncateHistory(ctx, tc.stream); truncated || !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: TruncateHistory over a snapshot no load starts from: truncated %v, %v; want ErrCorrupt", tc.stream, truncated, err)
		}
		var n int
		for _, err := range c.Read(ctx, tc.stream) {
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		l, err := repo.Load(ctx, tc.stream)
		if err != nil || n != 5 || l.State != want {
			t.Errorf("%s: after TruncateHistory: %d events, load %+v, %v; want 5 events and the state %+v", tc.stream, n, l, err, want)
		}
	}
}

// TestOlderSaveAfterTruncateHistory: a save of an older version that lands after
// TruncateHistory (a slow Repository.Load's save, overtaken by a newer one's) writes nothing:
// as the companion's newest record it would shadow the snapshot the truncation kept, and a
// Load from it, finding its version removed, would replay the events left from the initial
// state.
func TestOlderSaveAfterTruncateHistory(t *testing.T) {
	c, store, repo := historyRepo(t, Policy{Disabled: true})
	ctx := testCtx(t)
	const stream = "history-older-save"
	appendEvents(t, c, stream, 0, 50)
	want, at24 := replay(t, c, stream), replayTo(t, c, stream, 24)
	if err := SaveState(ctx, store, stream, 40, replayTo(t, c, stream, 40), accountCodec); err != nil {
		t.Fatal(err)
	}
	if start, truncated, err := repo.TruncateHistory(ctx, stream); err != nil || !truncated || start != 40 {
		t.Fatalf("TruncateHistory: start %d, truncated %v, %v; want 40", start, truncated, err)
	}
	if err := SaveState(ctx, store, stream, 24, at24, accountCodec); err != nil {
		t.Fatal(err)
	}
	l, err := repo.Load(ctx, stream)
	if err != nil || !l.FromSnapshot || l.SnapshotVersion != 40 || l.State != want {
		t.Fatalf("load after an older save: %+v (SnapshotErr %v), %v; want the state %+v from the snapshot at 40", l, l.SnapshotErr, err, want)
	}
}

// TestLoadTruncatedPastSnapshot: a stream truncated past its newest snapshot's version (by
// client.Truncate, not TruncateHistory) fails Load with client.ErrHistoryTruncated, as does one
// truncated without a snapshot to load from, rather than loading the state of the events left
// folded into the initial state; a soft delete and the history written after it still load.
func TestLoadTruncatedPastSnapshot(t *testing.T) {
	c, _, repo := historyRepo(t, Policy{Every: 10})
	ctx := testCtx(t)

	const stream = "history-past"
	appendEvents(t, c, stream, 0, 25)
	if l, err := repo.Load(ctx, stream); err != nil || l.Version != 24 {
		t.Fatalf("load: %+v, %v", l, err) // replayed 25: saves a snapshot at 24
	}
	appendEvents(t, c, stream, 25, 5)
	if _, err := c.Truncate(ctx, stream, 27, client.Any); err != nil {
		t.Fatal(err)
	}
	l, err := repo.Load(ctx, stream)
	var hte *client.HistoryTruncatedError
	if !errors.As(err, &hte) || hte.From != 24 || hte.Start != 27 {
		t.Fatalf("load of a stream truncated past its snapshot: %+v, %v; want ErrHistoryTruncated from 24, start 27", l, err)
	}

	const bare = "history-past-bare" // no snapshot: a load replays from version 0
	appendEvents(t, c, bare, 0, 5)
	if _, err := c.Truncate(ctx, bare, 2, client.Any); err != nil {
		t.Fatal(err)
	}
	if l, err := repo.Load(ctx, bare); !errors.Is(err, client.ErrHistoryTruncated) {
		t.Fatalf("load of a truncated stream without a snapshot: %+v, %v; want ErrHistoryTruncated", l, err)
	}

	// Deleted and written again: the new history is whole, and loads from its first version.
	if err := c.Delete(ctx, bare, client.Any); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, c, bare, 5, 3)
	l, err = repo.Load(ctx, bare)
	if err != nil || l.Version != 7 || l.Replayed != 3 || l.FromSnapshot {
		t.Fatalf("load after a delete and three appends: %+v, %v; want versions 5..7 replayed", l, err)
	}

	// After TruncateHistory the snapshot is the only start: a repository of another codec
	// has none, and is refused too.
	const kept = "history-past-kept"
	appendEvents(t, c, kept, 0, 12)
	if _, err := repo.Load(ctx, kept); err != nil { // saves a snapshot at 11
		t.Fatal(err)
	}
	if _, truncated, err := repo.TruncateHistory(ctx, kept); err != nil || !truncated {
		t.Fatalf("TruncateHistory: %v, %v", truncated, err)
	}
	v2, err := NewRepository(RepositoryConfig[account]{Store: repo.cfg.Store, Codec: JSONCodec[account]("account/json/v2"),
		Initial: func() account { return account{} }, Apply: applyAccount})
	if err != nil {
		t.Fatal(err)
	}
	// The error says why the load did not start from the snapshot, and what to do.
	if l, err := v2.Load(ctx, kept); !errors.Is(err, client.ErrHistoryTruncated) || !strings.Contains(err.Error(), "codec") ||
		!strings.Contains(err.Error(), "SaveState") {
		t.Fatalf("load in another codec after TruncateHistory: %+v, %v; want ErrHistoryTruncated, naming the codec "+
			"and SaveState", l, err)
	}
}

// TestLoadRacingTruncateHistory: a load that read the newest snapshot just before another
// process saved a newer one and truncated the history before it (TruncateHistory) finds the
// events after its snapshot gone, and loads again from the newer snapshot rather than failing
// with client.ErrHistoryTruncated. The race is set up in the codec's Decode, which the load
// calls between its read of the snapshot and its read of the stream.
func TestLoadRacingTruncateHistory(t *testing.T) {
	c, store, _ := historyRepo(t, Policy{})
	ctx := testCtx(t)
	const stream = "history-race"
	appendEvents(t, c, stream, 0, 30)
	if err := SaveState(ctx, store, stream, 9, replayTo(t, c, stream, 9), accountCodec); err != nil {
		t.Fatal(err)
	}
	other, err := NewRepository(RepositoryConfig[account]{Store: store, Codec: accountCodec,
		Initial: func() account { return account{} }, Apply: applyAccount, Policy: Policy{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	want := replay(t, c, stream)
	raced := false
	racing := accountCodec
	racing.Decode = func(b []byte) (account, error) {
		if !raced {
			raced = true
			if err := SaveState(ctx, store, stream, 29, want, accountCodec); err != nil {
				t.Error(err)
			}
			if start, truncated, err := other.TruncateHistory(ctx, stream); err != nil || !truncated || start != 29 {
				t.Errorf("TruncateHistory: %d, %v, %v", start, truncated, err)
			}
		}
		return accountCodec.Decode(b)
	}
	l, err := Load(ctx, store, stream, account{}, applyAccount, racing)
	if err != nil || !raced || !l.FromSnapshot || l.SnapshotVersion != 29 || l.Version != 29 || l.State != want {
		t.Fatalf("load racing TruncateHistory: %+v, %v (raced %v); want the state from the snapshot at 29", l, err, raced)
	}
}

// TestTruncateHistoryReadBy: with ReadBy, TruncateHistory removes nothing (ErrUnread) while a
// reader has not read every event it would remove, which it would then never see: a
// projection that has not run, or a reader one event short; it truncates once they have read
// up to the first event it keeps. A deleted stream, whose events' positions cannot be read, is
// refused as not found.
func TestTruncateHistoryReadBy(t *testing.T) {
	c, _, repo := historyRepo(t, Policy{Every: 10})
	ctx := testCtx(t)

	// A reader of known progress: up to the event before the snapshot's, or one short of it.
	const exact = "readby-exact"
	appendEvents(t, c, exact, 0, 25)
	if l, err := repo.Load(ctx, exact); err != nil || l.Version != 24 {
		t.Fatalf("load: %+v, %v", l, err) // saves a snapshot at 24
	}
	var at24 client.RecordedEvent
	for ev, err := range c.Read(ctx, exact, client.FromVersion(24)) {
		if err != nil {
			t.Fatal(err)
		}
		at24 = ev
		break
	}
	upTo := func(last uint64) TruncateOption {
		return ReadBy(func(shard uint32, position uint64) bool { return shard == at24.Shard && position <= last })
	}
	if _, truncated, err := repo.TruncateHistory(ctx, exact, upTo(at24.Position-2)); !errors.Is(err, ErrUnread) || truncated {
		t.Fatalf("TruncateHistory with a reader one event short: truncated %v, %v; want ErrUnread", truncated, err)
	}
	if start, truncated, err := repo.TruncateHistory(ctx, exact, upTo(at24.Position-1)); err != nil || !truncated || start != 24 {
		t.Fatalf("TruncateHistory with a reader up to version 23: start %d, truncated %v, %v; want 24", start, truncated, err)
	}

	// A projection: refused before it ran, truncated once it caught up.
	const stream = "history-readby"
	var handled atomic.Int64
	proj, err := query.Open(query.Config{Name: "readby", Client: c, Dir: t.TempDir(), StreamPrefix: stream,
		Handler: query.HandlerFunc(func(context.Context, *query.Batch, client.RecordedEvent) error {
			handled.Add(1)
			return nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	defer proj.Close()
	readBy := ReadBy(func(shard uint32, position uint64) bool { return proj.Checkpoint().Covers(shard, position) })
	appendEvents(t, c, stream, 0, 25)
	if l, err := repo.Load(ctx, stream); err != nil || l.Version != 24 {
		t.Fatalf("load: %+v, %v", l, err)
	}
	if _, truncated, err := repo.TruncateHistory(ctx, stream, readBy); !errors.Is(err, ErrUnread) || truncated {
		t.Fatalf("TruncateHistory before the projection ran: truncated %v, %v; want ErrUnread", truncated, err)
	}
	last, err := c.Append(ctx, stream, client.Exact(24), client.Event{Type: "Deposited", Data: []byte("25")})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- proj.Run(runCtx) }()
	if err := proj.WaitForAppend(ctx, last); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-ran; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if n := handled.Load(); n != 26 {
		t.Fatalf("the projection handled %d events, want all 26", n)
	}
	start, truncated, err := repo.TruncateHistory(ctx, stream, readBy)
	if err != nil || !truncated || start != 24 {
		t.Fatalf("TruncateHistory once read: start %d, truncated %v, %v; want 24", start, truncated, err)
	}

	// Deleted: not ErrUnread, which waiting would not end.
	if err := c.Delete(ctx, stream, client.Any); err != nil {
		t.Fatal(err)
	}
	if _, truncated, err := repo.TruncateHistory(ctx, stream, readBy); !errors.Is(err, client.ErrStreamNotFound) ||
		errors.Is(err, ErrUnread) || truncated {
		t.Fatalf("TruncateHistory of a deleted stream with ReadBy: truncated %v, %v; want ErrStreamNotFound", truncated, err)
	}
}

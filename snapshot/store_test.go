package snapshot

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// account is the test aggregate; Digest makes the fold order-sensitive.
type account struct {
	Balance int64
	Events  int
	Digest  uint64
}

func applyAccount(a account, ev client.RecordedEvent) (account, error) {
	n, err := strconv.ParseInt(string(ev.Data), 10, 64)
	if err != nil {
		return a, err
	}
	switch ev.Type {
	case "Deposited":
		a.Balance += n
	case "Withdrawn":
		a.Balance -= n
	default:
		return a, fmt.Errorf("unknown event %q", ev.Type)
	}
	a.Events++
	a.Digest = a.Digest*1099511628211 + uint64(n) + ev.Version
	return a, nil
}

var accountCodec = JSONCodec[account]("account/json/v1")

// appendEvents appends n events to stream in batches, from event number
// first on.
func appendEvents(t testing.TB, c *client.Client, stream string, first, n int) {
	t.Helper()
	ctx := testCtx(t)
	for i := 0; i < n; {
		var batch []client.Event
		for ; i < n && len(batch) < 500; i++ {
			typ := "Deposited"
			if (first+i)%3 == 2 {
				typ = "Withdrawn"
			}
			batch = append(batch, client.Event{Type: typ, Data: []byte(strconv.Itoa(first + i))})
		}
		if _, err := c.Append(ctx, stream, client.Any, batch...); err != nil {
			t.Fatal(err)
		}
	}
}

func replay(t testing.TB, c *client.Client, stream string) account {
	t.Helper()
	var a account
	for ev, err := range c.Read(testCtx(t), stream) {
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

func TestStoreSnapshots(t *testing.T) {
	c := testnode.Client(t)
	store, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)

	// After a codec change, the first save at a version already saved in the old codec is
	// written, not dropped as a repeat of the old record: loads use it at once.
	t.Run("save in another codec at a saved version", func(t *testing.T) {
		const stream = "acct-codec"
		appendEvents(t, c, stream, 0, 50)
		v1, err := New(c, Options{Codec: "acct.v1"})
		if err != nil {
			t.Fatal(err)
		}
		v2, err := New(c, Options{Codec: "acct.v2"})
		if err != nil {
			t.Fatal(err)
		}
		if err := v1.Save(ctx, stream, 49, []byte("old")); err != nil {
			t.Fatal(err)
		}
		if err := v2.Save(ctx, stream, 49, []byte("new")); err != nil {
			t.Fatal(err)
		}
		snap, ok, err := v2.Latest(ctx, stream)
		if err != nil || !ok || snap.Codec != "acct.v2" || string(snap.State) != "new" {
			t.Fatalf("Latest in the new codec = %+v, %v, %v; want the new codec's record", snap, ok, err)
		}
	})

	t.Run("save latest load equals replay", func(t *testing.T) {
		const stream = "acct-1"
		appendEvents(t, c, stream, 0, 120)
		if _, ok, err := store.Latest(ctx, stream); ok || err != nil {
			t.Fatalf("Latest before save: ok %v err %v", ok, err)
		}
		l, err := Load(ctx, store, stream, account{}, applyAccount, accountCodec)
		if err != nil || l.FromSnapshot || l.Replayed != 120 || !l.Exists || l.Version != 119 {
			t.Fatalf("first load %+v, %v", l, err)
		}
		if err := SaveState(ctx, store, stream, l.Version, l.State, accountCodec); err != nil {
			t.Fatal(err)
		}
		appendEvents(t, c, stream, 120, 30)
		l2, err := Load(ctx, store, stream, account{}, applyAccount, accountCodec)
		if err != nil {
			t.Fatal(err)
		}
		if !l2.FromSnapshot || l2.SnapshotVersion != 119 || l2.Replayed != 30 || l2.Version != 149 {
			t.Fatalf("second load %+v", l2)
		}
		if want := replay(t, c, stream); l2.State != want {
			t.Fatalf("snapshot load %+v != replay %+v", l2.State, want)
		}
		if l2.Expected() != client.Exact(149) {
			t.Fatalf("Expected = %v", l2.Expected())
		}
		// Re-saving the same version is an idempotent no-op.
		if err := SaveState(ctx, store, stream, 119, account{Balance: -1}, accountCodec); err != nil {
			t.Fatal(err)
		}
		typed, err := New(c, Options{Codec: accountCodec.Name})
		if err != nil {
			t.Fatal(err)
		}
		snap, ok, err := typed.Latest(ctx, stream)
		if err != nil || !ok || snap.Version != 119 || snap.Codec != accountCodec.Name || snap.Stream != stream {
			t.Fatalf("Latest = %+v %v %v", snap, ok, err)
		}
		if s, _ := accountCodec.Decode(snap.State); s.Balance == -1 {
			t.Fatal("duplicate save overwrote the snapshot")
		}
	})

	// A soft delete right after the snapshot's version leaves the versions dense (the stream
	// goes on at the next one), so only the snapshot's own event, no longer visible, tells
	// that the snapshot folds deleted history.
	t.Run("soft delete after the snapshot", func(t *testing.T) {
		const stream = "acct-deleted"
		appendEvents(t, c, stream, 0, 10)
		l, err := Load(ctx, store, stream, account{}, applyAccount, accountCodec)
		if err != nil {
			t.Fatal(err)
		}
		if err := SaveState(ctx, store, stream, l.Version, l.State, accountCodec); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, stream, client.Exact(9)); err != nil {
			t.Fatal(err)
		}
		appendEvents(t, c, stream, 100, 3)
		l, err = Load(ctx, store, stream, account{}, applyAccount, accountCodec)
		if err != nil {
			t.Fatal(err)
		}
		want := replay(t, c, stream)
		if l.State != want || l.FromSnapshot || l.Replayed != 3 || l.Version != 12 || !errors.Is(l.SnapshotErr, ErrDeletedHistory) {
			t.Fatalf("load after a soft delete: %+v (SnapshotErr %v); replay %+v", l, l.SnapshotErr, want)
		}
		// A snapshot taken after the delete is used.
		if err := SaveState(ctx, store, stream, l.Version, l.State, accountCodec); err != nil {
			t.Fatal(err)
		}
		appendEvents(t, c, stream, 200, 2)
		l, err = Load(ctx, store, stream, account{}, applyAccount, accountCodec)
		if err != nil || !l.FromSnapshot || l.SnapshotErr != nil || l.Replayed != 2 || l.Version != 14 || l.State != replay(t, c, stream) {
			t.Fatalf("load from a snapshot taken after the delete: %+v, %v", l, err)
		}
	})

	// A snapshot saved at a version the stream never reached claims a state it never had: it
	// is not used (it was, and every append expecting its version failed until the stream got
	// there, then went through on the wrong state).
	t.Run("snapshot ahead of the stream", func(t *testing.T) {
		const stream = "acct-ahead"
		appendEvents(t, c, stream, 0, 10)
		if err := SaveState(ctx, store, stream, 500, account{Balance: 999999, Events: 500}, accountCodec); err != nil {
			t.Fatal(err)
		}
		l, err := Load(ctx, store, stream, account{}, applyAccount, accountCodec)
		if err != nil {
			t.Fatal(err)
		}
		if want := replay(t, c, stream); l.FromSnapshot || l.State != want || l.Version != 9 || l.Replayed != 10 || !errors.Is(l.SnapshotErr, ErrCorrupt) {
			t.Fatalf("load with a snapshot past the stream's end: %+v (SnapshotErr %v); replay %+v", l, l.SnapshotErr, want)
		}
	})

	// A Repository's save after such a load supersedes that snapshot: later loads start from
	// the new one, and the one ahead is not taken for the stream's state once the stream gets
	// to its version (before, it stayed the newest: every load replayed the stream in full,
	// and then loaded the wrong state).
	t.Run("snapshot ahead superseded", func(t *testing.T) {
		const stream = "acct-ahead-repo"
		appendEvents(t, c, stream, 0, 10)
		if err := SaveState(ctx, store, stream, 5, replayTo(t, c, stream, 5), accountCodec); err != nil {
			t.Fatal(err)
		}
		if err := SaveState(ctx, store, stream, 50, account{Balance: 999999, Events: 50}, accountCodec); err != nil {
			t.Fatal(err)
		}
		repo, err := NewRepository(RepositoryConfig[account]{Store: store, Codec: accountCodec,
			Initial: func() account { return account{} }, Apply: applyAccount})
		if err != nil {
			t.Fatal(err)
		}
		if l, err := repo.Load(ctx, stream); err != nil || l.FromSnapshot || l.Version != 9 || !errors.Is(l.SnapshotErr, ErrCorrupt) ||
			!strings.Contains(l.SnapshotErr.Error(), "@1): snapshot at version 50, but the stream ends before it") {
			t.Fatalf("first load: %+v, %v; want a replay of 10 events, the snapshot at 50 (record 1) rejected", l, err)
		}
		if l, err := repo.Load(ctx, stream); err != nil || !l.FromSnapshot || l.SnapshotVersion != 9 || l.Replayed != 0 {
			t.Fatalf("second load: %+v, %v; want the snapshot at 9 saved by the first", l, err)
		}
		appendEvents(t, c, stream, 10, 50)
		if l, err := repo.Load(ctx, stream); err != nil || l.State != replay(t, c, stream) || l.SnapshotVersion != 9 || l.Replayed != 50 {
			t.Fatalf("load once the stream passed version 50: %+v, %v; want the snapshot at 9 and 50 events", l, err)
		}
	})

	// So is one its codec cannot decode at the stream's own last version (an encoding changed
	// without a new codec name), or a corrupt one there: the new record has an ID of its own
	// (with the same, the save was taken for the old record's repeat and wrote nothing, and
	// every load of an idle aggregate replayed it in full).
	t.Run("undecodable superseded at its version", func(t *testing.T) {
		repo, err := NewRepository(RepositoryConfig[account]{Store: store, Codec: accountCodec,
			Initial: func() account { return account{} }, Apply: applyAccount})
		if err != nil {
			t.Fatal(err)
		}
		for i, bad := range [][]byte{[]byte("not json"), nil} {
			stream := fmt.Sprintf("acct-undecodable-%d", i)
			appendEvents(t, c, stream, 0, 5)
			if bad != nil {
				err = store.save(ctx, stream, 4, accountCodec.Name, bad, 0)
			} else { // corrupt: a record of the right type whose header does not parse
				_, err = c.Append(ctx, store.Companion(stream), client.NoStream, client.Event{
					ID: recordID(store.Companion(stream), 4, accountCodec.Name, 0), Type: EventType, Data: []byte("garbage"), ContentType: ContentType})
			}
			if err != nil {
				t.Fatal(err)
			}
			if l, err := repo.Load(ctx, stream); err != nil || l.FromSnapshot || l.Version != 4 || l.SnapshotErr == nil {
				t.Fatalf("%s: first load: %+v, %v; want a replay, the snapshot at 4 rejected", stream, l, err)
			}
			if l, err := repo.Load(ctx, stream); err != nil || !l.FromSnapshot || l.SnapshotVersion != 4 || l.Replayed != 0 || l.State != replay(t, c, stream) {
				t.Fatalf("%s: second load: %+v, %v; want the snapshot at 4 saved by the first", stream, l, err)
			}
		}
	})

	t.Run("missing stream", func(t *testing.T) {
		l, err := Load(ctx, store, "nobody", account{}, applyAccount, accountCodec)
		if err != nil || l.Exists || l.Expected() != client.NoStream {
			t.Fatalf("load of missing stream: %+v %v", l, err)
		}
	})

	t.Run("raw bytes and long names", func(t *testing.T) {
		long := "long-" + strings.Repeat("n", 500)
		for _, stream := range []string{"raw-1", long} {
			state := []byte(strings.Repeat("state ", 1000))
			if err := store.Save(ctx, stream, 41, state); err != nil {
				t.Fatal(err)
			}
			snap, ok, err := store.Latest(ctx, stream)
			if err != nil || !ok || snap.Version != 41 || string(snap.State) != string(state) {
				t.Fatalf("%d-byte name: %v %v", len(stream), ok, err)
			}
		}
		if !strings.HasPrefix(store.Companion(long), DefaultPrefix+"#") {
			t.Fatalf("companion of long name: %q", store.Companion(long))
		}
	})

	t.Run("corrupt snapshot detected and replayed around", func(t *testing.T) {
		const stream = "acct-corrupt"
		appendEvents(t, c, stream, 0, 50)
		good := replay(t, c, stream)
		if err := SaveState(ctx, store, stream, 49, good, accountCodec); err != nil {
			t.Fatal(err)
		}
		snap, _, _ := store.latest(ctx, stream, accountCodec.Name)
		rec := encodeRecord(stream, accountCodec.Name, 49, snap.State)
		other := encodeRecord("acct-other", accountCodec.Name, 49, snap.State)
		flipped := append([]byte(nil), rec...)
		flipped[len(flipped)/2] ^= 0x10
		for _, tc := range []struct {
			name, typ string
			data      []byte
			want      error
		}{
			{"bit flip", EventType, flipped, ErrCorrupt},
			{"truncated", EventType, rec[:len(rec)-3], ErrCorrupt},
			{"foreign stream", EventType, other, ErrCorrupt},
			{"not a snapshot", "UserEvent", rec, ErrCorrupt},
			{"other codec", EventType, encodeRecord(stream, "account/json/v0", 49, snap.State), ErrCodecMismatch},
		} {
			if _, err := c.Append(ctx, store.Companion(stream), client.Any, client.Event{Type: tc.typ, Data: tc.data}); err != nil {
				t.Fatal(err)
			}
			_, _, err := store.latest(ctx, stream, accountCodec.Name)
			var ce *CorruptError
			if !errors.Is(err, tc.want) || !errors.As(err, &ce) || ce.Stream != stream || !strings.Contains(err.Error(), stream) {
				t.Fatalf("%s: Latest err = %v, want %v naming %q", tc.name, err, tc.want, stream)
			}
			l, err := Load(ctx, store, stream, account{}, applyAccount, accountCodec)
			if err != nil || l.FromSnapshot || !errors.Is(l.SnapshotErr, tc.want) || l.State != good || l.Replayed != 50 {
				t.Fatalf("%s: Load fell back wrongly: %+v %v", tc.name, l, err)
			}
			// Another codec's record is another process's (a deploy changing the codec,
			// part-way): the save after the load does not supersede it; a corrupt one it does.
			if codec := tc.want == ErrCodecMismatch; codec != (l.rejected == 0) {
				t.Fatalf("%s: the save after the load supersedes record %d, want it to only when the record is not another codec's", tc.name, int64(l.rejected)-1)
			}
		}
	})

	t.Run("repository policy", func(t *testing.T) {
		const stream = "acct-repo"
		repo, err := NewRepository(RepositoryConfig[account]{
			Store: store, Codec: accountCodec, Initial: func() account { return account{} },
			Apply: applyAccount, Policy: Policy{Every: 25},
		})
		if err != nil {
			t.Fatal(err)
		}
		appendEvents(t, c, stream, 0, 10)
		l, err := repo.Load(ctx, stream)
		if err != nil || l.Replayed != 10 {
			t.Fatalf("load: %+v %v", l, err)
		}
		if _, ok, _ := store.Latest(ctx, stream); ok {
			t.Fatal("snapshot saved below the policy threshold")
		}
		appendEvents(t, c, stream, 10, 30)
		if l, err = repo.Load(ctx, stream); err != nil || l.Replayed != 40 {
			t.Fatalf("load: %+v %v", l, err)
		}
		if l, err = repo.Load(ctx, stream); err != nil || !l.FromSnapshot || l.Replayed != 0 || l.State != replay(t, c, stream) {
			t.Fatalf("load after policy save: %+v %v", l, err)
		}
		// Append through the repository with the loaded version; a stale
		// load then loses.
		if _, err := repo.Append(ctx, stream, l, client.Event{Type: "Deposited", Data: []byte("5")}); err != nil {
			t.Fatal(err)
		}
		if _, err := repo.Append(ctx, stream, l, client.Event{Type: "Deposited", Data: []byte("5")}); !errors.Is(err, client.ErrWrongExpectedVersion) {
			t.Fatalf("stale append: %v", err)
		}
	})

	// Policy.Disabled saves nothing, not even in place of a snapshot the load could not use
	// (another codec's, as during a rolling codec change, when saving is turned off).
	t.Run("repository disabled", func(t *testing.T) {
		const stream = "acct-disabled"
		appendEvents(t, c, stream, 0, 10)
		if err := SaveState(ctx, store, stream, 9, account{}, JSONCodec[account]("account/json/v0")); err != nil {
			t.Fatal(err)
		}
		repo, err := NewRepository(RepositoryConfig[account]{Store: store, Codec: accountCodec,
			Initial: func() account { return account{} }, Apply: applyAccount, Policy: Policy{Disabled: true}})
		if err != nil {
			t.Fatal(err)
		}
		if l, err := repo.Load(ctx, stream); err != nil || l.FromSnapshot || l.Replayed != 10 {
			t.Fatalf("load: %+v %v", l, err)
		}
		recs, err := c.ReadPage(ctx, store.Companion(stream), client.Count(100))
		if err != nil || len(recs) != 1 {
			t.Fatalf("the companion stream holds %d records after a load with Policy.Disabled (%v), want 1: a save", len(recs), err)
		}
	})
}

func TestNewValidates(t *testing.T) {
	if _, err := New(nil, Options{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("nil client: %v", err)
	}
	if _, err := NewRepository(RepositoryConfig[account]{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("empty repository config: %v", err)
	}
	if err := (Codec[account]{Name: "x"}).validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("codec without funcs: %v", err)
	}
}

// BenchmarkLoad10k loads a 10,000-event aggregate with and without a
// snapshot 10 events behind the head.
func BenchmarkLoad10k(b *testing.B) {
	c := testnode.Client(b)
	store, err := New(c, Options{})
	if err != nil {
		b.Fatal(err)
	}
	const stream = "bench-acct"
	appendEvents(b, c, stream, 0, 10000)
	ctx := context.Background()
	full := replay(b, c, stream)
	noSnap, _ := New(c, Options{Prefix: "nosnap"}) // empty companion namespace

	b.Run("without-snapshot", func(b *testing.B) {
		for b.Loop() {
			l, err := Load(ctx, noSnap, stream, account{}, applyAccount, accountCodec)
			if err != nil || l.FromSnapshot || l.State != full {
				b.Fatalf("%+v %v", l, err)
			}
		}
	})
	var at account
	for ev, err := range c.Read(ctx, stream, client.Count(9990)) {
		if err != nil {
			b.Fatal(err)
		}
		at, _ = applyAccount(at, ev)
	}
	if err := SaveState(ctx, store, stream, 9989, at, accountCodec); err != nil {
		b.Fatal(err)
	}
	b.Run("with-snapshot", func(b *testing.B) {
		for b.Loop() {
			l, err := Load(ctx, store, stream, account{}, applyAccount, accountCodec)
			if err != nil || !l.FromSnapshot || l.Replayed != 10 || l.State != full {
				b.Fatalf("%+v %v", l, err)
			}
		}
	})
}

// TestSaveTooLargeNamesLimit: a refused Save names the limit it broke, Options.MaxStateSize (which
// the caller can raise) or MaxRecordSize (one event's data, which no option raises), and not
// only a number, and writes nothing.
func TestSaveTooLargeNamesLimit(t *testing.T) {
	c := testnode.Client(t)
	ctx := testCtx(t)
	small, err := New(c, Options{MaxStateSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	large, err := New(c, Options{MaxStateSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	incompressible := make([]byte, 5<<20)
	for i, r := 0, rand.New(rand.NewChaCha8([32]byte{1})); i < len(incompressible); i += 8 {
		binary.LittleEndian.PutUint64(incompressible[i:], r.Uint64())
	}
	for _, tc := range []struct {
		store *Store
		state []byte
		want  string
	}{
		{small, make([]byte, 2<<20), "MaxStateSize"},
		{large, incompressible, "MaxRecordSize"},
	} {
		err := tc.store.Save(ctx, "too-large", 0, tc.state)
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Save of %d bytes = %v, want ErrTooLarge naming %s", len(tc.state), err, tc.want)
		}
	}
	if _, ok, err := large.Latest(ctx, "too-large"); ok || err != nil {
		t.Fatalf("Latest after refused saves: ok %v, err %v; want nothing written", ok, err)
	}
}

// TestSaveRefusesInvalidStreamName: a Save for a name no stream can have (empty, a system
// stream's, past 512 bytes, or with a control character past the direct form's length) is
// refused as the server refuses such a name, and writes nothing: its companion name is
// legal, so the record was written, for an aggregate no Load can read (and, past 512 bytes,
// one Latest took for corrupt).
func TestSaveRefusesInvalidStreamName(t *testing.T) {
	c := testnode.Client(t)
	ctx := testCtx(t)
	store, err := New(c, Options{Prefix: "invalid-names"})
	if err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{
		"",
		"$system",
		strings.Repeat("n", maxStreamNameLen+1),
		"bad\x01" + strings.Repeat("n", maxStreamNameLen-10),
	} {
		err := store.Save(ctx, stream, 0, []byte("state"))
		if !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("Save for a %d-byte stream name %.12q: %v, want client.ErrInvalidArgument", len(stream), stream, err)
		}
		for _, err := range c.Read(ctx, store.Companion(stream)) {
			if !errors.Is(err, client.ErrStreamNotFound) {
				t.Errorf("companion %.24q of a %d-byte stream name: %v; want nothing written", store.Companion(stream), len(stream), err)
			}
			break
		}
	}
}

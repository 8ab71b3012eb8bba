package snapshot

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
)

// TestAppendRefusesAnotherStream: Repository.Append with a state loaded from one stream, given
// another at the same version, is refused as an invalid argument naming both streams, and
// writes nothing: its exact expected version would hold on the other stream, and the
// optimistic-concurrency check (caller duty 4) would pass on a state that is not that
// stream's. A Loaded naming no stream (built by hand) appends only the first events of a new
// stream.
func TestAppendRefusesAnotherStream(t *testing.T) {
	c := testnode.Client(t)
	ctx := testCtx(t)
	store, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := NewRepository(RepositoryConfig[account]{Store: store, Codec: accountCodec,
		Initial: func() account { return account{} }, Apply: applyAccount, Policy: Policy{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	appendEvents(t, c, "agg-a", 0, 5) // versions 0..4
	appendEvents(t, c, "agg-b", 0, 5)
	loadedA, err := repo.Load(ctx, "agg-a")
	if err != nil || loadedA.Version != 4 || loadedA.Stream != "agg-a" {
		t.Fatalf("Load(agg-a) = version %d of %q, %v; want version 4 of agg-a", loadedA.Version, loadedA.Stream, err)
	}
	absent, err := Load(ctx, store, "agg-absent", account{}, applyAccount, accountCodec)
	if err != nil || absent.Exists || absent.Stream != "agg-absent" {
		t.Fatalf("Load(agg-absent) = exists %v, stream %q, %v; want a new stream's state naming it", absent.Exists, absent.Stream, err)
	}
	deposit := client.Event{Type: "Deposited", Data: []byte("7")}

	for _, tc := range []struct {
		name   string
		stream string
		l      Loaded[account]
		want   error    // nil: appended
		names  []string // the refusal names these
	}{
		{"another stream at the same version", "agg-b", loadedA, client.ErrInvalidArgument, []string{`"agg-a"`, `"agg-b"`}},
		{"another stream's absent state", "agg-new-1", absent, client.ErrInvalidArgument, []string{`"agg-absent"`, `"agg-new-1"`}},
		{"existing state naming no stream", "agg-b", Loaded[account]{Exists: true, Version: 4}, client.ErrInvalidArgument, []string{`"agg-b"`, "names no stream"}},
		{"zero state, new stream", "agg-new-2", Loaded[account]{}, nil, nil},
		{"zero state, existing stream", "agg-b", Loaded[account]{}, client.ErrWrongExpectedVersion, nil},
		{"its own stream", "agg-a", loadedA, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _, err := readLast(ctx, c, tc.stream)
			if err != nil {
				t.Fatal(err)
			}
			res, err := repo.Append(ctx, tc.stream, tc.l, deposit)
			if tc.want == nil {
				next := uint64(0)
				if tc.l.Exists {
					next = tc.l.Version + 1
				}
				if err != nil || res.FirstVersion != next {
					t.Fatalf("Append = %+v, %v; want the event at version %d", res, err, next)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Append to %q with a state of %q (exists %v, version %d) = %+v, %v; want %v",
					tc.stream, tc.l.Stream, tc.l.Exists, tc.l.Version, res, err, tc.want)
			}
			for _, name := range tc.names {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("refusal %q does not name %s", err, name)
				}
			}
			after, _, err := readLast(ctx, c, tc.stream)
			if err != nil || after.Version != before.Version || after.ID != before.ID {
				t.Fatalf("%q ends at version %d after the refusal (%v), %d before: it wrote", tc.stream, after.Version, err, before.Version)
			}
		})
	}
}

// TestRepositoryUpdate: Update appends what decide makes of the state; after another writer's
// append it loads and decides again (and the result holds both); it writes nothing when decide
// returns no events or an error; and it gives up after MaxUpdateAttempts conflicts in a row.
func TestRepositoryUpdate(t *testing.T) {
	c, _, repo := historyRepo(t, Policy{Every: 3})
	ctx := testCtx(t)
	const stream = "update-acct"
	deposit := func(n int) []client.Event {
		return []client.Event{{Type: "Deposited", Data: []byte(strconv.Itoa(n))}}
	}

	// The first command on a new stream, then one whose first decision meets a concurrent append.
	if _, err := repo.Update(ctx, stream, func(l Loaded[account]) ([]client.Event, error) { return deposit(10), nil }); err != nil {
		t.Fatal(err)
	}
	var seen []int64
	res, err := repo.Update(ctx, stream, func(l Loaded[account]) ([]client.Event, error) {
		seen = append(seen, l.State.Balance)
		if len(seen) == 1 { // another writer gets in between this load and its append
			if _, err := c.Append(ctx, stream, client.Any, deposit(5)...); err != nil {
				return nil, err
			}
		}
		return deposit(int(l.State.Balance)), nil // double the balance: the decision depends on the state
	})
	if err != nil || fmt.Sprint(seen) != "[10 15]" || res.LastVersion != 2 {
		t.Fatalf("update across a conflict: %+v, %v; decided on balances %v, want [10 15] and version 2", res, err, seen)
	}
	if l, err := repo.Load(ctx, stream); err != nil || l.State.Balance != 30 || l.Version != 2 {
		t.Fatalf("after the updates: %+v, %v; want balance 30 at version 2", l.State, err)
	}

	// Nothing to do, or a refusal: nothing written.
	refused := errors.New("insufficient funds")
	if res, err := repo.Update(ctx, stream, func(Loaded[account]) ([]client.Event, error) { return nil, nil }); err != nil || res.LastVersion != 0 {
		t.Fatalf("update deciding nothing: %+v, %v", res, err)
	}
	if _, err := repo.Update(ctx, stream, func(Loaded[account]) ([]client.Event, error) { return nil, refused }); !errors.Is(err, refused) {
		t.Fatalf("update deciding an error: %v, want it returned", err)
	}

	// A writer that always gets in first: Update gives up with the conflict.
	calls := 0
	_, err = repo.Update(ctx, stream, func(l Loaded[account]) ([]client.Event, error) {
		calls++
		if _, err := c.Append(ctx, stream, client.Any, deposit(1)...); err != nil {
			return nil, err
		}
		return deposit(1), nil
	})
	if !errors.Is(err, client.ErrWrongExpectedVersion) || calls != MaxUpdateAttempts {
		t.Fatalf("update under endless conflicts: %v after %d decisions; want ErrWrongExpectedVersion after %d", err, calls, MaxUpdateAttempts)
	}
	if l, err := repo.Load(ctx, stream); err != nil || l.State.Balance != 30+MaxUpdateAttempts {
		t.Fatalf("after the given-up update: %+v, %v; want only the other writer's %d deposits", l.State, err, MaxUpdateAttempts)
	}
}

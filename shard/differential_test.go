package shard

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// dumpSpan returns every key and value of the shard's span, in order.
func dumpSpan(t *testing.T, ts *testShard) string {
	lo, hi := ts.s.Span()
	it, err := ts.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var sb strings.Builder
	for ok := it.First(); ok; ok = it.Next() {
		fmt.Fprintf(&sb, "%x=%x\n", it.Key(), it.Value())
	}
	return sb.String()
}

// installSnapshot replaces to's span with from's and reloads it, as a raft snapshot install does.
func installSnapshot(t *testing.T, from, to *testShard) {
	lo, hi := from.s.Span()
	b := to.db.NewBatch()
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		t.Fatal(err)
	}
	it, _ := from.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	for ok := it.First(); ok; ok = it.Next() {
		b.Set(it.Key(), it.Value(), nil)
	}
	it.Close()
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := to.s.Reload(); err != nil {
		t.Fatal(err)
	}
	to.index = to.s.Applied()
}

// TestDifferentialReplicas runs the same random commands, retries among them, through two
// replicas and the model, and requires every verdict to match the model's and both replicas'
// stored bytes to be identical. The second replica takes every path a replica can: a stream
// cache of one to three streams, per-entry or per-batch writes of its applied index and meta,
// batches partly applied, thrown away and reloaded, reloads whose background filter scan stays
// open across later batches (nested, too), snapshot installs from the first replica, and
// format changes (about one command in 40). Reads of streams (any start, from the end,
// backward, counts) and of the shard's log (any start and count, and where it resumes) are
// checked against the model as it goes. SHOAL_TEST_SEED replays a run; SHOAL_TEST_ROUNDS runs
// more rounds than the default 3 (each 1,500 commands).
func TestDifferentialReplicas(t *testing.T) {
	seed := envUint(t, "SHOAL_TEST_SEED", uint64(time.Now().UnixNano()))
	t.Logf("seed %d (replay with SHOAL_TEST_SEED=%d)", seed, seed)
	rounds := envUint(t, "SHOAL_TEST_ROUNDS", 3)
	if testing.Short() {
		rounds = 1
	}
	for round := uint64(0); round < rounds; round++ {
		rng := rand.New(rand.NewPCG(seed, round))
		a := newTestShard(t, nil, 2)
		b := newTestShard(t, nil, 2)
		b.s.Close()
		var err error
		b.s, err = Open(b.db, 2, Options{MaxCachedStreams: 1 + rng.IntN(3)})
		if err != nil {
			t.Fatal(err)
		}
		m := newModel(2)
		var history [][]byte
		var gates []chan struct{}
		for i := 0; i < 1500; {
			var cmds [][]byte
			for n := 1 + rng.IntN(6); n > 0; n-- {
				data := randCommand(rng, m, history)
				if rng.IntN(40) == 0 {
					data = EncodeSetFormat(&SetFormatCommand{Format: 1 + uint64(rng.IntN(int(MaxFormat)))})
				}
				history = append(history, data)
				cmds = append(cmds, data)
			}
			var want []string
			for _, data := range cmds {
				cmd, _ := DecodeCommand(data)
				want = append(want, fmtResult(m.apply(cmd)))
			}
			for ri, ts := range []*testShard{a, b} {
				if ri == 1 && rng.IntN(5) == 0 {
					// A batch partly applied and thrown away (a failed apply), then a reload,
					// sometimes with its filter scan held open.
					ts.begin()
					for _, data := range cmds[:1+rng.IntN(len(cmds))] {
						ts.index++
						ts.s.Apply(ts.batch, ts.index, data)
					}
					ts.batch.Close()
					ts.batch = nil
					reload(t, ts, &gates, rng.IntN(2) == 0)
					ts.index = ts.s.Applied()
				}
				ts.eager = rng.IntN(2) == 0
				ts.begin()
				for j, data := range cmds {
					got := fmtResult(ts.apply(data))
					if got != want[j] {
						t.Fatalf("seed %d round %d replica %d op %d: got %s want %s", seed, round, ri, i+j, got, want[j])
					}
				}
				ts.commit(pebble.NoSync)
			}
			i += len(cmds)
			if len(gates) > 0 && rng.IntN(3) == 0 {
				close(gates[0])
				gates = gates[1:]
			}
			switch rng.IntN(30) {
			case 0:
				installSnapshot(t, a, b)
			case 1:
				reload(t, b, &gates, true)
			}
			if rng.IntN(20) == 0 {
				if da, db := dumpSpan(t, a), dumpSpan(t, b); da != db {
					t.Fatalf("seed %d round %d: replicas differ", seed, round)
				}
				m.check(t, b.s)
				checkReads(t, rng, m, b.s)
			}
		}
		for _, g := range gates {
			close(g)
		}
		if da, db := dumpSpan(t, a), dumpSpan(t, b); da != db {
			t.Fatalf("seed %d round %d: replicas differ at end", seed, round)
		}
		m.check(t, a.s)
		m.check(t, b.s)
	}
}

// envUint returns the environment variable name as a number, or def when it is unset.
func envUint(t *testing.T, name string, def uint64) uint64 {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// reload reloads ts's shard from disk; with hold, its background filter scan stays open until
// the gate it appends to gates is closed.
func reload(t *testing.T, ts *testShard, gates *[]chan struct{}, hold bool) {
	if hold {
		g := make(chan struct{})
		*gates = append(*gates, g)
		ts.s.filterBuildGate = g
	}
	if err := ts.s.Reload(); err != nil {
		t.Fatal(err)
	}
	ts.s.filterBuildGate = nil
}

// checkReads reads random ranges of m's live streams and of the shard's log from s and
// compares them with the model.
func checkReads(t *testing.T, rng *rand.Rand, m *model, s *Shard) {
	t.Helper()
	for name, st := range m.streams {
		if st.state != stateLive {
			continue
		}
		last := uint64(len(st.events)) - 1
		for k := 0; k < 5; k++ {
			from := uint64(rng.IntN(len(st.events) + 3))
			if rng.IntN(10) == 0 {
				from = ^uint64(0) - uint64(rng.IntN(2))
			}
			fromEnd := rng.IntN(5) == 0
			backward := rng.IntN(2) == 0
			count := uint64(rng.IntN(5))
			var want []uint64
			n := count
			if n == 0 {
				n = ^uint64(0)
			}
			if backward {
				v := from
				if fromEnd || v > last {
					v = last
				}
				for ; v >= st.start && v <= last && uint64(len(want)) < n; v-- {
					want = append(want, v)
					if v == 0 {
						break
					}
				}
			} else {
				v := max(from, st.start)
				if fromEnd {
					v = last
				}
				for ; v <= last && uint64(len(want)) < n; v++ {
					want = append(want, v)
				}
			}
			var got []uint64
			err := s.ReadStream(name, from, fromEnd, backward, count, func(ev *RecordedEvent) error {
				got = append(got, ev.Version)
				if ev.Position != st.events[ev.Version].pos || ev.ID != st.events[ev.Version].id {
					t.Fatalf("ReadStream %s v%d: pos %d id %x, model pos %d", name, ev.Version, ev.Position, ev.ID, st.events[ev.Version].pos)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("ReadStream(%s, from=%d fromEnd=%v backward=%v count=%d) start=%d last=%d:\n got %v\nwant %v", name, from, fromEnd, backward, count, st.start, last, got, want)
			}
		}
	}
	for k := 0; k < 20; k++ {
		from := uint64(rng.IntN(int(m.nextPos) + 3))
		count := uint64(rng.IntN(6))
		n := count
		if n == 0 {
			n = ^uint64(0)
		}
		var want []uint64
		wantNext := from // past the last entry delivered and the truncated events before it
		for p := from; p < m.nextPos && uint64(len(want)) < n; p++ {
			if l := m.order[p]; l.deletion != DeletionNone || l.version >= m.streams[l.stream].gone {
				want = append(want, p)
			}
			wantNext = p + 1
		}
		var got []uint64
		next, err := s.ReadLog(from, count, func(ev *RecordedEvent) error {
			got = append(got, ev.Position)
			w := m.order[ev.Position]
			if ev.Stream != w.stream || ev.Version != w.version || ev.Deletion != w.deletion {
				t.Fatalf("ReadLog at %d: %s@%d, model %v", ev.Position, ev.Stream, ev.Version, w)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || next != wantNext {
			t.Fatalf("ReadLog(%d, %d): got %v next %d, want %v next %d", from, count, got, next, want, wantNext)
		}
	}
}

package ring

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
)

// testSeed fixes the member IDs used throughout; printed by every test that
// uses it so a failure can be reproduced, and replaced by $SHOAL_TEST_SEED.
var testSeed = func() uint64 {
	if v := os.Getenv("SHOAL_TEST_SEED"); v != "" {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			return n
		}
	}
	return 20261130
}()

// propertySeeds is how many seeds (testSeed, testSeed+1, ...) TestBalance and TestMovement
// measure: one seed's member IDs can happen to suit the properties.
const propertySeeds = 8

func randomMembers(rng *rand.Rand, count int, zones int) []Member {
	ms := make([]Member, count)
	for i := range ms {
		ms[i].ID = rng.Uint64()
		if zones > 0 {
			ms[i].Zone = fmt.Sprintf("z%d", i%zones)
		}
	}
	return ms
}

func loads(assign [][]uint64) (replicas, leaders map[uint64]int) {
	replicas, leaders = map[uint64]int{}, map[uint64]int{}
	for _, set := range assign {
		for i, id := range set {
			replicas[id]++
			if i == 0 {
				leaders[id]++
			}
		}
	}
	return replicas, leaders
}

func maxOf(m map[uint64]int) int {
	x := 0
	for _, v := range m {
		x = max(x, v)
	}
	return x
}

// moved counts replica slots whose member changed between two assignments:
// for each shard, the members of after not in before.
func moved(before, after [][]uint64) int {
	c := 0
	for s := range after {
		for _, id := range after[s] {
			if !slices.Contains(before[s], id) {
				c++
			}
		}
	}
	return c
}

func TestShardOf(t *testing.T) {
	// Pinned values: ShardOf is an on-disk contract (a stream's events live in its shard).
	for _, tc := range []struct {
		stream       string
		shards, want uint32
	}{
		{"orders-1", 32, 21}, {"", 32, 25}, {"a", 32, 27}, {"customer-42", 32, 15},
		{"orders-1", 4096, 2805}, {"", 4096, 2457}, {"customer-42", 4096, 3087},
		{"x", 1, 0}, {"x", 0, 0},
	} {
		if got := ShardOf(tc.stream, tc.shards); got != tc.want {
			t.Errorf("ShardOf(%q, %d) = %d, want %d", tc.stream, tc.shards, got, tc.want)
		}
	}
	// Spread: 32 shards over 64k streams, each within 10% of the mean.
	counts := make([]int, 32)
	for i := 0; i < 1<<16; i++ {
		counts[ShardOf(fmt.Sprintf("stream-%d", i), 32)]++
	}
	for s, c := range counts {
		if c < 1843 || c > 2253 {
			t.Errorf("shard %d got %d streams, want 2048±10%%", s, c)
		}
	}
}

func TestDeterministic(t *testing.T) {
	t.Logf("seed %d", testSeed)
	rng := rand.New(rand.NewPCG(testSeed, 1))
	ms := randomMembers(rng, 9, 3)
	want := New(ms).Assign(64, 3)
	for i := 0; i < 20; i++ {
		shuffled := slices.Clone(ms)
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		shuffled = append(shuffled, shuffled[0]) // duplicates are ignored
		r := New(shuffled)
		if got := r.Assign(64, 3); !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("assignment depends on member order (shuffle %d)", i)
		}
		for s := uint32(0); s < 64; s++ {
			if got := r.Replicas(s, 64, 3); !slices.Equal(got, want[s]) {
				t.Fatalf("Replicas(%d)=%v, Assign=%v", s, got, want[s])
			}
		}
	}
}

// TestBalance: for 3..12 members, no member holds more than 1.25x the average replicas, and
// none leads more than one shard past the leader cap (Caps). Measured over propertySeeds seeds:
// a few configurations in a hundred end one leadership over the cap (the greedy pass and the
// local search do not find every exchange), none more.
func TestBalance(t *testing.T) {
	t.Logf("seeds %d..%d", testSeed, testSeed+propertySeeds-1)
	overCap, cases := 0, 0
	for seed := testSeed; seed < testSeed+propertySeeds; seed++ {
		for _, shards := range []uint32{32, 256} {
			for nodes := 3; nodes <= 12; nodes++ {
				for _, zones := range []int{0, 3} {
					if zones > 0 && nodes%zones != 0 {
						continue // unbalanced zones: zone diversity wins, see TestZones
					}
					rng := rand.New(rand.NewPCG(seed, uint64(nodes)))
					r := New(randomMembers(rng, nodes, zones))
					a := r.Assign(shards, 3)
					rep, lead := loads(a)
					avg := float64(shards) * 3 / float64(nodes)
					lavg := float64(shards) / float64(nodes)
					mx, lmx := maxOf(rep), maxOf(lead)
					if seed == testSeed {
						t.Logf("shards=%d nodes=%d zones=%d: max replicas %d (%.2fx avg %.2f), max leaders %d (%.2fx avg %.2f)",
							shards, nodes, zones, mx, float64(mx)/avg, avg, lmx, float64(lmx)/lavg, lavg)
					}
					if float64(mx) > 1.25*avg {
						t.Errorf("seed=%d shards=%d nodes=%d zones=%d: max replicas %d > 1.25*avg %.2f", seed, shards, nodes, zones, mx, avg)
					}
					_, lcap := r.Caps(shards, 3)
					cases++
					if lmx > lcap {
						overCap++
					}
					if lmx > lcap+1 {
						t.Errorf("seed=%d shards=%d nodes=%d zones=%d: max leaders %d > cap %d + 1", seed, shards, nodes, zones, lmx, lcap)
					}
					for s, set := range a {
						if len(set) != 3 {
							t.Fatalf("shard %d has %d replicas", s, len(set))
						}
					}
				}
			}
		}
	}
	t.Logf("%d of %d configurations with a member one leadership over the cap", overCap, cases)
	if overCap*20 > cases {
		t.Errorf("%d of %d configurations over the leader cap: more than 5%%", overCap, cases)
	}
}

// TestMovement measures the fraction of replica slots that change member
// when one member joins or leaves, against the ideal 1/N (N = the larger
// cluster's size: the newcomer's fair share, or the leaver's share).
//
// Bound: every case <= 3.5/N, and the mean ratio over all cases <= 1.5, over propertySeeds
// seeds.
// Justification: plain consistent hashing moves exactly the arcs the member
// gains or loses, 1/N in expectation; with 32 shards x 3 replicas = 96 slots
// the sampling noise alone is about ±sqrt(96/N)/96 (±30% at N=12). The load
// caps add a cascade: when the cap drops, shards processed later spill to
// their next preference. Measured over 20 seeds: worst case 2.98x (a leave of 13 -> 12 members
// with 32 shards, 22 of 96 slots), mean 1.10x; 3.5x leaves room for noise without accepting a
// reshuffle (which would move (N-3)/N of the slots, 7x+ the ideal at N=10).
func TestMovement(t *testing.T) {
	t.Logf("seeds %d..%d", testSeed, testSeed+propertySeeds-1)
	var sumRatio, worst float64
	var cases int
	var seed uint64
	check := func(what string, shards uint32, nodes int, before, after [][]uint64) {
		t.Helper()
		frac := float64(moved(before, after)) / float64(int(shards)*3)
		ratio := frac * float64(nodes)
		sumRatio += ratio
		worst = max(worst, ratio)
		cases++
		if seed == testSeed {
			t.Logf("shards=%d %s: moved %.3f of slots (ideal %.3f, %.2fx), leaders changed %d/%d",
				shards, what, frac, 1/float64(nodes), ratio, leaderChanges(before, after), shards)
		}
		if ratio > 3.5 {
			t.Errorf("seed=%d shards=%d %s: moved %.3f > 3.5/%d", seed, shards, what, frac, nodes)
		}
	}
	for seed = testSeed; seed < testSeed+propertySeeds; seed++ {
		for _, shards := range []uint32{32, 256} {
			for nodes := 3; nodes <= 12; nodes++ {
				for _, zones := range []int{0, 3} {
					rng := rand.New(rand.NewPCG(seed, uint64(100+nodes)))
					ms := randomMembers(rng, nodes+1, zones)
					small := New(ms[:nodes]).Assign(shards, 3)
					big := New(ms).Assign(shards, 3)
					check(fmt.Sprintf("zones=%d join %d->%d", zones, nodes, nodes+1), shards, nodes+1, small, big)
					if nodes > 3 {
						rest := slices.Delete(slices.Clone(ms), nodes/2, nodes/2+1)
						left := New(rest).Assign(shards, 3)
						check(fmt.Sprintf("zones=%d leave %d->%d", zones, nodes+1, nodes), shards, nodes+1, big, left)
					}
				}
			}
		}
	}
	mean := sumRatio / float64(cases)
	t.Logf("mean movement %.2fx ideal over %d cases, worst %.2fx", mean, cases, worst)
	if mean > 1.5 {
		t.Errorf("mean movement %.2fx ideal > 1.5x", mean)
	}
}

func leaderChanges(before, after [][]uint64) int {
	c := 0
	for s := range after {
		if len(before[s]) == 0 || len(after[s]) == 0 || before[s][0] != after[s][0] {
			c++
		}
	}
	return c
}

// TestZones: whenever there are at least n zones every shard has one replica
// per zone, even when zones are unequal (zone diversity beats balance).
func TestZones(t *testing.T) {
	t.Logf("seed %d", testSeed)
	rng := rand.New(rand.NewPCG(testSeed, 7))
	for _, sizes := range [][]int{{1, 1, 1}, {2, 2, 2}, {1, 2, 5}, {3, 3, 3, 3}, {1, 1, 1, 1, 1}, {4, 1, 1, 2}} {
		var ms []Member
		zoneOf := map[uint64]string{}
		for z, size := range sizes {
			for i := 0; i < size; i++ {
				m := Member{ID: rng.Uint64(), Zone: fmt.Sprintf("zone-%d", z)}
				ms = append(ms, m)
				zoneOf[m.ID] = m.Zone
			}
		}
		for _, n := range []int{2, 3} {
			for s, set := range New(ms).Assign(64, n) {
				seen := map[string]bool{}
				for _, id := range set {
					if seen[zoneOf[id]] {
						t.Fatalf("zones %v n=%d: shard %d has two replicas in %s: %v", sizes, n, s, zoneOf[id], set)
					}
					seen[zoneOf[id]] = true
				}
				if len(set) != n {
					t.Fatalf("zones %v n=%d: shard %d has %d replicas", sizes, n, s, len(set))
				}
			}
		}
	}
	// Two zones, n=3: both zones present in every shard, third replica anywhere.
	ms := []Member{{1, "a"}, {2, "a"}, {3, "b"}, {4, "b"}, {5, "b"}}
	for s, set := range New(ms).Assign(32, 3) {
		za, zb := 0, 0
		for _, id := range set {
			if id <= 2 {
				za++
			} else {
				zb++
			}
		}
		if za == 0 || zb == 0 || len(set) != 3 {
			t.Fatalf("shard %d: %v does not span both zones", s, set)
		}
	}
}

func TestFewMembers(t *testing.T) {
	for _, tc := range []struct {
		members []Member
		n, want int
	}{
		{nil, 3, 0},
		{[]Member{{ID: 7}}, 3, 1},
		{[]Member{{ID: 7}, {ID: 9, Zone: "b"}}, 3, 2},
		{[]Member{{ID: 7}, {ID: 9}, {ID: 11}}, 0, 0},
	} {
		a := New(tc.members).Assign(16, tc.n)
		if len(a) != 16 {
			t.Fatalf("Assign returned %d shards", len(a))
		}
		for s, set := range a {
			if len(set) != tc.want {
				t.Fatalf("%v n=%d shard %d: got %v, want %d replicas", tc.members, tc.n, s, set, tc.want)
			}
			got := slices.Sorted(slices.Values(set))
			if len(got) != len(slices.Compact(got)) {
				t.Fatalf("duplicate replica in %v", set)
			}
		}
	}
	if got := New([]Member{{ID: 1}}).Replicas(16, 16, 3); got != nil {
		t.Fatalf("Replicas out of range = %v", got)
	}
}

func BenchmarkAssign(b *testing.B) {
	for _, tc := range []struct {
		nodes  int
		shards uint32
	}{{3, 32}, {12, 256}, {100, 4096}} {
		b.Run(fmt.Sprintf("nodes=%d/shards=%d", tc.nodes, tc.shards), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(testSeed, 3))
			ms := randomMembers(rng, tc.nodes, 3)
			for b.Loop() {
				New(ms).assign(tc.shards, 3) // uncached: ring build + assignment
			}
		})
	}
}

package shard

import (
	"math/rand/v2"
	"testing"
)

func TestIDFilter(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	f := newHashFilter(1000) // forces several stages
	var ids [][16]byte
	for i := 0; i < 300000; i++ {
		var id [16]byte
		for j := range id {
			id[j] = byte(rng.Uint32())
		}
		f.add(idHash(&id))
		ids = append(ids, id)
	}
	for _, id := range ids {
		if !f.mayContain(idHash(&id)) {
			t.Fatalf("false negative for %x", id)
		}
	}
	fp := 0
	const probes = 100000
	for i := uint64(0); i < probes; i++ {
		id := testID(i + 1) // sequential IDs: not random, unlike the added ones
		if f.mayContain(idHash(&id)) {
			fp++
		}
	}
	if rate := float64(fp) / probes; rate > 0.05 {
		t.Fatalf("false-positive rate %.3f with %d stages", rate, len(f.stages))
	}
	t.Logf("stages %d, %d bytes, false positives %d/%d", len(f.stages), f.bytes(), fp, probes)
}

// A filter sized for a count no shard holds (a corrupt meta record's) starts at its largest
// first stage rather than asking for terabytes, and still grows past it.
func TestFilterFirstStageBounded(t *testing.T) {
	f := newHashFilter(1 << 40)
	if got, limit := f.bytes(), 64<<20; got > limit {
		t.Fatalf("filter for 2^40 entries: %d bytes at once, want at most %d", got, limit)
	}
	f.stages[0].count = f.stages[0].capacity // full: the next entry opens a stage of its own
	f.add(nameHash("s"))
	if len(f.stages) != 2 || !f.mayContain(nameHash("s")) {
		t.Fatalf("%d stages after filling the first, want 2 holding the new entry", len(f.stages))
	}
}

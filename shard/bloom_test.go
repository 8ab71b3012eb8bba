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

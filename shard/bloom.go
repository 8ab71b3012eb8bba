package shard

import (
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// hashFilter is a scalable bloom filter over 64-bit hashes. A shard keeps two:
// one over the event IDs it stores and one over its stream names. A miss
// proves an ID or a name was never stored, so Apply skips the Pebble lookup
// for a fresh event ID or a new stream (the common cases). A hit may be false
// (about 1% per stage); Apply then confirms in Pebble, so a filter never
// changes a verdict and need not be identical across replicas. Entries of a
// batch that is later discarded stay in the filter: harmless, only extra
// false positives.
//
// The filters are rebuilt in the background when the shard opens or reloads
// (filterbuild.go), the ID filter's first stage sized for twice the entries
// idsEstimate expects (the events ever appended, or fewer when the ID index
// on disk is smaller; up to bloomMaxFirst). A stage holds 10 bits per entry of
// its capacity, rounded up to a power of two,
// and stages double in capacity, so memory is 1.25–5 bytes per entry counted
// (the meta record counts every event ever appended, and IDs forgotten by
// truncations (Format7) stay in the filter until it is rebuilt: Committed
// rebuilds it once they are a million and half of it, filterRebuildMin) and
// the false-positive rate stays bounded. Not safe for concurrent use: only
// the apply goroutine touches it.
type hashFilter struct {
	stages []*bloomStage
}

const (
	bloomBitsPerID   = 10
	bloomHashes      = 7
	bloomMinCapacity = 1 << 16
	// bloomMaxFirst bounds the first stage's capacity (64 MiB of bits), whatever the
	// count it is sized for: the count comes from the shard's meta record, and one that
	// is corrupt, or a shard of billions of events, must not ask for terabytes at once.
	// Further stages are added as entries come, as for any filter that fills up.
	bloomMaxFirst = 1 << 25
)

type bloomStage struct {
	bits     []uint64
	mask     uint64 // len(bits)*64 - 1 (power of two)
	capacity int
	count    int
}

func newBloomStage(capacity int) *bloomStage {
	if capacity < bloomMinCapacity {
		capacity = bloomMinCapacity
	}
	nbits := uint64(1) << bits.Len64(uint64(capacity*bloomBitsPerID-1))
	return &bloomStage{bits: make([]uint64, nbits/64), mask: nbits - 1, capacity: capacity}
}

// newHashFilter returns a filter sized for n entries, twice them up to bloomMaxFirst.
func newHashFilter(n int) *hashFilter {
	return &hashFilter{stages: []*bloomStage{newBloomStage(min(2*max(n, 0), bloomMaxFirst))}}
}

// idHash and nameHash are what the filters hold of an event ID and a stream name.
func idHash(id *[16]byte) uint64 { return xxhash.Sum64(id[:]) }

func nameHash(name string) uint64 { return xxhash.Sum64String(name) } // = xxhash.Sum64 of its bytes

// probes returns the two hashes of double hashing.
func probes(h uint64) (uint64, uint64) { return h, (h >> 33) | (h << 31) | 1 }

func (f *hashFilter) add(h uint64) {
	s := f.stages[len(f.stages)-1]
	if s.count >= s.capacity {
		s = newBloomStage(2 * s.capacity)
		f.stages = append(f.stages, s)
	}
	h1, h2 := probes(h)
	for i := uint64(0); i < bloomHashes; i++ {
		b := (h1 + i*h2) & s.mask
		s.bits[b>>6] |= 1 << (b & 63)
	}
	s.count++
}

func (f *hashFilter) mayContain(h uint64) bool {
	h1, h2 := probes(h)
	for _, s := range f.stages {
		hit := true
		for i := uint64(0); i < bloomHashes; i++ {
			b := (h1 + i*h2) & s.mask
			if s.bits[b>>6]&(1<<(b&63)) == 0 {
				hit = false
				break
			}
		}
		if hit {
			return true
		}
	}
	return false
}

// count returns the number of IDs added.
func (f *hashFilter) count() int {
	n := 0
	for _, s := range f.stages {
		n += s.count
	}
	return n
}

// bytes returns the filter's memory use.
func (f *hashFilter) bytes() int {
	n := 0
	for _, s := range f.stages {
		n += 8 * len(s.bits)
	}
	return n
}

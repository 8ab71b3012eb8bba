package shard

import (
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// idFilter is a scalable bloom filter over the event IDs stored in the shard.
// A miss proves an ID was never stored, so Apply skips the Pebble lookup for
// fresh IDs (the common case). A hit may be false (about 1% per stage); Apply
// then confirms in Pebble, so the filter never changes a verdict and need not
// be identical across replicas. IDs of a batch that is later discarded stay
// in the filter: harmless, only extra false positives.
//
// The filter is rebuilt in the background when the shard opens or reloads
// (idbuild.go). Stages double in capacity, so memory is about 1.25 bytes per ID (10 bits)
// and the false-positive rate stays bounded. Not safe for concurrent use:
// only the apply goroutine touches it.
type idFilter struct {
	stages []*bloomStage
}

const (
	bloomBitsPerID   = 10
	bloomHashes      = 7
	bloomMinCapacity = 1 << 16
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

// newIDFilter returns a filter sized for n IDs.
func newIDFilter(n int) *idFilter {
	return &idFilter{stages: []*bloomStage{newBloomStage(2 * n)}}
}

func idHash(id *[16]byte) (uint64, uint64) {
	h := xxhash.Sum64(id[:])
	return h, (h >> 33) | (h << 31) | 1
}

func (f *idFilter) add(id *[16]byte) {
	s := f.stages[len(f.stages)-1]
	if s.count >= s.capacity {
		s = newBloomStage(2 * s.capacity)
		f.stages = append(f.stages, s)
	}
	h1, h2 := idHash(id)
	for i := uint64(0); i < bloomHashes; i++ {
		b := (h1 + i*h2) & s.mask
		s.bits[b>>6] |= 1 << (b & 63)
	}
	s.count++
}

func (f *idFilter) mayContain(id *[16]byte) bool {
	h1, h2 := idHash(id)
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
func (f *idFilter) count() int {
	n := 0
	for _, s := range f.stages {
		n += s.count
	}
	return n
}

// bytes returns the filter's memory use.
func (f *idFilter) bytes() int {
	n := 0
	for _, s := range f.stages {
		n += 8 * len(s.bits)
	}
	return n
}

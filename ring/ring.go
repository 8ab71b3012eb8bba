package ring

import (
	"encoding/binary"
	"slices"
	"sort"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// DefaultVNodes is the number of virtual nodes each member places on the
// ring. 128 points per member keep the arc each member owns within a few
// percent of 1/N for clusters of up to a few hundred members.
const DefaultVNodes = 128

// LoadFactor is the bound on replicas per member relative to the average:
// no member is assigned more than max(ceil(avg), floor(LoadFactor*avg))
// replicas while a member with spare capacity (in an acceptable zone) exists.
// Expressed as LoadNum/LoadDen to keep the arithmetic in integers.
const (
	LoadNum = 5
	LoadDen = 4
)

// ShardOf maps a stream name to its shard: xxhash64(stream) mod shards.
// shards must be > 0; ShardOf returns 0 when it is not. The result is part of
// the on-disk contract: it must never change for a given (stream, shards).
func ShardOf(stream string, shards uint32) uint32 {
	if shards == 0 {
		return 0
	}
	return uint32(xxhash.Sum64String(stream) % uint64(shards))
}

// Member is one node that can hold replicas.
type Member struct {
	ID   uint64 // raft ID of the node; unique, never 0 in practice
	Zone string // failure domain; "" is a zone like any other
}

// point is one virtual node.
type point struct {
	hash   uint64
	member int // index into Ring.members
}

// Ring is a consistent-hash ring of members with virtual nodes. It is
// immutable after New and safe for concurrent use.
type Ring struct {
	members []Member // sorted by ID, deduplicated
	zone    []int    // zone index per member
	zones   int      // number of distinct zones
	points  []point  // sorted by (hash, member)

	cache struct {
		sync.Mutex
		shards uint32
		n      int
		valid  bool
		assign [][]uint64
	}
}

// New builds a ring over members. The result depends only on the set of
// (ID, Zone) pairs, not on their order. Duplicate IDs keep the entry with the
// smallest Zone.
func New(members []Member) *Ring {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int {
		if a.ID != b.ID {
			if a.ID < b.ID {
				return -1
			}
			return 1
		}
		switch {
		case a.Zone < b.Zone:
			return -1
		case a.Zone > b.Zone:
			return 1
		}
		return 0
	})
	ms = slices.CompactFunc(ms, func(a, b Member) bool { return a.ID == b.ID })

	r := &Ring{members: ms, zone: make([]int, len(ms))}
	zoneIdx := map[string]int{}
	for i, m := range ms {
		z, ok := zoneIdx[m.Zone]
		if !ok {
			z = len(zoneIdx)
			zoneIdx[m.Zone] = z
		}
		r.zone[i] = z
	}
	r.zones = len(zoneIdx)

	r.points = make([]point, 0, len(ms)*DefaultVNodes)
	var buf [12]byte
	for i, m := range ms {
		binary.BigEndian.PutUint64(buf[:8], m.ID)
		for v := 0; v < DefaultVNodes; v++ {
			binary.BigEndian.PutUint32(buf[8:], uint32(v))
			r.points = append(r.points, point{hash: xxhash.Sum64(buf[:]), member: i})
		}
	}
	sort.Slice(r.points, func(a, b int) bool {
		pa, pb := r.points[a], r.points[b]
		if pa.hash != pb.hash {
			return pa.hash < pb.hash
		}
		return pa.member < pb.member
	})
	return r
}

// Members returns the ring's members sorted by ID.
func (r *Ring) Members() []Member { return slices.Clone(r.members) }

// shardHash is the ring position of a shard. It does not depend on the shard
// count.
func shardHash(shard uint32) uint64 {
	var buf [4]byte
	binary.BigEndian.PutUint32(buf[:], shard)
	return xxhash.Sum64(buf[:])
}

// preference appends to dst the members (indexes) in the order a clockwise
// walk from h first meets them, each member once; seen is scratch of
// len(members), reset on return.
func (r *Ring) preference(dst []int, h uint64, seen []bool) []int {
	if len(r.points) == 0 {
		return dst
	}
	start := sort.Search(len(r.points), func(i int) bool { return r.points[i].hash >= h })
	for i := 0; i < len(r.points) && len(dst) < len(r.members); i++ {
		p := r.points[(start+i)%len(r.points)]
		if !seen[p.member] {
			seen[p.member] = true
			dst = append(dst, p.member)
		}
	}
	for _, m := range dst {
		seen[m] = false
	}
	return dst
}

// Caps returns the per-member replica cap and leader cap Assign uses for the
// given shard count and replication factor.
func (r *Ring) Caps(shards uint32, n int) (replicaCap, leaderCap int) {
	m := len(r.members)
	if m == 0 || n <= 0 {
		return 0, 0
	}
	k := min(n, m)
	return boundedCap(int(shards)*k, m), boundedCap(int(shards), m)
}

// boundedCap is max(ceil(total/m), floor(total*LoadNum/(LoadDen*m))).
func boundedCap(total, m int) int {
	return max((total+m-1)/m, total*LoadNum/(LoadDen*m))
}

// Assign returns, for every shard 0..shards-1, its ordered replica set of
// min(n, len(members)) member IDs; the first is the preferred leader. See the
// package documentation for the algorithm. The result is a fresh copy the
// caller may modify.
func (r *Ring) Assign(shards uint32, n int) [][]uint64 {
	r.cache.Lock()
	if !r.cache.valid || r.cache.shards != shards || r.cache.n != n {
		r.cache.assign = r.assign(shards, n)
		r.cache.shards, r.cache.n, r.cache.valid = shards, n, true
	}
	out := make([][]uint64, len(r.cache.assign))
	for i, s := range r.cache.assign {
		out[i] = slices.Clone(s)
	}
	r.cache.Unlock()
	return out
}

// Replicas returns Assign(shards, n)[shard], or nil when shard >= shards.
// Because the load bound couples shards, it computes (and caches) the whole
// assignment.
func (r *Ring) Replicas(shard, shards uint32, n int) []uint64 {
	if shard >= shards {
		return nil
	}
	r.cache.Lock()
	defer r.cache.Unlock()
	if !r.cache.valid || r.cache.shards != shards || r.cache.n != n {
		r.cache.assign = r.assign(shards, n)
		r.cache.shards, r.cache.n, r.cache.valid = shards, n, true
	}
	return slices.Clone(r.cache.assign[shard])
}

func (r *Ring) assign(shards uint32, n int) [][]uint64 {
	out := make([][]uint64, shards)
	m := len(r.members)
	if m == 0 || n <= 0 {
		return out
	}
	k := min(n, m)
	replicaCap, leaderCap := r.Caps(shards, n)

	load := make([]int, m)
	leaders := make([]int, m)
	seen := make([]bool, m)
	zoneUsed := make([]bool, r.zones)
	pref := make([]int, 0, m)
	picked := make([]int, 0, k)
	chosen := make([]bool, m)

	for s := uint32(0); s < shards; s++ {
		pref = r.preference(pref[:0], shardHash(s), seen)
		picked = picked[:0]
		// Passes, in order of preference: (1) a new zone with spare capacity;
		// (2) a new zone even over capacity (zone diversity beats balance);
		// (3) any member with spare capacity; (4) any member.
		for pass := 0; pass < 4 && len(picked) < k; pass++ {
			for _, c := range pref {
				if len(picked) == k {
					break
				}
				if chosen[c] {
					continue
				}
				newZone := !zoneUsed[r.zone[c]]
				underCap := load[c] < replicaCap
				var ok bool
				switch pass {
				case 0:
					ok = newZone && underCap
				case 1:
					ok = newZone
				case 2:
					ok = underCap
				default:
					ok = true
				}
				if ok {
					picked = append(picked, c)
					chosen[c] = true
					zoneUsed[r.zone[c]] = true
				}
			}
		}
		// Leader: the first pick (in walk order) below the leader cap; when
		// all are at the cap, the one leading the fewest shards so far.
		lead := -1
		for i, c := range picked {
			if leaders[c] < leaderCap {
				lead = i
				break
			}
		}
		if lead < 0 {
			lead = 0
			for i, c := range picked {
				if leaders[c] < leaders[picked[lead]] {
					lead = i
				}
			}
		}
		if lead > 0 {
			c := picked[lead]
			copy(picked[1:lead+1], picked[:lead])
			picked[0] = c
		}
		leaders[picked[0]]++

		set := make([]uint64, len(picked))
		for i, c := range picked {
			set[i] = r.members[c].ID
			load[c]++
			chosen[c] = false
			zoneUsed[r.zone[c]] = false
		}
		out[s] = set
	}
	balanceLeaders(out, r.index(), leaders)
	return out
}

// index maps member ID to its index in r.members.
func (r *Ring) index() map[uint64]int {
	idx := make(map[uint64]int, len(r.members))
	for i, m := range r.members {
		idx[m.ID] = i
	}
	return idx
}

// balanceLeaders is a local search over leader choices: while some shard's
// leader leads at least two shards more than another of that shard's
// replicas, hand the leadership (the first slot) to that replica. Each swap
// lowers the sum of squared leader counts, so the loop terminates; shards are
// visited in a fixed order, so the result is deterministic.
func balanceLeaders(out [][]uint64, idx map[uint64]int, leaders []int) {
	for changed := true; changed; {
		changed = false
		for _, set := range out {
			if len(set) < 2 {
				continue
			}
			l := idx[set[0]]
			best := 0
			for i := 1; i < len(set); i++ {
				if leaders[idx[set[i]]] < leaders[idx[set[best]]] {
					best = i
				}
			}
			if b := idx[set[best]]; leaders[b]+1 < leaders[l] {
				leaders[l]--
				leaders[b]++
				set[0], set[best] = set[best], set[0]
				changed = true
			}
		}
	}
}

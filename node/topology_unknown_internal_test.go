package node

import (
	"testing"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// TestUnknownShard: when a merged topology leaves a shard's leader unknown rather than
// absent.
func TestUnknownShard(t *testing.T) {
	shard := func(leader uint64, voters ...uint64) *shoalv1.ShardInfo {
		return &shoalv1.ShardInfo{LeaderId: leader, Voters: voters, Unavailable: leader == 0}
	}
	for _, tc := range []struct {
		name       string
		s          *shoalv1.ShardInfo
		reported   bool
		unanswered []uint64
		want       bool
	}{
		{"every alive member answered: unavailable is the truth", shard(0, 1, 2, 3), true, nil, false},
		{"nobody holds it and every alive member answered", shard(0), false, nil, false},
		{"a voter did not answer", shard(0, 1, 2, 3), true, []uint64{3}, true},
		{"nobody answering holds it, a member did not answer", shard(0), false, []uint64{4}, true},
		{"only a non-voter did not answer", shard(0, 1, 2, 3), true, []uint64{4}, false},
		{"a leader is known", shard(2, 1, 2, 3), true, []uint64{3}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := unknownShard(tc.s, tc.reported, tc.unanswered); got != tc.want {
				t.Errorf("unknownShard = %v, want %v", got, tc.want)
			}
		})
	}
}

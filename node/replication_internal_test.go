package node

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/shoaldb/shoal/internal/membership"
)

func TestReplicationChange(t *testing.T) {
	cur := Settings{ClusterID: "c1", Shards: 8, Replication: 3, ReplicationEpoch: 1}
	member := func(id uint64, r uint32, epoch uint64) membership.Member {
		return membership.Member{Alive: true, Meta: membership.Meta{NodeID: id, Name: "n" + string(rune('0'+id)), ClusterID: "c1",
			Replication: r, ReplicationEpoch: epoch, FollowsReplication: true}}
	}
	old := member(4, 3, 0)
	old.FollowsReplication, old.Version = false, "v0.9"
	other := member(5, 7, 9)
	other.ClusterID = "c2"
	joining := member(6, 0, 0)
	joining.ClusterID = ""

	for _, tc := range []struct {
		name    string
		members []membership.Member
		r       int
		want    Settings
		changed bool
		err     string
	}{
		{name: "raise", members: []membership.Member{member(1, 3, 1), member(2, 3, 1)}, r: 5,
			want: Settings{Replication: 5, ReplicationEpoch: 2}, changed: true},
		{name: "already", members: []membership.Member{member(2, 3, 1)}, r: 3, want: Settings{Replication: 3, ReplicationEpoch: 1}},
		// A member already follows a later change: the new epoch is above its.
		{name: "above the latest", members: []membership.Member{member(2, 4, 3)}, r: 5,
			want: Settings{Replication: 5, ReplicationEpoch: 4}, changed: true},
		// The latest change, which this node has not heard of yet, set the factor asked for.
		{name: "latest already", members: []membership.Member{member(2, 5, 3)}, r: 5, want: Settings{Replication: 5, ReplicationEpoch: 3}},
		// Another cluster's member and a node still joining count for nothing.
		{name: "strangers", members: []membership.Member{other, joining}, r: 2,
			want: Settings{Replication: 2, ReplicationEpoch: 2}, changed: true},
		{name: "live old version", members: []membership.Member{member(2, 3, 1), old}, r: 5,
			err: `member "n4" runs version "v0.9", which does not follow a change`},
		{name: "dead old version", members: []membership.Member{func() membership.Member { m := old; m.Alive = false; return m }()}, r: 5,
			want: Settings{Replication: 5, ReplicationEpoch: 2}, changed: true},
		// A factor out of range, or the last epoch, is no node's (gossip without a key admits
		// anyone): it counts for nothing.
		{name: "forged", members: []membership.Member{member(2, 9, 5), member(3, 1, math.MaxUint64)}, r: 5,
			want: Settings{Replication: 5, ReplicationEpoch: 2}, changed: true},
		{name: "zero", r: 0, err: "replication factor 0 out of range 1..7"},
		{name: "eight", r: 8, err: "replication factor 8 out of range 1..7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The node itself is among the members, and its gossiped meta never counts.
			self := member(1, 1, 99)
			got, changed, err := replicationChange(cur, 1, append(tc.members, self), tc.r)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %v; want an error with %q", got, err, tc.err)
				}
				if conflict := errors.Is(err, ErrConfigConflict); conflict != strings.Contains(tc.err, "member") {
					t.Fatalf("Is(ErrConfigConflict) = %v for %v", conflict, err)
				}
				return
			}
			want := cur
			want.Replication, want.ReplicationEpoch = tc.want.Replication, tc.want.ReplicationEpoch
			if err != nil || got != want || changed != tc.changed {
				t.Fatalf("got %+v, changed %v, %v; want %+v, changed %v", got, changed, err, want, tc.changed)
			}
		})
	}
}

// Every node settles on one factor whatever order it hears changes in: the highest epoch's,
// and of two changes made at once under one epoch, the larger factor.
func TestNewerReplication(t *testing.T) {
	for _, tc := range []struct {
		a, b Settings
		want bool
	}{
		{Settings{Replication: 3, ReplicationEpoch: 2}, Settings{Replication: 5, ReplicationEpoch: 1}, true},
		{Settings{Replication: 5, ReplicationEpoch: 1}, Settings{Replication: 3, ReplicationEpoch: 2}, false},
		{Settings{Replication: 5, ReplicationEpoch: 2}, Settings{Replication: 3, ReplicationEpoch: 2}, true},
		{Settings{Replication: 3, ReplicationEpoch: 2}, Settings{Replication: 5, ReplicationEpoch: 2}, false},
		{Settings{Replication: 3, ReplicationEpoch: 2}, Settings{Replication: 3, ReplicationEpoch: 2}, false},
	} {
		if got := newerReplication(tc.a, tc.b); got != tc.want {
			t.Errorf("newerReplication(%+v, %+v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// --replication is checked against the data directory while the cluster has the factor it was
// created with; once the factor changed, the flag is the creation's and only noted.
func TestReplicationFlagAfterChange(t *testing.T) {
	created := Settings{ClusterID: "c1", Shards: 8, Replication: 3}
	if err := checkSettings(created, 0, 5, "/d"); !errors.Is(err, ErrConfigConflict) ||
		!strings.Contains(err.Error(), "--replication 5 differs from cluster c1's replication 3") {
		t.Fatalf("flag 5 against a cluster created with 3: %v", err)
	}
	if note := replicationFlagNote(created, 3); note != "" {
		t.Fatalf("note for a matching flag: %q", note)
	}
	changed := created
	changed.Replication, changed.ReplicationEpoch = 5, 1
	for _, flag := range []int{0, 3, 5, 7} {
		if err := checkSettings(changed, 0, flag, "/d"); err != nil {
			t.Fatalf("flag %d against a changed factor: %v", flag, err)
		}
	}
	if note := replicationFlagNote(changed, 3); !strings.Contains(note, "--replication 3 applies when a cluster is created; cluster c1's factor is 5") {
		t.Fatalf("note: %q", note)
	}
	for _, flag := range []int{0, 5} {
		if note := replicationFlagNote(changed, flag); note != "" {
			t.Fatalf("note for flag %d: %q", flag, note)
		}
	}
	if err := checkSettings(changed, 16, 0, "/d"); err == nil {
		t.Fatal("a shard count that differs is still refused")
	}
}

package node

import (
	"slices"
	"testing"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// TestLeaderlessTakesShortestView: a node without a replica answers a shard at once only when
// every replica's view that its refresh gathered has known no leader for longer than an
// election takes. One replica that has known none for a minute (cut off from its peers, or
// removed from the group without knowing it, which operations.md says lasts --dead-after
// after its node restarts) while the others lost their leader a moment ago is an election
// under way, not a lost quorum: the request waits for its outcome, as it did before the fast
// answer. Nor does a view that does not say how long (an older server's) count as long.
func TestLeaderlessTakesShortestView(t *testing.T) {
	// A view of reporter's replicas, each a voter of its group unless told otherwise.
	view := func(reporter uint64, shards ...*shoalv1.ShardInfo) *shoalv1.TopologyResponse {
		for _, s := range shards {
			if s.Voters == nil {
				s.Voters = []uint64{reporter, 9}
			}
		}
		return &shoalv1.TopologyResponse{Nodes: []*shoalv1.NodeInfo{{Id: reporter}}, Shards: shards}
	}
	leaderless := func(shard uint32, ms uint64) *shoalv1.ShardInfo {
		return &shoalv1.ShardInfo{Shard: shard, Unavailable: true, LeaderlessMs: ms}
	}
	after := leaderlessAfter(500 * time.Millisecond)
	for _, tc := range []struct {
		name  string
		views []*shoalv1.TopologyResponse
		fast  bool
	}{
		{"every replica leaderless for long: lost",
			[]*shoalv1.TopologyResponse{view(1, leaderless(0, 60_000)), view(2, leaderless(0, 5_000))}, true},
		{"one replica leaderless for a minute, the other for 100 ms: electing",
			[]*shoalv1.TopologyResponse{view(1, leaderless(0, 60_000)), view(2, leaderless(0, 100))}, false},
		{"the same, the views the other way round",
			[]*shoalv1.TopologyResponse{view(2, leaderless(0, 100)), view(1, leaderless(0, 60_000))}, false},
		{"an older server's view does not say how long",
			[]*shoalv1.TopologyResponse{view(1, leaderless(0, 60_000)), view(3, leaderless(0, 0))}, false},
		{"a view naming a leader",
			[]*shoalv1.TopologyResponse{view(1, leaderless(0, 60_000)), view(2, &shoalv1.ShardInfo{Shard: 0, LeaderId: 2, Term: 3})}, false},
		// A replica removed from its group (its configuration does not have it) names the
		// leader it last knew, gone with the quorum: left out.
		{"a removed replica's view naming its last leader",
			[]*shoalv1.TopologyResponse{view(1, leaderless(0, 5_000)),
				view(3, &shoalv1.ShardInfo{Shard: 0, LeaderId: 9, Term: 2, Voters: []uint64{9}, Learners: []uint64{1}})}, true},
		{"a removed replica's view, leaderless for a second",
			[]*shoalv1.TopologyResponse{view(1, leaderless(0, 5_000)),
				view(3, &shoalv1.ShardInfo{Shard: 0, Unavailable: true, LeaderlessMs: 1_000, Voters: []uint64{1, 9}})}, true},
		// A learner never campaigns: it names the leader it last knew (9), gone with the
		// quorum, while the surviving voter 1 knows none at the same term.
		{"a learner's view naming its last leader",
			[]*shoalv1.TopologyResponse{view(1, &shoalv1.ShardInfo{Shard: 0, Term: 2, Unavailable: true, LeaderlessMs: 5_000, Learners: []uint64{3}}),
				view(3, &shoalv1.ShardInfo{Shard: 0, LeaderId: 9, Term: 2, Voters: []uint64{1, 9}, Learners: []uint64{3}})}, true},
		{"the same, the learner's view first",
			[]*shoalv1.TopologyResponse{view(3, &shoalv1.ShardInfo{Shard: 0, LeaderId: 9, Term: 2, Voters: []uint64{1, 9}, Learners: []uint64{3}}),
				view(1, &shoalv1.ShardInfo{Shard: 0, Term: 2, Unavailable: true, LeaderlessMs: 5_000, Learners: []uint64{3}})}, true},
		{"a learner's view naming the leader of a later term",
			[]*shoalv1.TopologyResponse{view(1, &shoalv1.ShardInfo{Shard: 0, Term: 2, Unavailable: true, LeaderlessMs: 5_000, Learners: []uint64{3}}),
				view(3, &shoalv1.ShardInfo{Shard: 0, LeaderId: 9, Term: 3, Voters: []uint64{1, 9}, Learners: []uint64{3}})}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newLeaderCache()
			c.record(tc.views, true, time.Now())
			d, ok := c.leaderlessFor(0)
			if fast := ok && d >= after; fast != tc.fast {
				t.Fatalf("leaderlessFor: %v, %t: answered at once %t, want %t", d, ok, fast, tc.fast)
			}
			if l, ok := c.get(0); tc.fast && ok {
				t.Fatalf("cached leader %d of a shard that lost its quorum", l)
			}
		})
	}
}

// TestElectingNotForStaleSelf: a view that names this node the leader of a shard its own
// replica knows no leader of (a learner's, which keeps its last leader) does not hold back the
// answer of this node's replica; one naming another node does.
func TestElectingNotForStaleSelf(t *testing.T) {
	after := leaderlessAfter(500 * time.Millisecond)
	c := newLeaderCache()
	c.record([]*shoalv1.TopologyResponse{
		{Nodes: []*shoalv1.NodeInfo{{Id: 1}}, Shards: []*shoalv1.ShardInfo{{Shard: 0, LeaderlessMs: 5_000, Voters: []uint64{1, 2}, Learners: []uint64{3}}}},
		{Nodes: []*shoalv1.NodeInfo{{Id: 3}}, Shards: []*shoalv1.ShardInfo{{Shard: 0, LeaderId: 1, Term: 2, Voters: []uint64{1, 2}, Learners: []uint64{3}}}},
	}, true, time.Now())
	if c.electing(0, after, 1) {
		t.Error("node 1, named leader by a learner's stale view, takes its shard for electing")
	}
	if !c.electing(0, after, 2) {
		t.Error("node 2 does not take a shard another view says node 1 leads for led")
	}
}

// TestElectingNotForStaleLearner: a learner's view naming the leader it last knew, gone with
// the quorum (a voter's view knows none at that term), does not hold back the answer of the
// surviving voter's node for the whole routing wait.
func TestElectingNotForStaleLearner(t *testing.T) {
	after := leaderlessAfter(500 * time.Millisecond)
	c := newLeaderCache()
	c.record([]*shoalv1.TopologyResponse{
		{Nodes: []*shoalv1.NodeInfo{{Id: 2}}, Shards: []*shoalv1.ShardInfo{{Shard: 0, Term: 4, LeaderlessMs: 5_000, Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}}},
		{Nodes: []*shoalv1.NodeInfo{{Id: 4}}, Shards: []*shoalv1.ShardInfo{{Shard: 0, LeaderId: 1, Term: 4, Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}}},
	}, true, time.Now())
	if c.electing(0, after, 2) {
		t.Error("node 2 takes its shard for electing on a learner's view naming the leader gone with the quorum")
	}
	if l, ok := c.get(0); ok {
		t.Errorf("cached leader %d, named by a learner's stale view", l)
	}
}

// TestStaleTargetVoters: the leader cache keeps each shard's voters from the view of the
// highest term, where a stale read of a shard without a leader goes; a view of a lower term
// (a lagging member's) does not replace them, and they expire with the views.
func TestStaleTargetVoters(t *testing.T) {
	c := newLeaderCache()
	now := time.Now()
	c.record([]*shoalv1.TopologyResponse{
		{Nodes: []*shoalv1.NodeInfo{{Id: 2}}, Shards: []*shoalv1.ShardInfo{{Shard: 0, Term: 5, LeaderlessMs: 5_000, Voters: []uint64{2, 3, 4}}}},
		{Nodes: []*shoalv1.NodeInfo{{Id: 1}}, Shards: []*shoalv1.ShardInfo{{Shard: 0, Term: 3, LeaderlessMs: 9_000, Voters: []uint64{1, 2, 3}}}},
	}, true, now)
	if got := c.votersOf(0); !slices.Equal(got, []uint64{2, 3, 4}) {
		t.Fatalf("voters of shard 0: %v, want the term-5 view's [2 3 4]", got)
	}
	if got := c.votersOf(1); got != nil {
		t.Fatalf("voters of shard 1, which no view has: %v", got)
	}
	c.record([]*shoalv1.TopologyResponse{
		{Nodes: []*shoalv1.NodeInfo{{Id: 1}}, Shards: []*shoalv1.ShardInfo{{Shard: 0, Term: 3, Voters: []uint64{1, 2, 3}}}},
	}, true, now.Add(leaderTTL+time.Second))
	if got := c.votersOf(0); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("voters of shard 0 once the term-5 view expired: %v, want [1 2 3]", got)
	}
}

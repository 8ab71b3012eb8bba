package node

import (
	"testing"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// TestBestShardViews: which node's view of a shard the merged topology shows.
func TestBestShardViews(t *testing.T) {
	view := func(reporter uint64, shard uint32, leader, term uint64) *shoalv1.TopologyResponse {
		return &shoalv1.TopologyResponse{
			Nodes:  []*shoalv1.NodeInfo{{Id: reporter}},
			Shards: []*shoalv1.ShardInfo{{Shard: shard, LeaderId: leader, Term: term, Unavailable: leader == 0}},
		}
	}
	for _, tc := range []struct {
		name         string
		views        []*shoalv1.TopologyResponse
		leader, term uint64
	}{
		{"the leader's own view wins over followers'",
			[]*shoalv1.TopologyResponse{view(2, 0, 1, 3), view(1, 0, 1, 3), view(3, 0, 1, 3)}, 1, 3},
		{"a leader's view of a higher term wins over an older leader's",
			[]*shoalv1.TopologyResponse{view(1, 0, 1, 3), view(2, 0, 2, 4)}, 2, 4},
		{"an old leader's view wins over a follower's of a higher term",
			[]*shoalv1.TopologyResponse{view(2, 0, 0, 5), view(1, 0, 1, 4)}, 1, 4},
		{"without the leader's view, the highest term",
			[]*shoalv1.TopologyResponse{view(2, 0, 1, 3), view(3, 0, 0, 4)}, 0, 4},
		// A partial partition: the answering follower (2) is cut off from the leader (3),
		// which another follower (1) still hears, and the leader's own view is missing.
		{"a follower that names the leader wins over one that does not, at the same term",
			[]*shoalv1.TopologyResponse{view(2, 0, 0, 3), view(1, 0, 3, 3)}, 3, 3},
		{"the same, in the other order",
			[]*shoalv1.TopologyResponse{view(1, 0, 3, 3), view(2, 0, 0, 3)}, 3, 3},
		// The leader (3) stepped down at term 3 (CheckQuorum) and says so; a follower (1)
		// has not heard yet.
		{"a follower naming a leader that disowns the term is not believed",
			[]*shoalv1.TopologyResponse{view(2, 0, 0, 3), view(1, 0, 3, 3), view(3, 0, 0, 3)}, 0, 3},
		{"the same, the disowning view first",
			[]*shoalv1.TopologyResponse{view(3, 0, 0, 3), view(1, 0, 3, 3)}, 0, 3},
		{"the same, the disowning view last",
			[]*shoalv1.TopologyResponse{view(1, 0, 3, 3), view(3, 0, 0, 3)}, 0, 3},
		// A shard that lost its quorum (its leader 1 stopped; PreVote keeps the term): the
		// surviving voter 2 knows no leader; node 3's replica, removed from the group while it
		// was led, still names the leader it knew.
		{"a removed replica's view loses to a member's at the same term",
			[]*shoalv1.TopologyResponse{inConfig(view(3, 0, 1, 2), 1, 2), inConfig(view(2, 0, 0, 2), 1, 2)}, 0, 2},
		{"the same, the member's view first",
			[]*shoalv1.TopologyResponse{inConfig(view(2, 0, 0, 2), 1, 2), inConfig(view(3, 0, 1, 2), 1, 2)}, 0, 2},
		{"a removed replica's view loses to a member's of a lower term",
			[]*shoalv1.TopologyResponse{inConfig(view(3, 0, 1, 5), 1, 2), inConfig(view(2, 0, 0, 2), 1, 2)}, 0, 2},
		// Then its leader is unknown: it may be gone with the quorum, or with the members'
		// nodes, none of which answered.
		{"a removed replica's view is shown without its leader when no member's is at hand",
			[]*shoalv1.TopologyResponse{inConfig(view(3, 0, 1, 2), 1, 2)}, 0, 2},
		// The same shard with a learner (4, placement adding a replica) when the quorum went:
		// a learner never campaigns, and names the leader it last knew (1) for as long as no
		// other reaches it, while the surviving voter 2 knows none, at the same term.
		{"a learner's view naming its last leader loses to a voter's that knows none",
			[]*shoalv1.TopologyResponse{withLearners(inConfig(view(4, 0, 1, 2), 1, 2, 3), 4), withLearners(inConfig(view(2, 0, 0, 2), 1, 2, 3), 4)}, 0, 2},
		{"the same, the voter's view first",
			[]*shoalv1.TopologyResponse{withLearners(inConfig(view(2, 0, 0, 2), 1, 2, 3), 4), withLearners(inConfig(view(4, 0, 1, 2), 1, 2, 3), 4)}, 0, 2},
		{"a learner's view naming the leader a voter's names too",
			[]*shoalv1.TopologyResponse{withLearners(inConfig(view(4, 0, 1, 2), 1, 2, 3), 4), withLearners(inConfig(view(2, 0, 1, 2), 1, 2, 3), 4)}, 1, 2},
		{"a learner's view of a later term than a voter's that knows none",
			[]*shoalv1.TopologyResponse{withLearners(inConfig(view(2, 0, 0, 2), 1, 2, 3), 4), withLearners(inConfig(view(4, 0, 3, 3), 1, 2, 3), 4)}, 3, 3},
		// The learner 4 had not had its first snapshot yet: its configuration is empty.
		{"an empty replica's view naming its last leader loses to a voter's that knows none",
			[]*shoalv1.TopologyResponse{view(4, 0, 1, 2), withLearners(inConfig(view(2, 0, 0, 2), 1, 2, 3), 4)}, 0, 2},
		{"the same, the voter's view first",
			[]*shoalv1.TopologyResponse{withLearners(inConfig(view(2, 0, 0, 2), 1, 2, 3), 4), view(4, 0, 1, 2)}, 0, 2},
		{"a learner's view when no voter's is at hand",
			[]*shoalv1.TopologyResponse{withLearners(inConfig(view(4, 0, 1, 2), 1, 2, 3), 4)}, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := bestShardViews(tc.views)[0]
			if got == nil || got.LeaderId != tc.leader || got.Term != tc.term || got.Unavailable != (tc.leader == 0) {
				t.Fatalf("merged view %v, want leader %d at term %d", got, tc.leader, tc.term)
			}
			for _, v := range tc.views {
				if s := v.Shards[0]; s.Unknown || s.Unavailable != (s.LeaderId == 0) {
					t.Fatalf("the merge changed a node's view: %v", s)
				}
			}
		})
	}
	if got := bestShardViews([]*shoalv1.TopologyResponse{inConfig(view(3, 0, 1, 2), 1, 2)})[0]; !got.Unknown {
		t.Errorf("a removed replica's view alone: merged %v, want the shard unknown (its members unanswered)", got)
	}
}

// inConfig sets the voters of every shard of view v.
func inConfig(v *shoalv1.TopologyResponse, voters ...uint64) *shoalv1.TopologyResponse {
	for _, s := range v.Shards {
		s.Voters = voters
	}
	return v
}

// withLearners sets the learners of every shard of view v.
func withLearners(v *shoalv1.TopologyResponse, learners ...uint64) *shoalv1.TopologyResponse {
	for _, s := range v.Shards {
		s.Learners = learners
	}
	return v
}

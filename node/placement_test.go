package node

import (
	"slices"
	"testing"
	"time"

	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// TestPlacementDecide checks decidePlacement as a table: given the leader's
// status, the members and the ring's target, the one step it takes.
func TestPlacementDecide(t *testing.T) {
	const self = 1
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const commit = 1000
	// status builds a leader status of self; prog gives each other member's
	// match index (negative: not recently active); members in learners are
	// learners.
	status := func(voters, learners []uint64, prog map[uint64]int) replica.Status {
		st := replica.Status{Shard: 3, ID: self, Leader: self, Term: 2, Commit: commit, Applied: commit,
			Voters: voters, Learners: learners, Progress: map[uint64]replica.Progress{self: {Match: commit, RecentActive: true}}}
		for id, m := range prog {
			pr := replica.Progress{Match: uint64(max(m, 0)), RecentActive: m >= 0}
			if m < 0 {
				pr.Match = uint64(-m)
			}
			for _, l := range learners {
				pr.Learner = pr.Learner || l == id
			}
			st.Progress[id] = pr
		}
		return st
	}
	alive := peerState{Alive: true}
	dead := peerState{}           // dead for less than DeadAfter
	gone := peerState{Gone: true} // dead for at least DeadAfter
	decom := peerState{Alive: true, Decommissioning: true}
	peers := func(kv ...any) map[uint64]peerState {
		m := map[uint64]peerState{self: alive}
		for i := 0; i < len(kv); i += 2 {
			m[uint64(kv[i].(int))] = kv[i+1].(peerState)
		}
		return m
	}
	stable := now.Add(-time.Minute)

	tests := []struct {
		name string
		in   placementInput
		want placementStep // Reason ignored
	}{
		{
			name: "up-replication from one voter adds the first missing target as learner",
			in: placementInput{Status: status([]uint64{1}, nil, nil), Target: []uint64{1, 2, 3},
				Peers: peers(2, alive, 3, alive)},
			want: placementStep{Kind: stepAddLearner, Node: 2},
		},
		{
			name: "a dead target member is not added",
			in: placementInput{Status: status([]uint64{1}, nil, nil), Target: []uint64{1, 2, 3},
				Peers: peers(2, dead, 3, alive)},
			want: placementStep{Kind: stepAddLearner, Node: 3},
		},
		{
			name: "a target member whose node is stopping is not added",
			in: placementInput{Status: status([]uint64{1}, nil, nil), Target: []uint64{1, 2, 3},
				Peers: peers(2, peerState{Alive: true, Stopping: true}, 3, alive)},
			want: placementStep{Kind: stepAddLearner, Node: 3},
		},
		{
			name: "caught-up learner is promoted",
			in: placementInput{Status: status([]uint64{1}, []uint64{2}, map[uint64]int{2: commit - 10}),
				Target: []uint64{1, 2}, Peers: peers(2, alive)},
			want: placementStep{Kind: stepPromote, Node: 2},
		},
		{
			name: "unsettled learner (just added, or silent at the last look) is not promoted",
			in: placementInput{Status: status([]uint64{1}, []uint64{2}, map[uint64]int{2: commit}),
				Target: []uint64{1, 2}, Peers: peers(2, peerState{Alive: true, Unsettled: true})},
			want: placementStep{},
		},
		{
			name: "a caught-up learner whose node is stopping is not promoted",
			in: placementInput{Status: status([]uint64{1, 2, 3}, []uint64{4}, map[uint64]int{4: commit}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, dead, 4, peerState{Alive: true, Stopping: true})},
			want: placementStep{},
		},
		{
			name: "a caught-up learner whose node gossip sees dead is not promoted",
			in: placementInput{Status: status([]uint64{1, 2, 3}, []uint64{4}, map[uint64]int{4: commit}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, dead, 4, dead)},
			want: placementStep{},
		},
		{
			name: "lagging learner waits",
			in: placementInput{Status: status([]uint64{1}, []uint64{2}, map[uint64]int{2: 10}),
				Target: []uint64{1, 2}, Peers: peers(2, alive)},
			want: placementStep{},
		},
		{
			name: "inactive learner is not promoted",
			in: placementInput{Status: status([]uint64{1}, []uint64{2}, map[uint64]int{2: -commit}),
				Target: []uint64{1, 2}, Peers: peers(2, alive)},
			want: placementStep{},
		},
		{
			name: "learner outside the target is removed",
			in: placementInput{Status: status([]uint64{1, 2}, []uint64{4}, map[uint64]int{2: commit, 4: commit}),
				Target: []uint64{1, 2}, Peers: peers(2, alive, 4, alive)},
			want: placementStep{Kind: stepRemove, Node: 4},
		},
		{
			// A leader whose term began after another's replacement of voter 3 was under way
			// (learner 4) does not hear 3 either: 4 stays, to be promoted once this leader
			// too has not heard 3 for DeadAfter, rather than removed and sent a snapshot again.
			name: "learner outside the target is kept while a target voter is unheard",
			in: placementInput{Status: status([]uint64{1, 2, 3}, []uint64{4}, map[uint64]int{2: commit, 3: -5, 4: commit}),
				Target: []uint64{1, 2, 3}, Peers: peers(2, alive, 3, alive, 4, alive)},
			want: placementStep{},
		},
		{
			// The same with the replacement already voting: removing it would leave two voters
			// this leader hears, replication 3.
			name: "extra voter kept while a target voter is unheard",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: commit, 3: -5, 4: commit}),
				Target: []uint64{1, 2, 3}, Peers: peers(2, alive, 3, alive, 4, alive), Replication: 3},
			want: placementStep{Kept: true},
		},
		{
			name: "extra voter removed once every target member votes",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: commit, 3: commit, 4: commit}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, alive, 4, alive)},
			want: placementStep{Kind: stepRemove, Node: 3},
		},
		{
			name: "no removal while a target member is still a learner",
			in: placementInput{Status: status([]uint64{1, 2, 3}, []uint64{4}, map[uint64]int{2: commit, 3: commit, 4: 5}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, alive, 4, alive)},
			want: placementStep{},
		},
		{
			name: "member dead past DeadAfter: replacement added first",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: -5}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, gone, 4, alive)},
			want: placementStep{Kind: stepAddLearner, Node: 4},
		},
		{
			name: "member dead past DeadAfter: removed after the replacement votes",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: commit, 3: -5, 4: commit}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, gone, 4, alive)},
			want: placementStep{Kind: stepRemove, Node: 3},
		},
		{
			name: "dead extras go before live ones",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4, 5}, nil, map[uint64]int{2: commit, 3: commit, 4: -5, 5: commit}),
				Target: []uint64{1, 2, 5}, Peers: peers(2, alive, 3, alive, 4, gone, 5, alive)},
			want: placementStep{Kind: stepRemove, Node: 4},
		},
		{
			name: "decommissioning voter drained",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: commit, 3: commit, 4: commit}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, decom, 4, alive)},
			want: placementStep{Kind: stepRemove, Node: 3},
		},
		{
			name: "decommissioning voter kept while no other node can take its replica",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{1, 2}, Peers: peers(2, alive, 3, decom), Replication: 3},
			want: placementStep{Kept: true},
		},
		{
			name: "decommissioning voter removed once its replacement votes",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: commit, 3: commit, 4: commit}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, decom, 4, alive), Replication: 3},
			want: placementStep{Kind: stepRemove, Node: 3},
		},
		{
			name: "self decommissioning without a replacement: only the leadership moves",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{3, 2}, Peers: map[uint64]peerState{self: decom, 2: alive, 3: alive}, Replication: 3},
			want: placementStep{Kind: stepTransfer, Node: 3, Kept: true},
		},
		{
			name: "self decommissioning: the leadership goes to another target voter while the preferred leader's hand-back wait runs",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{3, 2}, Peers: map[uint64]peerState{self: decom, 2: alive, 3: alive}, Replication: 3,
				PreferredLost: now.Add(-5 * time.Second), HandBack: 10 * time.Second},
			want: placementStep{Kind: stepTransfer, Node: 2, Kept: true},
		},
		{
			name: "self decommissioning: to the preferred leader in its hand-back wait when no other target voter can take it",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit - 2*promoteSlack, 3: commit}),
				Target: []uint64{3, 2}, Peers: map[uint64]peerState{self: decom, 2: alive, 3: alive}, Replication: 3,
				PreferredLost: now.Add(-5 * time.Second), HandBack: 10 * time.Second},
			want: placementStep{Kind: stepTransfer, Node: 3, Kept: true},
		},
		{
			name: "a decommissioning voter is kept while a target voter is down: that one may never take its place",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: commit, 3: commit, 4: -5}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, decom, 4, dead), Replication: 3},
			want: placementStep{Kept: true},
		},
		{
			name: "a voter the ring moved off is kept while a target voter is down",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: -5, 3: commit, 4: commit}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, dead, 3, alive, 4, alive), Replication: 3},
			want: placementStep{Kept: true},
		},
		{
			name: "a down voter the ring moved off is removed once its replacement votes",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: commit, 3: -5, 4: commit}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, dead, 4, alive), Replication: 3},
			want: placementStep{Kind: stepRemove, Node: 3},
		},
		{
			name: "a decommissioning voter down for less than DeadAfter is kept without a replacement",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: -commit}),
				Target: []uint64{1, 2}, Peers: peers(2, alive, 3, peerState{Decommissioning: true}), Replication: 3},
			want: placementStep{Kept: true},
		},
		{
			name: "a decommissioning voter gone for DeadAfter is removed without a replacement",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: -commit}),
				Target: []uint64{1, 2}, Peers: peers(2, alive, 3, peerState{Decommissioning: true, Gone: true}), Replication: 3},
			want: placementStep{Kind: stepRemove, Node: 3},
		},
		{
			name: "a gone voter is removed without a replacement",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: -commit}),
				Target: []uint64{1, 2}, Peers: peers(2, alive, 3, gone), Replication: 3},
			want: placementStep{Kind: stepRemove, Node: 3},
		},
		{
			name: "no removal below a live quorum",
			// Removing 3 would leave {1,2} with only the leader live.
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: -commit, 3: commit}),
				Target: []uint64{1, 2}, Peers: peers(2, dead, 3, decom)},
			want: placementStep{},
		},
		{
			name: "quorum check picks the removable extra",
			// Removing 4 (gone) leaves {1,2,3}: live {1,3} of 3, ok.
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: -commit, 3: commit, 4: -commit}),
				Target: []uint64{1, 2, 3}, Peers: peers(2, dead, 3, alive, 4, gone)},
			want: placementStep{Kind: stepRemove, Node: 4},
		},
		{
			name: "self is the extra: transfer to the preferred target voter first",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: commit, 3: commit, 4: commit}),
				Target: []uint64{3, 2, 4}, Peers: peers(2, alive, 3, alive, 4, alive)},
			want: placementStep{Kind: stepTransfer, Node: 3},
		},
		{
			name: "self decommissioning: other extras removed before the transfer",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4, 5}, nil, map[uint64]int{2: commit, 3: commit, 4: commit, 5: commit}),
				Target: []uint64{2, 3, 4}, Peers: map[uint64]peerState{self: decom, 2: alive, 3: alive, 4: alive, 5: alive}},
			want: placementStep{Kind: stepRemove, Node: 5},
		},
		{
			name: "self extra but no caught-up target voter: wait",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: 3, 3: -commit}),
				Target: []uint64{2, 3}, Peers: peers(2, alive, 3, alive)},
			want: placementStep{},
		},
		{
			name: "leader balance: hand over to the ring's first replica",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: peers(2, alive, 3, alive), StableSince: stable, Settle: 3 * time.Second},
			want: placementStep{Kind: stepTransfer, Node: 2},
		},
		{
			name: "leader balance while a decommissioning voter is kept",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1}, Peers: peers(2, alive, 3, decom), Replication: 3, StableSince: stable, Settle: 3 * time.Second},
			want: placementStep{Kind: stepTransfer, Node: 2, Kept: true},
		},
		{
			name: "no leader balance to a kept decommissioning voter",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{1, 2}, Peers: peers(2, alive, 3, decom), Replication: 3, StableSince: stable, Settle: 3 * time.Second},
			want: placementStep{Kept: true},
		},
		{
			name: "no leader balance to a stopping node",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: map[uint64]peerState{2: {Alive: true, Stopping: true}, 3: alive},
				StableSince: stable, Settle: 3 * time.Second},
			want: placementStep{},
		},
		{
			name: "self is the extra: transfer to a target voter that is not stopping",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: commit, 3: commit, 4: commit}),
				Target: []uint64{3, 2, 4}, Peers: map[uint64]peerState{2: alive, 3: {Alive: true, Stopping: true}, 4: alive}},
			want: placementStep{Kind: stepTransfer, Node: 2},
		},
		{
			name: "leader balance rate-limited",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: peers(2, alive, 3, alive), StableSince: stable, Settle: 3 * time.Second,
				LastTransfer: now.Add(-transferCooldown / 2)},
			want: placementStep{},
		},
		{
			name: "leader balance after the cooldown",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: peers(2, alive, 3, alive), StableSince: stable, Settle: 3 * time.Second,
				LastTransfer: now.Add(-transferCooldown)},
			want: placementStep{Kind: stepTransfer, Node: 2},
		},
		{
			name: "no leader balance to a preferred leader that lost the leadership lately",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: peers(2, alive, 3, alive), StableSince: stable, Settle: 3 * time.Second,
				PreferredLost: now.Add(-5 * time.Second), HandBack: 10 * time.Second},
			want: placementStep{},
		},
		{
			name: "leader balance once the preferred leader's hand-back wait is over",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: peers(2, alive, 3, alive), StableSince: stable, Settle: 3 * time.Second,
				PreferredLost: now.Add(-10 * time.Second), HandBack: 10 * time.Second},
			want: placementStep{Kind: stepTransfer, Node: 2},
		},
		{
			name: "leader balance waits for a stable group",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: peers(2, alive, 3, alive), StableSince: now.Add(-time.Second), Settle: 3 * time.Second},
			want: placementStep{},
		},
		{
			name: "no leader balance to a preferred leader whose disk is slow",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: peers(2, peerState{Alive: true, DiskSlow: true}, 3, alive), StableSince: stable, Settle: 3 * time.Second},
			want: placementStep{},
		},
		{
			name: "a leader whose disk is slow hands over to the first caught-up target voter on a healthy disk",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: 1, 3: commit}),
				Target: []uint64{1, 2, 3}, Peers: map[uint64]peerState{self: {Alive: true, DiskSlow: true}, 2: alive, 3: alive},
				StableSince: stable, Settle: 3 * time.Second},
			want: placementStep{Kind: stepTransfer, Node: 3},
		},
		{
			name: "a leader whose disk is slow hands over a shard not yet stable",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: map[uint64]peerState{self: {Alive: true, DiskSlow: true}, 2: alive, 3: alive},
				StableSince: now, Settle: 3 * time.Second},
			want: placementStep{Kind: stepTransfer, Node: 2},
		},
		{
			name: "a leader whose disk is slow waits out the transfer cooldown",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: map[uint64]peerState{self: {Alive: true, DiskSlow: true}, 2: alive, 3: alive},
				StableSince: stable, Settle: 3 * time.Second, LastTransfer: now.Add(-transferCooldown / 2)},
			want: placementStep{},
		},
		{
			name: "a leader whose disk is slow hands over before adding a missing target member",
			in: placementInput{Status: status([]uint64{1, 2}, nil, map[uint64]int{2: commit}),
				Target: []uint64{1, 2, 3}, Peers: map[uint64]peerState{self: {Alive: true, DiskSlow: true}, 2: alive, 3: alive},
				StableSince: stable, Settle: 3 * time.Second},
			want: placementStep{Kind: stepTransfer, Node: 2},
		},
		{
			name: "a leader whose disk is slow, with no voter on a healthy disk to take over, goes on placing",
			in: placementInput{Status: status([]uint64{1, 2}, nil, map[uint64]int{2: commit}),
				Target: []uint64{1, 2, 3}, Peers: map[uint64]peerState{self: {Alive: true, DiskSlow: true},
					2: {Alive: true, DiskSlow: true}, 3: alive}, StableSince: stable, Settle: 3 * time.Second},
			want: placementStep{Kind: stepAddLearner, Node: 3},
		},
		{
			name: "a leader whose disk is slow keeps the leadership when every other voter's disk is slow too",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: map[uint64]peerState{self: {Alive: true, DiskSlow: true},
					2: {Alive: true, DiskSlow: true}, 3: {Alive: true, DiskSlow: true}}, StableSince: stable, Settle: 3 * time.Second},
			want: placementStep{},
		},
		{
			name: "leader balance skips a lagging preferred leader",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: 1, 3: commit}),
				Target: []uint64{2, 1, 3}, Peers: peers(2, alive, 3, alive), StableSince: stable, Settle: 3 * time.Second},
			want: placementStep{},
		},
		{
			name: "placed: nothing to do",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: commit}),
				Target: []uint64{1, 2, 3}, Peers: peers(2, alive, 3, alive), StableSince: stable},
			want: placementStep{},
		},
		{
			name: "under-replicated cluster (fewer nodes than the factor) is placed",
			in: placementInput{Status: status([]uint64{1, 2}, nil, map[uint64]int{2: commit}),
				Target: []uint64{1, 2}, Peers: peers(2, alive), StableSince: stable},
			want: placementStep{},
		},
		{
			name: "briefly dead voter keeps its replica",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: -5}),
				Target: []uint64{1, 2, 3}, Peers: peers(2, alive, 3, dead), StableSince: stable},
			want: placementStep{},
		},
		{
			name: "member removed from the shard moments ago is not added back yet",
			in: placementInput{Status: status([]uint64{1, 2}, nil, map[uint64]int{2: commit}),
				Target: []uint64{1, 2, 3}, Peers: peers(2, alive, 3, peerState{Alive: true, RecentlyRemoved: true})},
			want: placementStep{},
		},
		{
			name: "unresponsive target learner is removed (to come back fresh)",
			in: placementInput{Status: status([]uint64{1, 2}, []uint64{3}, map[uint64]int{2: commit, 3: -commit}),
				Target: []uint64{1, 2, 3}, Peers: peers(2, alive, 3, peerState{Alive: true, Gone: true})},
			want: placementStep{Kind: stepRemove, Node: 3},
		},
		{
			name: "unresponsive target voter is kept when the group has no voter to spare",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: -commit}),
				Target: []uint64{1, 2, 3}, Peers: peers(2, alive, 3, peerState{Alive: true, Gone: true}), Replication: 3},
			want: placementStep{},
		},
		{
			name: "unresponsive target voter kept when removal would lose the live quorum, even with a voter to spare",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: -commit, 3: -commit, 4: commit}),
				Target: []uint64{1, 2, 3, 4}, Peers: peers(2, dead, 3, peerState{Alive: true, Gone: true}, 4, dead), Replication: 3},
			want: placementStep{},
		},
		{
			name: "unresponsive target voter is removed when the group has a voter to spare and a live quorum remains",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: -commit}),
				Target: []uint64{1, 2, 3}, Peers: peers(2, alive, 3, peerState{Alive: true, Gone: true}), Replication: 2},
			want: placementStep{Kind: stepRemove, Node: 3},
		},
		{
			name: "unresponsive target voter kept when removal would lose the live quorum",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: -commit, 3: -commit}),
				Target: []uint64{1, 2, 3}, Peers: peers(2, dead, 3, peerState{Alive: true, Gone: true})},
			want: placementStep{},
		},
		// Replace before remove: the loop left the unheard voter 3 out of the target
		// (replaceUnheard), in favour of node 4.
		{
			name: "unheard voter left out of the target: its replacement is added first",
			in: placementInput{Status: status([]uint64{1, 2, 3}, nil, map[uint64]int{2: commit, 3: -commit}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, peerState{Alive: true, Gone: true}, 4, alive), Replication: 3},
			want: placementStep{Kind: stepAddLearner, Node: 4},
		},
		{
			name: "unheard voter left out of the target: its caught-up replacement is promoted",
			in: placementInput{Status: status([]uint64{1, 2, 3}, []uint64{4}, map[uint64]int{2: commit, 3: -commit, 4: commit}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, peerState{Alive: true, Gone: true}, 4, alive), Replication: 3},
			want: placementStep{Kind: stepPromote, Node: 4},
		},
		{
			name: "unheard voter left out of the target: removed once its replacement votes",
			in: placementInput{Status: status([]uint64{1, 2, 3, 4}, nil, map[uint64]int{2: commit, 3: -commit, 4: commit}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, peerState{Alive: true, Gone: true}, 4, alive), Replication: 3},
			want: placementStep{Kind: stepRemove, Node: 3},
		},
		{
			name: "unheard voter left out of the target: kept while its replacement is not caught up",
			in: placementInput{Status: status([]uint64{1, 2, 3}, []uint64{4}, map[uint64]int{2: commit, 3: -commit, 4: 0}),
				Target: []uint64{1, 2, 4}, Peers: peers(2, alive, 3, peerState{Alive: true, Gone: true}, 4, alive), Replication: 3},
			want: placementStep{},
		},
		{
			name: "no balancing transfer while a member this leader does not hear is replaced",
			in: placementInput{Status: status([]uint64{1, 2, 4}, nil, map[uint64]int{2: commit, 4: commit}),
				Target: []uint64{2, 1, 4}, Peers: peers(2, alive, 3, alive, 4, alive), Replication: 3, Replaced: true,
				StableSince: stable, Settle: time.Second},
			want: placementStep{},
		},
		{
			name: "follower does nothing",
			in: placementInput{Status: replica.Status{ID: self, Leader: 2, Voters: []uint64{1, 2}},
				Target: []uint64{1, 2, 3}, Peers: peers(2, alive, 3, alive)},
			want: placementStep{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Self, tc.in.Now = self, now
			got := decidePlacement(tc.in)
			if got.Kind != tc.want.Kind || got.Node != tc.want.Node || got.Kept != tc.want.Kept {
				t.Fatalf("got %v %d kept %v (%s), want %v %d kept %v", got.Kind, got.Node, got.Kept,
					got.Reason, tc.want.Kind, tc.want.Node, tc.want.Kept)
			}
			if got.Reason == "" {
				t.Fatalf("step %v without a reason", got.Kind)
			}
		})
	}
}

func TestPlacementLiveQuorumWithout(t *testing.T) {
	live := func(ids ...uint64) func(uint64) bool {
		return func(id uint64) bool {
			for _, l := range ids {
				if l == id {
					return true
				}
			}
			return false
		}
	}
	tests := []struct {
		voters []uint64
		remove uint64
		live   func(uint64) bool
		want   bool
	}{
		{[]uint64{1, 2, 3}, 3, live(1, 2), true},
		{[]uint64{1, 2, 3}, 3, live(1), false},
		{[]uint64{1, 2, 3, 4}, 4, live(1, 2), true},
		{[]uint64{1, 2, 3, 4}, 4, live(1, 4), false},
		{[]uint64{1}, 1, live(1), false},
		{[]uint64{1, 2}, 2, live(1), true},
	}
	for i, tc := range tests {
		if got := liveQuorumWithout(tc.voters, tc.remove, tc.live); got != tc.want {
			t.Errorf("%d: liveQuorumWithout(%v, %d) = %v, want %v", i, tc.voters, tc.remove, got, tc.want)
		}
	}
}

func TestPlacementUnderReplicatedAgreesWithTopology(t *testing.T) {
	// Topology, shoal_shard_under_replicated and the placement gauge share one definition:
	// fewer voters than the replication factor, or voters in fewer zones than it when the
	// nodes name zones, even when the cluster cannot do better.
	zones := map[uint64]string{1: "a", 2: "b", 3: "c", 4: "a", 5: "", 6: ""}
	for _, tc := range []struct {
		voters []uint64
		repl   int
		want   bool
	}{
		{[]uint64{1}, 3, true},
		{[]uint64{1, 2}, 3, true},
		{[]uint64{1, 2, 3}, 3, false},
		{[]uint64{1, 2, 3, 4}, 3, false},
		{[]uint64{1, 2, 4}, 3, true},  // two zones for three replicas
		{[]uint64{1, 4}, 2, true},     // both in zone a
		{[]uint64{1}, 1, false},       //
		{[]uint64{1, 2, 9}, 3, false}, // a voter gossip does not know counts as a zone of its own
		{[]uint64{5, 6, 1}, 3, true},  // nodes without a zone are in the zone "": two zones
		{[]uint64{1, 2, 5}, 3, false}, // a, b and ""
		{[]uint64{1, 4, 5}, 3, true},  // a, a and "": worse spread than a, b, a, not better
	} {
		if got := underReplicated(tc.voters, tc.repl, zones); got != tc.want {
			t.Errorf("underReplicated(%v, %d) = %v, want %v", tc.voters, tc.repl, got, tc.want)
		}
	}
	// A cluster whose nodes name no zone has no zone rule.
	none := map[uint64]string{1: "", 2: "", 3: ""}
	if underReplicated([]uint64{1, 2, 3}, 3, none) {
		t.Error("three voters of a cluster without zones reported under-replicated")
	}
}

// TestPlacementFormats checks when a shard's format is raised (decideFormat) and on which
// nodes decidePlacement adds replicas of a shard at a format.
func TestPlacementFormats(t *testing.T) {
	const self, commit = 1, 1000
	status := func(voters, learners []uint64, selfMatch uint64) replica.Status {
		st := replica.Status{Shard: 3, ID: self, Leader: self, Term: 2, Commit: commit, Applied: commit,
			Voters: voters, Learners: learners, Progress: map[uint64]replica.Progress{self: {Match: selfMatch, RecentActive: true}}}
		for _, id := range append(append([]uint64{}, voters...), learners...) {
			if id != self {
				st.Progress[id] = replica.Progress{Match: commit, RecentActive: true}
			}
		}
		return st
	}
	cur := peerState{Alive: true, ShardFormat: shard.MaxFormat}
	old := peerState{Alive: true} // a version that gossips no format: Format1 only
	down := peerState{ShardFormat: shard.MaxFormat}

	mid := peerState{Alive: true, ShardFormat: shard.MaxFormat - 1} // a version one format behind
	raise := []struct {
		name string
		in   placementInput
		want uint64 // the format raised to, 0 none
	}{
		{"every member applies the format", placementInput{Status: status([]uint64{1, 2, 3}, nil, commit),
			Peers: map[uint64]peerState{2: cur, 3: cur}}, shard.MaxFormat},
		{"a lone voter", placementInput{Status: status([]uint64{1}, nil, commit)}, shard.MaxFormat},
		{"a member of an older version", placementInput{Status: status([]uint64{1, 2, 3}, nil, commit),
			Peers: map[uint64]peerState{2: cur, 3: old}}, 0},
		{"a learner of an older version", placementInput{Status: status([]uint64{1, 2}, []uint64{3}, commit),
			Peers: map[uint64]peerState{2: cur, 3: old}}, 0},
		{"a member one format behind: as far as it goes", placementInput{Status: status([]uint64{1, 2, 3}, nil, commit),
			Peers: map[uint64]peerState{2: cur, 3: mid}}, shard.MaxFormat - 1},
		{"a member one format behind, the shard there already", placementInput{Status: status([]uint64{1, 2, 3}, nil, commit),
			Peers: map[uint64]peerState{2: cur, 3: mid}, Format: shard.MaxFormat - 1}, 0},
		{"a member down (its version is unknown)", placementInput{Status: status([]uint64{1, 2, 3}, nil, commit),
			Peers: map[uint64]peerState{2: cur, 3: down}}, 0},
		{"a member unknown to gossip", placementInput{Status: status([]uint64{1, 2, 3}, nil, commit),
			Peers: map[uint64]peerState{2: cur}}, 0},
		{"already at the format", placementInput{Status: status([]uint64{1, 2, 3}, nil, commit),
			Peers: map[uint64]peerState{2: cur, 3: cur}, Format: shard.MaxFormat}, 0},
		// A target member not added yet, down for its restart, last seen on a version that
		// applies Format1 only: raised past it, the shard would have to replace it.
		{"a target member of an older version, down", placementInput{Status: status([]uint64{1, 2, 3}, nil, commit),
			Target: []uint64{1, 2, 4}, Peers: map[uint64]peerState{2: cur, 3: cur, 4: {}}}, 0},
		{"a target member one format behind", placementInput{Status: status([]uint64{1, 2, 3}, nil, commit),
			Target: []uint64{1, 2, 4}, Peers: map[uint64]peerState{2: cur, 3: cur, 4: mid}}, shard.MaxFormat - 1},
	}
	for _, tc := range raise {
		tc.in.Self = self
		if got := decideFormat(tc.in); got != tc.want {
			t.Errorf("%s: decideFormat = %d, want %d", tc.name, got, tc.want)
		}
	}

	add := []struct {
		name string
		in   placementInput
		want uint64 // the node added as a learner, 0 none
	}{
		{"a node of an older version is not added to a shard at a later format",
			placementInput{Status: status([]uint64{1}, nil, commit), Target: []uint64{1, 2, 3},
				Peers: map[uint64]peerState{2: old, 3: cur}, Format: shard.MaxFormat}, 3},
		{"a node of an older version is added to a shard at its format when nothing is pending",
			placementInput{Status: status([]uint64{1}, nil, commit), Target: []uint64{1, 2},
				Peers: map[uint64]peerState{2: old}, Format: shard.Format1}, 2},
	}
	// A target member alive on a version that cannot apply the shard's format is never added,
	// so the loop replaces it like an unheard member (lacksShardFormat): else the shard waited
	// for it for good, the gone voter it was to replace never removed.
	lacks := lacksShardFormat([]uint64{1, 2, 4, 5, 6}, self,
		map[uint64]peerState{1: old, 2: cur, 4: old, 5: mid, 6: {}}, shard.MaxFormat)
	if !slices.Equal(lacks, []uint64{4, 5}) {
		t.Errorf("lacksShardFormat = %v, want [4 5] (alive, behind; not self, not a member down)", lacks)
	}
	if lacks := lacksShardFormat([]uint64{1, 2, 4}, self, map[uint64]peerState{2: cur, 4: old}, shard.Format1); len(lacks) != 0 {
		t.Errorf("lacksShardFormat at Format1 = %v, want none", lacks)
	}

	for _, tc := range add {
		tc.in.Self = self
		got := decidePlacement(tc.in)
		if tc.want == 0 && got.Kind == stepAddLearner || tc.want != 0 && (got.Kind != stepAddLearner || got.Node != tc.want) {
			t.Errorf("%s: %v %d (%s), want a learner on %d", tc.name, got.Kind, got.Node, got.Reason, tc.want)
		}
		// The step carries the node's format: below the latest, run adds it guarded.
		if got.Kind == stepAddLearner && got.Format != tc.in.formatOf(got.Node) {
			t.Errorf("%s: step format %d, node applies %d", tc.name, got.Format, tc.in.formatOf(got.Node))
		}
	}
}

// TestDiskLowGetsNoNewReplica: a node whose disk is below its --min-free-disk is given no new
// replica (its snapshot would be refused), as a target of the ring or as a replacement, and a
// learner there is let go, while a voter it holds stays in the target.
func TestDiskLowGetsNoNewReplica(t *testing.T) {
	st := replica.Status{Voters: []uint64{1, 2}, Learners: []uint64{5}}
	peers := map[uint64]peerState{1: {Alive: true}, 2: {Alive: true, DiskLow: true}, 3: {Alive: true, DiskLow: true},
		4: {Alive: true}, 5: {Alive: true, DiskLow: true}}
	if got := lacksDiskRoom([]uint64{1, 2, 3, 4, 5}, st, peers); !slices.Equal(got, []uint64{3, 5}) {
		t.Fatalf("lacksDiskRoom = %v, want [3 5] (a new replica on a low disk, a learner there; voter 2 stays)", got)
	}
	if usableReplacement(3, 1, peers, 0) || !usableReplacement(4, 1, peers, 0) {
		t.Fatal("a node with its disk low is a usable replacement, or one with room is not")
	}
	member := keptIfHeld(st, peers)
	usable := func(id uint64) bool { return usableReplacement(id, 1, peers, 0) }
	if got := replaceUnheard([]uint64{1, 2, 3}, map[uint64]bool{3: true}, []uint64{1, 2, 3, 4}, nil, member, usable); !slices.Equal(got, []uint64{1, 2, 4}) {
		t.Fatalf("target 1, 2, 3 with 3's disk low: %v, want [1 2 4]", got)
	}
	// Learner 5 on a low disk and no node to take its place: let go, not kept in the target.
	if got := replaceUnheard([]uint64{1, 2, 5}, map[uint64]bool{5: true}, []uint64{1, 2, 5}, nil, member, usable); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("target 1, 2, 5 with learner 5's disk low and no replacement: %v, want [1 2]", got)
	}
	if !member(2) || member(5) {
		t.Fatal("voter 2 (disk low) not kept when held, or learner 5 (disk low) kept")
	}
}

// TestDecommissioningLeaderNotItsOwnReplacement: a decommissioning leader (1) of a shard with
// voters 1, 2, 3, whose raft does not hear 3 (gossip holds 3 alive), while the ring over the
// eligible nodes targets 2, 3, 4. 3 has no usable replacement but the leader itself, which is
// leaving: 3 stays, so that once 4 votes the leader hands over (it is the extra voter) rather
// than removing 3, a voter the rest of the group hears, and keeping its own replica.
func TestDecommissioningLeaderNotItsOwnReplacement(t *testing.T) {
	const self, commit = 1, 1000
	peers := map[uint64]peerState{
		self: {Alive: true, Decommissioning: true},
		2:    {Alive: true},
		3:    {Alive: true, Gone: true}, // not heard by this leader's raft for DeadAfter
		4:    {Alive: true},
	}
	usable := func(id uint64) bool { return usableReplacement(id, self, peers, 0) }
	if !usableReplacement(self, self, map[uint64]peerState{self: {}}, 0) {
		t.Fatal("a leader that is not leaving, whatever gossip last said of it, is not a usable replacement")
	}
	voters := []uint64{1, 2, 3}
	member := func(id uint64) bool { return slices.Contains(voters, id) }
	target := []uint64{2, 3, 4}
	if t2 := replaceUnheard(target, map[uint64]bool{3: true}, []uint64{2, 4, 1, 2, 3}, nil, member, usable); t2 != nil {
		t.Fatalf("target with 3 unheard: %v, want %v kept (no usable replacement)", t2, target)
	}
	status := replica.Status{Shard: 3, ID: self, Leader: self, Term: 2, Commit: commit, Applied: commit,
		Voters: []uint64{1, 2, 3, 4}, Progress: map[uint64]replica.Progress{
			self: {Match: commit, RecentActive: true}, 2: {Match: commit, RecentActive: true},
			3: {Match: commit}, 4: {Match: commit, RecentActive: true}}}
	step := decidePlacement(placementInput{Self: self, Status: status, Target: target, Peers: peers,
		Now: time.Now(), Replication: 3})
	if step.Kind == stepRemove && step.Node == 3 {
		t.Fatalf("with 4 a voter the decommissioning leader removes 3: %+v", step)
	}
	t.Logf("step: %v %d (%s)", step.Kind, step.Node, step.Reason)
}

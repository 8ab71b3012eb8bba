package node

import (
	"slices"
	"testing"
	"time"

	"github.com/shoaldb/shoal/replica"
)

// Members left out of a shard's target: unheard, stuck learners, and how long they are held out.

// TestPlacementUnresponsiveGone: a member gossip holds alive counts as gone for a shard only
// when its raft has been silent for DeadAfter and gossip has held it alive for returnGrace,
// so that a node back from a pause is not removed before its raft answers.
func TestPlacementUnresponsiveGone(t *testing.T) {
	now := time.Unix(1000, 0)
	const deadAfter = 6 * time.Second
	for _, tc := range []struct {
		name          string
		inactive      bool
		silent, alive time.Duration // how long raft has not heard it; how long gossip has held it alive
		want          bool
	}{
		{"answering", false, 0, time.Hour, false},
		{"silent a moment", true, time.Second, time.Hour, false},
		{"wedged: alive in gossip all along, silent in raft", true, deadAfter, time.Hour, true},
		{"back from a pause, gossip first", true, 20 * time.Second, time.Second, false},
		{"back for returnGrace and still silent", true, 20 * time.Second, returnGrace, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := unresponsiveGone(now, now.Add(-tc.silent), tc.inactive, now.Add(-tc.alive), deadAfter); got != tc.want {
				t.Fatalf("unresponsiveGone = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReplaceUnheard(t *testing.T) {
	zones := map[uint64]string{1: "z1", 2: "z2", 3: "z3", 4: "z1", 5: "z3", 6: "z4", 7: "z5"}
	tests := []struct {
		name       string
		target     []uint64
		held       []uint64
		candidates []uint64 // the ring's set without held, then the voters
		members    []uint64 // the group's voters and learners (default: target)
		unusable   []uint64 // candidates that cannot take a replica (dead, stopping, older format)
		want       []uint64 // nil: keep the target
	}{
		{name: "no member of the target held", target: []uint64{1, 2, 3}, held: []uint64{6}, candidates: []uint64{1, 2, 3}},
		{name: "the member is replaced, the rest keeps its order", target: []uint64{1, 2, 3}, held: []uint64{3},
			candidates: []uint64{2, 6, 1}, want: []uint64{1, 2, 6}},
		{name: "the preferred leader held: the next one leads", target: []uint64{3, 1, 2}, held: []uint64{3},
			candidates: []uint64{1, 2, 6}, want: []uint64{1, 2, 6}},
		{name: "a node in a zone the others do not use first", target: []uint64{1, 2, 3}, held: []uint64{3},
			candidates: []uint64{4, 5, 1}, want: []uint64{1, 2, 5}},
		{name: "a shared zone when no other is left", target: []uint64{1, 2, 3}, held: []uint64{3},
			candidates: []uint64{4, 1, 2}, want: []uint64{1, 2, 4}},
		{name: "two held", target: []uint64{1, 2, 3}, held: []uint64{2, 3},
			candidates: []uint64{1, 5, 6}, want: []uint64{1, 5, 6}},
		{name: "an unusable candidate is passed over", target: []uint64{1, 2, 3}, held: []uint64{3},
			candidates: []uint64{6, 7, 1}, unusable: []uint64{6}, want: []uint64{1, 2, 7}},
		{name: "no node to take the replica: the member is kept", target: []uint64{1, 2, 3}, held: []uint64{3},
			candidates: []uint64{1, 2}},
		{name: "each held member on its own: one replaced, one kept", target: []uint64{1, 2, 3}, held: []uint64{2, 3},
			candidates: []uint64{1, 6}, want: []uint64{1, 6, 3}},
		{name: "a held member no longer in the group and not replaceable is dropped", target: []uint64{1, 2, 3},
			held: []uint64{3}, candidates: []uint64{1, 2}, members: []uint64{1, 2}, want: []uint64{1, 2}},
		{name: "a current voter takes the place when the ring offers none", target: []uint64{1, 2, 3}, held: []uint64{3, 6},
			candidates: []uint64{1, 2, 1, 2, 5}, members: []uint64{1, 2, 5}, want: []uint64{1, 2, 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			held := map[uint64]bool{}
			for _, id := range tc.held {
				held[id] = true
			}
			members := tc.members
			if members == nil {
				members = tc.target
			}
			member := func(id uint64) bool { return slices.Contains(members, id) }
			usable := func(id uint64) bool { return !slices.Contains(tc.unusable, id) }
			if got := replaceUnheard(tc.target, held, tc.candidates, zones, member, usable); !slices.Equal(got, tc.want) {
				t.Fatalf("replaceUnheard(%v, held %v, candidates %v) = %v, want %v", tc.target, tc.held, tc.candidates, got, tc.want)
			}
		})
	}
}

// TestPlacementStuckLearner: a target learner that answers heartbeats but whose match index
// does not move for DeadAfter while it trails the commit index (its snapshot fails each time,
// say) is stuck, and held out like an unheard member; progress restarts its clock; a snapshot
// under way gets stuckSnapshotFactor DeadAfter; a learner outside the target or caught up is
// never stuck.
func TestPlacementStuckLearner(t *testing.T) {
	const deadAfter, commit = time.Minute, 1000
	t0 := time.Unix(1e9, 0)
	st := func(match uint64, snapshotting bool) replica.Status {
		return replica.Status{Shard: 3, ID: 1, Leader: 1, Term: 2, Commit: commit, Voters: []uint64{1, 2, 3},
			Learners: []uint64{4, 5}, Progress: map[uint64]replica.Progress{
				1: {Match: commit, RecentActive: true}, 2: {Match: commit, RecentActive: true},
				4: {Match: match, RecentActive: true, Snapshotting: snapshotting},
				5: {Match: 10, RecentActive: true}, // behind, but not in the target
			}}
	}
	target := []uint64{1, 2, 4}
	sp := &shardPlacement{}
	waiting := false // learner 4's snapshot waits its turn in the transport
	check := func(at time.Duration, match uint64, snapshotting bool, want []uint64) {
		t.Helper()
		got := sp.trackLearners(st(match, snapshotting), target, t0.Add(at), deadAfter, func(id uint64) bool { return id == 4 && waiting })
		if !slices.Equal(got, want) {
			t.Fatalf("at %v, match %d, snapshotting %v, waiting %v: stuck %v, want %v", at, match, snapshotting, waiting, got, want)
		}
	}
	check(0, 100, false, nil)
	check(deadAfter-time.Second, 100, false, nil)
	check(deadAfter, 100, false, []uint64{4})
	check(deadAfter+time.Second, 200, false, nil) // it moved: its clock restarts
	check(2*deadAfter+time.Second, 200, true, nil)
	check(5*deadAfter, 200, true, nil)
	check(6*deadAfter+time.Second, 200, true, []uint64{4})
	check(7*deadAfter, commit-promoteSlack, false, nil) // caught up enough to be promoted

	// A snapshot that waits its turn (behind others to the same node) for longer than
	// stuckSnapshotFactor DeadAfter: its clock runs from when it stops waiting.
	sp = &shardPlacement{}
	waiting = true
	check(0, 100, true, nil)
	check(10*deadAfter, 100, true, nil)
	waiting = false
	check(10*deadAfter+time.Second, 100, true, nil)
	check(15*deadAfter-time.Second, 100, true, nil)
	check(15*deadAfter, 100, true, []uint64{4})

	// Snapshots that fail each time, taking turns with another learner's on the same node:
	// waiting half the time, streaming (and failing) the other half. The clock stops while
	// it waits, and does not restart: stuck after stuckSnapshotFactor DeadAfter of streams.
	sp = &shardPlacement{}
	for i := range 10 {
		waiting = i%2 == 0
		var want []uint64
		if i == 9 {
			want = []uint64{4}
		}
		check(time.Duration(i)*deadAfter, 100, true, want)
	}
}

// TestStuckLearnerHoldGrows: a stuck learner held out, added back after its hold and stuck
// again is held out twice as long each time, up to maxHoldOut DeadAfter, as an unheard member
// is (it was re-added and sent a snapshot at the same pace for good); a failed probe is not.
func TestStuckLearnerHoldGrows(t *testing.T) {
	const deadAfter = time.Minute
	sp := &shardPlacement{leftOut: map[uint64]*heldOut{}}
	st := replica.Status{Shard: 3, ID: 1, Leader: 1, Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}
	peers := map[uint64]peerState{1: {Alive: true}, 2: {Alive: true}, 3: {Alive: true}, 4: {Alive: true}}
	at := time.Unix(1e9, 0)
	for i, want := range []time.Duration{deadAfter, 2 * deadAfter, 4 * deadAfter, 8 * deadAfter, 8 * deadAfter} {
		sp.trackUnheard(st, peers, []uint64{4}, at, deadAfter) // stuck: held out from now
		if got := sp.leftOut[4].hold; got != want {
			t.Fatalf("stuck for the %d. time: held out for %v, want %v", i+1, got, want)
		}
		at = at.Add(want) // its hold passes: it is added back, and is stuck again
	}
	// A member that only failed the leader's question before being added back is asked
	// again after the same hold: once a cut heals, it returns within one hold.
	for i := range 3 {
		if got := sp.holdOut(6, at, deadAfter, false).hold; got != deadAfter {
			t.Fatalf("probe failed for the %d. time: held out for %v, want %v", i+1, got, deadAfter)
		}
		at = at.Add(deadAfter)
	}
}

// TestUnheardHoldGrowsAcrossHeals: a member raft stops hearing while gossip holds it alive is
// held out; heard again, its hold ends at once, and cut off again soon after (a link that fails
// now and then) it is held out twice as long, where it started over at DeadAfter and cost a
// replica added, a snapshot and a removal each time. Long heard, it is forgotten.
func TestUnheardHoldGrowsAcrossHeals(t *testing.T) {
	const deadAfter = time.Minute
	sp := &shardPlacement{leftOut: map[uint64]*heldOut{}, inactiveSince: map[uint64]time.Time{}}
	st := replica.Status{Shard: 3, ID: 1, Leader: 1, Voters: []uint64{1, 2, 3},
		Progress: map[uint64]replica.Progress{2: {Match: 10}, 3: {Match: 10}}}
	cut := map[uint64]peerState{1: {Alive: true}, 2: {Alive: true}, 3: {Alive: true, Gone: true, Unheard: true}}
	healed := map[uint64]peerState{1: {Alive: true}, 2: {Alive: true}, 3: {Alive: true}}
	at := time.Unix(1e9, 0)
	for i, want := range []time.Duration{deadAfter, 2 * deadAfter, 4 * deadAfter} {
		sp.inactiveSince[3] = at
		if held, _ := sp.trackUnheard(st, cut, nil, at, deadAfter); !held[3] || sp.leftOut[3].hold != want {
			t.Fatalf("cut for the %d. time: held %v for %v, want held for %v", i+1, held[3], sp.leftOut[3].hold, want)
		}
		at = at.Add(10 * time.Second)
		delete(sp.inactiveSince, 3) // heard again
		if held, _ := sp.trackUnheard(st, healed, nil, at, deadAfter); held[3] {
			t.Fatalf("heard again after the %d. cut: still held", i+1)
		}
		at = at.Add(time.Minute)
	}
	at = at.Add(20 * leftOutForget * deadAfter)
	sp.trackUnheard(st, healed, nil, at, deadAfter)
	if _, ok := sp.leftOut[3]; ok {
		t.Fatalf("a member heard for long is still remembered: %+v", sp.leftOut[3])
	}
}

// TestUnheardHeldUntilHeard: a member held out as unheard stays held while raft does not hear
// it, whatever gossip says of it meanwhile: its node dead but not yet gone, or this leader's
// term begun again (every match back to 0). Its hold ran out after DeadAfter, and the
// replacement under way was undone while the ring still placed the member. Heard, it is
// held no longer.
func TestUnheardHeldUntilHeard(t *testing.T) {
	const deadAfter = time.Minute
	at := time.Unix(1e9, 0)
	heardSt := replica.Status{Shard: 3, ID: 1, Leader: 1, Voters: []uint64{1, 2, 3},
		Progress: map[uint64]replica.Progress{2: {Match: 10}, 3: {Match: 10}}}
	newTerm := replica.Status{Shard: 3, ID: 1, Leader: 1, Voters: []uint64{1, 2, 3},
		Progress: map[uint64]replica.Progress{2: {Match: 10}, 3: {Match: 0}}}
	cut := map[uint64]peerState{1: {Alive: true}, 2: {Alive: true}, 3: {Alive: true, Gone: true, Unheard: true}}
	for _, tc := range []struct {
		name  string
		st    replica.Status
		peers map[uint64]peerState
		idle  bool // 3 not recently active (inactiveSince holds it)
	}{
		{"its node died", heardSt, map[uint64]peerState{1: {Alive: true}, 2: {Alive: true}, 3: {}}, true},
		{"a new term", newTerm, map[uint64]peerState{1: {Alive: true}, 2: {Alive: true}, 3: {Alive: true}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := &shardPlacement{leftOut: map[uint64]*heldOut{}, inactiveSince: map[uint64]time.Time{3: at}}
			now := at
			if held, _ := sp.trackUnheard(heardSt, cut, nil, now, deadAfter); !held[3] {
				t.Fatal("an unheard member gossip holds alive is not held out")
			}
			if !tc.idle {
				delete(sp.inactiveSince, 3)
			}
			for range 30 { // three DeadAfter, a round every 6 s
				now = now.Add(6 * time.Second)
				if held, _ := sp.trackUnheard(tc.st, tc.peers, nil, now, deadAfter); !held[3] {
					t.Fatalf("%v after the hold began, 3 still unheard: no longer held", now.Sub(at))
				}
			}
			delete(sp.inactiveSince, 3)
			now = now.Add(6 * time.Second)
			healed := map[uint64]peerState{1: {Alive: true}, 2: {Alive: true}, 3: {Alive: true}}
			if held, _ := sp.trackUnheard(heardSt, healed, nil, now, deadAfter); held[3] {
				t.Fatal("heard again: still held")
			}
		})
	}
}

// TestCrashLoopingMemberHeldOut: a member whose node crash-loops (alive in gossip for 3 s at a
// time, under returnGrace; dead for 20 s at a time, under DeadAfter) and which raft never
// hears is gone by neither gossip measure alone. Once raft has not heard it for DeadAfter it
// is judged gone and held out, and it stays held out through its next alive spells, so that
// the shard gets a replacement; heard again, it is held no longer.
func TestCrashLoopingMemberHeldOut(t *testing.T) {
	const deadAfter = time.Minute
	t0 := time.Unix(1e9, 0)
	sp := &shardPlacement{leftOut: map[uint64]*heldOut{}, inactiveSince: map[uint64]time.Time{3: t0}}
	st := replica.Status{Shard: 3, ID: 1, Leader: 1, Voters: []uint64{1, 2, 3},
		Progress: map[uint64]replica.Progress{2: {Match: 10}, 3: {Match: 10}}}
	var changed, aliveSince time.Time // when gossip last saw 3 come or go, and come
	alive := false
	for sec := 0; sec <= 180; sec++ {
		now := t0.Add(time.Duration(sec) * time.Second)
		if nowAlive := sec%23 < 3; nowAlive != alive {
			alive, changed = nowAlive, now
			if alive {
				aliveSince = now
			}
		}
		ps := peerState{Alive: alive, Gone: !alive && now.Sub(changed) >= deadAfter}
		ps = judgeMember(ps, false, true, t0, aliveSince, now, deadAfter)
		peers := map[uint64]peerState{1: {Alive: true}, 2: {Alive: true}, 3: ps}
		held, _ := sp.trackUnheard(st, peers, nil, now, deadAfter)
		if sec >= 60+23 && !held[3] {
			t.Fatalf("%ds into the loop (raft has not heard it since 0s; alive in gossip %v, since %v): not held out",
				sec, alive, now.Sub(changed))
		}
	}
	delete(sp.inactiveSince, 3) // heard again
	now := t0.Add(181 * time.Second)
	ps := judgeMember(peerState{Alive: true}, true, false, time.Time{}, now.Add(-time.Second), now, deadAfter)
	if ps.Gone || ps.Unheard {
		t.Fatalf("heard again: judged %+v", ps)
	}
	if held, _ := sp.trackUnheard(st, map[uint64]peerState{1: {Alive: true}, 2: {Alive: true}, 3: ps}, nil, now, deadAfter); held[3] {
		t.Fatal("heard again: still held out")
	}
}

// TestCrashedMemberNotHeldOut: a node that crashed and stayed down is no crash-looper. Raft
// stops hearing it at once and gossip declares it dead seconds later, so at the DeadAfter
// mark it was dead in gossip for less than DeadAfter and unheard for DeadAfter, as a node
// that crash-loops is: it was judged unheard and held out, and once replaced and back, kept
// out of the shard for DeadAfter after its removal (35 s of 32 shards' 14 under-replicated,
// after set-replication 3 with the node back). It is gone when gossip has held it dead for
// DeadAfter, held out never, and added back once it returns.
func TestCrashedMemberNotHeldOut(t *testing.T) {
	const deadAfter = time.Minute
	t0 := time.Unix(1e9, 0)
	aliveSince := t0.Add(-time.Hour)
	died := t0.Add(3 * time.Second) // gossip's failure detection
	sp := &shardPlacement{leftOut: map[uint64]*heldOut{}, inactiveSince: map[uint64]time.Time{3: t0}}
	st := replica.Status{Shard: 3, ID: 1, Leader: 1, Voters: []uint64{1, 2, 3},
		Progress: map[uint64]replica.Progress{2: {Match: 10}, 3: {Match: 10}}}
	for sec := 0; sec <= 70; sec++ {
		now := t0.Add(time.Duration(sec) * time.Second)
		alive, changed := now.Before(died), aliveSince
		if !alive {
			changed = died
		}
		ps := peerState{Alive: alive, Gone: !alive && now.Sub(changed) >= deadAfter}
		ps = judgeMember(ps, false, true, t0, aliveSince, now, deadAfter)
		if ps.Unheard {
			t.Fatalf("%ds after raft last heard it (dead in gossip since %ds): judged unheard", sec, 3)
		}
		if want := sec >= 63; ps.Gone != want {
			t.Fatalf("%ds after raft last heard it (dead in gossip since 3s): gone %v, want %v", sec, ps.Gone, want)
		}
		peers := map[uint64]peerState{1: {Alive: true}, 2: {Alive: true}, 3: ps}
		if held, _ := sp.trackUnheard(st, peers, nil, now, deadAfter); held[3] {
			t.Fatalf("%ds after raft last heard it: held out", sec)
		}
	}
	// Replaced (removed from the shard), then back: nothing holds it out of the target.
	st.Voters = []uint64{1, 2, 4}
	now := t0.Add(90 * time.Second)
	peers := map[uint64]peerState{1: {Alive: true}, 2: {Alive: true}, 3: {Alive: true}, 4: {Alive: true}}
	if held, _ := sp.trackUnheard(st, peers, nil, now, deadAfter); held[3] {
		t.Fatal("back after it was replaced: held out")
	}
}

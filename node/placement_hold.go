package node

import (
	"slices"
	"time"

	"github.com/shoaldb/shoal/replica"
)

// The placement loop's holds: members a shard's leader leaves out of the shard's target for a
// while (unheard members, stuck learners), and how it judges a member gone.

// matchSeen is a learner's highest match index seen, and since when its stuck clock runs:
// when that index was first seen, moved on by the time its snapshot spent waiting its turn.
type matchSeen struct {
	match uint64
	at    time.Time
	last  time.Time // the round that last looked
}

// stuckSnapshotFactor: a learner taking a snapshot counts as stuck only after this many
// DeadAfter without progress, as a large shard's snapshot takes long to stream and install.
const stuckSnapshotFactor = 5

// trackLearners notes the learners' progress (learnerMoved) and returns the target learners
// that are stuck: not caught up, and their match index has not moved for DeadAfter
// (stuckSnapshotFactor DeadAfter while a snapshot is under way). Such a learner answers
// heartbeats, so it is neither inactive nor unheard, but it is never promoted (its snapshot
// fails each time, say), and the shard would wait on it for good: the voter it was to
// replace never removed, no other node tried. trackUnheard holds it out like an unheard member
// (replaceUnheard), and the loop removes it. The clock stops while the learner's snapshot
// waits its turn in the transport (snapshotWaiting: one at a time to each node, a few at once
// in all), so that the snapshots of a node replacing one with many large shards, sent one
// after another, are not given up in the queue; it does not restart, so that learners whose
// snapshots fail each time, taking turns, are still found stuck. p.mu held.
func (sp *shardPlacement) trackLearners(st replica.Status, target []uint64, now time.Time, deadAfter time.Duration,
	snapshotWaiting func(id uint64) bool) []uint64 {
	if sp.learnerMoved == nil {
		sp.learnerMoved = map[uint64]matchSeen{}
	}
	for id := range sp.learnerMoved {
		if !slices.Contains(st.Learners, id) {
			delete(sp.learnerMoved, id)
		}
	}
	var stuck []uint64
	for _, id := range st.Learners {
		pr := st.Progress[id]
		seen, ok := sp.learnerMoved[id]
		switch {
		case !ok || pr.Match > seen.match:
			seen = matchSeen{match: pr.Match, at: now}
		case pr.Snapshotting && snapshotWaiting(id):
			seen.at = seen.at.Add(now.Sub(seen.last)) // stopped since the last look
		}
		seen.last = now
		sp.learnerMoved[id] = seen
		bound := deadAfter
		if pr.Snapshotting {
			bound *= stuckSnapshotFactor
		}
		if slices.Contains(target, id) && pr.Match+promoteSlack < st.Commit && now.Sub(seen.at) >= bound {
			stuck = append(stuck, id)
		}
	}
	return stuck
}

// heldOut is a member of shardPlacement.leftOut.
type heldOut struct {
	at   time.Time     // last seen unheard as a member, or last refused to answer
	hold time.Duration // how long after at it stays out of the target: DeadAfter, doubled
	// each time it was added back and went unheard again, up to maxHoldOut DeadAfter
}

// holds reports whether e (nil: no entry) still holds its member out at now.
func (e *heldOut) holds(now time.Time) bool { return e != nil && now.Sub(e.at) < e.hold }

// holdOut (re)starts member id's hold at now, creating its entry with a hold of deadAfter.
// With again, a hold that had passed doubles (up to maxHoldOut deadAfter): the member was
// added back after it, and is left out again (unheard, or a stuck learner), which cost a
// replica added and maybe a snapshot. A member that merely did not answer the leader's
// question before it was added back (a probe) is asked again after the same hold: that costs
// one question, and once the cut heals it comes back within one hold. p.mu held.
func (sp *shardPlacement) holdOut(id uint64, now time.Time, deadAfter time.Duration, again bool) *heldOut {
	e := sp.leftOut[id]
	switch {
	case e == nil:
		e = &heldOut{hold: deadAfter}
		sp.leftOut[id] = e
	case again && !e.holds(now):
		e.hold = min(2*e.hold, maxHoldOut*deadAfter)
	}
	e.at = now
	return e
}

// trackUnheard updates leftOut from this round's view of the shard, whose leader this node is:
// members raft does not hear while gossip holds them alive (peers' Alive and Gone) are held
// out from now, one added back after its hold twice as long (holdOut), and so are stuck
// learners (trackLearners); a member held out stays held while raft does not hear it, whatever
// gossip says of it meanwhile; members raft hears again are held no longer; entries long past
// their hold are forgotten. It returns the members the target leaves out now, and whether one of them still
// votes. p.mu held.
func (sp *shardPlacement) trackUnheard(st replica.Status, peers map[uint64]peerState, stuck []uint64, now time.Time,
	deadAfter time.Duration) (held map[uint64]bool, votes bool) {
	for _, id := range slices.Concat(st.Voters, st.Learners) {
		_, inactive := sp.inactiveSince[id]
		switch ps := peers[id]; {
		case id == st.ID:
		case ps.Unheard:
			sp.holdOut(id, now, deadAfter, true)
			votes = votes || slices.Contains(st.Voters, id)
		case slices.Contains(stuck, id):
			sp.holdOut(id, now, deadAfter, true)
		case inactive || st.Progress[id].Match == 0:
			// Still not heard, though gossip no longer says so (its node died since, and is not
			// gone yet; or this leader's new term started its clock again): a member held out
			// stays held until raft hears it, or the replacement under way would be undone
			// when the hold ran out, and started again later with a new snapshot.
			if e := sp.leftOut[id]; e.holds(now) {
				e.at = now
			}
		case !inactive && st.Progress[id].Match > 0:
			// Heard again as a member. Not on RecentActive alone: raft sets it for a member
			// just added, before it has answered anything. Its hold ends now, and the entry
			// stays until it is forgotten with age: a member cut off again soon after (a link
			// that fails now and then) is held out twice as long, rather than start over at
			// DeadAfter and cost a replica added, a snapshot and its removal every time.
			if e := sp.leftOut[id]; e.holds(now) {
				e.at = now.Add(-e.hold)
			}
		}
	}
	held = map[uint64]bool{}
	for id, e := range sp.leftOut {
		switch age := now.Sub(e.at); {
		case age < e.hold:
			held[id] = true
		case age >= e.hold+leftOutForget*deadAfter:
			delete(sp.leftOut, id)
		}
	}
	return held, votes
}

// judgeMember returns ps, a member of a shard as gossip sees it, with Gone and Unheard as the
// shard's leader judges them from its raft too: heard (answering it), or not recently active
// (inactive) since since; aliveSince is when gossip last saw the member come
// (membership.Member.AliveSince).
func judgeMember(ps peerState, heard, inactive bool, since, aliveSince, now time.Time, deadAfter time.Duration) peerState {
	switch {
	case ps.Gone && heard:
		ps.Gone = false
	case ps.Alive:
		if unresponsiveGone(now, since, inactive, aliveSince, deadAfter) {
			ps.Gone, ps.Unheard = true, true
		}
	case !ps.Gone && inactive && now.Sub(since) >= deadAfter && aliveSince.After(since):
		// Dead in gossip for less than DeadAfter, not heard by raft for DeadAfter, and alive in
		// gossip again in between: a node that crash-loops, its spells alive shorter than
		// returnGrace and its spells dead shorter than DeadAfter, was gone by neither measure,
		// and its shards stayed a voter short for as long as it looped. A node that crashed
		// and stayed down is not one: raft stops hearing it at once and gossip declares it dead
		// seconds later, so for those seconds at the DeadAfter mark it looked the same, and was
		// held out as unheard, for DeadAfter after it was replaced, once it came back; gossip
		// finds it gone by itself a moment later.
		ps.Gone, ps.Unheard = true, true
	}
	return ps
}

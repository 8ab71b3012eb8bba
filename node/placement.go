package node

// Placement: one loop for up-replication, spreading to new nodes, replacing
// dead members, draining decommissioned nodes and balancing leaders.
//
// Every Config.PlacementInterval (jittered ±25%), for each local group this
// node leads, the loop computes the shard's target replica set (ring over the
// eligible members: alive or dead for less than DeadAfter, not
// decommissioning; see Node.DesiredReplicas), with a member raft has not
// heard from for DeadAfter while gossip holds it alive replaced by another
// node when one can take its place (replaceUnheard), and takes at most one
// step toward it, chosen by decidePlacement in this priority order:
//
//  1. a step of this shard still in flight (or a conf change pending in
//     raft): wait;
//  2. a target member that is neither voter nor learner and is alive and not
//     stopping: add it as a learner (it catches up by log or snapshot) —
//     unless this leader removed it from the shard less than readdCooldown
//     ago; a member raft
//     did not hear, or its replacement, only once it answers this node
//     (placementStep.Probe);
//  3. a target learner that caught up and has kept answering for
//     promoteSettle: promote it; a learner outside the
//     target: remove it; a target member that raft has not heard from for
//     DeadAfter although gossip says it is alive (no node could replace it):
//     remove it if it is a learner, or a voter the group can spare with a
//     live quorum left, so that it comes back as a fresh replica;
//  4. once every target member votes, an extra voter: remove it (members
//     dead for DeadAfter or unknown first, then dead, then decommissioning,
//     then the rest), never leaving fewer live voters than a majority of the
//     new configuration, nor, unless it is gone, fewer voters alive in gossip
//     than the replication factor (it is kept: placementStep.Kept); when the
//     extra is this node, transfer leadership to a caught-up target voter first;
//  5. the configuration equals the target, or its other voters are all kept
//     (step 4), and has been stable: hand
//     leadership to the ring's first replica (the preferred leader), at most
//     once per shard per transferCooldown (not while a member is held out
//     by replaceUnheard: another leader would take it back), and not soon
//     after the preferred leader lost the leadership without handing it
//     over (handBackRounds: later after each loss in a row);
//  6. nothing else to do: raise the shard's format once every member's node
//     applies a later one (decideFormat).
//
// A voter counts as live when gossip says it is alive and the leader's raft
// progress says it was recently active. Failed steps are logged and retried
// on a later round. A replica that has seen itself outside its group's
// configuration for removedGrace, and whose shard leader confirms it, is
// deleted (replica.Host.DropGroup), so the node can later be added back as a
// fresh replica. One that heard from no leader for DeadAfter, and that the
// shard's leader view leaves out, is deleted too (dropOrphans): it never
// learned of its removal.

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// DefaultPlacementInterval is the placement loop's default period.
const DefaultPlacementInterval = time.Second

// afterStep is how soon after a step completes the placement loop looks again (at most the
// interval): long enough for a conf change to apply on the leader, short enough that a shard's
// next step does not wait a whole interval.
const afterStep = 100 * time.Millisecond

const (
	// promoteSlack is how many entries a replica may trail the leader's commit
	// index and still count as caught up (promotion, leadership transfer).
	promoteSlack = 64
	// promoteSettle is how long a learner must have been a learner, and
	// answering, before it is promoted (a few raft election timeouts).
	promoteSettle = 1500 * time.Millisecond
	// transferCooldown rate-limits leader-balancing transfers per shard.
	transferCooldown = 10 * time.Second
	// balanceSettleRounds is how many placement intervals a group's
	// configuration and leader must stay unchanged before a balancing transfer.
	balanceSettleRounds = 3
	// placementStepTimeout bounds one step (a conf change or a transfer).
	placementStepTimeout = 10 * time.Second
	// removedGrace is how long a replica removed from its group is kept
	// before its data is deleted (lets in-flight raft traffic drain).
	removedGrace = 3 * time.Second
	// readdCooldown is how long a leader waits before adding back a member it
	// removed from a shard: long enough for the member to delete its old
	// replica (removedGrace, a round, the leader check), which would otherwise
	// ignore the leader.
	readdCooldown = removedGrace + 3*time.Second
	// returnGrace is how long a member must have been alive in gossip before raft's silence
	// from it counts against it (unresponsiveGone): a node back from a pause or a partition
	// is alive in gossip within a second, and its raft connections and first answers follow
	// a moment later.
	returnGrace = 5 * time.Second
	// maxHoldOut bounds, in DeadAfter, how long a member raft does not hear is left out of a
	// shard's target before it is tried again (replaceUnheard).
	maxHoldOut = 8
	// leftOutForget: a member left out of a shard and never heard from again is forgotten
	// this many DeadAfter after its hold.
	leftOutForget = 8
	// handBackRounds: a preferred leader that lost a shard's leadership without handing it
	// over (it crashed, paused, or its links were cut, and another replica was elected) is
	// not handed the leadership back for this many placement intervals after the loss (10 s
	// at the default interval), twice as many after a second loss in a row, and so on, up to
	// handBackMaxDoublings doublings (320 s); a loss of a leadership held for
	// handBackForgetRounds intervals (15 min) or more starts again at the first wait. Without
	// it, a node whose links flap was handed its leaderships back a few seconds after every
	// heal, and each next cut cost those shards an election, where a cut follower costs
	// nothing.
	handBackRounds       = 10
	handBackMaxDoublings = 5
	handBackForgetRounds = 900
)

// handBackWait is how long after its losses-th loss in a row a preferred leader waits to be
// handed a shard's leadership back, for placement interval interval (see handBackRounds).
func handBackWait(losses int, interval time.Duration) time.Duration {
	return handBackRounds * interval << min(max(losses-1, 0), handBackMaxDoublings)
}

// unresponsiveGone reports whether a member that gossip holds alive is gone as far as a
// shard is concerned: its raft has not been heard from for deadAfter (inactiveSince, ok)
// while gossip has held it alive for returnGrace (aliveSince). Without the second condition,
// a node returning from a long pause or partition was removed from its shards as
// unresponsive in the moment between gossip seeing it again and raft hearing from it: each
// of its shards dropped to two voters and had to add it back by snapshot.
func unresponsiveGone(now, inactiveSince time.Time, inactive bool, aliveSince time.Time, deadAfter time.Duration) bool {
	return inactive && now.Sub(inactiveSince) >= deadAfter && now.Sub(aliveSince) >= returnGrace
}

// stepKind is what one placement step does; String is its metric label.
type stepKind uint8

const (
	stepNone stepKind = iota
	stepAddLearner
	stepPromote
	stepRemove
	stepTransfer
	stepRaiseFormat
)

var stepKindNames = [...]string{"none", "add_learner", "promote", "remove", "transfer", "raise_format"}

func (k stepKind) String() string {
	if int(k) < len(stepKindNames) {
		return stepKindNames[k]
	}
	return fmt.Sprintf("stepKind(%d)", k)
}

// placementStep is decidePlacement's verdict for one shard.
type placementStep struct {
	Kind stepKind
	Node uint64 // the member added, promoted, removed, or the new leader
	// Format: the shard format raised to (stepRaiseFormat), or the highest one the added
	// member's node applies (stepAddLearner).
	Format uint64
	Reason string // for logs and tests
	// Kept: an extra voter keeps its replica for want of a node to take it (a drain that
	// waits for a node to join, or for a target member that is down to come back).
	Kept bool
	// Probe: the member added is one raft did not hear from, or a replacement of one
	// (replaceUnheard); it is added only if it answers this node first.
	Probe bool
}

// peerState is placement's view of one member, for one shard.
type peerState struct {
	Alive bool // alive in gossip
	// Gone: dead in gossip for at least DeadAfter (or unknown to gossip that
	// long), or alive in gossip but not heard from by this shard's raft for
	// DeadAfter (a partitioned or wedged replica), or dead in gossip and not heard from
	// for DeadAfter (a node that crash-loops).
	Gone bool
	// Unheard: gone as not heard from by this shard's raft for DeadAfter, while gossip has
	// not held it dead for as long (the ring still places it): the leader holds it out of
	// the shard's target (trackUnheard) and puts another node in its place.
	Unheard         bool
	Decommissioning bool
	Stopping        bool // handing off its leaderships before a planned stop
	// RecentlyRemoved: this leader removed the member from the shard less than
	// readdCooldown ago; it is not added back before its old replica is
	// deleted.
	RecentlyRemoved bool
	// Unsettled: a learner added less than promoteSettle ago, or not heard
	// from at the last look. It is not promoted: a replica that acknowledged
	// entries and then stopped answering must not become a voter.
	Unsettled bool
	// ShardFormat is the highest shard format the member's version applies, from gossip;
	// 0 from versions that predate it (they apply shard.Format1 only).
	ShardFormat uint64
	// DiskLow: the node's disk is below its --min-free-disk (diskroom.go): it is given no new
	// replica, which its snapshot would not fit, while the replicas it holds stay.
	DiskLow bool
	// DiskSlow: the node's disk syncs far slower than the other members' (diskspeed.go): it
	// is handed no leadership, and hands over those it holds (balanceLeader).
	DiskSlow bool
}

// placementInput is everything decidePlacement looks at. It is a value so
// that the decision is a pure function, tested as a table.
type placementInput struct {
	Self   uint64
	Status replica.Status // this node's, as leader (with Progress)
	Target []uint64       // ring's replica set; Target[0] is the preferred leader
	// Peers maps node IDs to their state; an ID missing from it is neither
	// alive nor gone.
	Peers map[uint64]peerState
	Now   time.Time
	// StableSince is when the group's leader and configuration last changed
	// as seen by this node; LastTransfer when this node last started a
	// balancing transfer of the shard (zero: never).
	StableSince, LastTransfer time.Time
	// Settle is how long the group must be stable before balancing.
	Settle time.Duration
	// Replication is the cluster's replication factor: an extra voter that is not gone is not
	// removed while that would leave fewer voters (see decidePlacement).
	Replication int
	// Format is the shard's format as this node applied it (0 reads as shard.Format1).
	Format uint64
	// Replaced: Target is the ring's with members raft does not hear replaced
	// (replaceUnheard). No balancing transfer then: this leader is the one that knows which
	// member to keep out; another would take it back, and lead a member it may not hear.
	Replaced bool
	// PreferredLost is when Target[0] last lost the shard's leadership without handing it
	// over, as this node saw it (zero: not lately); it is not handed the leadership back
	// before PreferredLost plus HandBack (handBackWait).
	PreferredLost time.Time
	HandBack      time.Duration
}

// formatOf is the highest shard format member id's version applies.
func (in placementInput) formatOf(id uint64) uint64 {
	if id == in.Self {
		return shard.MaxFormat
	}
	return max(in.Peers[id].ShardFormat, shard.Format1)
}

// decideFormat returns the shard format to raise the shard this node leads to, or 0: the
// highest format that every member of the shard (voters and learners) applies, once each is
// alive in gossip, and every member of its target as gossip last saw it, when that is above
// the shard's. So a shard goes as far as its slowest
// member's version allows (a Format1 shard with members of a version that knows Format2 and
// one that knows Format3 goes to Format2, and to Format3 once all know it). The raise is
// proposed guarded (raiseGuard, replica.Guard): the configuration it follows in the log is
// checked again, atomically with the proposal, so no member it did not check joins before
// it. decidePlacement adds no replica on a node that could not apply the shard's format, and
// adds a node of an older version only guarded too (learnerGuard). A member whose node later
// starts a version that does not know the format stops at it; the versions from before
// formats do not check, so downgrades past a raise are not supported.
func decideFormat(in placementInput) uint64 {
	st := in.Status
	cur := max(in.Format, shard.Format1)
	if st.Leader != in.Self || st.Progress == nil || cur >= shard.MaxFormat {
		return 0
	}
	f := shard.MaxFormat
	for _, id := range slices.Concat(st.Voters, st.Learners) {
		if id == in.Self {
			continue
		}
		p, ok := in.Peers[id]
		if !ok || !p.Alive {
			return 0
		}
		f = min(f, max(p.ShardFormat, shard.Format1))
	}
	// Nor past a target member not yet added (down for a restart, say) whose version, as
	// gossip last saw it, does not apply the format: it would have to be replaced.
	for _, id := range in.Target {
		if p, ok := in.Peers[id]; id != in.Self && ok {
			f = min(f, max(p.ShardFormat, shard.Format1))
		}
	}
	if f <= cur {
		return 0
	}
	return f
}

// lacksFormat returns a member of ids, other than self, that peers does not show alive on a
// version that applies format.
func lacksFormat(ids []uint64, self uint64, peers map[uint64]peerState, format uint64) (uint64, bool) {
	for _, id := range ids {
		if p := peers[id]; id != self && (!p.Alive || max(p.ShardFormat, shard.Format1) < format) {
			return id, true
		}
	}
	return 0, false
}

// decidePlacement returns the one step to take for a shard this node leads
// (Kind stepNone: nothing to do now, Reason says why).
func decidePlacement(in placementInput) placementStep {
	st := in.Status
	none := func(reason string) placementStep { return placementStep{Reason: reason} }
	if st.Leader != in.Self || st.Progress == nil {
		return none("not the leader")
	}
	if len(in.Target) == 0 {
		return none("no target replica set")
	}
	target := make(map[uint64]bool, len(in.Target))
	for _, id := range in.Target {
		target[id] = true
	}
	isVoter := func(id uint64) bool { return slices.Contains(st.Voters, id) }
	isLearner := func(id uint64) bool { return slices.Contains(st.Learners, id) }
	caughtUp := func(id uint64) bool {
		if id == in.Self {
			return true
		}
		pr, ok := st.Progress[id]
		return ok && pr.RecentActive && !pr.Snapshotting && pr.Match+promoteSlack >= st.Commit
	}
	live := func(id uint64) bool {
		if id == in.Self {
			return true
		}
		return in.Peers[id].Alive && st.Progress[id].RecentActive
	}

	// A leader whose disk is slow (diskspeed.go) hands the leadership to a caught-up voter on a
	// healthy disk before any other step, the configuration settled or not: every commit of the
	// shard waits on its disk, and a replacement's snapshot would be read from it.
	if in.Peers[in.Self].DiskSlow && !in.Replaced &&
		(in.LastTransfer.IsZero() || in.Now.Sub(in.LastTransfer) >= transferCooldown) {
		if to := transferTarget(in, isVoter, live, caughtUp, true); to != 0 {
			return placementStep{Kind: stepTransfer, Node: to, Reason: "this node's disk is slow: hand the leadership to a voter on a healthy disk"}
		}
	}

	// 2. Add missing target members as learners, on nodes that apply the shard's format (a node
	// of an older version is added guarded: see decideFormat), and are not stopping: a learner
	// there would take a snapshot only to go, and would not be promoted (step 3) before its
	// node came back, which adds it then.
	format := max(in.Format, shard.Format1)
	for _, id := range in.Target {
		p := in.Peers[id]
		if isVoter(id) || isLearner(id) || !p.Alive || p.Stopping || p.Gone || p.RecentlyRemoved || in.formatOf(id) < format {
			continue
		}
		return placementStep{Kind: stepAddLearner, Node: id, Format: in.formatOf(id), Reason: "target member without a replica"}
	}
	// 3. Promote caught-up target learners; remove learners outside the target. A learner whose
	// node gossip does not see alive, or sees stopping, is not promoted: as a voter about to go
	// it would raise the quorum while another voter may be down (three voters, one down, a fourth
	// that then exits: two of four live, no quorum, where the three kept one).
	for _, id := range st.Learners {
		if p := in.Peers[id]; target[id] && caughtUp(id) && !p.Unsettled && p.Alive && !p.Stopping {
			return placementStep{Kind: stepPromote, Node: id, Reason: "learner caught up"}
		}
	}
	// A target voter this leader does not hear (its term may be younger than the other's
	// replacement under way: the learner it added is outside this leader's target until it
	// too has not heard the voter for DeadAfter) keeps such learners, to be promoted then
	// rather than removed now and sent a snapshot again.
	unheardVoter := slices.ContainsFunc(st.Voters, func(v uint64) bool { return target[v] && !live(v) })
	for _, id := range st.Learners {
		if !target[id] && !unheardVoter {
			return placementStep{Kind: stepRemove, Node: id, Reason: "learner not in target"}
		}
	}
	// A target member raft has not heard from for DeadAfter although gossip says it is alive
	// (the loop leaves such a member out of the target when another node can take its place:
	// replaceUnheard): a learner is removed, to be added back as a fresh replica. A voter only
	// when the group has a voter to spare: most often the leader and that member are cut apart
	// while both reach the others, and a voter removed then left the group one failure from
	// losing its quorum, with nothing to gain until the cut heals (the member, added back as a
	// learner, is as unreachable) and a snapshot to send after; kept, it catches up from the log.
	// A leader outside the target (decommissioning, or its replica moving) is no voter to spare:
	// it hands over first (step 4), and the next leader, which may well hear the member, removes it.
	staying := len(st.Voters)
	if !target[in.Self] {
		staying--
	}
	for _, id := range slices.Concat(st.Learners, st.Voters) {
		if id == in.Self || !target[id] || !in.Peers[id].Gone {
			continue
		}
		if isLearner(id) || staying > in.Replication && liveQuorumWithout(st.Voters, id, live) {
			return placementStep{Kind: stepRemove, Node: id, Reason: "unresponsive replica"}
		}
	}
	// 4. Remove one extra voter once every target member votes.
	allVote := true
	for _, id := range in.Target {
		allVote = allVote && isVoter(id)
	}
	if !allVote {
		return none("waiting for target members to become voters")
	}
	var extras []uint64
	for _, id := range st.Voters {
		if !target[id] {
			extras = append(extras, id)
		}
	}
	if len(extras) > 0 {
		rank := func(id uint64) int {
			p := in.Peers[id]
			switch {
			case id == in.Self:
				return 4 // last: removing the leader costs a transfer
			case p.Gone:
				return 0
			case !p.Alive:
				return 1
			case p.Decommissioning:
				return 2
			}
			return 3
		}
		slices.SortFunc(extras, func(a, b uint64) int {
			return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a, b))
		})
		// An extra that is not gone (a decommissioning node: the ring leaves out no other live
		// or recently dead member) keeps its replica while removing it would leave fewer
		// voters up (alive in gossip, heard by this leader) than the replication factor: with
		// no other node to take the replica, removing it would only lower how many failures
		// the shard survives. A target voter that is down (or unheard: the extra may be its
		// replacement, begun under an earlier leader) counts as no such node: it may never come back, and once
		// gone it is removed, when the extra, a decommissioning node that the ring adds to no
		// shard, could no longer take its place (a drain while another node was down left
		// shards two voters). The extra gives up the leadership, though. Down, it gets the
		// same --dead-after as any member before its removal, so that a restart does not
		// cost it every replica.
		upWithout := func(id uint64) int {
			n := 0
			for _, v := range st.Voters {
				if v != id && live(v) {
					n++
				}
			}
			return n
		}
		kept, keptUp := false, 0
		stuck := false // an extra neither kept nor removable
		for _, id := range extras {
			up := upWithout(id)
			keep := up < in.Replication && !in.Peers[id].Gone
			if id == in.Self {
				if to := transferTarget(in, isVoter, live, caughtUp, false); to != 0 {
					reason := "this node is an extra voter; hand over before removal"
					if keep {
						reason = "this node is an extra voter kept for want of a replacement; hand over the leadership"
					}
					return placementStep{Kind: stepTransfer, Node: to, Kept: keep, Reason: reason}
				}
				return none("this node is an extra voter but no caught-up target voter can take over")
			}
			if keep {
				if !kept {
					kept, keptUp = true, up
				}
				continue
			}
			if liveQuorumWithout(st.Voters, id, live) {
				return placementStep{Kind: stepRemove, Node: id, Reason: "extra voter"}
			}
			stuck = true
		}
		if kept && !stuck {
			// Every extra is kept, for as long as the drain waits (a node to join, one down to
			// come back): the target votes, and its leaderships are balanced as a placed
			// shard's, where they stayed wherever an election or a restart had put them.
			if step := balanceLeader(in, live, caughtUp); step.Kind == stepTransfer {
				step.Kept = true
				return step
			}
		}
		if kept {
			return placementStep{Kept: true, Reason: fmt.Sprintf("an extra voter is kept: removing it would leave %d voters up, replication %d",
				keptUp, in.Replication)}
		}
		return none("no extra voter can be removed without losing a live quorum")
	}
	if len(st.Learners) > 0 || len(st.Voters) != len(in.Target) {
		return none("configuration not settled")
	}
	return balanceLeader(in, live, caughtUp)
}

// balanceLeader is decidePlacement's step 5, for a shard whose target members all vote and
// whose other voters, if any, are kept: hand leadership to the preferred leader, unless its
// disk is slow (diskspeed.go; a leader whose own disk is slow handed over before step 2).
func balanceLeader(in placementInput, live, caughtUp func(uint64) bool) placementStep {
	none := func(reason string) placementStep { return placementStep{Reason: reason} }
	pref := in.Target[0]
	switch {
	case pref == in.Self:
		return none("placed")
	case in.Replaced:
		return none("a member this leader does not hear is replaced; the leadership stays")
	case !live(pref) || !caughtUp(pref) || in.Peers[pref].Decommissioning || in.Peers[pref].Stopping:
		return none("preferred leader not ready")
	case in.Peers[pref].DiskSlow:
		return none("the preferred leader's disk is slow")
	case in.Now.Sub(in.StableSince) < in.Settle:
		return none("group not stable long enough to balance")
	case !in.LastTransfer.IsZero() && in.Now.Sub(in.LastTransfer) < transferCooldown:
		return none("balancing transfer rate-limited")
	case !in.PreferredLost.IsZero() && in.Now.Sub(in.PreferredLost) < in.HandBack:
		return none("the preferred leader lost the leadership lately; it is handed it back later")
	}
	return placementStep{Kind: stepTransfer, Node: pref, Reason: "preferred leader"}
}

// usableReplacement tells whether node id may take an unheard member's place in a shard's
// target (replaceUnheard): a live node that is not leaving (stopping, decommissioning), nor
// just removed from the shard, and applies the cluster's shard format. The leader (self)
// qualifies whatever gossip last said of it unless it is leaving: a decommissioning leader put
// back into the target removed a voter the rest of the group heard instead of handing over.
func usableReplacement(id, self uint64, peers map[uint64]peerState, format uint64) bool {
	ps := peers[id]
	return !ps.Decommissioning && usableHolder(ps, id == self, format)
}

// usableHolder is usableReplacement but for decommissioning, which fillFromDraining allows: a
// live node that is not stopping, nor just removed from the shard, has disk room and applies
// the cluster's shard format (the leader, self, whatever gossip last said of it).
func usableHolder(ps peerState, self bool, format uint64) bool {
	if self {
		return !ps.Stopping
	}
	return ps.Alive && !ps.Gone && !ps.Stopping && !ps.RecentlyRemoved && !ps.DiskLow &&
		max(ps.ShardFormat, shard.Format1) >= max(format, shard.Format1)
}

// fillFromDraining returns target filled up to the replication factor repl with live
// decommissioning nodes when it is shorter (too few other nodes are alive, or dead for less
// than DeadAfter): those holding a replica of the shard first, which then keep it, then others
// by ID. The ring places nothing on a decommissioning node, so a drain that cannot finish
// otherwise left a shard that lost a voter to a death with two voters, though a draining node
// could hold a third (a reviewer's drain with another node down left 9 of 16 shards so).
func fillFromDraining(target []uint64, st replica.Status, peers map[uint64]peerState, repl int, self, format uint64) []uint64 {
	if len(target) == 0 || len(target) >= repl {
		return target
	}
	out := slices.Clone(target)
	for _, id := range slices.Concat(st.Voters, st.Learners, slices.Sorted(maps.Keys(peers))) {
		ps, ok := peers[id]
		if len(out) == repl {
			break
		}
		if !ok || !ps.Decommissioning || slices.Contains(out, id) {
			continue
		}
		if usableHolder(ps, id == self, format) {
			out = append(out, id)
		}
	}
	return out
}

// replaceUnheard returns the shard's target with each member in held (raft did not hear
// from it although gossip held it alive) replaced by a usable candidate: the members of the
// shard's replica set on the ring without them first, in order, then its current voters, nodes
// in zones the kept members do not use first. So the group gains a replica on another node, as
// a learner and then a voter, before the unheard member, now an extra voter, is removed
// (decidePlacement, step 4): the shard never has fewer voters than the replication factor on
// the way, where removing the member first left it one failure from losing its quorum. Only
// those members move: the rest of the target keeps its order (Target[0] stays the preferred
// leader unless it is the one left out). A held member no candidate can replace stays in the
// target if it is a member of the group (it is kept, and counted unheard), and is dropped
// from it if not. It returns nil when that changes nothing.
func replaceUnheard(target []uint64, held map[uint64]bool, candidates []uint64, zones map[uint64]string,
	member, usable func(uint64) bool) []uint64 {
	out := make([]uint64, 0, len(target))
	var gone []uint64
	for _, id := range target {
		if held[id] {
			gone = append(gone, id)
		} else {
			out = append(out, id)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	used := make(map[string]bool, len(out))
	for _, id := range out {
		used[zones[id]] = true
	}
	pick := func(newZone bool) bool {
		for _, id := range candidates {
			if held[id] || slices.Contains(out, id) || !usable(id) || newZone && used[zones[id]] {
				continue
			}
			out = append(out, id)
			used[zones[id]] = true
			return true
		}
		return false
	}
	changed := false
	for _, id := range gone {
		switch {
		case pick(true) || pick(false):
			changed = true
		case member(id):
			out = append(out, id)
		default:
			changed = true // dropped
		}
	}
	if !changed {
		return nil
	}
	return out
}

// transferTarget picks the voter to hand leadership to before this node
// removes itself: the ring's preferred leader if ready, else the first ready
// target voter; 0 if none. A preferred leader within its hand-back wait
// (PreferredLost, HandBack) only when no other target voter is ready: handed it
// by an extra voter elected in its place, a node whose links flap got its
// leaderships back after every heal, as balanceLeader does not hand them. A voter whose disk
// is slow only when no other is ready, and never with healthyOnly.
func transferTarget(in placementInput, isVoter, live, caughtUp func(uint64) bool, healthyOnly bool) uint64 {
	waiting := !in.PreferredLost.IsZero() && in.Now.Sub(in.PreferredLost) < in.HandBack
	var pref, slow uint64
	for i, id := range in.Target {
		if id != in.Self && isVoter(id) && live(id) && caughtUp(id) && !in.Peers[id].Stopping {
			switch {
			case in.Peers[id].DiskSlow:
				if slow == 0 && !healthyOnly {
					slow = id
				}
			case i > 0 || !waiting:
				return id
			default:
				pref = id
			}
		}
	}
	return cmp.Or(pref, slow)
}

// liveQuorumWithout reports whether, after removing id, the live voters are
// still a majority of the remaining voters.
func liveQuorumWithout(voters []uint64, id uint64, live func(uint64) bool) bool {
	remaining, alive := 0, 0
	for _, v := range voters {
		if v == id {
			continue
		}
		remaining++
		if live(v) {
			alive++
		}
	}
	return remaining > 0 && alive >= remaining/2+1
}

// underReplicated is the definition shared with Cluster.Topology and the
// shoal_shard_under_replicated metric: fewer voters than the replication
// factor, or, when the cluster's nodes name zones, voters in fewer zones than
// the replication factor (zones maps node IDs to zones; a voter it lacks counts
// as a zone of its own, and a node that names none is in the zone "", as the
// ring places it) — even when the cluster has too few nodes or zones to do
// better. A cluster whose nodes name no zone has no zone rule.
func underReplicated(voters []uint64, replication int, zones map[uint64]string) bool {
	if len(voters) < replication {
		return true
	}
	if !namesZones(zones) {
		return false // zones not configured
	}
	seen := make(map[string]bool, len(voters))
	for _, id := range voters {
		z, ok := zones[id]
		if !ok {
			z = fmt.Sprint("?", id)
		}
		seen[z] = true
	}
	return len(seen) < replication
}

// namesZones reports whether any node of zones names a zone.
func namesZones(zones map[uint64]string) bool {
	for _, z := range zones {
		if z != "" {
			return true
		}
	}
	return false
}

// zonesOf maps the members' node IDs to their zones.
func zonesOf(members []membership.Member) map[uint64]string {
	out := make(map[uint64]string, len(members))
	for _, m := range members {
		out[m.NodeID] = m.Zone
	}
	return out
}

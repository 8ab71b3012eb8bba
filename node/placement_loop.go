package node

// The placement loop: one round per interval over the groups this node leads (see
// placement.go for what a round decides).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// placementMetrics are the placement loop's metrics.
type placementMetrics struct {
	steps     *prometheus.CounterVec // by kind
	failures  *prometheus.CounterVec // by kind
	under     prometheus.Gauge
	pending   prometheus.Gauge
	kept      prometheus.Gauge
	unheard   prometheus.Gauge
	stuck     prometheus.Gauge
	dropped   prometheus.Counter
	lastRound prometheus.Gauge
}

func newPlacementMetrics(r prometheus.Registerer) *placementMetrics {
	m := &placementMetrics{
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_placement_steps_total",
			Help: "Placement steps completed by this node as leader, by kind (add_learner, promote, remove, transfer, raise_format).",
		}, []string{"kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_placement_step_failures_total",
			Help: "Placement steps that failed (retried on a later round), by kind; refusals a healthy cluster meets in the normal course (another change pending, leadership moved, a group just out of quiescence) are not counted.",
		}, []string{"kind"}),
		under: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_placement_under_replicated_shards",
			Help: "Shards led by this node with fewer voters than the replication factor (summed over nodes: the cluster's). A shard that lost its quorum has no leader and is not counted: see shoal_leaderless_shards.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_placement_pending_shards",
			Help: "Shards led by this node whose replicas differ from the ring's target (placement work left).",
		}),
		kept: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_placement_kept_extra_shards",
			Help: "Shards led by this node that keep a decommissioning member's replica because no other node can take it (a drain waiting for a node to join, or for a member that is down to come back).",
		}),
		stuck: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_placement_stuck_learner_shards",
			Help: "Shards led here with a learner that made no progress for --dead-after (no snapshot under way or waiting): placement holds it out and places the replica on another node.",
		}),
		unheard: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_placement_unheard_voter_shards",
			Help: "Shards led by this node keeping a voter that raft has not heard from for DeadAfter although gossip holds it alive (cut off from this leader, or its replica wedged): the shard survives one failure fewer until that voter is removed, once a replacement on another node votes (lasting: no usable node can take the replica).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_placement_replicas_dropped_total",
			Help: "Local replicas deleted after this node was removed from their group (seen by the replica, or, for one that heard from no leader for DeadAfter, by the group's configuration).",
		}),
		lastRound: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_placement_last_round_timestamp_seconds",
			Help: "Unix time of the placement loop's last round.",
		}),
	}
	for _, k := range []stepKind{stepAddLearner, stepPromote, stepRemove, stepTransfer, stepRaiseFormat} {
		m.steps.WithLabelValues(k.String())
		m.failures.WithLabelValues(k.String())
	}
	if r != nil {
		r.MustRegister(m.steps, m.failures, m.under, m.pending, m.kept, m.unheard, m.stuck, m.dropped, m.lastRound)
	}
	return m
}

// placer runs the placement loop of one node.
type placer struct {
	n        *Node
	log      *slog.Logger
	interval time.Duration
	metrics  *placementMetrics
	started  time.Time
	ctx      context.Context // cancelled by stop; parent of every step's context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the loop and in-flight steps
	// heldLogged: the loop logged that it holds membership changes (round). Loop goroutine only.
	heldLogged bool
	// stepped: a step completed (buffered(1)); the loop runs its next round afterStep later.
	stepped chan struct{}

	mu struct {
		sync.Mutex
		shards map[uint32]*shardPlacement
	}
}

// launch is a step a round decided, to be started once the round has looked at every group.
type launch struct {
	g      *replica.Group
	sp     *shardPlacement
	step   placementStep
	target []uint64
}

// shardPlacement is the placer's memory of one shard. Guarded by placer.mu.
type shardPlacement struct {
	inflight     bool
	config       string // leader, voters and learners as last seen
	stableSince  time.Time
	lastTransfer time.Time
	removedAt    time.Time // since when the replica is seen removed (zero: it is not)
	// The shard's leader as last seen (since leaderSince), and the leaders seen to lose the
	// leadership without handing it over (handBackWait). Kept across terms, on every replica:
	// the node that hands a leadership back is seldom the one that saw it lost.
	leader      uint64
	leaderSince time.Time
	lost        map[uint64]lostLeadership
	// As leader (reset when the term changes): since when each member has
	// not been recently active, and when this node removed members.
	term          uint64
	inactiveSince map[uint64]time.Time
	removed       map[uint64]time.Time
	learnerSince  map[uint64]time.Time
	learnerMoved  map[uint64]matchSeen // each learner's highest match, and when it got there
	kept          bool                 // the last decision kept an extra voter (placementStep.Kept)
	// unheard: the members raft did not hear from for heardGrace while gossip held them alive,
	// as the last round found them leading at term (the shard's ShardInfo.unheard).
	unheard []uint64
	// leftOut: members raft did not hear from while gossip held them alive (kept across terms:
	// it only ages). The shard's target leaves each out for its hold (replaceUnheard); then it
	// is added back only once it answers this node (placementStep.Probe), until raft hears it
	// again as a member.
	leftOut map[uint64]*heldOut
	// startingSince: when a member to be added back first answered the leader's question that
	// it is still starting (run): asked again every round for DeadAfter, then held out as one
	// that does not answer.
	startingSince map[uint64]time.Time
}

// unheard returns the members of shard that the last round, this node leading it at term,
// found raft had not heard from for a while though gossip held them alive (nil when it did
// not lead it then).
func (p *placer) unheard(shard uint32, term uint64) []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sp := p.mu.shards[shard]; sp != nil && sp.term == term {
		return slices.Clone(sp.unheard)
	}
	return nil
}

// startingFor records whether member id answered the leader's question that it is still
// starting, and returns for how long it has answered so (0 when it did not). p.mu held.
func (sp *shardPlacement) startingFor(id uint64, starting bool, now time.Time) time.Duration {
	if !starting {
		delete(sp.startingSince, id)
		return 0
	}
	first, ok := sp.startingSince[id]
	if !ok {
		if sp.startingSince == nil {
			sp.startingSince = map[uint64]time.Time{}
		}
		first = now
		sp.startingSince[id] = first
	}
	return now.Sub(first)
}

// lostLeadership: a leader lost a shard's leadership at at, its losses-th loss in a row.
type lostLeadership struct {
	at     time.Time
	losses int
}

// observeLeader notes the shard's leader as a round sees it (0: none known), for placement
// interval interval: a change from a leader that is not leaving (leaving: stopping or
// decommissioning) to one that is not the preferred leader (the ring's first replica) is that
// leader's loss (noteLost). A change to the preferred leader is no loss: it is a hand-back (or
// the preferred leader's election). Counted, the hand-backs of a replica that led while a
// flapping preferred leader was cut off made a run of its losses, and once it was the
// preferred leader itself (the flapping node decommissioned, or gone), it waited as long as
// that node to be handed the leadership. Losses older than handBackForgetRounds intervals are
// forgotten.
func (sp *shardPlacement) observeLeader(leader, preferred uint64, leaving map[uint64]bool, now time.Time, interval time.Duration) {
	if leader != 0 && leader != sp.leader {
		if sp.leader != 0 && !leaving[sp.leader] && leader != preferred {
			sp.noteLost(sp.leader, now.Sub(sp.leaderSince) < handBackForgetRounds*interval, now)
		}
		sp.leader, sp.leaderSince = leader, now
	}
	for id, l := range sp.lost {
		if now.Sub(l.at) >= handBackForgetRounds*interval {
			delete(sp.lost, id) // past any wait: handBackForgetRounds > handBackRounds<<handBackMaxDoublings
		}
	}
}

// noteLost records that leader id lost the shard's leadership other than by handing it over
// as it leaves (stopping, decommissioning) or back to the preferred leader: a crash, a pause,
// a cut, or a transfer away from it. The loss of a leadership held briefly (less than
// handBackForgetRounds intervals) is another in a row, unless the last is forgotten.
func (sp *shardPlacement) noteLost(id uint64, brief bool, now time.Time) {
	if sp.lost == nil {
		sp.lost = map[uint64]lostLeadership{}
	}
	l, ok := sp.lost[id]
	if !ok || !brief {
		l.losses = 0
	}
	sp.lost[id] = lostLeadership{at: now, losses: l.losses + 1}
}

// target0 is a shard target's preferred leader, or 0 for an empty target.
func target0(target []uint64) uint64 {
	if len(target) == 0 {
		return 0
	}
	return target[0]
}

// lacksShardFormat returns the members of target, other than self, alive in gossip on a
// version that cannot apply the shard's format (a cluster part-way through an upgrade, whose
// ring picked an old node). decidePlacement never adds such a node, and a shard whose target
// holds one would wait for it for good: no learner added, so the dead or decommissioned voter
// it was to replace never removed. The loop replaces them as it does unheard members
// (replaceUnheard), with a node that applies the format.
func lacksShardFormat(target []uint64, self uint64, peers map[uint64]peerState, format uint64) []uint64 {
	var out []uint64
	for _, id := range target {
		if p, ok := peers[id]; id != self && ok && p.Alive && max(p.ShardFormat, shard.Format1) < max(format, shard.Format1) {
			out = append(out, id)
		}
	}
	return out
}

// lacksDiskRoom returns the nodes of target that are no voter of the shard (st) and whose disk
// is below their --min-free-disk: the loop places their replica elsewhere, as for a member
// held out, or leaves the shard short until the disk has room. A snapshot sent there would be
// refused, for as long as placement waits on a learner, so a learner there moves to another
// node, or is let go if none can take it. A voter on such a node stays: moving it would fill
// other disks.
func lacksDiskRoom(target []uint64, st replica.Status, peers map[uint64]peerState) []uint64 {
	var out []uint64
	for _, id := range target {
		if peers[id].DiskLow && !slices.Contains(st.Voters, id) {
			out = append(out, id)
		}
	}
	return out
}

// keptIfHeld tells which members of the shard (st) held out of its target stay in it when no
// candidate can replace them (replaceUnheard): its voters and learners, but a learner on a disk
// below its floor (lacksDiskRoom), whose snapshot would not fit: it is let go.
func keptIfHeld(st replica.Status, peers map[uint64]peerState) func(uint64) bool {
	return func(id uint64) bool {
		return slices.Contains(st.Voters, id) || slices.Contains(st.Learners, id) && !peers[id].DiskLow
	}
}

// startPlacement starts the placement loop; stopPlacement (from Close) ends
// it. A negative Config.PlacementInterval disables the loop.
func (n *Node) startPlacement() {
	interval := n.cfg.PlacementInterval
	if interval < 0 {
		n.log.Info("placement disabled")
		return
	}
	if interval == 0 {
		interval = DefaultPlacementInterval
	}
	p := &placer{n: n, log: n.log.With("component", "placement"), interval: interval,
		metrics: newPlacementMetrics(n.regs), started: time.Now()}
	p.mu.shards = map[uint32]*shardPlacement{}
	p.stepped = make(chan struct{}, 1)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	n.placer.Store(p)
	p.wg.Add(1)
	go p.loop()
}

// stopPlacement stops the loop and waits for in-flight steps. Idempotent;
// a no-op when the loop never started.
//
// It waits for the loop's round to end, or for ctx: a round stuck on a raft loop that answers
// nothing (a hung disk) ends only once that loop does. A loop not waited for to its end stays
// registered, so that the next call (Close's) waits for it again.
func (n *Node) stopPlacement(ctx context.Context) {
	p := n.placer.Load()
	if p == nil {
		return
	}
	p.cancel()
	if waitOrDone(ctx, &p.wg) {
		n.placer.CompareAndSwap(p, nil)
	}
}

// waitOrDone waits for wg, or until ctx is done, and reports whether wg finished (a waiter
// left behind ends with wg).
func waitOrDone(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// loop runs a round every interval (jittered), and sooner, afterStep later, once a step
// has completed: a shard's next step (the second learner after the first, the removal after a
// promotion) then waits for the change, not for the rest of the interval. Rounds that only
// wait for time to pass (promoteSettle, balancing) keep the interval.
func (p *placer) loop() {
	defer p.wg.Done()
	next := time.Now().Add(p.jittered())
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.n.done:
			return
		case <-p.stepped:
			if soon := time.Now().Add(min(afterStep, p.interval)); soon.Before(next) {
				next = soon
				t.Reset(time.Until(next))
			}
			continue
		case <-t.C:
		}
		p.round(time.Now())
		next = time.Now().Add(p.jittered())
		t.Reset(time.Until(next))
	}
}

// jittered returns the interval ±25%.
func (p *placer) jittered() time.Duration {
	return time.Duration(float64(p.interval) * (0.75 + 0.5*rand.Float64()))
}

// round looks at every local group once and starts at most one step per led
// shard.
func (p *placer) round(now time.Time) {
	n := p.n
	self := n.ID()
	n.followReplication()
	members := n.Members()
	repl := int(n.Settings().Replication)
	desired := n.DesiredReplicas()
	without := map[string][][]uint64{} // desiredWithout, by the members left out
	deadAfter := n.cfg.DeadAfter
	// Two CheckQuorums, and two rounds: a member answering raft is sampled active again within
	// that, whatever the rounds' jitter (heard, below).
	heardGrace := 2*n.host.ElectionTimeout() + 2*p.interval
	under, pending, kept, unheard, stuckLearners := 0, 0, 0, 0, 0
	newlyHeld := map[uint64][]uint32{} // members held out as unheard this round, and of which shards

	var toDrop []uint32
	var orphans []orphan
	defer func() { p.dropRemoved(toDrop, orphans) }() // after p.mu is released: it calls peers
	p.mu.Lock()
	defer p.mu.Unlock()
	present := map[uint32]bool{}
	zones := zonesOf(members) // also which node IDs gossip knows
	leaving := make(map[uint64]bool, len(members))
	for _, m := range members {
		// A leader that sheds its leaderships for a slow disk loses none of them: counted, each
		// slow spell doubled its wait to get them back once healthy, up to 320 s.
		leaving[m.NodeID] = m.Stopping || m.Decommissioning || m.DiskSlow
	}
	unknown := uint64(0) // a member of a local group that gossip does not know, if any
	var launches []launch
	for _, g := range n.host.Groups() {
		st := g.Status()
		present[st.Shard] = true
		if !st.Removed {
			for _, id := range slices.Concat(st.Voters, st.Learners) {
				if _, known := zones[id]; id != self && !known {
					unknown = id
				}
			}
		}
		sp := p.mu.shards[st.Shard]
		if sp == nil {
			sp = &shardPlacement{}
			p.mu.shards[st.Shard] = sp
		}
		sp.unheard = nil
		if !st.Removed {
			sp.removedAt = time.Time{}
			if st.Leader != self && !st.LeaderContact.IsZero() && now.Sub(st.LeaderContact) >= deadAfter {
				orphans = append(orphans, orphan{shard: st.Shard, applied: st.Applied})
			}
		} else {
			if sp.removedAt.IsZero() {
				sp.removedAt = now
			} else if now.Sub(sp.removedAt) >= removedGrace {
				toDrop = append(toDrop, st.Shard)
			}
			continue
		}
		if key := fmt.Sprint(st.Leader, st.Voters, st.Learners); key != sp.config {
			sp.config, sp.stableSince = key, now
		}
		var preferred uint64
		if int(st.Shard) < len(desired) {
			preferred = target0(desired[st.Shard])
		}
		sp.observeLeader(st.Leader, preferred, leaving, now, p.interval)
		if st.Leader != self || st.Progress == nil {
			continue
		}
		if st.Term != sp.term || sp.inactiveSince == nil {
			sp.term, sp.inactiveSince, sp.removed = st.Term, map[uint64]time.Time{}, map[uint64]time.Time{}
			sp.learnerSince, sp.learnerMoved = map[uint64]time.Time{}, map[uint64]matchSeen{}
		}
		if sp.leftOut == nil {
			sp.leftOut = map[uint64]*heldOut{}
		}
		for id := range sp.learnerSince {
			if !slices.Contains(st.Learners, id) {
				delete(sp.learnerSince, id)
			}
		}
		for _, id := range st.Learners {
			if _, ok := sp.learnerSince[id]; !ok {
				sp.learnerSince[id] = now
			}
		}
		for id, pr := range st.Progress {
			if _, ok := sp.inactiveSince[id]; pr.RecentActive || id == self {
				delete(sp.inactiveSince, id)
			} else if !ok {
				sp.inactiveSince[id] = now
			}
		}
		for id := range sp.inactiveSince {
			if _, ok := st.Progress[id]; !ok {
				delete(sp.inactiveSince, id)
			}
		}
		if underReplicated(st.Voters, repl, zones) {
			under++
		}
		peers := make(map[uint64]peerState, len(members))
		aliveSince := make(map[uint64]time.Time, len(members)) // when gossip last saw it come
		for _, m := range members {
			peers[m.NodeID] = peerState{Alive: m.Alive, Decommissioning: m.Decommissioning, Stopping: m.Stopping,
				Gone: !m.Alive && now.Sub(m.Changed) >= deadAfter, ShardFormat: m.ShardFormat, DiskLow: m.DiskLow,
				DiskSlow: m.DiskSlow}
			aliveSince[m.NodeID] = m.AliveSince
		}
		for _, id := range slices.Concat(st.Voters, st.Learners) {
			ps, known := peers[id]
			// A member raft hears answers its leader, whatever gossip says of it: its gossip
			// alone is cut off (a blocked port, a gossip-only partition). It is no member to
			// replace: removed with no other node to take its replica, it would only lower
			// how many failures the shard survives (with one, it moves as any extra does).
			// Heard: not on RecentActive alone, which raft sets for a member just added; and
			// not unheard on one sample of it, which raft clears for every member at each
			// CheckQuorum (an election timeout), and sets again at its next answer (a
			// heartbeat later): a round that ran in between took a member raft hears for one
			// it does not, and removed it (heardGrace).
			if id == self {
				continue
			}
			since, inactive := sp.inactiveSince[id]
			heard := (!inactive || now.Sub(since) < heardGrace) && st.Progress[id].Match > 0
			if known && ps.Alive && !heard {
				sp.unheard = append(sp.unheard, id)
			}
			if !known {
				// Unknown to gossip (forgotten, or a wiped node's old ID):
				// treat as dead since this loop started.
				peers[id] = peerState{Gone: !heard && now.Sub(p.started) >= deadAfter}
				continue
			}
			peers[id] = judgeMember(ps, heard, inactive, since, aliveSince[id], now, deadAfter)
		}
		for id, at := range sp.removed {
			if now.Sub(at) >= readdCooldown {
				delete(sp.removed, id)
			} else if ps, ok := peers[id]; ok {
				ps.RecentlyRemoved = true
				peers[id] = ps
			}
		}
		var target []uint64
		if int(st.Shard) < len(desired) {
			target = desired[st.Shard]
		}
		format := uint64(0)
		if sm, _, ok := n.shardSM(st.Shard); ok {
			format = sm.Format()
		}
		replaced := false
		stuck := sp.trackLearners(st, target, now, deadAfter, func(id uint64) bool { return n.tr.SnapshotWaiting(st.Shard, id) })
		if len(stuck) > 0 {
			stuckLearners++
		}
		for _, id := range stuck {
			if sp.leftOut[id] == nil {
				p.log.Info("placement holds out a learner that made no progress", "shard", st.Shard, "member", id,
					"match", st.Progress[id].Match, "commit", st.Commit, "snapshotting", st.Progress[id].Snapshotting)
			}
		}
		var newlyUnheard []uint64
		for _, id := range slices.Concat(st.Voters, st.Learners) {
			if id != self && peers[id].Unheard && !sp.leftOut[id].holds(now) {
				newlyUnheard = append(newlyUnheard, id)
			}
		}
		held, keepsUnheard := sp.trackUnheard(st, peers, stuck, now, deadAfter)
		for _, id := range newlyUnheard {
			newlyHeld[id] = append(newlyHeld[id], st.Shard)
		}
		for _, id := range lacksShardFormat(target, self, peers, format) {
			held[id] = true
		}
		for _, id := range lacksDiskRoom(target, st, peers) {
			held[id] = true
		}
		if len(held) > 0 {
			key := fmt.Sprint(slices.Sorted(maps.Keys(held)))
			alt, ok := without[key]
			if !ok {
				alt = n.desiredWithout(held)
				without[key] = alt
			}
			var shardAlt []uint64
			if int(st.Shard) < len(alt) {
				shardAlt = alt[st.Shard]
			}
			member := keptIfHeld(st, peers)
			usable := func(id uint64) bool { return usableReplacement(id, self, peers, format) }
			if t := replaceUnheard(target, held, slices.Concat(shardAlt, st.Voters), zones, member, usable); t != nil {
				target, replaced = t, true
			}
		}
		ringed := len(target)
		target = fillFromDraining(target, st, peers, repl, self, format)
		if len(target) > 0 && (len(st.Learners) > 0 || !sameMembers(st.Voters, target)) {
			pending++
		}
		if keepsUnheard {
			unheard++
		}
		if sp.inflight {
			if sp.kept {
				kept++ // as last decided: the step under way (a hand-over) does not change it
			}
			continue
		}
		for _, id := range st.Learners {
			_, inactive := sp.inactiveSince[id]
			if ps, ok := peers[id]; ok && (inactive || now.Sub(sp.learnerSince[id]) < promoteSettle) {
				ps.Unsettled = true
				peers[id] = ps
			}
		}
		in := placementInput{
			Self: self, Status: st, Target: target, Peers: peers, Now: now,
			StableSince: sp.stableSince, LastTransfer: sp.lastTransfer,
			Settle: balanceSettleRounds * p.interval, Replication: repl, Format: format, Replaced: replaced,
		}
		if l, ok := sp.lost[target0(target)]; ok {
			in.PreferredLost, in.HandBack = l.at, handBackWait(l.losses, p.interval)
		}
		step := decidePlacement(in)
		if _, ok := sp.leftOut[step.Node]; step.Kind == stepAddLearner && (ok || replaced) {
			step.Probe = true
		}
		// Kept also when the target takes a decommissioning node in (fillFromDraining).
		if sp.kept = step.Kept || len(target) > ringed; sp.kept {
			kept++
		}
		if step.Kind == stepNone {
			if f := decideFormat(in); f != 0 {
				step = placementStep{Kind: stepRaiseFormat, Format: f, Reason: "every replica's node applies the format"}
			}
		}
		if step.Kind != stepNone {
			launches = append(launches, launch{g, sp, step, target})
		}
	}
	// Gossip forgets nothing it heard of, but a node that starts while a member is down never
	// hears of that member (memberlist ignores news of the death of a node it does not know),
	// so its ring leaves the member out at once, however recently it went down: acting on it
	// would replace the member long before DeadAfter, and reshuffle other shards too, since the
	// ring's load caps couple them. So a loop younger than DeadAfter that finds a member of a
	// local group unknown to gossip changes no group's members; leadership transfers go on.
	holdMembers := unknown != 0 && now.Sub(p.started) < deadAfter
	if !holdMembers {
		p.heldLogged = false
	} else if !p.heldLogged {
		p.heldLogged = true
		p.log.Info("placement holds membership changes: a member of a local group is unknown to gossip, "+
			"and it may only be down", "member", unknown, "until", p.started.Add(deadAfter).Format(time.RFC3339))
	}
	for _, l := range launches {
		if holdMembers && l.step.Kind != stepTransfer {
			continue
		}
		l.sp.inflight = true
		switch l.step.Kind {
		case stepTransfer:
			l.sp.lastTransfer = now
		case stepRemove:
			l.sp.removed[l.step.Node] = now // before it is done: it may be applied even if the call fails
		}
		p.wg.Add(1)
		go p.run(l.g, l.sp, l.step, l.target)
	}
	for id := range p.mu.shards {
		if !present[id] {
			delete(p.mu.shards, id)
		}
	}
	p.metrics.under.Set(float64(under))
	p.metrics.pending.Set(float64(pending))
	for id, shards := range newlyHeld {
		p.log.Info("placement holds out a member its shards' raft has not heard from for --dead-after, while gossip "+
			"did not hold it dead as long (cut off from this leader, wedged, or crash-looping)", "member", id,
			"shards", shards, "hold_at_least", deadAfter)
	}
	p.metrics.kept.Set(float64(kept))
	p.metrics.unheard.Set(float64(unheard))
	p.metrics.stuck.Set(float64(stuckLearners))
	p.metrics.lastRound.Set(float64(now.Unix()))
}

// run executes one step and clears the shard's in-flight mark.
func (p *placer) run(g *replica.Group, sp *shardPlacement, step placementStep, target []uint64) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		sp.inflight = false
		p.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(p.ctx, placementStepTimeout)
	defer cancel()
	var err error
	switch step.Kind {
	case stepAddLearner:
		if step.Probe {
			addr, ok := p.n.resolve(step.Node)
			perr := errors.New("no address known for it")
			if ok {
				perr = p.n.askPeer(ctx, addr)
			}
			starting := startingAnswer(perr)
			p.mu.Lock()
			startingFor := sp.startingFor(step.Node, starting, time.Now())
			p.mu.Unlock()
			if starting && startingFor < p.n.cfg.DeadAfter {
				// It answered, and serves in a moment (a node that just came back reopens its
				// shards): asked again next round, not held out for another DeadAfter. One that
				// stays starting that long (a restore waiting for its peers) is held out below.
				err = fmt.Errorf("%w (node %d): asked again at a later round", errPeerStarting, step.Node)
				break
			}
			if perr != nil {
				p.mu.Lock()
				hold := sp.holdOut(step.Node, time.Now(), p.n.cfg.DeadAfter, false).hold
				p.mu.Unlock()
				err = fmt.Errorf("node %d does not answer this leader (%w): left out of the shard for another %v", step.Node, perr, hold)
				break
			}
		}
		if step.Format >= shard.MaxFormat {
			err = g.AddLearner(ctx, step.Node)
		} else if sm, _, ok := p.n.shardSM(g.Shard()); !ok {
			err = fmt.Errorf("shard %d is not open here", g.Shard())
		} else {
			err = g.AddLearnerGuarded(ctx, step.Node, learnerGuard(sm, step.Format))
		}
	case stepPromote:
		err = g.PromoteLearner(ctx, step.Node)
	case stepRemove:
		err = g.RemoveMember(ctx, step.Node)
	case stepRaiseFormat:
		var res any
		res, err = g.ProposeGuarded(ctx, shard.EncodeSetFormat(&shard.SetFormatCommand{Format: step.Format}),
			p.raiseGuard(step.Format))
		if e, ok := res.(error); ok && err == nil {
			err = e
		}
	case stepTransfer:
		if addr, ok := p.n.resolve(step.Node); ok && p.n.peerStarting(ctx, addr) {
			err = fmt.Errorf("%w (node %d): asked again at a later round", errPeerStarting, step.Node)
			break
		}
		err = g.TransferLeadership(ctx, step.Node)
	}
	attrs := []any{"shard", g.Shard(), "step", step.Kind.String(), "member", step.Node, "reason", step.Reason,
		"target", target}
	if step.Kind == stepRaiseFormat {
		attrs = []any{"shard", g.Shard(), "step", step.Kind.String(), "format", step.Format, "reason", step.Reason}
	}
	if err != nil {
		lvl := slog.LevelDebug
		if !routineRefusal(err) {
			p.metrics.failures.WithLabelValues(step.Kind.String()).Inc()
			lvl = slog.LevelInfo
		}
		p.log.Log(context.Background(), lvl, "placement step failed; retrying later", append(attrs, "err", err)...)
		return
	}
	p.metrics.steps.WithLabelValues(step.Kind.String()).Inc()
	select {
	case p.stepped <- struct{}{}:
	default: // a round is due soon already
	}
	p.log.Info("placement step", attrs...)
}

// routineRefusal reports whether a step's err is one that a healthy cluster meets in the
// normal course, to be retried by a later round and not counted as a failure: another change
// still pending or unsettled, leadership moved, the node stopping, or a change vetted too soon
// after the group left quiescence.
func routineRefusal(err error) bool {
	if cce := (*replica.ConfChangeError)(nil); errors.As(err, &cce) && cce.Later {
		return true
	}
	return errors.Is(err, replica.ErrConfChangePending) || errors.Is(err, replica.ErrUnsettled) ||
		errors.Is(err, replica.ErrNotLeader) || errors.Is(err, replica.ErrStopped) || errors.Is(err, context.Canceled) ||
		errors.Is(err, errPeerStarting)
}

// errPeerStarting fails a step toward a node that answered it is still starting: a later round
// takes it once the node serves.
var errPeerStarting = errors.New("node: peer still starting")

// raiseGuard allows raising a shard to format only while every other member of its
// configuration is alive in gossip on a version that applies it (replica.Guard).
func (p *placer) raiseGuard(format uint64) replica.Guard {
	return func(members []uint64) error {
		peers := map[uint64]peerState{}
		for _, m := range p.n.Members() {
			peers[m.NodeID] = peerState{Alive: m.Alive, ShardFormat: m.ShardFormat}
		}
		if id, lacks := lacksFormat(members, p.n.ID(), peers, format); lacks {
			return fmt.Errorf("member %d is not alive on a version that applies format %d", id, format)
		}
		return nil
	}
}

// learnerGuard allows adding a member whose node applies formats up to nodeFormat only while
// the shard is at most at that format, every raise before it applied (replica.Guard). It only
// reads the state machine's format: a guard runs on the raft loop and must not block.
func learnerGuard(sm *shard.Shard, nodeFormat uint64) replica.Guard {
	return func([]uint64) error {
		if f := sm.Format(); f > max(nodeFormat, shard.Format1) {
			return fmt.Errorf("shard %d is at format %d, which the node cannot apply", sm.ID(), f)
		}
		return nil
	}
}

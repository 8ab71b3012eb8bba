package node

// Placement: one loop for up-replication, spreading to new nodes, replacing
// dead members, draining decommissioned nodes and balancing leaders.
//
// Every Config.PlacementInterval (jittered ±25%), for each local group this
// node leads, the loop computes the shard's target replica set (ring over the
// eligible members: alive or dead for less than DeadAfter, not
// decommissioning; see Node.DesiredReplicas) and takes at most one step
// toward it, chosen by decidePlacement in this priority order:
//
//  1. a step of this shard still in flight (or a conf change pending in
//     raft): wait;
//  2. a target member that is neither voter nor learner and is alive: add it
//     as a learner (it catches up by log or snapshot) — unless this leader
//     removed it from the shard less than readdCooldown ago;
//  3. a target learner that caught up and has kept answering for
//     promoteSettle: promote it; a learner outside the
//     target: remove it; a target member that raft has not heard from for
//     DeadAfter although gossip says it is alive: remove it (if a live quorum
//     remains), so that it comes back as a fresh replica;
//  4. once every target member votes, an extra voter: remove it (members
//     dead for DeadAfter or unknown first, then dead, then decommissioning,
//     then the rest), never leaving fewer live voters than a majority of the
//     new configuration; when the extra is this node, transfer leadership to
//     a caught-up target voter first;
//  5. the configuration equals the target and has been stable: hand
//     leadership to the ring's first replica (the preferred leader), at most
//     once per shard per transferCooldown.
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
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// DefaultPlacementInterval is the placement loop's default period.
const DefaultPlacementInterval = time.Second

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
)

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
	// waits for a node to join).
	Kept bool
}

// peerState is placement's view of one member, for one shard.
type peerState struct {
	Alive bool // alive in gossip
	// Gone: dead in gossip for at least DeadAfter (or unknown to gossip that
	// long), or alive in gossip but not heard from by this shard's raft for
	// DeadAfter (a partitioned or wedged replica).
	Gone            bool
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
}

// formatOf is the highest shard format member id's version applies.
func (in placementInput) formatOf(id uint64) uint64 {
	if id == in.Self {
		return shard.MaxFormat
	}
	return max(in.Peers[id].ShardFormat, shard.Format1)
}

// decideFormat returns the shard format to raise the shard this node leads to, or 0: once
// every member of the shard (voters and learners) is alive in gossip and runs a version that
// applies it. The raise is proposed guarded (raiseGuard, replica.Guard): the configuration it
// follows in the log is checked again, atomically with the proposal, so no member it did not
// check joins before it. decidePlacement adds no replica on a node that could not apply the
// shard's format, and adds a node of an older version only guarded too (learnerGuard). A member
// whose node later starts a version that does not know the format stops at it; the versions
// from before formats do not check, so downgrades past a raise are not supported.
func decideFormat(in placementInput) uint64 {
	st := in.Status
	if st.Leader != in.Self || st.Progress == nil || max(in.Format, shard.Format1) >= shard.MaxFormat {
		return 0
	}
	for _, id := range slices.Concat(st.Voters, st.Learners) {
		if id != in.Self && (!in.Peers[id].Alive || in.formatOf(id) < shard.MaxFormat) {
			return 0
		}
	}
	return shard.MaxFormat
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

	// 2. Add missing target members as learners, on nodes that apply the shard's format (a node
	// of an older version is added guarded: see decideFormat).
	format := max(in.Format, shard.Format1)
	for _, id := range in.Target {
		p := in.Peers[id]
		if isVoter(id) || isLearner(id) || !p.Alive || p.Gone || p.RecentlyRemoved || in.formatOf(id) < format {
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
	for _, id := range st.Learners {
		if !target[id] {
			return placementStep{Kind: stepRemove, Node: id, Reason: "learner not in target"}
		}
	}
	// A target member raft has not heard from for DeadAfter although gossip
	// says it is alive: remove it so that it is added back as a fresh replica.
	for _, id := range slices.Concat(st.Learners, st.Voters) {
		if id != in.Self && target[id] && in.Peers[id].Gone && (isLearner(id) || liveQuorumWithout(st.Voters, id, live)) {
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
		// voters than the replication factor: with no other node to take the replica,
		// removing it would only lower how many failures the shard survives. It gives up the
		// leadership, though. Down, it gets the same --dead-after as any member before its
		// removal, so that a restart does not cost it every replica.
		short := len(st.Voters)-1 < in.Replication
		kept := false
		for _, id := range extras {
			keep := short && !in.Peers[id].Gone
			if id == in.Self {
				if to := transferTarget(in, isVoter, live, caughtUp); to != 0 {
					reason := "this node is an extra voter; hand over before removal"
					if keep {
						reason = "this node is an extra voter kept for want of a replacement; hand over the leadership"
					}
					return placementStep{Kind: stepTransfer, Node: to, Kept: keep, Reason: reason}
				}
				return none("this node is an extra voter but no caught-up target voter can take over")
			}
			if keep {
				kept = true
				continue
			}
			if liveQuorumWithout(st.Voters, id, live) {
				return placementStep{Kind: stepRemove, Node: id, Reason: "extra voter"}
			}
		}
		if kept {
			return placementStep{Kept: true, Reason: fmt.Sprintf("an extra voter is kept: removing it would leave %d voters, replication %d",
				len(st.Voters)-1, in.Replication)}
		}
		return none("no extra voter can be removed without losing a live quorum")
	}
	// 5. Leader balance: hand leadership to the preferred leader.
	pref := in.Target[0]
	switch {
	case pref == in.Self:
		return none("placed")
	case len(st.Learners) > 0 || len(st.Voters) != len(in.Target):
		return none("configuration not settled")
	case !live(pref) || !caughtUp(pref) || in.Peers[pref].Decommissioning || in.Peers[pref].Stopping:
		return none("preferred leader not ready")
	case in.Now.Sub(in.StableSince) < in.Settle:
		return none("group not stable long enough to balance")
	case !in.LastTransfer.IsZero() && in.Now.Sub(in.LastTransfer) < transferCooldown:
		return none("balancing transfer rate-limited")
	}
	return placementStep{Kind: stepTransfer, Node: pref, Reason: "preferred leader"}
}

// transferTarget picks the voter to hand leadership to before this node
// removes itself: the ring's preferred leader if ready, else the first ready
// target voter; 0 if none.
func transferTarget(in placementInput, isVoter, live, caughtUp func(uint64) bool) uint64 {
	for _, id := range in.Target {
		if id != in.Self && isVoter(id) && live(id) && caughtUp(id) && !in.Peers[id].Stopping {
			return id
		}
	}
	return 0
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
// factor, or, when the voters' nodes name their zones, voters in fewer zones
// than the replication factor (zones maps node IDs to zones; a voter it lacks
// counts as a zone of its own) — even when the cluster has too few nodes or
// zones to do better. A cluster whose nodes name no zone has no zone rule.
func underReplicated(voters []uint64, replication int, zones map[uint64]string) bool {
	if len(voters) < replication {
		return true
	}
	seen := make(map[string]bool, len(voters))
	for _, id := range voters {
		z, ok := zones[id]
		if ok && z == "" {
			return false // zones not configured
		}
		if !ok {
			z = fmt.Sprint("?", id)
		}
		seen[z] = true
	}
	return len(seen) < replication
}

// zonesOf maps the members' node IDs to their zones.
func zonesOf(members []membership.Member) map[uint64]string {
	out := make(map[uint64]string, len(members))
	for _, m := range members {
		out[m.NodeID] = m.Zone
	}
	return out
}

// placementMetrics are the placement loop's metrics.
type placementMetrics struct {
	steps     *prometheus.CounterVec // by kind
	failures  *prometheus.CounterVec // by kind
	under     prometheus.Gauge
	pending   prometheus.Gauge
	kept      prometheus.Gauge
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
			Help: "Placement steps that failed (retried on a later round), by kind.",
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
			Help: "Shards led by this node that keep a decommissioning member's replica because no other node can take it (a drain waiting for a node to join).",
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
		r.MustRegister(m.steps, m.failures, m.under, m.pending, m.kept, m.dropped, m.lastRound)
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
	// As leader (reset when the term changes): since when each member has
	// not been recently active, and when this node removed members.
	term          uint64
	inactiveSince map[uint64]time.Time
	removed       map[uint64]time.Time
	learnerSince  map[uint64]time.Time
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
	p.ctx, p.cancel = context.WithCancel(context.Background())
	n.placer.Store(p)
	p.wg.Add(1)
	go p.loop()
}

// stopPlacement stops the loop and waits for in-flight steps. Idempotent;
// a no-op when the loop never started.
func (n *Node) stopPlacement() {
	if p := n.placer.Swap(nil); p != nil {
		p.cancel()
		p.wg.Wait()
	}
}

func (p *placer) loop() {
	defer p.wg.Done()
	t := time.NewTimer(p.jittered())
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.n.done:
			return
		case <-t.C:
		}
		p.round(time.Now())
		t.Reset(p.jittered())
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
	repl := int(n.Settings().Replication)
	desired := n.DesiredReplicas()
	members := n.Members()
	deadAfter := n.cfg.DeadAfter
	under, pending, kept := 0, 0, 0

	var toDrop []uint32
	var orphans []orphan
	defer func() { p.dropRemoved(toDrop, orphans) }() // after p.mu is released: it calls peers
	p.mu.Lock()
	defer p.mu.Unlock()
	present := map[uint32]bool{}
	zones := zonesOf(members) // also which node IDs gossip knows
	unknown := uint64(0)      // a member of a local group that gossip does not know, if any
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
		if st.Leader != self || st.Progress == nil {
			continue
		}
		if st.Term != sp.term || sp.inactiveSince == nil {
			sp.term, sp.inactiveSince, sp.removed = st.Term, map[uint64]time.Time{}, map[uint64]time.Time{}
			sp.learnerSince = map[uint64]time.Time{}
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
		var target []uint64
		if int(st.Shard) < len(desired) {
			target = desired[st.Shard]
		}
		if underReplicated(st.Voters, repl, zones) {
			under++
		}
		if len(st.Learners) > 0 || !sameMembers(st.Voters, target) {
			pending++
		}
		if sp.inflight {
			continue
		}
		peers := make(map[uint64]peerState, len(members))
		for _, m := range members {
			peers[m.NodeID] = peerState{Alive: m.Alive, Decommissioning: m.Decommissioning, Stopping: m.Stopping,
				Gone: !m.Alive && now.Sub(m.Changed) >= deadAfter, ShardFormat: m.ShardFormat}
		}
		for _, id := range slices.Concat(st.Voters, st.Learners) {
			ps, known := peers[id]
			switch {
			case id == self:
			case !known:
				// Unknown to gossip (forgotten, or a wiped node's old ID):
				// treat as dead since this loop started.
				peers[id] = peerState{Gone: now.Sub(p.started) >= deadAfter}
			case ps.Alive:
				if since, ok := sp.inactiveSince[id]; ok && now.Sub(since) >= deadAfter {
					ps.Gone = true
					peers[id] = ps
				}
			}
		}
		for _, id := range st.Learners {
			_, inactive := sp.inactiveSince[id]
			if ps, ok := peers[id]; ok && (inactive || now.Sub(sp.learnerSince[id]) < promoteSettle) {
				ps.Unsettled = true
				peers[id] = ps
			}
		}
		for id, at := range sp.removed {
			if now.Sub(at) >= readdCooldown {
				delete(sp.removed, id)
			} else if ps, ok := peers[id]; ok {
				ps.RecentlyRemoved = true
				peers[id] = ps
			}
		}
		in := placementInput{
			Self: self, Status: st, Target: target, Peers: peers, Now: now,
			StableSince: sp.stableSince, LastTransfer: sp.lastTransfer,
			Settle: balanceSettleRounds * p.interval, Replication: repl,
		}
		if sm, _, ok := n.shardSM(st.Shard); ok {
			in.Format = sm.Format()
		}
		step := decidePlacement(in)
		if step.Kept {
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
	p.metrics.kept.Set(float64(kept))
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
		if step.Format >= shard.MaxFormat {
			err = g.AddLearner(ctx, step.Node)
		} else {
			err = g.AddLearnerGuarded(ctx, step.Node, p.learnerGuard(g.Shard(), step.Format))
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
			err = fmt.Errorf("node %d is still starting", step.Node)
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
		p.metrics.failures.WithLabelValues(step.Kind.String()).Inc()
		lvl := slog.LevelInfo
		if errors.Is(err, replica.ErrConfChangePending) || errors.Is(err, replica.ErrUnsettled) || errors.Is(err, replica.ErrNotLeader) ||
			errors.Is(err, replica.ErrStopped) || errors.Is(err, context.Canceled) {
			lvl = slog.LevelDebug
		}
		p.log.Log(context.Background(), lvl, "placement step failed; retrying later", append(attrs, "err", err)...)
		return
	}
	p.metrics.steps.WithLabelValues(step.Kind.String()).Inc()
	p.log.Info("placement step", attrs...)
}

// raiseGuard allows raising a shard to format only while every other member of its
// configuration is alive in gossip on a version that applies it (replica.Guard).
func (p *placer) raiseGuard(format uint64) replica.Guard {
	return func(members []uint64) error {
		known := map[uint64]membership.Member{}
		for _, m := range p.n.Members() {
			known[m.NodeID] = m
		}
		for _, id := range members {
			if m, ok := known[id]; id != p.n.ID() && (!ok || !m.Alive || max(m.ShardFormat, shard.Format1) < format) {
				return fmt.Errorf("member %d is not alive on a version that applies format %d", id, format)
			}
		}
		return nil
	}
}

// learnerGuard allows adding a member whose node applies formats up to nodeFormat only while
// the shard is at most at that format, every raise before it applied (replica.Guard).
func (p *placer) learnerGuard(id uint32, nodeFormat uint64) replica.Guard {
	return func([]uint64) error {
		sm, _, ok := p.n.shardSM(id)
		if !ok {
			return fmt.Errorf("shard %d is not open here", id)
		}
		if f := sm.Format(); f > max(nodeFormat, shard.Format1) {
			return fmt.Errorf("shard %d is at format %d, which the node cannot apply", id, f)
		}
		return nil
	}
}

// dropConfirmed deletes the local replicas of shards this node was removed
// from, each once the shard's current leader confirms that its configuration
// no longer holds this node (the local configuration may be a stale one that
// a replica catching up passes through, and a replica deleted while its
// leader still tracks it would panic raft on the next heartbeat). As in
// dropOrphans, the replica is first retired if it stepped no leader message
// since since (taken before the views were gathered): a leader may have added
// the node back after its view was read, and the replica, no longer removed,
// may already have answered with its log's progress; deleting that log would
// leave the leader with a follower whose log it believes much longer, which
// panics raft on the next heartbeat, and again after every restart.
func (p *placer) dropConfirmed(shards []uint32, since time.Time, leaders map[uint32]*shoalv1.ShardInfo) {
	self := p.n.ID()
	for _, id := range shards {
		s, ok := leaders[id]
		if !ok || !leavesOut(s, self) {
			continue
		}
		if retired, err := p.n.host.RetireGroupIfQuiet(id, since); err != nil || !retired {
			continue // a leader spoke to it since: the next round looks again
		}
		if err := p.n.dropReplica(id); err != nil {
			p.log.Info("deleting removed replica failed; retrying later", "shard", id, "err", err)
			continue
		}
		p.metrics.dropped.Inc()
		p.log.Info("deleted replica removed from its group", "shard", id, "leader", s.LeaderId, "term", s.Term)
	}
}

// dropRemoved deletes the removed replicas (dropConfirmed) and the orphans (dropOrphans) of one
// round, with the shards' leader views gathered once for both. since is taken before the
// gathering, as both require.
func (p *placer) dropRemoved(removed []uint32, orphans []orphan) {
	if len(removed) == 0 && len(orphans) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, placementStepTimeout)
	defer cancel()
	since := time.Now()
	leaders, maxTerm := p.n.leaderViews(ctx)
	p.dropConfirmed(removed, since, leaders)
	p.dropOrphans(orphans, since, leaders, maxTerm)
}

// orphan is a local replica that has heard from no leader for DeadAfter: perhaps one that
// never learned of its removal (see dropOrphans).
type orphan struct {
	shard   uint32
	applied uint64 // its raft applied index when seen
}

// dropOrphans deletes the local replicas among cands that their group no longer counts. A
// replica learns of its removal by applying it; one whose node was down when the removal
// committed, or that missed the one message carrying it, never does: no leader sends it
// anything again, and it would keep its data and campaign for good.
//
// Safety rests on two things. The shard's leader view, gathered from the alive members after
// since, leaves this node out, and no answering member reports a later term (a deposed
// leader's view is not trusted); its applied index is also at or past the replica's own.
// And the replica is retired only if it stepped no leader message since since, in one step of
// the raft loop, after which it answers nothing: a leader that added the node back after the
// views were read gets no answer from the old log, so it cannot count that log as the new
// member's and promote a replica about to be emptied. Such a leader then meets a fresh,
// empty replica and catches it up. A replica that is only cut off from its group is kept:
// the configuration still has it. (This also deletes a stray empty replica that a delayed
// message created for a group that no longer has this node.)
func (p *placer) dropOrphans(cands []orphan, since time.Time, leaders map[uint32]*shoalv1.ShardInfo, maxTerm map[uint32]uint64) {
	self := p.n.ID()
	for _, o := range cands {
		s, ok := leaders[o.shard]
		if !ok || !leavesOut(s, self) || s.Term < maxTerm[o.shard] || s.Applied < o.applied {
			continue
		}
		retired, err := p.n.host.RetireGroupIfQuiet(o.shard, since)
		if err != nil || !retired {
			continue
		}
		// Retired, the replica is also marked removed: should this drop fail, the next rounds
		// retry it through dropConfirmed.
		if err := p.n.dropReplica(o.shard); err != nil {
			p.log.Info("deleting a replica left out of its group failed; retrying later", "shard", o.shard, "err", err)
			continue
		}
		p.metrics.dropped.Inc()
		p.log.Info("deleted a replica that its group left out while it heard from no leader",
			"shard", o.shard, "applied", o.applied, "leader", s.LeaderId, "term", s.Term, "leader_applied", s.Applied)
	}
}

// leavesOut reports whether the leader view s leaves node id out of its shard: id neither
// leads it nor is a voter or learner.
func leavesOut(s *shoalv1.ShardInfo, id uint64) bool {
	return s.LeaderId != id && !slices.Contains(s.Voters, id) && !slices.Contains(s.Learners, id)
}

// leaderViews returns, per shard, the local view of the alive member that
// reports leading it (the highest term wins), and the highest term any
// answering member reports for the shard, followers included: a leader view
// of a lower term comes from a deposed leader.
func (n *Node) leaderViews(ctx context.Context) (best map[uint32]*shoalv1.ShardInfo, maxTerm map[uint32]uint64) {
	best, maxTerm = map[uint32]*shoalv1.ShardInfo{}, map[uint32]uint64{}
	for _, v := range n.gatherTopologies(ctx, false) {
		if len(v.Nodes) == 0 {
			continue
		}
		reporter := v.Nodes[0].Id
		for _, s := range v.Shards {
			maxTerm[s.Shard] = max(maxTerm[s.Shard], s.Term)
			if s.LeaderId == reporter && (best[s.Shard] == nil || s.Term > best[s.Shard].Term) {
				best[s.Shard] = s
			}
		}
	}
	return best, maxTerm
}

// dropReplica forgets shard id's local replica (groups.json and the state
// machine), then deletes its raft state and data. Forgetting first means a
// leader's later message finds no group and the factory opens a fresh state
// machine over the emptied keyspace. A crash in between leaves the old raft
// state on disk, not reopened at restart; should a leader add this node back,
// the factory reopens it and it catches up like a returning replica.
func (n *Node) dropReplica(id uint32) error {
	n.mu.Lock()
	sm := n.mu.shards[id]
	groups, err := n.dir.groups()
	if err == nil {
		err = n.dir.saveGroups(slices.DeleteFunc(groups, func(s uint32) bool { return s == id }))
	}
	if err == nil {
		delete(n.mu.shards, id)
	}
	n.mu.Unlock()
	if err != nil {
		return err
	}
	if err := n.host.DropGroup(id); err != nil {
		return err
	}
	if sm != nil {
		sm.Close() // the group is gone, so no apply runs: end its filter scan before Pebble closes
	}
	return nil
}

// sameMembers reports whether a and b hold the same IDs (in any order).
func sameMembers(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for _, id := range a {
		if !slices.Contains(b, id) {
			return false
		}
	}
	return true
}

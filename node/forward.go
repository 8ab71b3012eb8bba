package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// Forwarding. A node that cannot serve a request (not the shard's leader, or
// no local replica) forwards it to the leader over a pooled connection. The
// outgoing call carries hopKey = hops so far; a node that received a request
// with maxHops hops answers NotLeader instead of forwarding again, which
// bounds loops while leadership moves.
const (
	hopKey  = "shoal-hops"
	maxHops = 2

	// minNoLeaderWait is the least Node.noLeaderWait.
	minNoLeaderWait = 3 * time.Second
	// proposeTimeout bounds a proposal when the caller set no deadline.
	proposeTimeout = 10 * time.Second
	// leaderTTL is how long a leader learned from another node is trusted.
	leaderTTL = 2 * time.Second
	// refreshEvery is the least time between two refreshes of the leader cache.
	refreshEvery = 200 * time.Millisecond
	// topologyTimeout bounds each peer's answer when gathering topologies,
	// and topologyGrace how long the slowest wait once the answers at hand
	// name every shard's leader.
	topologyTimeout = time.Second
	topologyGrace   = 100 * time.Millisecond
)

// noLeaderWait is how long a request waits for a shard without a known leader before it is
// answered UNAVAILABLE: as long as a replica may know no leader before its shard counts as
// leaderless (leaderlessAfter, three election timeouts: 30 ticks), at least 3 s. An election
// takes 10 to 20 ticks, so with a long --tick (zones far apart) the wait grows with it.
func (n *Node) noLeaderWait() time.Duration {
	return max(minNoLeaderWait, leaderlessAfter(time.Duration(replica.DefaultElectionTicks)*n.cfg.Tick))
}

// incomingHops returns how many nodes forwarded the request so far.
func incomingHops(ctx context.Context) int {
	v := metadata.ValueFromIncomingContext(ctx, hopKey) // copies no other key, unlike FromIncomingContext
	if len(v) == 0 {
		return 0
	}
	h, err := strconv.Atoi(v[0])
	if err != nil || h < 0 {
		return maxHops
	}
	return h
}

// forwardContext returns the outgoing context of a forwarded request. It names this node's
// cluster, as a client's call does: a node whose view of the leaders is stale, pointing at an
// address now taken by a node of another cluster, is refused there (otherCluster), not served.
func (n *Node) forwardContext(ctx context.Context) context.Context {
	kv := []string{hopKey, strconv.Itoa(incomingHops(ctx) + 1)}
	if id := n.clusterID(); id != "" {
		kv = append(kv, shoalv1.ClusterIDHeader, id)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// The flow-control windows of the connections that forward calls to other nodes (peerPool):
// fixed, where gRPC's own sizing grows a call's window with its traffic, up to 16 MiB. A read
// or subscription relayed for a caller that stopped taking pages then held up to that much of
// the leader's pages on the relaying node (9 MiB a call, measured), on top of what it holds
// itself (docs/operations.md, "What clients can make a node hold"). relayStreamWindow bounds
// what one call holds; it is also what one call has in flight, plenty between nodes of one
// region. The transport's raft connections are not these: they keep gRPC's sizing for what
// they receive (acknowledgements), and what they send is bounded by the receiving server's
// fixed windows (grpcopt.ServerWindows).
const (
	relayStreamWindow = 512 << 10
	relayConnWindow   = 16 << 20
)

// peerPool keeps one client connection per peer address.
type peerPool struct {
	opts  []grpc.DialOption
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // guarded by mu; nil after close
}

func newPeerPool(opts []grpc.DialOption) *peerPool {
	return &peerPool{opts: opts, conns: map[string]*grpc.ClientConn{}}
}

func (p *peerPool) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return nil, ErrClosed
	}
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, p.opts...)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peerPool) close() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// leaderCache remembers shard leaders learned from other nodes, for shards
// this node holds no replica of.
type leaderCache struct {
	mu      sync.Mutex
	leaders map[uint32]cachedLeader // guarded by mu
	// leaderless: for the shards the last complete refresh found no leader of, the
	// shortest time any replica's view had known none (0: a view that did not say), and
	// when; for those a refresh (complete or not) found led, that it did (guarded by mu).
	leaderless map[uint32]cachedLeaderless
	fetched    time.Time     // last complete refresh, guarded by mu
	refresh    chan struct{} // one refresh at a time: holds a token while one runs
	// voters: each shard's voters as the view of the highest term in the refreshes says,
	// where a stale read of a shard without a leader may go (guarded by mu).
	voters map[uint32]cachedVoters
}

type cachedVoters struct {
	ids  []uint64
	term uint64
	at   time.Time
}

type cachedLeader struct {
	id, term uint64
	at       time.Time
}

type cachedLeaderless struct {
	d   time.Duration
	led []uint64 // the leaders views named
	at  time.Time
}

func newLeaderCache() *leaderCache {
	return &leaderCache{leaders: map[uint32]cachedLeader{}, leaderless: map[uint32]cachedLeaderless{},
		refresh: make(chan struct{}, 1), voters: map[uint32]cachedVoters{}}
}

// votersOf returns shard id's voters as the refreshes within leaderTTL saw them.
func (c *leaderCache) votersOf(id uint32) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.voters[id]
	if !ok || time.Since(v.at) > leaderTTL {
		return nil
	}
	return v.ids
}

// leaderlessFor returns how long, by the last complete refresh, the replicas of shard id
// have known no leader (the shortest of their views, plus the time since the refresh), and
// false when that refresh found a leader, none of its views had the shard, one of them did not
// say how long (an older server), or it is older than leaderTTL.
func (c *leaderCache) leaderlessFor(id uint32) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.leaderless[id]
	if !ok || len(l.led) > 0 || l.d == 0 || time.Since(l.at) > leaderTTL {
		return 0, false
	}
	return l.d + time.Since(l.at), true
}

// electing reports whether the last refresh, within leaderTTL, saw shard id led or electing:
// a view naming a leader other than self (whose own replica, knowing none, says otherwise), or
// one of a replica that has known none for less than after (or did not say how long). A local
// replica's own silence then says nothing of the shard: it may have
// been removed from its group without knowing it, or be cut off from the others, and the cache
// lacks the leader only for want of a refresh (invalidated after a forward failed, with the
// next refresh up to refreshEvery away), or the refresh caught the others electing one.
func (c *leaderCache) electing(id uint32, after time.Duration, self uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.leaderless[id]
	if !ok || time.Since(l.at) > leaderTTL {
		return false
	}
	if len(l.led) > 0 {
		return slices.ContainsFunc(l.led, func(id uint64) bool { return id != self })
	}
	return l.d == 0 || l.d+time.Since(l.at) < after
}

func (c *leaderCache) get(id uint32) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.leaders[id]
	if !ok || time.Since(l.at) > leaderTTL {
		return 0, false
	}
	return l.id, true
}

// recent reports whether a complete refresh ended under refreshEvery ago.
func (c *leaderCache) recent() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Since(c.fetched) < refreshEvery
}

func (c *leaderCache) invalidate(id uint32) {
	c.mu.Lock()
	delete(c.leaders, id)
	c.mu.Unlock()
}

// leaderOf returns shard id's leader as this node knows it: its own replica's
// view if it holds one that stands for the shard's (ownLeaderView), else the
// cached or freshly gathered cluster view. 0 means unknown.
func (n *Node) leaderOf(ctx context.Context, id uint32) uint64 {
	if g, ok := n.ownLeaderView(id); ok {
		if l := g.Leader(); l != 0 {
			return l
		}
	}
	if l, ok := n.leaders.get(id); ok {
		return l
	}
	n.refreshLeaders(ctx)
	l, _ := n.leaders.get(id)
	return l
}

// ownLeaderView returns this node's replica of shard id when the leader it names stands for the
// shard's: it is not removed from its group (it would name the leader it last knew), and it
// votes or leads. A learner never campaigns, nor does a replica awaiting its first snapshot, so
// it names the leader it last heard from, gone with the group's quorum as well; the members'
// views say better (the leader cache, where a learner's view counts last).
func (n *Node) ownLeaderView(id uint32) (*replica.Group, bool) {
	g, ok := n.host.Group(id)
	if !ok || g.Removed() || !g.Voter() && !g.IsLeader() {
		return nil, false
	}
	return g, true
}

// refreshLeaders gathers every alive member's local topology and records,
// per shard, the leader reported with the highest term (a cached one of a
// higher term, still live, stays). Refreshes are
// rate-limited to one per refreshEvery. A caller whose context ends returns at once,
// while waiting for another's refresh too; a refresh its end cut short keeps
// what it gathered but does not count for the rate limit, so that one caller
// out of time does not leave every other without leaders for refreshEvery.
func (n *Node) refreshLeaders(ctx context.Context) {
	c := n.leaders
	if c.recent() {
		return // not queued behind a refresh under way: the one just done stands
	}
	select {
	case c.refresh <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-c.refresh }()
	if c.recent() {
		return
	}
	views := n.gatherTopologies(ctx, true, nil)
	c.record(views, ctx.Err() == nil, time.Now())
}

// record takes in the views a refresh gathered (complete: its caller's context did not end it).
// A shard counts as leaderless for as long as its most recently leaderless replica says: one
// replica's long silence (cut off from its peers, removed without knowing it, a learner
// before its snapshot) says nothing of the others, which may be electing a leader right now.
// A view without leaderless_ms (an older server's) leaves the time unknown. The view of a
// replica its own configuration does not count (removed from its group) is left out: it names
// the leader it last knew, which may be long gone, and it stays while the shard has lost its
// quorum (its deletion waits for a leader to confirm the removal). So is a learner's naming a
// leader that a voter's view, at the learner's term or later, knows no longer: a learner never
// campaigns, and keeps the leader it last knew after the voters lost theirs.
func (c *leaderCache) record(views []*shoalv1.TopologyResponse, complete bool, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if complete {
		c.fetched = now
		clear(c.leaderless)
	}
	led := map[uint32]bool{}
	voterLost := votersWithoutLeader(views)
	for _, v := range views {
		reporter := reporterOf(v)
		for _, s := range v.GetShards() {
			// Left out: the view of a replica its own configuration leaves out (outOfConfig),
			// and a learner's naming the leader it last knew, which a voter's knows no longer
			// (staleLearnerView).
			if outOfConfig(s, reporter) || staleLearnerView(s, reporter, voterLost) {
				continue
			}
			if cur, ok := c.voters[s.Shard]; len(s.Voters) > 0 && (!ok || s.Term >= cur.term || now.Sub(cur.at) > leaderTTL) {
				c.voters[s.Shard] = cachedVoters{ids: slices.Clone(s.Voters), term: s.Term, at: now}
			}
			if s.LeaderId == 0 {
				d := time.Duration(s.LeaderlessMs) * time.Millisecond
				if cur, ok := c.leaderless[s.Shard]; complete && !led[s.Shard] && (!ok || d < cur.d) {
					c.leaderless[s.Shard] = cachedLeaderless{d: d, at: now}
				}
				continue
			}
			led[s.Shard] = true
			if cur := c.leaderless[s.Shard]; !slices.Contains(cur.led, s.LeaderId) {
				c.leaderless[s.Shard] = cachedLeaderless{led: append(cur.led, s.LeaderId), at: now}
			}
			// A view of a lower term than the entry held, from this refresh or a live one
			// before it, is a deposed leader's or a lagging member's: it does not replace it
			// (the forward watch would move calls to the deposed leader).
			if cur, ok := c.leaders[s.Shard]; ok && cur.term > s.Term && now.Sub(cur.at) <= leaderTTL {
				continue
			}
			c.leaders[s.Shard] = cachedLeader{id: s.LeaderId, term: s.Term, at: now}
		}
	}
}

// staleness says which replicas may serve a request. The zero value: only the
// leader (writes, linearizable reads). With allowed, any replica that was
// current with its group's leader within max (replica.Group.SinceCurrent; the
// leader itself after a read barrier); max 0: no bound, so a replica cut off
// from its group serves what it holds, however old, which is what keeps a
// shard that lost its quorum readable.
type staleness struct {
	allowed bool
	max     time.Duration
}

// readStaleness is the staleness a read request asks for.
func readStaleness(allowStale bool, maxStalenessMS uint32) (staleness, error) {
	if maxStalenessMS > 0 && !allowStale {
		return staleness{}, &shard.InvalidError{Field: "max_staleness_ms", Limit: "only with allow_stale",
			Reason: fmt.Sprintf("%d ms given for a linearizable read", maxStalenessMS)}
	}
	return staleness{allowed: allowStale, max: time.Duration(maxStalenessMS) * time.Millisecond}, nil
}

// servedBy reports whether g, a local replica that does not lead its group,
// may serve the request.
func (s staleness) servedBy(g *replica.Group) bool {
	if !s.allowed {
		return false
	}
	if s.max == 0 {
		return true
	}
	since, ok := g.SinceCurrent()
	return ok && since <= s.max
}

// servesStale reports whether g, a local replica, may serve a stale read that st allows
// (servedBy): never once removed from its group (it answered "not found" for streams written
// since), and without a bound only if it holds state: it has been current with its group since
// it opened, or applied something. An empty replica (a learner before its first snapshot, one
// a delayed message created) would answer "not found" for every stream.
func (n *Node) servesStale(st staleness, g *replica.Group) bool {
	if !st.servedBy(g) || g.Removed() {
		return false
	}
	if st.max > 0 {
		return true // current within the bound
	}
	if _, ok := g.SinceCurrent(); ok {
		return true
	}
	sm, _, ok := n.shardSM(g.Shard())
	return ok && sm.Applied() > 0
}

// distrusts reports whether a bounded read that g cannot serve must not be forwarded to the
// leader g knows either: g has not heard from it within the bound, so it may be hung (a
// forwarded read would wait on it) or deposed.
func (s staleness) distrusts(g *replica.Group) bool {
	if !s.allowed || s.max == 0 || g.Leader() == 0 {
		return false
	}
	since, ok := g.SinceContact()
	return !ok || since > s.max
}

// route decides where a request for shard id runs. It returns the local
// group when this node leads it (or holds a replica of it that st lets
// serve), else the leader to forward to. It waits for a leader
// to appear (until deadline, shared by a request's attempts); after that, or
// when the request already made maxHops hops, it returns a *NoLeaderError or
// *replica.NotLeaderError.
func (n *Node) route(ctx context.Context, id uint32, st staleness, deadline time.Time) (*replica.Group, *forwardTarget, error) {
	hops := incomingHops(ctx)
	for {
		g, local := n.host.Group(id)
		if local && (g.IsLeader() || n.servesStale(st, g)) {
			return g, nil, nil
		}
		leader := n.leaderOf(ctx, id)
		if leader == n.ID() && local {
			if g.Leader() == n.ID() {
				return g, nil, nil // just elected; IsLeader will agree shortly
			}
			// The leader cache's entry, from before this replica lost the leadership: the
			// group elects anew. Proposed here, the write would be refused at once, and its
			// attempts used up in as long, instead of waiting for the new leader.
			n.leaders.invalidate(id)
			leader = 0
		}
		if local && st.distrusts(g) {
			leader = 0 // wait for one this replica hears from
		}
		if leader == 0 && st.allowed && st.max == 0 && hops < maxHops {
			// A read any replica may serve, of a shard without a leader (it lost its quorum,
			// or elects one), that no replica here serves: another node's replica does.
			if tgt := n.staleTarget(ctx, id); tgt != nil {
				return nil, tgt, nil
			}
		}
		if leader != 0 && leader != n.ID() {
			if hops >= maxHops {
				return nil, nil, &replica.NotLeaderError{Shard: id, Leader: leader}
			}
			if addr, ok := n.resolve(leader); ok {
				conn, err := n.peers.get(addr)
				if err != nil {
					return nil, nil, err
				}
				return nil, &forwardTarget{conn: conn, leader: leader, node: leader}, nil
			}
		}
		if leader == 0 {
			// No member names a leader, and the shard's replicas have known none for longer
			// than an election takes: the shard lost its quorum (or they are cut off from the
			// others). Answered now: held until the deadline, every request for it would take
			// a place of the caller's (a pipeline's in-flight items, a long-poll slot) that
			// requests for healthy shards wait for, and would still find no leader. A local
			// replica's silence counts only if the leader cache's last refresh did not see the
			// shard led or electing (leaderCache.electing).
			after := leaderlessAfter(n.host.ElectionTimeout())
			if own, ok := n.ownLeaderView(id); ok {
				if d, ok := own.Leaderless(); ok && d >= after && !n.leaders.electing(id, after, n.ID()) {
					return nil, nil, &NoLeaderError{Shard: id, Cause: &leaderlessError{For: d}}
				}
			} else if d, ok := n.leaders.leaderlessFor(id); ok && d >= after {
				return nil, nil, &NoLeaderError{Shard: id, Cause: &leaderlessError{For: d, Remote: true}}
			}
		}
		if time.Now().After(deadline) {
			return nil, nil, &NoLeaderError{Shard: id}
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-n.done:
			return nil, nil, ErrClosed
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// staleTarget returns a live node other than this one that holds a voter of shard id, chosen
// at random, for a read that any replica may serve; nil when the refreshes know none. The
// leader is unknown: the forward watch moves the read to one that appears.
func (n *Node) staleTarget(ctx context.Context, id uint32) *forwardTarget {
	voters := n.leaders.votersOf(id)
	if voters == nil {
		n.refreshLeaders(ctx)
		voters = n.leaders.votersOf(id)
	}
	alive := map[uint64]string{}
	for _, m := range n.memberList() {
		if m.Alive && m.GRPCAddr != "" {
			alive[m.NodeID] = m.GRPCAddr
		}
	}
	var cands []uint64
	for _, v := range voters {
		if _, ok := alive[v]; ok && v != n.ID() {
			cands = append(cands, v)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	to := cands[rand.IntN(len(cands))]
	conn, err := n.peers.get(alive[to])
	if err != nil {
		return nil
	}
	return &forwardTarget{conn: conn, node: to}
}

// gatherTopologies asks every alive member (this node included, answered
// locally) for its local topology, in parallel, for up to topologyTimeout.
// Members that fail to answer are left out. With early set, once the views at
// hand name a leader for every shard, the others get topologyGrace more: a
// member that hangs (a paused process, a cut connection) would otherwise hold
// every topology answer for the full timeout, while clients wait for one to
// find the shards' new leaders. Routing sets it; placement, whose decisions
// to delete a replica rest on every answering member's view, does not.
// suspects go with the questions (a client's topology request's: suspectLeaders).
func (n *Node) gatherTopologies(ctx context.Context, early bool, suspects []*shoalv1.SuspectLeader) []*shoalv1.TopologyResponse {
	members := n.Members()
	ctx, cancel := context.WithTimeout(ctx, topologyTimeout)
	defer cancel()
	answers := make(chan *shoalv1.TopologyResponse, len(members))
	asked := 0
	for _, m := range members {
		if !m.Alive || m.GRPCAddr == "" || m.NodeID == n.ID() {
			continue
		}
		conn, err := n.peers.get(m.GRPCAddr)
		if err != nil {
			continue
		}
		asked++
		go func() {
			t, err := shoalv1.NewClusterClient(conn).Topology(ctx, &shoalv1.TopologyRequest{LocalOnly: true, Suspects: suspects})
			if err != nil {
				n.log.Debug("gathering topology", "peer", m.Name, "err", err)
			}
			answers <- t // nil on error; buffered: never blocks
		}()
	}
	// Asked while the peers answer: a local raft loop stuck behind a stalled disk then leaves
	// the peers' views time to arrive.
	var res []*shoalv1.TopologyResponse
	if t, err := n.localTopology(ctx); err == nil {
		res = append(res, t)
	} else {
		n.log.Debug("this node's raft loop did not answer for its topology view", "err", err)
	}
	shards := n.Settings().Shards
	var grace <-chan time.Time
	for ; asked > 0; asked-- {
		if early && grace == nil && everyShardLed(res, shards) {
			t := time.NewTimer(topologyGrace)
			defer t.Stop()
			grace = t.C
		}
		select {
		case t := <-answers:
			// A member of another cluster (one that reached this node's gossip before its
			// refusal, see membership) answers for its own shards: not merged in.
			if cid := t.GetSettings().GetClusterId(); t != nil && (cid == "" || cid == n.clusterID()) {
				res = append(res, t)
			}
		case <-grace:
			return res
		case <-ctx.Done():
			return res
		}
	}
	return res
}

// everyShardLed reports whether the views name a leader for each of the
// shards.
func everyShardLed(views []*shoalv1.TopologyResponse, shards uint32) bool {
	led := make([]bool, shards)
	left := shards
	for _, v := range views {
		for _, s := range v.Shards {
			if s.Shard < shards && s.LeaderId != 0 && !led[s.Shard] {
				led[s.Shard] = true
				left--
			}
		}
	}
	return left == 0
}

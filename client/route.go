package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/ring"
)

// fetchTimeout bounds one topology fetch from one node.
const fetchTimeout = 5 * time.Second

// minRefreshGap spaces background refreshes triggered by errors.
const minRefreshGap = 100 * time.Millisecond

// refreshHedgeAfter is how long a topology refresh waits for one node before
// it asks the next one as well: a node that hangs without breaking its
// connection would otherwise hold every refresh, and with it every leader
// watch, for fetchTimeout. (A node answers within about two seconds even while
// one of its peers hangs: it waits a second at most for the peer's view, and a
// request may first wait for the gather under way to end.)
const refreshHedgeAfter = 500 * time.Millisecond

// topology is the immutable routing view built from a TopologyResponse.
type topology struct {
	resp   *shoalv1.TopologyResponse
	shards uint32
	alive  []string // gRPC addresses of live nodes, by node ID, those stopping last
	// serving: how many of alive, from its start, are not stopping (NodeInfo.Stopping: a
	// node handing its leaderships off before it exits), which calls that any node may serve
	// prefer.
	serving int
	dead    []string          // gRPC addresses of the nodes it names dead
	leader  []string          // by shard: the leader's address, "" when unknown
	term    []uint64          // by shard: the term of leader (ShardInfo.Term)
	voters  [][]string        // by shard: addresses of live voters, those stopping last
	zone    map[string]string // gRPC address -> zone of the node there
	// fetched is when the request for resp was sent: resp describes the cluster as it
	// was at some moment after it, not necessarily after anything the client learnt
	// while the answer was on its way.
	fetched time.Time
}

// newTopology builds the view from resp, the answer to a request sent at fetched.
func newTopology(resp *shoalv1.TopologyResponse, fetched time.Time) (*topology, error) {
	shards := resp.GetSettings().GetShards()
	if shards == 0 {
		return nil, errors.New("client: the topology names no shards")
	}
	t := &topology{
		resp:    resp,
		shards:  shards,
		leader:  make([]string, shards),
		term:    make([]uint64, shards),
		voters:  make([][]string, shards),
		zone:    map[string]string{},
		fetched: fetched,
	}
	nodes := slices.Clone(resp.GetNodes())
	slices.SortFunc(nodes, func(a, b *shoalv1.NodeInfo) int { return cmp.Compare(a.GetId(), b.GetId()) })
	addr := make(map[uint64]string, len(nodes))
	alive := make(map[uint64]bool, len(nodes))
	for _, n := range nodes {
		if n.GetGrpcAddr() == "" {
			continue
		}
		addr[n.GetId()] = n.GetGrpcAddr()
		alive[n.GetId()] = n.GetAlive()
		if n.GetAlive() { // only live voters are candidates
			t.zone[n.GetGrpcAddr()] = n.GetZone()
		}
		if n.GetAlive() {
			t.alive = append(t.alive, n.GetGrpcAddr())
		} else {
			t.dead = append(t.dead, n.GetGrpcAddr())
		}
	}
	// An address both alive and dead (a node replaced by one with a new ID at the same
	// address) is alive.
	t.dead = slices.DeleteFunc(t.dead, func(a string) bool { return slices.Contains(t.alive, a) })
	stopping := map[string]bool{}
	for _, n := range nodes {
		if n.GetStopping() && n.GetAlive() {
			stopping[n.GetGrpcAddr()] = true
		}
	}
	moveLast(t.alive, stopping)
	t.serving = len(t.alive) - len(stopping)
	for _, s := range resp.GetShards() {
		if s.GetShard() >= shards {
			continue
		}
		if a, ok := addr[s.GetLeaderId()]; ok && alive[s.GetLeaderId()] {
			t.leader[s.GetShard()] = a
		}
		t.term[s.GetShard()] = s.GetTerm()
		for _, v := range s.GetVoters() {
			if a, ok := addr[v]; ok && alive[v] {
				t.voters[s.GetShard()] = append(t.voters[s.GetShard()], a)
			}
		}
	}
	for _, vs := range t.voters {
		moveLast(vs, stopping)
	}
	return t, nil
}

// fetchTopology asks n for the topology and installs it.
func (c *Client) fetchTopology(ctx context.Context, n *node) (*shoalv1.TopologyResponse, error) {
	t, err := c.askTopology(ctx, n, nil)
	if err != nil {
		return nil, err
	}
	c.install(t, n)
	return t.resp, nil
}

// askTopology asks n for the topology, without installing it, naming the suspects
// (leaderWatch.poll).
// A node of another cluster than the client dialled answers with a refusal (wrongCluster):
// the node itself, or, for a node of an earlier version, the client on reading the answer.
func (c *Client) askTopology(ctx context.Context, n *node, suspects []*shoalv1.SuspectLeader) (*topology, error) {
	sent := time.Now()
	resp, err := n.cluster.Topology(ctx, &shoalv1.TopologyRequest{Suspects: suspects})
	if err != nil {
		return nil, err
	}
	if want, got := c.dialledCluster(), resp.GetSettings().GetClusterId(); want != "" && got != "" && got != want {
		return nil, errWrongCluster(n, got, want)
	}
	return newTopology(resp, sent)
}

// dialledCluster returns the cluster ID of the first topology installed, "" before it (or
// from a node that names none).
func (c *Client) dialledCluster() string {
	if id := c.clusterID.Load(); id != nil {
		return *id
	}
	return ""
}

// install makes t, fetched from n, the client's topology. t may have been requested
// before what the client learnt since: a shard's leader of a higher term in the current
// view is kept (unless t names it dead), and so is a leader hint set after t was requested,
// or against t's leader at t's term (leaderHint.outdates). A view requested before the
// current one is not installed at all: Topology's fetch runs beside the refreshes, and its
// answer, arriving last, would otherwise take the members' liveness back to an older view.
func (c *Client) install(t *topology, n *node) {
	if id := t.resp.GetSettings().GetClusterId(); id != "" {
		c.clusterID.CompareAndSwap(nil, &id) // the cluster dialled: every call names it
		if id != c.dialledCluster() {
			return // checked by askTopology against an ID locked since: another cluster's
		}
	}
	c.installMu.Lock()
	defer c.installMu.Unlock()
	cur := c.topo.Load()
	if cur != nil && t.fetched.Before(cur.fetched) {
		return
	}
	if cur != nil && cur.shards == t.shards {
		for shard := range t.shards {
			if t.term[shard] < cur.term[shard] && !slices.Contains(t.dead, cur.leader[shard]) {
				t.leader[shard], t.term[shard] = cur.leader[shard], cur.term[shard]
			}
		}
	}
	c.topo.Store(t)
	c.installed()
	c.stats.refreshes.Add(1)
	c.mu.Lock()
	for shard, h := range c.mu.hints {
		if shard >= t.shards || h.outdates(t, shard) {
			delete(c.mu.hints, shard)
		}
	}
	c.mu.Unlock()
	c.forget(t)
	c.log.Debug("client: topology refreshed", "from", n.addr, "shards", t.shards, "alive", len(t.alive))
}

// refreshTopology makes one pass over the known nodes and seeds and installs
// the first topology one of them returns, asking avoid (a node suspected of
// hanging; "" for none) last. It asks one node at a time, moving on when one
// fails, and also when one has not answered within refreshHedgeAfter (the
// slow one may still answer first). Concurrent callers share a pass.
func (c *Client) refreshTopology(ctx context.Context, avoid string) error {
	before := c.topo.Load()
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	if t := c.topo.Load(); t != nil && t != before {
		return nil // someone refreshed while we waited
	}
	cands := c.anyCandidates(c.topo.Load())
	suspects := c.takeSuspects()
	if i := slices.Index(cands, avoid); i >= 0 {
		cands = append(slices.Delete(cands, i, i+1), avoid)
	}
	ctx, cancel := context.WithCancel(ctx)
	var fetches sync.WaitGroup
	defer fetches.Wait() // the slower fetches of a pass that succeeded, cancelled: none outlives the call
	defer cancel()
	type fetched struct {
		n   *node
		t   *topology
		err error
	}
	answers := make(chan fetched, len(cands))
	var (
		last     error = errNoNodes
		asking   int   // fetches under way
		hedge    = time.NewTimer(refreshHedgeAfter)
		hedgeDue <-chan time.Time // hedge's channel while a candidate is left to ask
	)
	defer hedge.Stop()
	// ask starts a fetch from the next candidate that admits one, and arms the hedge.
	ask := func() {
		for len(cands) > 0 {
			addr := cands[0]
			cands = cands[1:]
			n, err := c.node(addr)
			if err != nil {
				last = err
				continue
			}
			finish, err := n.admit()
			if err != nil {
				last = errAllBreakersOpen
				continue
			}
			if !n.hold() {
				finish(errExcluded) // dropped from the table since c.node: the next pass dials it again
				continue
			}
			asking++
			fetches.Go(func() {
				defer n.let()
				fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
				defer cancel()
				t, err := c.askTopology(fctx, n, suspects)
				finish(c.breakerOutcome(ctx, err))
				answers <- fetched{n, t, err}
			})
			hedge.Reset(refreshHedgeAfter)
			hedgeDue = hedge.C
			return
		}
		hedgeDue = nil
	}
	ask()
	for asking > 0 {
		select {
		case a := <-answers:
			asking--
			if a.err == nil {
				c.install(a.t, a.n)
				return nil
			}
			last = a.err
			ask()
		case <-hedgeDue:
			ask()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return last
}

// suspect notes that an attempt has waited in vain for leader as the shard's leader: the next
// topology request names it, and the nodes whose replicas are idle followers of that leader
// take it for gone sooner if it also missed their heartbeats (shoalv1.TopologyRequest).
func (c *Client) suspect(shard uint32, leader string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.suspects == nil {
		c.mu.suspects = map[uint32]string{}
	}
	c.mu.suspects[shard] = leader
}

// takeSuspects returns the suspects noted since the last call, and forgets them.
func (c *Client) takeSuspects() []*shoalv1.SuspectLeader {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*shoalv1.SuspectLeader
	for shard, addr := range c.mu.suspects {
		out = append(out, &shoalv1.SuspectLeader{Shard: shard, Addr: addr})
	}
	clear(c.mu.suspects)
	return out
}

// requestRefreshAvoiding asks for a refresh that asks addr last.
func (c *Client) requestRefreshAvoiding(addr string) {
	c.refreshAvoid.Store(&addr)
	c.requestRefresh()
}

// requestRefresh asks the background loop for a topology refresh soon.
func (c *Client) requestRefresh() {
	select {
	case c.refreshCh <- struct{}{}:
	default:
	}
}

func (c *Client) refreshLoop() {
	defer c.bg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.done
		cancel()
	}()
	tick := time.NewTicker(c.opts.topologyRefresh)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-tick.C:
		case <-c.refreshCh:
			if t := c.topo.Load(); t != nil {
				if wait := minRefreshGap - time.Since(t.fetched); wait > 0 {
					select {
					case <-c.done:
						return
					case <-time.After(wait):
					}
				}
			}
		}
		var avoid string
		if p := c.refreshAvoid.Swap(nil); p != nil {
			avoid = *p
		}
		if err := c.refreshTopology(ctx, avoid); err != nil && !c.closed() {
			c.log.Debug("client: topology refresh failed", "err", err)
		}
	}
}

// targetKind says how a call is routed.
type targetKind uint8

const (
	anyNode  targetKind = iota // cluster calls: any live node
	byStream                   // the leader of the stream's shard
	byShard                    // the leader of a given shard
	oneNode                    // the node at a given address, and no other
)

type target struct {
	kind   targetKind
	stream string // byStream
	shard  uint32 // byShard
	addr   string // oneNode
	stale  bool   // any replica of the shard may serve
	// idempotent: a second run of a call that did take effect answers as the first
	// did (appends, by event ID), or at least changes nothing (deletes expecting an
	// exact version). Only such calls are abandoned for a new leader while they wait
	// (watchLeader).
	idempotent bool
	// lostAnswerRetry: an idempotent write, whose attempt may have been applied when it
	// ends with INTERNAL, CANCELLED or UNKNOWN (lostAnswer), and which is repeated rather
	// than reported as failed (doc.go, "What a caller can rely on" 2). Reads take those
	// codes for verdicts, but for a stream reset on the way (streamReset), which they retry.
	lostAnswerRetry bool
	// once: a call that must not run again once it may have been applied (deletes
	// expecting any version or an existing stream): such a failure ends it with
	// ErrOutcomeUnknown.
	once bool
	// ownRefusal: a refusal (stream not found or deleted, wrong expected version) after an
	// attempt that may have been applied may be that attempt's own effect, and ends the call
	// with ErrOutcomeUnknown, as does the server's UNKNOWN (deletes).
	ownRefusal bool
	// repeatRefusable: a write whose repeat answers as its applied attempt did only while
	// no other write changed the stream (truncates): a refusal of its expected version or
	// its shard's format after an attempt that may have been applied says nothing of that
	// attempt, and ends the call with ErrOutcomeUnknown. Its lost answers are still repeated.
	repeatRefusable bool
}

// write reports whether the call writes (appends, deletes): when its retries or its context
// end after an attempt that may have been applied, it ends with ErrOutcomeUnknown.
func (t target) write() bool { return t.lostAnswerRetry || t.once }

// pick chooses the node for the next attempt, admits the attempt through
// its breaker and holds the node for it (node.hold; try lets it go). avoid is a node that just failed; it is tried last, after it
// only the nodes in refusers (nodes that refused this client as such in this
// call, run's nodeRefusal), so that every other candidate is tried first. The
// returned shard is meaningful for byStream and byShard targets, and so is
// leader: the node the client takes for the shard's leader (its first
// candidate), which n is not when that node is avoided or its breaker is open
// and the attempt goes through a node that forwards.
func (c *Client) pick(ctx context.Context, t target, avoid string, refusers map[string]bool) (n *node, finish func(error), shard uint32, leader string, err error) {
	topo := c.topo.Load()
	var cands []string
	switch t.kind {
	case anyNode:
		cands = c.anyCandidates(topo)
	case oneNode:
		cands = []string{t.addr}
	default:
		if topo == nil {
			if err := c.refreshTopology(ctx, ""); err != nil {
				return nil, nil, 0, "", err
			}
			topo = c.topo.Load()
		}
		shard = t.shard
		if t.kind == byStream {
			shard = ring.ShardOf(t.stream, topo.shards)
		}
		if shard >= topo.shards {
			return nil, nil, shard, "", &InvalidArgumentError{Field: "shard", Limit: fmt.Sprintf("less than %d", topo.shards),
				Reason: fmt.Sprintf("the cluster has no shard %d", shard)}
		}
		cands = c.shardCandidates(topo, shard, t.stale)
		if len(cands) > 0 {
			leader = cands[0]
		}
	}
	if i := slices.Index(cands, avoid); i >= 0 && len(cands) > 1 {
		cands = append(slices.Delete(cands, i, i+1), avoid)
	}
	moveLast(cands, refusers) // the others keep their order, avoid last among them
	err = errNoNodes
	var refused *node // the first candidate whose breaker refused the attempt
	for _, addr := range cands {
		nd, nerr := c.node(addr)
		if nerr != nil {
			if errors.Is(nerr, ErrClosed) {
				return nil, nil, shard, "", nerr
			}
			err = nerr
			continue
		}
		f, berr := nd.admit()
		if berr != nil {
			if (errors.Is(berr, gobreaker.ErrOpenState) || errors.Is(berr, gobreaker.ErrTooManyRequests)) && refused == nil {
				refused = nd
			}
			continue
		}
		if !nd.hold() {
			f(errExcluded) // dropped from the table since c.node: the next attempt dials it again
			continue
		}
		return nd, f, shard, leader, nil
	}
	if refused != nil && len(cands) > 1 {
		return nil, nil, shard, "", errAllBreakersOpen // retry.go keeps the failure that opened them
	}
	if refused != nil && refused.hold() {
		// The only candidate's breaker is open: a breaker steers calls to other nodes, and
		// there is none (in a one-node cluster, one blip would refuse every call for
		// OpenTimeout). The attempt goes to it, paced by the caller's backoff, and records
		// nothing. With several candidates, all refusing, the call waits as before.
		return refused, func(error) {}, shard, leader, nil
	}
	return nil, nil, shard, "", err
}

// anyCandidates lists live nodes (rotated, to spread cluster calls), then
// the seeds.
func (c *Client) anyCandidates(topo *topology) []string {
	var out []string
	if topo != nil && topo.serving > 0 {
		serving := topo.alive[:topo.serving]
		k := int(c.rr.Add(1) % uint64(len(serving)))
		out = append(out, serving[k:]...)
		out = append(out, serving[:k]...)
	}
	if topo != nil {
		out = append(out, topo.alive[topo.serving:]...) // stopping: last
	}
	return appendNew(out, c.seeds...)
}

// shardCandidates lists, in order of preference: the leader learnt from a
// not-leader answer, the topology's leader, the shard's other voters, every
// other live node (servers forward), then the seeds. Stale reads put the
// shard's voters first, shuffled, to spread load; those in the client's zone (WithZone) before
// the others.
func (c *Client) shardCandidates(topo *topology, shard uint32, stale bool) []string {
	var out []string
	if stale {
		vs := slices.Clone(topo.voters[shard])
		n := len(vs)
		for n > 0 && topo.stoppingAddr(vs[n-1]) {
			n-- // stopping voters (last) stay last
		}
		rand.Shuffle(n, func(i, j int) { vs[i], vs[j] = vs[j], vs[i] })
		if z := c.opts.zone; z != "" {
			away := map[string]bool{}
			for _, a := range vs[:n] {
				if topo.zone[a] != z {
					away[a] = true
				}
			}
			moveLast(vs[:n], away)
		}
		out = appendNew(out, vs...)
	}
	c.mu.Lock()
	hint := c.mu.hints[shard].addr
	c.mu.Unlock()
	if hint != "" {
		out = appendNew(out, hint)
	}
	if l := topo.leader[shard]; l != "" {
		out = appendNew(out, l)
	}
	out = appendNew(out, topo.voters[shard]...)
	out = appendNew(out, topo.alive...)
	return appendNew(out, c.seeds...)
}

// setHint notes addr as the shard's leader, named by from's not-leader answer.
func (c *Client) setHint(shard uint32, addr, from string) {
	var term uint64
	if t := c.topo.Load(); t != nil && shard < t.shards {
		term = t.term[shard]
	}
	c.mu.Lock()
	if !c.mu.closed {
		c.mu.hints[shard] = leaderHint{addr: addr, set: time.Now(), from: from, term: term}
	}
	c.mu.Unlock()
}

// leaderHint is a shard's leader learnt from a not-leader answer.
type leaderHint struct {
	addr string
	set  time.Time // when the answer arrived: a topology requested before may not know it
	// from is the node that answered, and term the shard's term in the client's topology
	// then. A topology that names from as the leader at term or before, even requested after
	// the answer, comes from a node that has not heard of the election yet (a leader that
	// stepped down leads again only in a later term): it does not undo the hint.
	from string
	term uint64
}

// outdates reports whether t, requested after the hint was set, knows the shard's leader
// better than the hint does.
func (h leaderHint) outdates(t *topology, shard uint32) bool {
	l := t.leader[shard]
	return l != "" && t.fetched.After(h.set) && !(l == h.from && t.term[shard] <= h.term)
}

func appendNew(dst []string, addrs ...string) []string {
	for _, a := range addrs {
		if a != "" && !slices.Contains(dst, a) {
			dst = append(dst, a)
		}
	}
	return dst
}

// stoppingAddr reports whether addr is the address of a live node that is stopping.
func (t *topology) stoppingAddr(addr string) bool {
	i := slices.Index(t.alive, addr)
	return i >= t.serving
}

// moveLast moves the addresses in last to the end of addrs, keeping the order within both parts.
func moveLast(addrs []string, last map[string]bool) {
	if len(last) == 0 {
		return
	}
	slices.SortStableFunc(addrs, func(a, b string) int {
		switch la, lb := last[a], last[b]; {
		case la == lb:
			return 0
		case lb:
			return -1
		}
		return 1
	})
}

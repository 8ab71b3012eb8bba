package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestPartialPartitionKeepsLeaders cuts one link only: between the node leading the most
// shards (A) and another node (B), both ways, while both still reach the third node (C) and
// the test's client reaches all three (the partition test's network; gossip is not cut, so
// placement moves nothing). Every leader still hears from a majority, and a follower cut off
// from its leader can ask only C for votes, which C, having heard from that leader within an
// election timeout, refuses (PreVote with CheckQuorum). So for as long as the cut lasts:
//
//   - no shard changes term, on any replica, nor leader;
//   - every shard keeps acknowledging appends;
//   - the follower across the cut gets nothing from its leader and falls behind (the cut is
//     real).
//
// After healing, the lagging replicas catch up to identical logs and every acknowledged event
// is there exactly once, in order.
func TestPartialPartitionKeepsLeaders(t *testing.T) {
	// Not parallel: it checks that no shard holds an election for seconds, which a machine
	// starved by other tests' clusters can cause (CheckQuorum on a leader whose ticks lag).
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	nw := newTestNet()
	c, _ := startFailoverCluster(t, func(i int, cfg *node.Config) { cfg.PeerDialer = nw.dialer(i) })
	const clientEP = 3 // the test client's endpoint, never cut
	for i, n := range c.Nodes {
		nw.register(n.Addr(), i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, c.Addrs(),
		client.WithRetry(client.RetryPolicy{MaxElapsed: 1500 * time.Millisecond, AttemptTimeout: time.Second}),
		client.WithDialOptions(grpc.WithContextDialer(nw.dialer(clientEP))))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	conns := map[string]*grpc.ClientConn{}
	for i := range c.Nodes {
		conns[fmt.Sprintf("n%d", i+1)] = c.Dial(t, i)
	}

	w := newShardWriter(fmt.Sprintf("partial-%d", seed%1000), rng)
	w.appendAll(t, ctx, cl, "before", 4)

	// A leads the most shards; B is the other node leading the most (the cut then has
	// leaders on both sides whenever the shards allow it).
	state := c.Shards()
	aID, _ := c.BusiestLeader()
	led := map[uint64]int{}
	for _, s := range state {
		led[s.Leader]++
	}
	a, b := c.Index(aID), -1
	for i, n := range c.Nodes {
		if i != a && (b < 0 || led[n.ID()] > led[c.Nodes[b].ID()]) {
			b = i
		}
	}
	bID := c.Nodes[b].ID()
	terms := map[uint32]uint64{}
	for sh, s := range state {
		g, _ := c.Nodes[c.Index(s.Leader)].Host().Group(sh)
		terms[sh] = g.Status().Term
	}
	for sh, n := range w.ackedPerShard() {
		waitReplicasEqual(t, uint32(sh), n, conns)
	}

	nw.cutLink(a, b)
	cutAt := time.Now()
	t.Logf("cut the link n%d (leads %d shards) <-> n%d (leads %d); leaders %v, terms %v",
		a+1, led[aID], b+1, led[bID], leadersOf(state), terms)

	// Eight election timeouts and more of appends on every shard: a follower cut off from
	// its leader campaigns (and is refused) every election timeout or two.
	var slowest time.Duration
	for rounds := 0; time.Since(cutAt) < 4*time.Second || rounds < 3; rounds++ {
		slowest = max(slowest, w.appendAll(t, ctx, cl, fmt.Sprintf("cut-%d", rounds), 2))
	}
	t.Logf("every shard acknowledged appends for %v across the cut; the slowest took %v",
		time.Since(cutAt).Round(time.Millisecond), slowest.Round(time.Millisecond))

	for sh, s := range c.Shards() {
		if was := state[sh].Leader; s.Leader != was {
			t.Errorf("shard %d: leader n%d -> n%d while only n%d <-> n%d was cut", sh, c.Index(was)+1, c.Index(s.Leader)+1, a+1, b+1)
		}
	}
	behind := 0
	for i, n := range c.Nodes {
		for _, g := range n.Groups() {
			st := g.Status()
			if st.Term != terms[st.Shard] {
				t.Errorf("shard %d: n%d's replica moved from term %d to %d while only n%d <-> n%d was cut",
					st.Shard, i+1, terms[st.Shard], st.Term, a+1, b+1)
			}
			leader := state[st.Shard].Leader
			if (i != a || leader != bID) && (i != b || leader != aID) {
				continue
			}
			lg, _ := c.Nodes[c.Index(leader)].Host().Group(st.Shard)
			if lst := lg.Status(); st.Applied >= lst.Applied {
				t.Errorf("shard %d: n%d, cut off from its leader n%d, applied %d, the leader %d: the cut did not hold",
					st.Shard, i+1, c.Index(leader)+1, st.Applied, lst.Applied)
			}
			behind++
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("no term or leader changed; %d replicas across the cut fell behind their leaders", behind)

	nw.heal()
	healed := time.Now()
	for sh, n := range w.ackedPerShard() {
		waitReplicasEqual(t, uint32(sh), n, conns)
	}
	t.Logf("replicas identical %v after healing", time.Since(healed).Round(time.Millisecond))
	w.appendAll(t, ctx, cl, "healed", 2)
	w.checkAcked(t, ctx, cl)
}

// leadersOf returns shard -> leader ID.
func leadersOf(state map[uint32]testnode.ShardState) map[uint32]uint64 {
	out := map[uint32]uint64{}
	for sh, s := range state {
		out[sh] = s.Leader
	}
	return out
}

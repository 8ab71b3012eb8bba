package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/clusterstatus"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestPlacementReplacesUnheardVoter cuts the raft links (not gossip) between the busiest
// leader L and a node X that votes in one of its shards, in a four-node cluster. Each of them
// still hears the other alive in gossip, so neither is dead; but in the shards one of them
// leads, the other is a voter raft cannot hear. After DeadAfter that voter is replaced on the
// fourth node, which is added and promoted before the unheard voter is removed: no shard ever
// has fewer than three voters. While the cut lasts the removed member is not added back (it
// does not answer its leader). Appends through the other nodes go on, and after the cut heals
// every shard returns to the ring's placement.
func TestPlacementReplacesUnheardVoter(t *testing.T) {
	t.Parallel()
	nw := newTestNet()
	regs := make([]*prometheus.Registry, 4)
	c := testnode.Start(t, 4, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			placementConfig(cfg)
			cfg.PeerDialer = nw.dialer(i)
			regs[i] = prometheus.NewRegistry()
			cfg.Registry = regs[i]
		}})
	for i, n := range c.Nodes {
		nw.register(n.Addr(), i)
	}
	waitPlaced(t, c, "initial placement", voters(3, 0))
	// Leaders balanced too: a balancing transfer during the cut would hand a shard to a leader
	// that does not know which member to keep out.
	testnode.WaitFor(t, placementWait, "preferred leaders", func() string {
		desired := c.Nodes[0].DesiredReplicas()
		return everyShard(c, func(s testnode.ShardState) string {
			if s.Leader != desired[s.Shard][0] {
				return fmt.Sprintf("%v: preferred leader %d", s, desired[s.Shard][0])
			}
			return ""
		})
	})

	lID, led := c.BusiestLeader()
	l := c.Index(lID)
	x := -1
	for _, sh := range led {
		for _, id := range c.Shards()[sh].Voters {
			if id != lID {
				x = c.Index(id)
			}
		}
	}
	xID := c.Nodes[x].ID()
	var others []int // neither cut end: the test appends and reads through them
	for i := range c.Nodes {
		if i != l && i != x {
			others = append(others, i)
		}
	}
	placementAppendRead(t, c, others[0], others[1], "unheard-before")

	// Every 20 ms until the end: the fewest voters any shard's leader showed, and the most
	// shards counted with an unheard voter.
	type seen struct {
		fewest  int
		unheard float64
	}
	sampled := make(chan seen, 1)
	stop := make(chan struct{})
	go func() {
		s := seen{fewest: 3}
		defer func() { sampled <- s }()
		for {
			for _, sh := range c.Shards() {
				s.fewest = min(s.fewest, len(sh.Voters))
			}
			for _, r := range regs { // not metricSum: it may not fail the test from this goroutine
				mfs, _ := r.Gather()
				for _, mf := range mfs {
					if mf.GetName() == "shoal_placement_unheard_voter_shards" {
						s.unheard = max(s.unheard, mf.GetMetric()[0].GetGauge().GetValue())
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	stopSampling := sync.OnceValue(func() seen {
		close(stop)
		return <-sampled
	})
	defer stopSampling()

	apart := func(s testnode.ShardState) string {
		switch {
		case s.Leader == lID && (slices.Contains(s.Voters, xID) || slices.Contains(s.Learners, xID)),
			s.Leader == xID && (slices.Contains(s.Voters, lID) || slices.Contains(s.Learners, lID)):
			return s.String() + ": its leader holds a member it cannot hear"
		case len(s.Voters) != 3 || len(s.Learners) > 0:
			return s.String() + ": want three voters and no learner"
		}
		return ""
	}
	start := time.Now()
	nw.isolate(l, []int{x})
	t.Logf("cut the raft links between n%d (leader of shards %v) and n%d", l+1, led, x+1)
	testnode.WaitFor(t, placementWait, "the unheard voters replaced", func() string { return everyShard(c, apart) })
	t.Logf("every shard led by n%d or n%d without the other after %v", l+1, x+1, time.Since(start).Round(time.Millisecond))
	placementAppendRead(t, c, others[1], others[0], "unheard-during")

	// While the cut lasts, the removed members stay out: at the end of their hold (DeadAfter)
	// they do not answer their leader, and are held out again.
	removes := metricSum(t, regs, "shoal_placement_steps_total", "remove")
	refused := metricSum(t, regs, "shoal_placement_step_failures_total", "add_learner")
	for end := time.Now().Add(3*placementDead + 2*time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if msg := everyShard(c, apart); msg != "" {
			t.Fatalf("during the cut, after the replacements: %s", msg)
		}
	}
	if n := metricSum(t, regs, "shoal_placement_steps_total", "remove"); n != removes {
		t.Errorf("%v removals while the cut lasted after the replacements, want none", n-removes)
	}
	if n := metricSum(t, regs, "shoal_placement_step_failures_total", "add_learner"); n == refused {
		t.Errorf("no member was refused its return while the cut lasted: the hold never ended, or the leader did not ask")
	}

	nw.heal()
	waitPlaced(t, c, "placement back on the ring after the heal", voters(3, 0))
	if s := stopSampling(); s.fewest < 3 || s.unheard == 0 {
		t.Errorf("fewest voters seen %d (want 3: a voter removed before its replacement voted), most unheard-voter shards %v (want some)",
			s.fewest, s.unheard)
	}
	placementAppendRead(t, c, l, x, "unheard-after")
	placementAppendRead(t, c, x, l, "unheard-after-2")
	testnode.WaitFor(t, placementWait, "no unheard voter left", func() string {
		if n := metricSum(t, regs, "shoal_placement_unheard_voter_shards", ""); n != 0 {
			return fmt.Sprintf("shoal_placement_unheard_voter_shards = %v", n)
		}
		return ""
	})
}

// TestTopologyNamesUnheardMember cuts the raft links (not gossip) between the busiest leader L
// and another node X of a three-node cluster, where X has no replacement: in the shards L
// leads, X stays a voter that raft does not hear while gossip holds it alive. L's topology
// names X unheard in them (ShardInfo.unheard), and cluster status calls them degraded, marks X
// there, and says why in a note (a reviewer's wiped node, restarted as a cluster of its own,
// showed alive and every shard ok). Once the cut heals, none is named.
func TestTopologyNamesUnheardMember(t *testing.T) {
	t.Parallel()
	nw := newTestNet()
	c := testnode.Start(t, 3, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			placementConfig(cfg)
			cfg.PeerDialer = nw.dialer(i)
		}})
	for i, n := range c.Nodes {
		nw.register(n.Addr(), i)
	}
	waitPlaced(t, c, "initial placement", voters(3, 0))
	lID, _ := c.BusiestLeader()
	l := c.Index(lID)
	x := (l + 1) % len(c.Nodes)
	xID, xName := c.Nodes[x].ID(), c.Nodes[x].Name()
	ctx, cancel := context.WithTimeout(context.Background(), 2*placementWait)
	defer cancel()

	nw.cutLink(l, x)
	var topo *shoalv1.TopologyResponse
	testnode.WaitFor(t, placementWait, fmt.Sprintf("n%d's shards naming n%d unheard", l+1, x+1), func() string {
		topo = c.Nodes[l].Topology(ctx)
		led := 0
		for _, sh := range topo.GetShards() {
			if sh.GetLeaderId() != lID {
				continue
			}
			led++
			if !slices.Equal(sh.GetUnheard(), []uint64{xID}) {
				return fmt.Sprintf("shard %d: unheard %v", sh.GetShard(), sh.GetUnheard())
			}
		}
		if led == 0 {
			return fmt.Sprintf("n%d leads no shard", l+1)
		}
		return ""
	})
	st := clusterstatus.New(&shoalv1.StatusResponse{NodeId: lID, Topology: topo})
	for _, sh := range st.Shards {
		if sh.Leader == c.Nodes[l].Name() && (sh.State != "degraded" || !slices.Equal(sh.Unheard, []string{xName})) {
			t.Errorf("shard %d: state %s, unheard %v; want degraded, %s unheard", sh.Shard, sh.State, sh.Unheard, xName)
		}
	}
	if !slices.ContainsFunc(st.Notes, func(n string) bool { return strings.Contains(n, "do not hear "+xName+" in raft") }) {
		t.Errorf("notes %q: want one on %s", st.Notes, xName)
	}

	nw.heal()
	testnode.WaitFor(t, placementWait, "no member unheard after the heal", func() string {
		for _, sh := range c.Nodes[l].Topology(ctx).GetShards() {
			if len(sh.GetUnheard()) > 0 {
				return fmt.Sprintf("shard %d: unheard %v", sh.GetShard(), sh.GetUnheard())
			}
		}
		return ""
	})
}

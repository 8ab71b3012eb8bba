package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/replica"
)

// Placement cluster tests: real gRPC on loopback, real Pebble in temp
// directories, short DeadAfter and placement interval.
const (
	placementShards   = 8
	placementDead     = 3 * time.Second
	placementInterval = 100 * time.Millisecond
	placementWait     = 25 * time.Second
)

func placementConfig(cfg *node.Config) {
	cfg.DeadAfter = placementDead
	cfg.PlacementInterval = placementInterval
	cfg.DisableHTTP = true
}

// startPlacementCluster starts n nodes in n zones; node 0 creates the
// cluster (every shard one voter on it). regs receives each node's registry.
func startPlacementCluster(t *testing.T, n int) (*testnode.Cluster, []*prometheus.Registry) {
	t.Helper()
	regs := make([]*prometheus.Registry, n)
	c := testnode.Start(t, n, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			placementConfig(cfg)
			regs[i] = prometheus.NewRegistry()
			cfg.Registry = regs[i]
		}})
	return c, regs
}

// waitPlaced waits until every shard has a running leader, no learners, and
// voters equal to the ring's target as the first running node computes it;
// check adds conditions per shard (return "" when fine).
func waitPlaced(t *testing.T, c *testnode.Cluster, what string, check func(s testnode.ShardState) string) {
	t.Helper()
	testnode.WaitFor(t, placementWait, what, func() string {
		var ref *node.Node
		for i, n := range c.Nodes {
			if c.Running(i) {
				ref = n
				break
			}
		}
		desired := ref.DesiredReplicas()
		return everyShard(c, func(s testnode.ShardState) string {
			switch {
			case len(s.Learners) > 0:
				return s.String() + ": learners left"
			case len(s.Inactive) > 0:
				return s.String() + ": inactive members"
			case int(s.Shard) >= len(desired) || !sameIDs(s.Voters, desired[s.Shard]):
				return fmt.Sprintf("%v: target %v", s, desired)
			}
			if check != nil {
				if msg := check(s); msg != "" {
					return s.String() + ": " + msg
				}
			}
			return ""
		})
	})
}

// waitInRing waits until the first running node's ring places a replica on nd, a node just
// added: until then that node's placement is the one before the join, and waitPlaced would be
// content with it.
func waitInRing(t *testing.T, c *testnode.Cluster, nd *node.Node) {
	t.Helper()
	testnode.WaitFor(t, placementWait, "the new node in the ring", func() string {
		for i, n := range c.Nodes {
			if !c.Running(i) {
				continue
			}
			for _, set := range n.DesiredReplicas() {
				if slices.Contains(set, nd.ID()) {
					return ""
				}
			}
			return "no shard wants the new node yet"
		}
		return "no running node"
	})
}

// everyShard returns the first complaint of check about a shard's state, or that a shard
// has no running leader; "" when every shard has one and check is content with all.
func everyShard(c *testnode.Cluster, check func(s testnode.ShardState) string) string {
	shards := c.Shards()
	for id := uint32(0); id < placementShards; id++ {
		s, ok := shards[id]
		if !ok {
			return fmt.Sprintf("shard %d has no running leader", id)
		}
		if msg := check(s); msg != "" {
			return msg
		}
	}
	return ""
}

func sameIDs(a, b []uint64) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// voters checks a shard has n voters, none of them the node gone (0: no such node).
func voters(n int, gone uint64) func(s testnode.ShardState) string {
	return func(s testnode.ShardState) string {
		switch {
		case len(s.Voters) != n:
			return fmt.Sprintf("%d voters, want %d", len(s.Voters), n)
		case gone != 0 && slices.Contains(s.Voters, gone):
			return fmt.Sprintf("node %d is still a voter", gone)
		}
		return ""
	}
}

// threeVotersInZones checks a shard has three voters in three zones.
func threeVotersInZones(c *testnode.Cluster) func(s testnode.ShardState) string {
	return func(s testnode.ShardState) string {
		if len(s.Voters) != 3 {
			return "not 3 voters"
		}
		zones := map[string]bool{}
		for _, id := range s.Voters {
			if i := c.Index(id); i >= 0 {
				zones[c.Nodes[i].Zone()] = true
			}
		}
		if len(zones) != 3 {
			return fmt.Sprintf("voters in zones %v", zones)
		}
		return ""
	}
}

// placementAppendRead appends two events to stream through node via (retrying while
// leadership settles), records them in the test's ledger, and reads back linearizably through
// node from every stream the test has written so far (checkWritten): a call after a fault
// also finds what the fault lost of the writes before it.
func placementAppendRead(t *testing.T, c *testnode.Cluster, via, from int, stream string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	evs := make([]*shoalv1.EventData, 2)
	for i := range evs {
		id := uuid.New()
		// Data unique to the event: an event read at another's place differs in it.
		evs[i] = &shoalv1.EventData{Id: id[:], Type: fmt.Sprintf("E%d", i), Data: fmt.Appendf(nil, "%s/%d", stream, i)}
	}
	w := shoalv1.NewStreamsClient(c.Dial(t, via))
	var res *shoalv1.AppendResponse
	for {
		// Same event IDs on every attempt: a retried append is idempotent.
		var err error
		if res, err = w.Append(ctx, &shoalv1.AppendRequest{Stream: stream, Events: evs}); err == nil {
			break
		}
		if st, _ := status.FromError(err); st.Code() != codes.Unavailable || ctx.Err() != nil {
			t.Fatalf("append %s via node %d: %v", stream, via+1, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ledgerOf(t).add(stream, res.FirstVersion, evs)
	checkWritten(t, c, from)
}

// gatherSeries returns every series of the metric name over the registries.
func gatherSeries(t testing.TB, regs []*prometheus.Registry, name string) []*dto.Metric {
	t.Helper()
	var out []*dto.Metric
	for _, r := range regs {
		mfs, err := r.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				out = append(out, mf.GetMetric()...)
			}
		}
	}
	return out
}

// metricSum adds a gauge or counter over the registries: every series, or those whose
// "kind" label is kind.
func metricSum(t testing.TB, regs []*prometheus.Registry, name, kind string) float64 {
	t.Helper()
	var sum float64
	for _, m := range gatherSeries(t, regs, name) {
		match := kind == ""
		for _, l := range m.GetLabel() {
			match = match || (l.GetName() == "kind" && l.GetValue() == kind)
		}
		if match {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

// histogramSum returns the sample sum and count of the histogram name over regs.
func histogramSum(t testing.TB, regs []*prometheus.Registry, name string) (sum float64, count uint64) {
	t.Helper()
	for _, m := range gatherSeries(t, regs, name) {
		sum += m.GetHistogram().GetSampleSum()
		count += m.GetHistogram().GetSampleCount()
	}
	return sum, count
}

// TestPlacementUpReplicates: shards created on the first node reach three
// voters, one per zone, as two more nodes join; leaders move to the ring's
// preferred replica.
func TestPlacementUpReplicates(t *testing.T) {
	t.Parallel()
	c, regs := startPlacementCluster(t, 3)
	waitPlaced(t, c, "up-replication", threeVotersInZones(c))
	testnode.WaitFor(t, placementWait, "leader balance", func() string {
		desired := c.Nodes[0].DesiredReplicas()
		for id, s := range c.Shards() {
			if s.Leader != desired[id][0] {
				return fmt.Sprintf("%v: preferred leader %d", s, desired[id][0])
			}
		}
		return ""
	})
	if got := metricSum(t, regs, "shoal_placement_steps_total", "promote"); got < 2*placementShards {
		t.Errorf("promote steps: %v, want >= %d", got, 2*placementShards)
	}
	testnode.WaitFor(t, placementWait, "under-replicated gauge", func() string {
		if got := metricSum(t, regs, "shoal_placement_under_replicated_shards", ""); got != 0 {
			return fmt.Sprintf("gauge %v", got)
		}
		return ""
	})
	for i := range 3 {
		placementAppendRead(t, c, i, (i+1)%3, fmt.Sprintf("up-%d", i))
	}
}

// TestPlacementSpreadsToNewNode: a fourth node joins and receives its share
// while every shard keeps three voters; what was written before the join is all
// there after it, in every voter's replica, the new node's included.
func TestPlacementSpreadsToNewNode(t *testing.T) {
	t.Parallel()
	c, _ := startPlacementCluster(t, 3)
	waitPlaced(t, c, "up-replication", threeVotersInZones(c))
	placementAppendRead(t, c, 0, 1, "before-join")
	n4 := c.Add(t, placementConfig)
	waitInRing(t, c, n4)
	waitPlaced(t, c, "spread to the new node", voters(3, 0))
	held := 0
	for _, s := range c.Shards() {
		if slices.Contains(s.Voters, n4.ID()) {
			held++
		}
	}
	if held == 0 {
		t.Fatalf("the new node holds no replica")
	}
	t.Logf("new node holds %d of %d shards", held, placementShards)
	checkWritten(t, c, 3)
	placementAppendRead(t, c, 3, 0, "after-join")
	placementAppendRead(t, c, 1, 3, "before-join-2")
	waitVotersEqual(t, runningNodes(c))
}

// TestPlacementReplacesDeadNode: a node closed for longer than DeadAfter is
// replaced; every shard returns to three voters without it, each holding what
// was written before the death.
func TestPlacementReplacesDeadNode(t *testing.T) {
	t.Parallel()
	c, regs := startPlacementCluster(t, 4)
	waitPlaced(t, c, "initial placement", voters(3, 0))
	victim := 2
	dead := c.Nodes[victim].ID()
	placementAppendRead(t, c, 0, 1, "before-death")
	start := time.Now()
	c.Stop(t, victim)
	// Until the replacement, the survivors' shoal_shard_dead_voters show the shards that lost
	// a voter (gossip holds it dead for DeadAfter first); after it, none.
	survivors := slices.Delete(slices.Clone(regs), victim, victim+1)
	sawDead := make(chan float64, 1)
	stopWatch := make(chan struct{})
	go func() {
		most := 0.0
		defer func() { sawDead <- most }()
		for {
			most = max(most, metricSum(t, survivors, "shoal_shard_dead_voters", ""))
			select {
			case <-stopWatch:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	waitPlaced(t, c, "replacement of the dead node", voters(3, dead))
	close(stopWatch)
	if most := <-sawDead; most == 0 {
		t.Errorf("shoal_shard_dead_voters never counted the dead node's voters")
	}
	if d := time.Since(start); d < placementDead {
		t.Errorf("replaced after %v, before DeadAfter %v", d, placementDead)
	}
	// Followers apply the last configuration change a little after their leader.
	testnode.WaitFor(t, placementWait, "no dead voters after the replacement", func() string {
		if got := metricSum(t, survivors, "shoal_shard_dead_voters", ""); got != 0 {
			return fmt.Sprintf("shoal_shard_dead_voters sum to %v, want 0", got)
		}
		return ""
	})
	checkWritten(t, c, 3)
	placementAppendRead(t, c, 3, 0, "after-death")
	placementAppendRead(t, c, 1, 3, "before-death-2")
	waitVotersEqual(t, runningNodes(c))
}

// TestPlacementDecommission drains the first node (which created every
// shard) to zero replicas while every shard keeps three voters; its local
// replicas are deleted. What was written before the drain, and before the
// recommission, is in every voter's replica after each.
func TestPlacementDecommission(t *testing.T) {
	t.Parallel()
	c, _ := startPlacementCluster(t, 4)
	waitPlaced(t, c, "initial placement", nil)
	placementAppendRead(t, c, 0, 2, "before-drain")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Through another node: the request is forwarded to n1.
	if _, err := shoalv1.NewClusterClient(c.Dial(t, 1)).Decommission(ctx, &shoalv1.DecommissionRequest{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, c, 0)
	checkWritten(t, c, 3)
	waitVotersEqual(t, runningNodes(c))
	placementAppendRead(t, c, 0, 3, "after-drain") // forwarded by the drained node
	placementAppendRead(t, c, 2, 1, "before-drain-2")

	// Recommissioned (through another node), n1 takes its share of the ring again, its new
	// replicas caught up by snapshot since it deleted its own.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := shoalv1.NewClusterClient(c.Dial(t, 2)).Recommission(ctx, &shoalv1.RecommissionRequest{Node: "n1"})
	if err != nil || !r.WasDecommissioning {
		t.Fatalf("recommission: %v, %v", r, err)
	}
	back := c.Nodes[0].ID()
	waitPlaced(t, c, "replicas back on the recommissioned node", nil)
	held := 0
	for _, s := range c.Shards() {
		if slices.Contains(s.Voters, back) {
			held++
		}
	}
	if held == 0 {
		t.Fatalf("n1 holds no replica after its recommission (ring %v)", c.Nodes[1].DesiredReplicas())
	}
	checkWritten(t, c, 0)
	placementAppendRead(t, c, 0, 3, "after-recommission")
	waitVotersEqual(t, runningNodes(c))
}

// TestPlacementDecommissionWaitsForReplacement: in a cluster of as many nodes as the
// replication factor, a decommissioned node gives up its leaderships but keeps its replicas,
// since removing them would leave every shard one failure from unavailable; once a fourth node
// joins, the drain completes, and every voter holds what was written before.
func TestPlacementDecommissionWaitsForReplacement(t *testing.T) {
	t.Parallel()
	c, regs := startPlacementCluster(t, 3)
	waitPlaced(t, c, "up-replication", threeVotersInZones(c))
	placementAppendRead(t, c, 0, 1, "before-decommission")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := shoalv1.NewClusterClient(c.Dial(t, 0)).Decommission(ctx, &shoalv1.DecommissionRequest{Node: "n3"}); err != nil {
		t.Fatal(err)
	}
	drained := c.Nodes[2].ID()
	keeps := func() string {
		return everyShard(c, func(s testnode.ShardState) string {
			switch {
			case s.Leader == drained:
				return s.String() + ": led by the decommissioning node"
			case len(s.Voters) != 3 || !slices.Contains(s.Voters, drained):
				return s.String() + ": not three voters with the decommissioning node"
			}
			return ""
		})
	}
	testnode.WaitFor(t, placementWait, "leaderships moved off the decommissioning node", keeps)
	// Twenty placement rounds later, every replica is still there.
	for range 20 {
		time.Sleep(placementInterval)
		if msg := keeps(); msg != "" && !strings.Contains(msg, "no running leader") {
			t.Fatalf("without a replacement: %s", msg)
		}
	}
	placementAppendRead(t, c, 2, 0, "while-decommissioning") // forwarded by the decommissioning node
	testnode.WaitFor(t, placementWait, "kept-extra gauge", func() string {
		if got := metricSum(t, regs, "shoal_placement_kept_extra_shards", ""); got != placementShards {
			return fmt.Sprintf("gauge %v, want %d", got, placementShards)
		}
		return ""
	})

	c.Add(t, placementConfig)
	waitDrained(t, c, 2)
	checkWritten(t, c, 3)
	placementAppendRead(t, c, 3, 1, "after-drain")
	waitVotersEqual(t, runningNodes(c))
	testnode.WaitFor(t, placementWait, "kept-extra gauge back to 0", func() string {
		if got := metricSum(t, regs, "shoal_placement_kept_extra_shards", ""); got != 0 {
			return fmt.Sprintf("gauge %v", got)
		}
		return ""
	})
}

// waitDrained waits until every shard has three voters without node i, and node i has deleted
// its replicas.
func waitDrained(t *testing.T, c *testnode.Cluster, i int) {
	t.Helper()
	drained := c.Nodes[i].ID()
	waitPlaced(t, c, "drain", func(s testnode.ShardState) string {
		if len(s.Voters) != 3 || slices.Contains(s.Voters, drained) {
			return "not 3 voters without the drained node"
		}
		return ""
	})
	testnode.WaitFor(t, placementWait, "local replicas deleted", func() string {
		if g := c.Nodes[i].Groups(); len(g) != 0 {
			return fmt.Sprintf("%d groups left on the drained node", len(g))
		}
		return ""
	})
}

// TestPlacementUnderReplicated: two nodes with replication 3 run every shard
// with two voters, and say so in the topology and the metrics.
func TestPlacementUnderReplicated(t *testing.T) {
	t.Parallel()
	c, regs := startPlacementCluster(t, 2)
	waitPlaced(t, c, "placement over two nodes", func(s testnode.ShardState) string {
		if len(s.Voters) != 2 {
			return "not 2 voters"
		}
		return ""
	})
	waitUnderReplicated(t, c, regs, 1, func(s *shoalv1.ShardInfo) bool { return !s.Unavailable && len(s.Voters) == 2 })
	placementAppendRead(t, c, 1, 0, "two-nodes")
}

// TestPlacementDropsOrphanedReplicas: a node that was down while every shard removed it never
// learns of those removals, as no leader sends it anything again. Back as a decommissioning
// node (so that the ring wants it in no shard and, with three other nodes to hold every
// shard's replicas, no leader adds it back), it deletes those replicas once they have heard
// from no leader for DeadAfter and the leaders' configurations leave it out; the three voters
// of every shard hold what was written before.
func TestPlacementDropsOrphanedReplicas(t *testing.T) {
	t.Parallel()
	c, _ := startPlacementCluster(t, 4)
	waitPlaced(t, c, "initial placement", voters(3, 0))
	placementAppendRead(t, c, 0, 1, "before-orphans")
	const victim = 2
	id := c.Nodes[victim].ID()
	held := len(c.Nodes[victim].Groups())
	c.Stop(t, victim)
	waitPlaced(t, c, "replacement of the dead node in every shard", voters(3, id))

	cfg := c.Configs[victim]
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "decommissioning"), []byte("decommissioning requested\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	back, reg := startAgain(t, cfg, "restarting the removed node")
	if n := len(back.Groups()); n != held {
		t.Fatalf("the restarted node reopened %d replicas, want the %d it held", n, held)
	}
	testnode.WaitFor(t, placementWait, "orphaned replicas deleted", func() string {
		if g := back.Groups(); len(g) != 0 {
			return fmt.Sprintf("%d replicas left", len(g))
		}
		return ""
	})
	if n := metricSum(t, []*prometheus.Registry{reg}, "shoal_placement_replicas_dropped_total", ""); n != float64(held) {
		t.Fatalf("dropped counter %v, want %d", n, held)
	}
	checkWritten(t, c, 1)
	placementAppendRead(t, c, 0, 1, "after-orphans")
	placementAppendRead(t, c, 1, 0, "after-orphans-2")
	waitVotersEqual(t, []*node.Node{c.Nodes[0], c.Nodes[1], c.Nodes[3], back})
}

// TestDropConfirmedSparesReaddedReplica: a node removed from a shard deletes its replica once
// the leader's view leaves it out, but a leader may add it back between the view and the
// deletion. The replica, no longer removed, has then answered the leader with its log's
// progress, and deleting that log would make the leader's next heartbeat panic raft on the
// node (again after every restart). The deletion must spare a replica that heard from a
// leader since the views were gathered.
func TestDropConfirmedSparesReaddedReplica(t *testing.T) {
	t.Parallel()
	const shard = 0
	c := testnode.Start(t, 2, testnode.Options{Shards: 1, Configure: func(_ int, cfg *node.Config) {
		cfg.PlacementInterval = -1 // every step by hand
	}})
	a, x := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var g *replica.Group
	testnode.WaitFor(t, 10*time.Second, "a leader of shard 0 on the first node", func() string {
		lg, ok := a.Host().Group(shard)
		if !ok || !lg.IsLeader() {
			return "not yet"
		}
		g = lg
		return ""
	})
	xStatus := func() (replicaStatus string, removed bool, applied uint64) {
		xg, ok := x.Host().Group(shard)
		if !ok {
			return "no replica", false, 0
		}
		st := xg.Status()
		return "", st.Removed, st.Applied
	}
	leaderApplied := func() uint64 {
		lg, _ := a.Host().Group(shard)
		return lg.Status().Applied
	}
	if err := g.AddLearner(ctx, x.ID()); err != nil {
		t.Fatal(err)
	}
	testnode.WaitFor(t, 10*time.Second, "the learner caught up", func() string {
		if why, _, applied := xStatus(); why != "" || applied < leaderApplied() {
			return fmt.Sprintf("%s applied %d of %d", why, applied, leaderApplied())
		}
		return ""
	})
	if err := g.RemoveMember(ctx, x.ID()); err != nil {
		t.Fatal(err)
	}
	testnode.WaitFor(t, 10*time.Second, "the replica applied its removal", func() string {
		if why, removed, _ := xStatus(); why != "" || !removed {
			return fmt.Sprintf("%s removed %v", why, removed)
		}
		return ""
	})

	since := time.Now()
	views := x.LeaderViews(ctx)
	if v := views[shard]; v == nil || slices.Contains(v.Learners, x.ID()) || slices.Contains(v.Voters, x.ID()) {
		t.Fatalf("leader view %v does not leave the removed node out", v)
	}
	if err := g.AddLearner(ctx, x.ID()); err != nil {
		t.Fatal(err)
	}
	testnode.WaitFor(t, 10*time.Second, "the replica added back", func() string {
		if why, removed, applied := xStatus(); why != "" || removed || applied < leaderApplied() {
			return fmt.Sprintf("%s removed %v applied %d of %d", why, removed, applied, leaderApplied())
		}
		return ""
	})
	x.DropConfirmed([]uint32{shard}, since, views, nil)
	if why, removed, _ := xStatus(); why != "" || removed {
		t.Fatalf("after the drop: %s removed %v; the replica added back was deleted", why, removed)
	}
	// The group goes on with it: another conf change commits and reaches it.
	if err := g.RemoveMember(ctx, x.ID()); err != nil {
		t.Fatal(err)
	}
	testnode.WaitFor(t, 10*time.Second, "the replica applied its second removal", func() string {
		if why, removed, _ := xStatus(); why != "" || !removed {
			return fmt.Sprintf("%s removed %v", why, removed)
		}
		return ""
	})

	// A leader view of a lower term than another member reports comes from a deposed leader,
	// which may not know of a later configuration holding the node: it deletes nothing.
	views = x.LeaderViews(ctx)
	x.DropConfirmed([]uint32{shard}, time.Now(), views, map[uint32]uint64{shard: views[shard].Term + 1})
	if why, _, _ := xStatus(); why != "" {
		t.Fatalf("the replica was deleted on a deposed leader's view (%s)", why)
	}
	x.DropConfirmed([]uint32{shard}, time.Now(), views, nil)
	if why, _, _ := xStatus(); why != "no replica" {
		t.Fatal("the removed replica was kept on its current leader's view")
	}
}

// TestRestartedNodeKeepsDownMember: a node that starts while a member is down never hears of
// that member in gossip, so its ring leaves the member out at once. It must not act on that:
// the member, down for much less than DeadAfter, keeps every seat it had while the restarted
// node's placement loop is younger than DeadAfter.
func TestRestartedNodeKeepsDownMember(t *testing.T) {
	t.Parallel()
	const n, down, restarted = 5, 4, 3
	c := testnode.Start(t, n, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(_ int, cfg *node.Config) {
			placementConfig(cfg)
			cfg.DeadAfter = 2 * time.Minute
		}})
	waitPlaced(t, c, "initial placement", threeVotersInZones(c))
	m := c.Nodes[down].ID()
	var before []uint32
	for id, s := range c.Shards() {
		if slices.Contains(s.Voters, m) {
			before = append(before, id)
		}
	}
	if len(before) == 0 {
		t.Fatal("the member to stop holds no seat")
	}
	c.Stop(t, down)
	c.Stop(t, restarted)
	back, _ := startAgain(t, c.Configs[restarted], fmt.Sprintf("restarting n%d", restarted+1))
	running := []*node.Node{back}
	for i, nd := range c.Nodes {
		if i != down && i != restarted {
			running = append(running, nd)
		}
	}
	// lost returns the shards, among those the member held, whose leader's configuration no
	// longer has it (a shard without a leader at the moment is not looked at).
	lost := func() (out []uint32) {
		for _, nd := range running {
			for _, g := range nd.Groups() {
				st := g.Status()
				if st.Leader == nd.ID() && !st.Removed && slices.Contains(before, st.Shard) && !slices.Contains(st.Voters, m) {
					out = append(out, st.Shard)
				}
			}
		}
		return out
	}
	for _, mem := range back.Members() {
		if mem.NodeID == m {
			t.Logf("the restarted node knows the down member (alive %v): gossip told it", mem.Alive)
		}
	}
	// Long enough for the restarted node to lead shards (leaders are balanced onto it) and for
	// many placement rounds to run.
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		if l := lost(); len(l) > 0 {
			t.Fatalf("the member down for %v (DeadAfter 2m) lost its seats in shards %v (it had %v)",
				(8*time.Second - time.Until(deadline)).Round(time.Millisecond), l, before)
		}
		time.Sleep(100 * time.Millisecond)
	}
	led := 0
	for _, g := range back.Groups() {
		if g.IsLeader() {
			led++
		}
	}
	t.Logf("the member kept its %d seats; the restarted node leads %d shards", len(before), led)
}

// TestPlacementFewerZones: three nodes in two zones with replication 3 place three voters per
// shard, but two share a zone: the cluster keeps working and says it is under-replicated, in
// the topology and the metrics.
func TestPlacementFewerZones(t *testing.T) {
	t.Parallel()
	regs := make([]*prometheus.Registry, 3)
	c := testnode.Start(t, 3, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			placementConfig(cfg)
			cfg.Zone = []string{"z1", "z2", "z2"}[i]
			regs[i] = prometheus.NewRegistry()
			cfg.Registry = regs[i]
		}})
	waitPlaced(t, c, "three voters per shard", func(s testnode.ShardState) string {
		if len(s.Voters) != 3 {
			return "not 3 voters"
		}
		return ""
	})
	waitUnderReplicated(t, c, regs, 0, func(s *shoalv1.ShardInfo) bool { return len(s.Voters) == 3 })
	placementAppendRead(t, c, 1, 0, "fewer-zones")
}

// waitUnderReplicated waits until the topology, asked of node via, flags every shard
// under-replicated and ok with it, and the placement gauge counts every shard. Retried: a
// balancing leadership transfer may be in flight.
func waitUnderReplicated(t *testing.T, c *testnode.Cluster, regs []*prometheus.Registry, via int, ok func(*shoalv1.ShardInfo) bool) {
	t.Helper()
	cc := shoalv1.NewClusterClient(c.Dial(t, via))
	testnode.WaitFor(t, 10*time.Second, "topology says under-replicated", func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		top, err := cc.Topology(ctx, &shoalv1.TopologyRequest{})
		if err != nil {
			return err.Error()
		}
		for _, s := range top.Shards {
			if !s.UnderReplicated || !ok(s) {
				return fmt.Sprintf("topology shard %v", s)
			}
		}
		return ""
	})
	testnode.WaitFor(t, placementWait, "under-replicated gauge", func() string {
		if got := metricSum(t, regs, "shoal_placement_under_replicated_shards", ""); got != placementShards {
			return fmt.Sprintf("gauge %v, want %d", got, placementShards)
		}
		return ""
	})
}

// startAgain starts a node from cfg, a stopped cluster member's configuration (perhaps
// changed), with a registry of its own, which it returns; the node is closed when the test
// ends. what names the start in the failure.
func startAgain(t *testing.T, cfg node.Config, what string) (*node.Node, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Cleanup(func() { n.Close() })
	return n, reg
}

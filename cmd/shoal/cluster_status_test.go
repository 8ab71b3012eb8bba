package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/clusterstatus"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// A shard with a voter on a dead node runs on the others, one failure from unavailable: it is
// degraded, not ok, in the table (the dead voter marked) and in the JSON (which names it).
func TestClusterStatusDeadVoterIsDegraded(t *testing.T) {
	st := &shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 2, Replication: 3},
		Nodes: []*shoalv1.NodeInfo{
			{Id: 1, Name: "n1", Alive: true}, {Id: 2, Name: "n2", Alive: true}, {Id: 3, Name: "n3", Alive: false},
			{Id: 4, Name: "n4", Alive: true},
		},
		// Shard 0 as its leader's view says it: three voters, so not under-replicated.
		Shards: []*shoalv1.ShardInfo{
			{Shard: 0, LeaderId: 1, Term: 2, Voters: []uint64{3, 1, 2}},
			{Shard: 1, LeaderId: 2, Term: 2, Voters: []uint64{1, 2, 4}},
		},
	}}
	s := clusterstatus.New(st)
	var out strings.Builder
	if err := writeTables(&out, s); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	if got := s.Shards[0]; got.State != "degraded" || !slices.Equal(got.DeadVoters, []string{"n3"}) {
		t.Errorf("shard 0 with voter n3 dead: state %q, dead voters %q; want degraded, [n3]", got.State, got.DeadVoters)
	}
	if got := s.Shards[1]; got.State != "ok" || len(got.DeadVoters) != 0 {
		t.Errorf("shard 1, every voter alive: state %q, dead voters %q; want ok", got.State, got.DeadVoters)
	}
	for _, want := range []string{"shards: 1 ok, 1 degraded, 0 under-replicated, 0 unavailable\n", "n1,n2,n3(dead)", "degraded"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"dead_voters":["n3"],"state":"degraded"`) {
		t.Errorf("JSON lacks the dead voter: %s", js)
	}
}

// A node that heard from only some of the alive nodes says so above the tables and in the
// JSON, and shows the shards it cannot speak for as unknown, not unavailable; an answer from a
// server that does not report whose views it merged shows no such line.
func TestClusterStatusPartialView(t *testing.T) {
	nodes := []*shoalv1.NodeInfo{{Id: 1, Name: "n1", Alive: true}, {Id: 2, Name: "n2", Alive: true}, {Id: 3, Name: "n3", Alive: true}}
	shards := func(unknown bool) []*shoalv1.ShardInfo {
		var out []*shoalv1.ShardInfo
		for i := range uint32(2) {
			out = append(out, &shoalv1.ShardInfo{Shard: i, Term: 3, Voters: []uint64{1, 2, 3}, Unavailable: true, Unknown: unknown})
		}
		return out
	}
	st := &shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 2, Replication: 3},
		Nodes:    nodes, Shards: shards(true), ViewsFrom: []uint64{1}, Unanswered: []uint64{2, 3},
	}}
	s := clusterstatus.New(st)
	var out strings.Builder
	if err := writeTables(&out, s); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	for _, want := range []string{
		"views of 1 of 3 nodes; n2, n3 did not answer: this view may be partial\n",
		"shards: 0 ok, 0 degraded, 0 under-replicated, 0 unavailable, 2 unknown\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	for _, sh := range s.Shards {
		if sh.State != "unknown" {
			t.Errorf("shard %d no answering node can speak for: state %q, want unknown", sh.Shard, sh.State)
		}
	}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"views_from":["n1"],"unanswered":["n2","n3"],"partial":true`, `"state":"unknown"`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("JSON lacks %s: %s", want, js)
		}
	}

	// An older server: no views reported, shards plainly unavailable.
	old := clusterstatus.New(&shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 2, Replication: 3}, Nodes: nodes, Shards: shards(false),
	}})
	out.Reset()
	if err := writeTables(&out, old); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "partial") || strings.Contains(out.String(), "unknown") || old.Partial {
		t.Errorf("an older server's answer read as partial:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "2 unavailable\n") {
		t.Errorf("an older server's leaderless shards not unavailable:\n%s", out.String())
	}
}

// TestSetReplicationCLI: `cluster set-replication` raises a two-node cluster's factor from 1 to
// 2, says that nothing changed when repeated, and notes that a factor of 3 leaves the shards
// under-replicated on two nodes. Both nodes follow, the one without a placement loop too.
func TestSetReplicationCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	c := testnode.Start(t, 2, testnode.Options{Shards: 2, Replication: 1, Configure: func(i int, cfg *node.Config) {
		cfg.Zone = fmt.Sprintf("z%d", i+1)
		if i == 1 {
			cfg.PlacementInterval = -1 // it follows a change as gossip brings it, not in placement rounds
		}
	}})
	server := c.Nodes[0].Addr()
	for _, tc := range []struct {
		r    string
		want []string
	}{
		{"2", []string{"replication factor set to 2 (change 1)"}},
		{"2", []string{"the replication factor is 2 already: nothing changed"}},
		{"3", []string{"replication factor set to 3 (change 2)",
			"note: the cluster has 2 nodes to hold replicas: its shards stay under-replicated (2 of 3) until more join"}},
	} {
		code, out, errOut := runCLI(t, nil, "", "cluster", "set-replication", tc.r, "--server", server)
		for _, w := range tc.want {
			if code != exitOK || !strings.Contains(out, w) {
				t.Fatalf("set-replication %s: exit %d\n%s%s\nwant %q", tc.r, code, out, errOut, w)
			}
		}
	}
	testnode.WaitFor(t, 20*time.Second, "both nodes at replication 3", func() string {
		for _, n := range c.Nodes {
			if r := n.Settings().Replication; r != 3 {
				return fmt.Sprintf("%s at %d", n.Name(), r)
			}
		}
		return ""
	})
	// The status names each node's factor as gossip carries it: 3 everywhere, once gossiped.
	testnode.WaitFor(t, 20*time.Second, "cluster status naming factor 3 on both nodes", func() string {
		code, out, errOut := runCLI(t, nil, "", "cluster", "status", "--json", "--server", server)
		var st clusterstatus.Status
		if code != exitOK || json.Unmarshal([]byte(out), &st) != nil {
			return fmt.Sprintf("exit %d\n%s%s", code, out, errOut)
		}
		for _, n := range st.Nodes {
			if n.Replication != 3 {
				return fmt.Sprintf("%s at %d; notes %q", n.Name, n.Replication, st.Notes)
			}
		}
		return ""
	})
}

// TestStaleReadsInZoneCLI: with $SHOAL_ZONE, `read --stale` is served by the replica in that zone
// (every read, with three replicas in three zones), whichever node --server names.
func TestStaleReadsInZoneCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	regs := make([]*prometheus.Registry, 3)
	c := testnode.Start(t, 3, testnode.Options{Shards: 1, Replication: 3, Configure: func(i int, cfg *node.Config) {
		cfg.Zone = fmt.Sprintf("z%d", i+1)
		regs[i] = prometheus.NewRegistry()
		cfg.Registry = regs[i]
	}})
	c.WaitFormed(t, 20*time.Second)
	server := c.Nodes[0].Addr()
	if code, out, errOut := runCLI(t, nil, "", "append", "zoned", "--type", "T", "--server", server); code != exitOK {
		t.Fatalf("append: exit %d\n%s%s", code, out, errOut)
	}
	reads := func(i int) float64 {
		mfs, err := regs[i].Gather()
		if err != nil {
			t.Fatal(err)
		}
		sum := 0.0
		for _, mf := range mfs {
			if mf.GetName() == "shoal_reads_total" {
				for _, m := range mf.GetMetric() {
					sum += m.GetCounter().GetValue()
				}
			}
		}
		return sum
	}
	// Every replica holds the event before the reads start: a stale read of a lagging one
	// would find no stream.
	testnode.WaitFor(t, 20*time.Second, "three voters", func() string {
		if s, ok := c.Shards()[0]; !ok || len(s.Voters) != 3 || len(s.Learners) > 0 {
			return fmt.Sprintf("shard 0: %+v", s)
		}
		return ""
	})
	before := []float64{reads(0), reads(1), reads(2)}
	const n = 5
	for range n {
		code, out, errOut := runCLI(t, map[string]string{"SHOAL_ZONE": "z2"}, "", "read", "zoned", "--stale", "--server", server)
		if code != exitOK || !strings.Contains(out, "T") {
			t.Fatalf("read --stale in zone z2: exit %d\n%s%s", code, out, errOut)
		}
	}
	if got := reads(1) - before[1]; got != n || reads(0) != before[0] || reads(2) != before[2] {
		t.Fatalf("reads served: z1 %v, z2 %v, z3 %v; want all %d by z2", reads(0)-before[0], got, reads(2)-before[2], n)
	}
}

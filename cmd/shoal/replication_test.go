package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/internal/clusterstatus"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

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

package client

import (
	"slices"
	"testing"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// A node that says it is stopping (handing its leaderships off before it exits) is asked last:
// by calls any node may serve, and among a shard's voters (stale reads, forwarding).
func TestStoppingNodeAskedLast(t *testing.T) {
	resp := &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: "c", Shards: 1, Replication: 3},
		Nodes: []*shoalv1.NodeInfo{
			{Id: 1, GrpcAddr: "n1", Alive: true, Stopping: true},
			{Id: 2, GrpcAddr: "n2", Alive: true},
			{Id: 3, GrpcAddr: "n3", Alive: true},
		},
		Shards: []*shoalv1.ShardInfo{{Shard: 0, LeaderId: 2, Voters: []uint64{1, 2, 3}}},
	}
	topo, err := newTopology(resp, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{seeds: []string{"seed"}}
	firsts := map[string]bool{}
	for range 10 {
		cands := c.anyCandidates(topo)
		if !slices.Equal(cands[2:], []string{"n1", "seed"}) {
			t.Fatalf("any-node candidates %v: want the stopping n1 after the other nodes", cands)
		}
		firsts[cands[0]] = true
	}
	if !firsts["n2"] || !firsts["n3"] {
		t.Fatalf("any-node calls start only at %v: the serving nodes take turns", firsts)
	}
	if vs := topo.voters[0]; vs[len(vs)-1] != "n1" {
		t.Fatalf("voters %v: want the stopping n1 last", vs)
	}
	for range 10 {
		if cands := c.shardCandidates(topo, 0, true); cands[2] != "n1" {
			t.Fatalf("stale read candidates %v: want the stopping n1 after the other voters", cands)
		}
	}
}

package main

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/clusterstatus"
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

// A wiped node that came back under its name is a new member beside its old ID: the table
// marks the old one dead, not both.
func TestClusterStatusSameNameVoters(t *testing.T) {
	st := &shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 1, Replication: 3},
		Nodes: []*shoalv1.NodeInfo{
			{Id: 1, Name: "n1", Alive: true}, {Id: 2, Name: "n2", Alive: true}, {Id: 3, Name: "n3", Alive: false},
			{Id: 5, Name: "n3", Alive: true},
		},
		Shards: []*shoalv1.ShardInfo{{Shard: 0, LeaderId: 1, Term: 2, Voters: []uint64{1, 2, 3, 5}}},
	}}
	var out strings.Builder
	if err := writeTables(&out, clusterstatus.New(st)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "n1,n2,n3(dead),n3 ") && !strings.Contains(out.String(), "n1,n2,n3,n3(dead) ") {
		t.Errorf("voters n3 (dead) and n3 (alive): want one marked dead\n%s", out.String())
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

// The node table gives each node's version and the shard table each shard's format, "-" where
// a node or a shard's leader does not say (an older version).
func TestClusterStatusVersionsAndFormats(t *testing.T) {
	st := &shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 2, Replication: 1},
		Nodes:    []*shoalv1.NodeInfo{{Id: 1, Name: "n1", Alive: true, Version: "v1.2.0"}, {Id: 2, Name: "n2", Alive: true}},
		Shards: []*shoalv1.ShardInfo{
			{Shard: 0, LeaderId: 1, Term: 2, Voters: []uint64{1}, Format: 7},
			{Shard: 1, LeaderId: 2, Term: 2, Voters: []uint64{2}},
		},
	}}
	var out strings.Builder
	if err := writeTables(&out, clusterstatus.New(st)); err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for line := range strings.Lines(out.String()) {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = f
		}
	}
	for _, c := range []struct {
		row  string
		col  int
		want string
	}{
		{"NODE", 8, "VERSION"}, {"n1", 8, "v1.2.0"}, {"n2", 8, "-"},
		{"SHARD", 5, "FORMAT"}, {"0", 5, "7"}, {"1", 5, "-"},
	} {
		if f := rows[c.row]; len(f) <= c.col || f[c.col] != c.want {
			t.Errorf("row %s: column %d is not %q:\n%s", c.row, c.col, c.want, out.String())
		}
	}
}

// A node whose disk is slow reads alive,disk-slow, with a note giving its syncs beside the
// fastest other node's, a SYNC column for every alive node, and --check exits 5; a dead one's
// last word is not shown.
func TestClusterStatusDiskSlow(t *testing.T) {
	st := &shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 1, Replication: 3},
		Nodes: []*shoalv1.NodeInfo{
			{Id: 1, Name: "n1", Alive: true, SyncMicros: 1_234},
			{Id: 2, Name: "n2", Alive: true, DiskSlow: true, SyncMicros: 198_400},
			{Id: 3, Name: "n3", Alive: true, SyncMicros: 2_500},
			{Id: 4, Name: "n4", DiskSlow: true, SyncMicros: 300_000}, // dead
		},
		Shards: []*shoalv1.ShardInfo{{Shard: 0, LeaderId: 1, Voters: []uint64{1, 2, 3}}},
	}}
	s := clusterstatus.New(st)
	var out strings.Builder
	if err := writeTables(&out, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"alive,disk-slow", "1.23ms", "198ms", "2.5ms",
		"note: n2's disk is slow (its syncs took 198ms on average over its last 10 s, the fastest other node's 1.23ms)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Count(out.String(), "disk-slow") != 1 || strings.Contains(out.String(), "300ms") {
		t.Errorf("the dead n4 is shown with a slow disk or its last sync:\n%s", out.String())
	}
	err := checkStatus(s)
	var ee *explainedError
	if !errors.As(err, &ee) || ee.code != exitDegraded || !strings.Contains(err.Error(), "1 node with a slow disk") {
		t.Errorf("--check with a slow disk: %v, want exit %d naming it", err, exitDegraded)
	}
}

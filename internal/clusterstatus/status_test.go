package clusterstatus

import (
	"fmt"
	"strings"
	"testing"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// Shards at different formats (a rolling upgrade) are explained under the node table.
func TestClusterStatusMixedFormats(t *testing.T) {
	status := func(formats ...uint64) *Status {
		var shards []*shoalv1.ShardInfo
		for i, f := range formats {
			shards = append(shards, &shoalv1.ShardInfo{Shard: uint32(i), LeaderId: 1, Voters: []uint64{1}, Format: f})
		}
		return New(&shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
			Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: uint32(len(formats)), Replication: 1},
			Nodes:    []*shoalv1.NodeInfo{{Id: 1, Name: "n1", Alive: true}}, Shards: shards}})
	}
	if notes := status(2, 2, 2).Notes; len(notes) != 0 {
		t.Errorf("one format, yet: %q", notes)
	}
	notes := status(0, 1, 2, 2).Notes
	if len(notes) != 1 || !strings.Contains(notes[0], "(2 at format 1, 2 at format 2)") ||
		!strings.Contains(notes[0], "raised to format 2 once every node holding it runs a version that applies it") {
		t.Errorf("mixed formats: %q", notes)
	}
}

// Alive nodes of different versions (a rolling upgrade) are named by version; a dead one's is
// not counted.
func TestClusterStatusMixedVersions(t *testing.T) {
	status := func(versions ...string) *Status {
		var nodes []*shoalv1.NodeInfo
		for i, v := range versions {
			n := &shoalv1.NodeInfo{Id: uint64(i + 1), Name: fmt.Sprintf("n%d", i+1), Version: v, Alive: true}
			if ver, ok := strings.CutSuffix(v, ":dead"); ok {
				n.Version, n.Alive = ver, false
			}
			nodes = append(nodes, n)
		}
		return New(&shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
			Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 1, Replication: 3}, Nodes: nodes}})
	}
	if notes := status("v2", "v2", "v1:dead").Notes; len(notes) != 0 {
		t.Errorf("one version alive, yet: %q", notes)
	}
	notes := status("v2", "v1", "v2").Notes
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "the nodes run 2 versions (v1 on n2; v2 on n1, n3): an upgrade under way") {
		t.Errorf("mixed versions: %q", notes)
	}
}

// Zone names that differ only in case are pointed out: placement takes them for two zones.
func TestClusterStatusZonesAlike(t *testing.T) {
	status := func(zones ...string) *Status {
		var nodes []*shoalv1.NodeInfo
		for i, z := range zones {
			n := &shoalv1.NodeInfo{Id: uint64(i + 1), Name: fmt.Sprintf("n%d", i+1), Zone: z, Alive: true}
			// "zone:dead" and "zone:decom" are a node placement no longer places replicas on.
			if zone, how, ok := strings.Cut(z, ":"); ok {
				n.Zone, n.Alive, n.Decommissioning = zone, how != "dead", how == "decom"
			}
			nodes = append(nodes, n)
		}
		return New(&shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
			Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 1, Replication: 3}, Nodes: nodes}})
	}
	if notes := status("z1", "z2", "z3", "z1").Notes; len(notes) != 0 {
		t.Errorf("distinct zones, yet: %q", notes)
	}
	// A node that was replaced, or is being drained, with another spelling: no note.
	if notes := status("z1", "z2", "z3", "Z1:dead", "Z2:decom").Notes; len(notes) != 0 {
		t.Errorf("a dead and a decommissioning node's spellings noted: %q", notes)
	}
	notes := status("z1", "Z1", "z2", "eu-A", "EU-a", "eu-a").Notes
	want := []string{
		`zones "EU-a", "eu-A" and "eu-a" differ only in case: placement takes them for 3 zones`,
		`zones "Z1" and "z1" differ only in case: placement takes them for 2 zones`,
	}
	if len(notes) != len(want) {
		t.Fatalf("notes %q, want %d", notes, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(notes[i], w) || !strings.Contains(notes[i], "one spelling of --zone") {
			t.Errorf("note %d: %q, want it to begin %q", i, notes[i], w)
		}
	}
}

// Live nodes that place shards by different replication factors (a change spreading) are
// pointed out; dead nodes and nodes that do not say are left out.
func TestClusterStatusReplicationSpread(t *testing.T) {
	status := func(nodes ...*shoalv1.NodeInfo) *Status {
		return New(&shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
			Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 0, Replication: 3}, Nodes: nodes}})
	}
	node := func(id uint64, r uint32, alive bool) *shoalv1.NodeInfo {
		return &shoalv1.NodeInfo{Id: id, Name: fmt.Sprintf("n%d", id), Alive: alive, Replication: r}
	}
	for _, same := range [][]*shoalv1.NodeInfo{
		{node(1, 3, true), node(2, 3, true), node(3, 3, true)},
		{node(1, 3, true), node(2, 5, false), node(3, 0, true)},
	} {
		if notes := status(same...).Notes; len(notes) != 0 {
			t.Errorf("one factor among live nodes, yet: %q", notes)
		}
	}
	notes := status(node(1, 3, true), node(2, 5, true), node(3, 3, true)).Notes
	if len(notes) != 1 || !strings.Contains(notes[0], "different replication factors (n1, n3 3; n2 5)") {
		t.Errorf("two factors: %q", notes)
	}
}

// A live node that said it is not ready is named with its reason; a dead one is not, nor is
// one that said nothing (ready, or a version that does not say).
func TestClusterStatusNotReady(t *testing.T) {
	s := New(&shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Replication: 3}, Nodes: []*shoalv1.NodeInfo{
			{Id: 1, Name: "n1", Alive: true},
			{Id: 2, Name: "n2", Alive: true, NotReady: "disk slow: sync of 000123.log took 6s"},
			{Id: 3, Name: "n3", Alive: false, NotReady: "stopping"},
		}}})
	if len(s.Notes) != 1 || s.Notes[0] != "n2 is not ready: disk slow: sync of 000123.log took 6s" || s.NotReadyNodes() != 1 {
		t.Fatalf("notes %q, %d not ready; want n2 named with its reason", s.Notes, s.NotReadyNodes())
	}
	if s.Nodes[1].NotReady == "" {
		t.Fatalf("n2's not_ready lost: %+v", s.Nodes[1])
	}
}

// A live node whose disk is below its --min-free-disk is named in a note (a shard most of
// whose voters are so refuses appends) and counted for --check; a dead one is not. The shards
// refusing appends are those a majority of whose voters are low, as the leader counts.
func TestClusterStatusDiskLow(t *testing.T) {
	s := New(&shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Replication: 3}, Nodes: []*shoalv1.NodeInfo{
			{Id: 1, Name: "n1", Alive: true},
			{Id: 2, Name: "n2", Alive: true, DiskLow: true},
			{Id: 3, Name: "n3", Alive: false, DiskLow: true},
			{Id: 4, Name: "n4", Alive: true, DiskLow: true},
			{Id: 5, Name: "n2", Alive: false}, // n2's old ID (a wiped node back as a new member)
		}, Shards: []*shoalv1.ShardInfo{
			{Shard: 0, LeaderId: 1, Voters: []uint64{1, 2, 3}}, // one of three low (n3 is dead)
			{Shard: 1, LeaderId: 1, Voters: []uint64{1, 2, 4}}, // two of three
			{Shard: 2, LeaderId: 1, Voters: []uint64{1, 2}},    // one of two: no majority has room
			{Shard: 3, LeaderId: 1, Voters: []uint64{1, 5}},    // none low: the old n2 is not the live one
		}}})
	want := "n2 has less free disk than its --min-free-disk: a shard most of whose voters are so refuses appends until space is freed (reads, deletes and truncations go on)"
	if len(s.Notes) < 2 || s.Notes[0] != want || s.DiskLowNodes() != 2 || !s.Nodes[1].DiskLow {
		t.Fatalf("notes %q, %d low; want n2 and n4 named", s.Notes, s.DiskLowNodes())
	}
	if got := s.AppendsRefused(); len(got) != 2 || !got[1] || !got[2] {
		t.Fatalf("shards refusing appends: %v, want 1 and 2", got)
	}
	if s.Shards[0].AppendsRefused || !s.Shards[1].AppendsRefused || !s.Shards[2].AppendsRefused || s.Shards[3].AppendsRefused {
		t.Fatalf("shards' appends_refused: %+v, want shards 1 and 2", s.Shards)
	}
}

// Shards whose voters do not number the factor are explained: too few nodes to hold them (a
// one-node cluster under the default factor of 3, as `make run` starts), or, after the factor
// was lowered, more voters than it while placement removes them (their state is ok).
func TestClusterStatusReplicaCounts(t *testing.T) {
	status := func(replication uint32, nodes int, voters ...[]uint64) *Status {
		var ns []*shoalv1.NodeInfo
		for i := range nodes {
			ns = append(ns, &shoalv1.NodeInfo{Id: uint64(i + 1), Name: fmt.Sprintf("n%d", i+1), Zone: fmt.Sprintf("z%d", i+1), Alive: true})
		}
		var shards []*shoalv1.ShardInfo
		for i, v := range voters {
			shards = append(shards, &shoalv1.ShardInfo{Shard: uint32(i), LeaderId: 1, Term: 1, Voters: v,
				UnderReplicated: len(v) < int(replication)})
		}
		return New(&shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
			Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: uint32(len(voters)), Replication: replication},
			Nodes:    ns, Shards: shards}})
	}
	if notes := status(3, 3, []uint64{1, 2, 3}, []uint64{1, 2, 3}).Notes; len(notes) != 0 {
		t.Errorf("fully replicated, yet: %q", notes)
	}
	notes := status(3, 1, []uint64{1}, []uint64{1}).Notes
	if len(notes) != 1 || notes[0] != "the cluster has 1 node to hold replicas: its shards stay under-replicated (1 of 3) until more join" {
		t.Errorf("one node, factor 3: %q", notes)
	}
	// A node down (not decommissioning): it may come back.
	down := status(3, 3, []uint64{1, 2}, []uint64{1, 2})
	down.Nodes[2].State = "dead"
	if notes := down.replicaCounts(); len(notes) != 1 || notes[0] != "the cluster has 2 nodes alive to hold replicas: its shards stay "+
		"under-replicated (2 of 3) until n3 comes back or more nodes join" {
		t.Errorf("a node down, factor 3: %q", notes)
	}
	// A live node decommissioning keeps its replicas, yet counts for none: the note says so.
	draining := status(3, 4, []uint64{1, 2}, []uint64{1, 2})
	draining.Nodes[2].Decommissioning = true
	draining.Nodes[3].State = "dead"
	if notes := draining.replicaCounts(); len(notes) != 1 || notes[0] != "the cluster has 2 nodes alive to hold replicas "+
		"(besides n3, decommissioning, which keeps the replicas no other node can take): its shards stay "+
		"under-replicated (2 of 3) until n4 comes back or more nodes join" {
		t.Errorf("a node down and one decommissioning, factor 3: %q", notes)
	}
	// Under-replicated while a node joins (the cluster has room): placement is on it, no note.
	if notes := status(3, 3, []uint64{1}, []uint64{1, 2, 3}).Notes; len(notes) != 0 {
		t.Errorf("room for the replicas, yet: %q", notes)
	}
	notes = status(2, 3, []uint64{1, 2, 3}, []uint64{1, 2}, []uint64{1, 2, 3}).Notes
	if len(notes) != 1 || notes[0] != "2 shards have more voters than the replication factor (2): their leaders remove one at a time (a factor lowered, or a replica moving)" {
		t.Errorf("factor lowered: %q", notes)
	}
}

// Draining the last node of a zone, with the other nodes in fewer zones than the factor, is
// pointed out while it holds replicas; a drain that keeps a zone for every replica is not.
func TestClusterStatusDrainZone(t *testing.T) {
	status := func(zones ...string) *Status {
		var nodes []*shoalv1.NodeInfo
		for i, z := range zones {
			n := &shoalv1.NodeInfo{Id: uint64(i + 1), Name: fmt.Sprintf("n%d", i+1), Zone: z, Alive: true}
			if zone, ok := strings.CutSuffix(z, ":decom"); ok {
				n.Zone, n.Decommissioning, n.Replicas = zone, true, 1
			}
			if zone, ok := strings.CutSuffix(z, ":dead"); ok {
				n.Zone, n.Alive = zone, false
			}
			nodes = append(nodes, n)
		}
		shard := &shoalv1.ShardInfo{Shard: 0, LeaderId: 1, Term: 1, Voters: []uint64{1, 2, 3}}
		return New(&shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
			Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 1, Replication: 3}, Nodes: nodes,
			Shards: []*shoalv1.ShardInfo{shard}}})
	}
	want := `n3 is the last of zone "z3" to hold replicas: once drained, the other nodes are in 2 zones (z1 and z2) ` +
		`for replication 3, so shards keep more than one replica in a zone`
	s := status("z1", "z2", "z3:decom", "z1")
	if note := s.DrainZone("n3"); !strings.HasPrefix(note, want) {
		t.Errorf("last node of z3 drained: %q, want it to begin %q", note, want)
	}
	if len(s.Notes) != 1 || !strings.HasPrefix(s.Notes[0], want) {
		t.Errorf("status notes %q, want the drain's zone note", s.Notes)
	}
	for _, c := range []struct {
		zones []string
		note  bool
	}{
		{[]string{"z1", "z2", "z3:decom", "z3"}, false},      // z3 keeps a node
		{[]string{"z1", "z2", "z3:decom", "z4"}, false},      // another zone takes its place
		{[]string{"z1", "z2", "z3:decom"}, false},            // the drain stalls (StalledDrains says so)
		{[]string{"", "", ":decom", ""}, false},              // no zones given
		{[]string{"z1", "z2", "z3:decom", "z1", "z2"}, true}, // four nodes, but in two zones
	} {
		if note := status(c.zones...).DrainZone("n3"); (note != "") != c.note {
			t.Errorf("%q: note %q, want one: %v", c.zones, note, c.note)
		}
	}
	if note := status("z1", "z2", "z3", "z1:decom").DrainZone("n4"); note != "" {
		t.Errorf("n4 drained, z1 keeps n1: %q", note)
	}
	// Two nodes of z3 drained at once: one note, naming both.
	two := status("z1", "z2", "z3:decom", "z1", "z3:decom")
	if len(two.Notes) != 1 || !strings.HasPrefix(two.Notes[0], `n3 and n5 are the last of zone "z3" to hold replicas`) {
		t.Errorf("two nodes of z3 drained: notes %q, want one naming both", two.Notes)
	}
	// A node of z3 down, not drained: it may come back.
	if note := status("z1", "z2", "z3:decom", "z1", "z3:dead").DrainZone("n3"); !strings.HasSuffix(note,
		"until n5 comes back or a node of another zone joins") {
		t.Errorf("n5 of z3 down: %q, want it to name n5 coming back", note)
	}
	// A node that holds nothing moves nothing.
	empty := status("z1", "z2", "z3:decom", "z1")
	empty.Nodes[2].Replicas = 0
	if note := empty.DrainZone("n3"); note != "" {
		t.Errorf("n3 holds no replica: %q", note)
	}
}

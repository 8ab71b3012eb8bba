package node

import (
	"bytes"
	"strings"
	"testing"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/clusterstatus"
)

// The overview marks a decommissioning node that holds no replica as drained, as cluster
// status does: the moment it may be stopped; and an alive node whose disk is slow.
func TestConsoleOverviewDrained(t *testing.T) {
	st := clusterstatus.New(&shoalv1.StatusResponse{NodeId: 1, Topology: &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: "c1", Shards: 1, Replication: 1},
		Nodes: []*shoalv1.NodeInfo{
			{Id: 1, Name: "n1", Alive: true, Replicas: 1},
			{Id: 2, Name: "n2", Alive: true, Decommissioning: true, Replicas: 1},
			{Id: 3, Name: "n3", Alive: true, Decommissioning: true},
			{Id: 4, Name: "n4", Decommissioning: true, Stopping: true}, // drained and stopped
			{Id: 5, Name: "n5", Alive: true, DiskSlow: true, SyncMicros: 200_000},
			{Id: 6, Name: "n6", DiskSlow: true}, // dead: its last word is not shown
		},
		Shards: []*shoalv1.ShardInfo{{Shard: 0, LeaderId: 1, Term: 1, Voters: []uint64{1}}},
	}})
	var buf bytes.Buffer
	if err := consolePages["overview"].ExecuteTemplate(&buf, "layout", consolePage{Title: "cluster", Body: consoleOverviewBody{Status: st}}); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	if strings.Count(page, `<span class="warn">decommissioning</span>`) != 1 || strings.Count(page, `<span class="ok">drained</span>`) != 2 ||
		strings.Contains(page, "stopping") {
		t.Errorf("want n2 decommissioning, n3 and n4 drained, none stopping:\n%s", page)
	}
	if strings.Count(page, `<span class="warn">disk slow</span>`) != 1 || !strings.Contains(page, "n5&#39;s disk is slow (its syncs took 200ms") {
		t.Errorf("want n5's disk slow, with the note, and not n6's:\n%s", page)
	}
}

package node

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/lockedbuf"
	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/replica"
)

func TestHandOffTargets(t *testing.T) {
	member := func(id uint64, alive, stopping, decom bool) membership.Member {
		return membership.Member{Meta: membership.Meta{NodeID: id, Stopping: stopping, Decommissioning: decom}, Alive: alive}
	}
	st := replica.Status{ID: 1, Voters: []uint64{1, 2, 3, 4, 5, 6, 7}, Learners: []uint64{8},
		Progress: map[uint64]replica.Progress{
			1: {Match: 100, RecentActive: true},
			2: {Match: 90, RecentActive: false},
			3: {Match: 80, RecentActive: true},
			4: {Match: 95, RecentActive: true},
			5: {Match: 100, RecentActive: true}, // stopping
			6: {Match: 100, RecentActive: true, Snapshotting: true},
			7: {Match: 95, RecentActive: true},
			8: {Match: 100, RecentActive: true, Learner: true},
		}}
	members := []membership.Member{
		member(1, true, true, false), member(2, true, false, false), member(3, true, false, false),
		member(4, true, false, false), member(5, true, true, false), member(6, true, false, false),
		member(7, true, false, false), member(8, true, false, false),
	}
	// Active before inactive, then furthest replicated, then lowest ID; never self, a stopping
	// member, one receiving a snapshot or a learner.
	if got, want := handOffTargets(st, members, nil), []uint64{4, 7, 3, 2}; !slices.Equal(got, want) {
		t.Fatalf("targets %v, want %v", got, want)
	}
	members[3] = member(4, false, false, false) // 4 dead in gossip
	members[6] = member(7, true, false, true)   // 7 decommissioning
	if got, want := handOffTargets(st, members, nil), []uint64{3, 2, 7}; !slices.Equal(got, want) {
		t.Fatalf("targets %v, want %v (a decommissioning voter last)", got, want)
	}
	members[2].DiskSlow = true // 3's disk is slow
	if got, want := handOffTargets(st, members, nil), []uint64{2, 3, 7}; !slices.Equal(got, want) {
		t.Fatalf("targets %v, want %v (a voter whose disk is slow after the others but a decommissioning one)", got, want)
	}
	members[2].DiskSlow = false
	// A voter gossip does not know (down since before this node started) is a target only if
	// raft heard from it lately.
	unknown := replica.Status{ID: 1, Voters: []uint64{1, 2, 3, 4},
		Progress: map[uint64]replica.Progress{
			1: {Match: 100, RecentActive: true},
			2: {Match: 90, RecentActive: true},
			3: {Match: 100, RecentActive: true}, // unknown to gossip, heard from
			4: {Match: 100},                     // unknown to gossip, not heard from
		}}
	if got, want := handOffTargets(unknown, members[:2], nil), []uint64{3, 2}; !slices.Equal(got, want) {
		t.Fatalf("targets %v, want %v", got, want)
	}
	if got := handOffTargets(replica.Status{ID: 1, Voters: []uint64{1}}, nil, nil); len(got) != 0 {
		t.Fatalf("a single voter has targets %v", got)
	}
}

// TestHandOffAloneLogsOnce: a node that is its shards' only voter (one node) hands nothing
// off: it says so in one line naming the shards, not one line per shard and round (a node
// of 32 shards logged 96), and looks no further.
func TestHandOffAloneLogsOnce(t *testing.T) {
	var logs lockedbuf.Buffer
	cfg := testConfig(t, t.TempDir()) // 4 shards, replication 1
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	n := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if moved, kept := n.HandOffLeaders(ctx); moved != 0 || kept != 4 {
		t.Fatalf("HandOffLeaders: moved %d, kept %d; want 0, 4", moved, kept)
	}
	if got := strings.Count(logs.String(), "not handed off"); got != 1 {
		t.Fatalf("%d lines say a leadership was not handed off, want 1:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "shards=\"[0 1 2 3]\"") {
		t.Fatalf("the line does not name the shards:\n%s", logs.String())
	}
}

package replica

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A follower whose disk lost writes it had synced and acknowledged comes back with a log that
// ends before its leader's match index for it. raft never sends those entries again, and the
// leader's heartbeats commit past the log (dropped: heartbeatPastLog), so the follower stayed
// behind for good. It now says so, and the leader hands off its leadership: the next leader
// probes the follower from scratch and brings it up with no new write to prompt it.
func TestFollowerThatLostSyncedWritesIsBroughtUp(t *testing.T) {
	fs3 := vfs.NewCrashableMem()
	o := clusterOpts{nodes: 3, fsFor: func(id uint64) vfs.FS {
		if id == 3 {
			return fs3
		}
		return vfs.NewMem()
	}}
	c := newCluster(t, o)
	c.openVoters(1)
	lead := c.leader(1)
	if lead.h.cfg.NodeID == 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := lead.TransferLeadership(ctx, 1); err != nil {
			t.Fatal(err)
		}
		lead = c.leader(1)
	}
	oldLeader := lead.h.cfg.NodeID
	var want []string
	var image *vfs.MemFS
	for i := range 30 {
		if i == 10 {
			c.converged(1, want, 1, 2, 3)
			image = fs3.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0}) // what node 3 syncs from here on is lost
		}
		v := fmt.Sprintf("v%02d", i)
		c.propose(1, v)
		want = append(want, v)
	}
	c.converged(1, want, 1, 2, 3) // node 3 synced and acknowledged all 30
	c.stopNode(3)
	c.start(3, image, o)
	c.open(3, 1, nil)
	if got := c.sm(3, 1).values(t); len(got) > 10 {
		t.Fatalf("node 3 restarted on its old image holds %d values, want at most 10", len(got))
	}
	eventually(t, 15*time.Second, func() error {
		if got := c.sm(3, 1).values(t); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("node 3 holds %d of %d values", len(got), len(want))
		}
		return nil
	})
	if g := c.leader(1); g.h.cfg.NodeID == oldLeader || g.h.cfg.NodeID == 3 {
		t.Errorf("node %d leads, want the voter that was neither the old leader (%d) nor the follower", g.h.cfg.NodeID, oldLeader)
	}
	if n := testutil.ToFloat64(c.nodes[oldLeader].host.metrics.LogLost); n == 0 {
		t.Error("the old leader counted no lost log")
	}
}

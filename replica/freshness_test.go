package replica

import (
	"fmt"
	"testing"
	"time"
)

// A follower whose loop was busy when its leader's last messages arrived is current as of their
// arrival, not as of when it got round to stepping them: cut off from the leader meanwhile, it
// would otherwise take itself for current while the leader commits more without it.
func TestSinceCurrentCountsFromArrival(t *testing.T) {
	const shard, stall = 2, time.Second
	c, follower, _, release := busyFollowerCutOff(t, shard)
	c.propose(shard, "c") // committed without the follower
	time.Sleep(stall)
	close(release)
	c.converged(shard, []string{"a", "b"}, follower)
	if since, ok := c.group(follower, shard).SinceCurrent(); !ok || since < stall {
		t.Fatalf("a follower cut off %v ago, whose loop then stepped what had arrived before: SinceCurrent = %v, %v; want >= %v",
			stall, since, ok, stall)
	}
}

// A leader's message that arrived before since but was stepped (and answered) after it, the
// follower's loop busy meanwhile, keeps RetireGroupIfQuiet from retiring the replica: its
// answer may reach a leader that re-added the node and takes the old log for the new member's.
func TestRetireCountsSteppingNotArrival(t *testing.T) {
	const shard = 2
	c, f, idx, release := busyFollowerCutOff(t, shard)
	time.Sleep(50 * time.Millisecond)
	since := time.Now()
	time.Sleep(50 * time.Millisecond)
	close(release)
	g := c.group(f, shard)
	eventually(t, 5*time.Second, func() error {
		var last uint64
		if err := c.nodes[f].host.call(noCancel, func() error { last = g.st.last; return nil }); err != nil {
			return err
		}
		if last < idx {
			return fmt.Errorf("follower's last index %d, want >= %d", last, idx)
		}
		return nil
	})
	retired, err := c.nodes[f].host.RetireGroupIfQuiet(shard, since)
	if err != nil {
		t.Fatal(err)
	}
	if retired {
		t.Fatal("retired a replica that stepped (and answered) a leader's append after since")
	}
}

// busyFollowerCutOff opens shard on three nodes, blocks a follower's loop (until release is
// closed), proposes "b" after "a", so that b's append (index idx) and commit index reach the
// busy follower's queue, and then cuts the follower off.
func busyFollowerCutOff(t *testing.T, shard uint32) (c *cluster, follower, idx uint64, release chan struct{}) {
	t.Helper()
	c = newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	c.propose(shard, "a")
	l := c.leader(shard)
	follower = c.others(l.h.cfg.NodeID)[0]
	c.converged(shard, []string{"a"}, follower)
	release = make(chan struct{})
	if err := c.nodes[follower].host.do(func() { <-release }); err != nil {
		t.Fatal(err)
	}
	idx = c.propose(shard, "b")
	time.Sleep(100 * time.Millisecond)
	c.net.isolate(follower, true)
	return c, follower, idx, release
}

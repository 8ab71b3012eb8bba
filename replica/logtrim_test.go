package replica

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/raft/v3/raftpb"
)

// proposeN proposes n values named prefix-i on shard and returns want with them appended.
func proposeN(c *cluster, shard uint32, prefix string, n int, want []string) []string {
	for i := range n {
		want = append(want, fmt.Sprintf("%s-%04d", prefix, i))
		c.propose(shard, want[len(want)-1])
	}
	return want
}

// TestLogTrimmedBehindCurrentFollowers: with every follower current, every replica drops its
// log down to a cushion of logCushion entries (in chunks of logTrimChunk), not
// LogRetainEntries (5,000) behind: the leader by its followers' progress, the followers by
// the truncation point the leader's appends carry.
func TestLogTrimmedBehindCurrentFollowers(t *testing.T) {
	const shard, n = 3, 900
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	want := proposeN(c, shard, "v", n, nil)
	c.converged(shard, want, 1, 2, 3)
	applied := uint64(n) // at least: the bootstrap configuration and the leader's empty entry come first
	eventually(t, 10*time.Second, func() error {
		for id := uint64(1); id <= 3; id++ {
			if tr := truncatedIndex(t, c.nodes[id].db, shard); tr+logCushion+3*logTrimChunk < applied {
				return fmt.Errorf("node %d: log truncated at %d after %d entries applied (cushion %d, chunk %d)",
					id, tr, applied, logCushion, logTrimChunk)
			}
		}
		return nil
	})
	for id := uint64(1); id <= 3; id++ {
		if tr := truncatedIndex(t, c.nodes[id].db, shard); tr+logCushion > applied+3 {
			t.Errorf("node %d: log truncated at %d, past the cushion of %d below %d applied", id, tr, logCushion, applied)
		}
	}
}

// TestLogKeptForFollowerBehind: while a follower is cut off, the leader keeps the entries it
// lacks and tells the other follower to keep them too; when the leader then stops, the other
// follower leads and the cut-off one, back, catches up from its log, not by snapshot. The old
// leader, restarted, catches up from the log as well.
func TestLogKeptForFollowerBehind(t *testing.T) {
	const shard = 4
	c := newCluster(t, clusterOpts{nodes: 3})
	c.openVoters(shard)
	want := proposeN(c, shard, "a", 50, nil)
	c.converged(shard, want, 1, 2, 3)
	lead := c.leader(shard).Status().ID
	others := c.others(lead)
	behind, next := others[0], others[1]

	c.net.isolate(behind, true)
	want = proposeN(c, shard, "b", 700, want)
	c.converged(shard, want, lead, next)
	c.stopNode(lead)
	c.net.isolate(behind, false)
	c.converged(shard, want, behind, next)
	if n := testutilCounter(c.nodes[next].host.metrics.SnapshotsSent); n != 0 {
		t.Fatalf("the new leader sent %v snapshots to a follower 700 entries behind: it dropped the entries its old leader kept for it", n)
	}

	want = proposeN(c, shard, "c", 300, want)
	c.start(lead, c.nodes[lead].fs, clusterOpts{})
	c.open(lead, shard, nil)
	c.converged(shard, want, 1, 2, 3)
	for _, id := range []uint64{behind, next} {
		if n := testutilCounter(c.nodes[id].host.metrics.SnapshotsSent); n != 0 {
			t.Fatalf("node %d sent %v snapshots to the restarted old leader 300 entries behind", id, n)
		}
	}
}

// snapshotUnderWay starts a three-node cluster (LogRetainEntries 50) whose follower behind fell
// further behind than the leader keeps, and returns once the leader streams it a snapshot,
// held at gate (close it to let the snapshot go), with 200 more entries proposed meanwhile:
// four times LogRetainEntries. want is what every replica must hold; sent counts the leader's
// snapshots.
func snapshotUnderWay(t *testing.T, shard uint32) (c *cluster, behind uint64, want []string, gate chan struct{}, sent prometheus.Counter) {
	t.Helper()
	c = newCluster(t, clusterOpts{nodes: 3, retain: 50})
	c.openVoters(shard)
	want = proposeN(c, shard, "a", 20, nil)
	c.converged(shard, want, 1, 2, 3)
	lead := c.leader(shard).Status().ID
	behind = c.others(lead)[0]

	c.net.isolate(behind, true)
	want = proposeN(c, shard, "b", 200, want) // past what the leader keeps for it
	gate = make(chan struct{})
	c.net.mu.Lock()
	c.net.snapGate = gate
	c.net.mu.Unlock()
	c.net.isolate(behind, false)
	sent = c.nodes[lead].host.metrics.SnapshotsSent
	eventually(t, 10*time.Second, func() error {
		if testutilCounter(sent) == 0 && c.leader(shard).Status().Progress[behind].Snapshotting {
			return nil
		}
		return fmt.Errorf("no snapshot under way to %d", behind)
	})
	want = proposeN(c, shard, "c", 200, want) // while it streams
	return c, behind, want, gate, sent
}

// TestLogKeptForSnapshotInFlight: entries after a snapshot being sent to a follower are kept
// past LogRetainEntries until the follower has it: a snapshot that took longer to stream and
// install than LogRetainEntries appends took found the entries after it dropped, and the
// follower needed another snapshot, and another, for as long as the load lasted.
func TestLogKeptForSnapshotInFlight(t *testing.T) {
	const shard = 2
	c, _, want, gate, sent := snapshotUnderWay(t, shard)
	c.net.mu.Lock()
	c.net.snapGate = nil
	c.net.mu.Unlock()
	close(gate)
	c.converged(shard, want, 1, 2, 3)
	if n := testutilCounter(sent); n != 1 {
		t.Fatalf("%v snapshots sent to the follower, want 1: the entries after the first were dropped while it streamed", n)
	}
}

// TestLogKeptForSnapshotReported: entries after a snapshot are kept too between the sender's
// report that the snapshot is in and the follower's answer to it. The report comes first (the
// answer waits for the follower's fsync of the snapshot's raft state), and raft then probes the
// follower from the snapshot's index with its match index still the old one: an apply of the
// leader in between trimmed the log past LogRetainEntries behind, so the answer found the
// entries after the snapshot gone and the follower needed a second snapshot, and under load a
// third. The follower's answers are held here until the leader has applied a few hundred more
// entries.
func TestLogKeptForSnapshotReported(t *testing.T) {
	const shard = 2
	c, behind, want, gate, sent := snapshotUnderWay(t, shard)
	// The follower's answers are late: the leader hears of the install from the report only.
	c.net.mu.Lock()
	c.net.snapGate = nil
	c.net.drop = func(from uint64, _ *pb.Message) bool { return from == behind }
	c.net.mu.Unlock()
	close(gate)
	eventually(t, 10*time.Second, func() error {
		if testutilCounter(sent) == 1 && !c.leader(shard).Status().Progress[behind].Snapshotting {
			return nil
		}
		return fmt.Errorf("the snapshot to %d is not reported yet", behind)
	})
	want = proposeN(c, shard, "d", 200, want)
	c.net.mu.Lock()
	c.net.drop = nil
	c.net.mu.Unlock()
	c.converged(shard, want, 1, 2, 3)
	if n := testutilCounter(sent); n != 1 {
		t.Fatalf("%v snapshots sent to the follower, want 1: the entries after the first were dropped between its report and the follower's answer", n)
	}
}

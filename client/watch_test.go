package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// A topology requested before an attempt started, and answered while it waits, may
// describe the cluster from before the not-leader answer the attempt followed: the
// leader watch must not take it for news and abandon the attempt on the real leader.
func TestOlderTopologyDoesNotAbandonAttemptOnNewLeader(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	n1, n2 := fc.nodes[0], fc.nodes[1]
	// Topology requests: the first one in flight is slow to answer (a node gathering its
	// peers' views), and answers with the view from before the move (leader node 1).
	var armed atomic.Bool
	entered := make(chan struct{})
	release := make(chan struct{})
	topoFault := func(m string) {
		if m != "Topology" {
			return
		}
		if armed.CompareAndSwap(true, false) {
			close(entered)
			<-release
			return
		}
		time.Sleep(400 * time.Millisecond) // later fetches: slow too; they see the new leader
	}
	// The leader moved to node 2; node 1 says so. Node 2 is slow (still the leader).
	n1.setFault(func(_ context.Context, m string, _ int) error {
		if m == "Append" {
			return notLeader(n2)
		}
		topoFault(m)
		return nil
	})
	n2.setFault(func(_ context.Context, m string, _ int) error {
		if m == "Append" {
			time.Sleep(time.Second)
			return nil
		}
		topoFault(m)
		return nil
	})
	armed.Store(true)
	c.requestRefresh() // a periodic or error-triggered refresh, sent now
	<-entered

	done := make(chan error, 1)
	go func() {
		_, err := c.Append(testCtx(t), "s", Any, Event{Type: "A"})
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // the append went to node 2 on node 1's not-leader answer
	close(release)                     // the older view (leader node 1) arrives now
	time.Sleep(50 * time.Millisecond)
	fc.setLeader(2) // every later topology names node 2
	if err := <-done; err != nil {
		t.Fatalf("append: %v", err)
	}
	if st := c.Stats(); st.LeaderMoves != 0 || n2.count("Append") != 1 {
		t.Fatalf("an attempt on the real leader was abandoned on a topology requested before it started: stats %+v, %d appends sent to node 2",
			st, n2.count("Append"))
	}
}

// install keeps what it knows to be newer than the view it installs: a shard's leader
// of a higher term, and a leader hint learnt after the view was requested.
func TestInstallKeepsNewerLeaders(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	c := dial(t, fc)
	view := func(leaders, terms [2]uint64, fetched time.Time) *topology {
		t.Helper()
		resp := &shoalv1.TopologyResponse{
			Settings: &shoalv1.ClusterSettings{Shards: 2},
			Nodes: []*shoalv1.NodeInfo{
				{Id: 1, GrpcAddr: fc.nodes[0].addr, Alive: true},
				{Id: 2, GrpcAddr: fc.nodes[1].addr, Alive: true},
			},
			Shards: []*shoalv1.ShardInfo{
				{Shard: 0, LeaderId: leaders[0], Term: terms[0], Voters: []uint64{1, 2}},
				{Shard: 1, LeaderId: leaders[1], Term: terms[1], Voters: []uint64{1, 2}},
			},
		}
		topo, err := newTopology(resp, fetched)
		if err != nil {
			t.Fatal(err)
		}
		return topo
	}
	n1, err := c.node(fc.nodes[0].addr)
	if err != nil {
		t.Fatal(err)
	}
	c.install(view([2]uint64{2, 2}, [2]uint64{5, 5}, time.Now()), n1)
	requested := time.Now()
	c.setHint(1, fc.nodes[0].addr, "") // a not-leader answer after the next view was requested
	c.install(view([2]uint64{1, 2}, [2]uint64{4, 5}, requested), n1)
	got := c.topo.Load()
	if got.leader[0] != fc.nodes[1].addr {
		t.Errorf("shard 0 leader = %q after a view of a lower term, want %q", got.leader[0], fc.nodes[1].addr)
	}
	if cands := c.shardCandidates(got, 1, false); cands[0] != fc.nodes[0].addr {
		t.Errorf("shard 1 candidates = %v: the hint learnt after the view was requested was dropped", cands)
	}
	c.install(view([2]uint64{1, 2}, [2]uint64{6, 5}, time.Now()), n1)
	if got := c.topo.Load(); got.leader[0] != fc.nodes[0].addr {
		t.Errorf("shard 0 leader = %q after a view of a higher term, want %q", got.leader[0], fc.nodes[0].addr)
	}
	// A view requested before the current one (Topology's fetch answered after a refresh
	// requested later) is not installed: it would take the members' liveness back.
	cur := c.topo.Load()
	c.install(view([2]uint64{1, 2}, [2]uint64{7, 7}, requested), n1)
	if got := c.topo.Load(); got != cur {
		t.Errorf("a view requested before the current one was installed: terms %v, want %v", got.term, cur.term)
	}
}

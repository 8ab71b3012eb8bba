package node_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/ring"
)

// TestLeaderChangeMidReplacement: a shard's leader adds a learner to replace a dead voter
// and loses its leadership before the learner caught up (here the learner cannot: the link
// between the two is cut, in the partition test's network). The new leader takes the
// replacement over with nothing handed to it but the group's configuration: the learner
// catches up from it, becomes a voter, the dead member is removed, and nothing acknowledged is
// lost. Four nodes, replication 3, DeadAfter 3 s.
func TestLeaderChangeMidReplacement(t *testing.T) {
	t.Parallel()
	nw := newTestNet()
	c := testnode.Start(t, 4, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			placementConfig(cfg)
			cfg.PeerDialer = nw.dialer(i)
		}})
	const clientEP = 4
	for i, n := range c.Nodes {
		nw.register(n.Addr(), i)
	}
	waitPlaced(t, c, "initial placement", voters(3, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, c.Addrs(), client.WithDialOptions(grpc.WithContextDialer(nw.dialer(clientEP))))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	// A shard led by l, with voters b and d besides, and n the fourth node; d dies. The shard
	// is one whose ring without d keeps l first (so l stays its leader: placement would
	// otherwise hand the leadership to the new first replica, which could reach n) and puts
	// the replica on n, the only node left.
	var sh uint32
	var l, b, d int
	testnode.WaitFor(t, placementWait, "a shard led by its preferred leader, which stays first without one of its voters", func() string {
		var ok bool
		if sh, l, b, d, ok = pickHandoverShard(c); !ok {
			return fmt.Sprint(c.Shards())
		}
		return ""
	})
	n := 0 + 1 + 2 + 3 - l - b - d
	lID, bID, dID, nID := c.Nodes[l].ID(), c.Nodes[b].ID(), c.Nodes[d].ID(), c.Nodes[n].ID()
	t.Logf("shard %d: leader n%d, voters n%d and n%d; n%d dies, n%d replaces it, cut off from n%d", sh, l+1, b+1, d+1, d+1, n+1, l+1)

	stream := ""
	for i := 0; stream == ""; i++ {
		if name := fmt.Sprintf("handover-%d", i); ring.ShardOf(name, placementShards) == sh {
			stream = name
		}
	}
	var acked []uuid.UUID
	appendSome := func(round string, k int) {
		t.Helper()
		for i := range k {
			ev := client.Event{ID: uuid.New(), Type: "Handover", Data: fmt.Appendf(nil, "%s-%d", round, i)}
			if _, _, err := appendResolved(ctx, cl, stream, client.Any, []client.Event{ev}); err != nil {
				t.Fatalf("%s: append %d: %v", round, i, err)
			}
			acked = append(acked, ev.ID)
		}
	}
	appendSome("before", 20)

	nw.cutLink(l, n)
	c.Stop(t, d)
	lg, _ := c.Nodes[l].Host().Group(sh)
	testnode.WaitFor(t, placementDead+placementWait, fmt.Sprintf("n%d added as a learner of shard %d", n+1, sh), func() string {
		if st := lg.Status(); !slices.Contains(st.Learners, nID) {
			return fmt.Sprintf("voters %v, learners %v", st.Voters, st.Learners)
		}
		return ""
	})
	if !lg.IsLeader() {
		t.Fatalf("shard %d: n%d no longer leads once n%d is a learner (%v)", sh, l+1, n+1, lg.Status())
	}
	ng, ok := c.Nodes[n].Host().Group(sh)
	if lst := lg.Status(); ok && ng.Status().Applied >= lst.Applied {
		t.Fatalf("the learner on n%d applied %d, the leader %d: it caught up across the cut", n+1, ng.Status().Applied, lst.Applied)
	}
	// Raft gives a transfer up after an election timeout, which a loaded machine can spend
	// before the target has campaigned: l still leads then, and tries again.
	tctx, tcancel := context.WithTimeout(ctx, 20*time.Second)
	for err = lg.TransferLeadership(tctx, bID); errors.Is(err, replica.ErrTransferAborted); err = lg.TransferLeadership(tctx, bID) {
		t.Logf("transfer shard %d's leadership n%d -> n%d: %v; again", sh, l+1, b+1, err)
	}
	tcancel()
	if err != nil {
		t.Fatalf("transfer shard %d's leadership n%d -> n%d: %v", sh, l+1, b+1, err)
	}
	t.Logf("shard %d: n%d leads, with n%d a learner that has not caught up", sh, b+1, n+1)
	handed := time.Now()
	appendSome("handed-over", 20)

	testnode.WaitFor(t, placementWait, fmt.Sprintf("shard %d: n%d a voter in place of n%d", sh, n+1, d+1), func() string {
		s, ok := c.Shards()[sh]
		switch {
		case !ok:
			return "no running leader"
		case len(s.Learners) > 0 || !sameIDs(s.Voters, []uint64{lID, bID, nID}):
			return s.String()
		}
		return ""
	})
	t.Logf("shard %d: n%d a voter in place of n%d %v after the handover", sh, n+1, d+1, time.Since(handed).Round(time.Millisecond))
	appendSome("replaced", 5)

	nw.heal()
	waitPlaced(t, c, "every shard replaced after healing", voters(3, dID))
	conns := map[string]*grpc.ClientConn{}
	for _, i := range []int{l, b, n} {
		conns[fmt.Sprintf("n%d", i+1)] = c.Dial(t, i)
	}
	log := waitReplicasEqual(t, sh, len(acked), conns)
	var got []uuid.UUID
	for _, ev := range log {
		id, _ := uuid.FromBytes(ev.Id)
		got = append(got, id)
	}
	if !slices.Equal(got, acked) {
		t.Fatalf("shard %d holds %d events, %d acknowledged; first difference at %d", sh, len(got), len(acked), firstDiff(got, acked))
	}
}

// pickHandoverShard returns a shard and the indexes of its leader l and its other voters b and
// d such that l is the shard's first replica on the ring over every node (else leader
// balancing could move the leadership to the first replica, and d's stop hand it to b) and on
// the ring over the nodes without d. ok is false when no shard is so placed yet.
func pickHandoverShard(c *testnode.Cluster) (sh uint32, l, b, d int, ok bool) {
	first := func(without uint64, shard uint32) uint64 {
		var rm []ring.Member
		for _, nd := range c.Nodes {
			if nd.ID() != without {
				rm = append(rm, ring.Member{ID: nd.ID(), Zone: nd.Zone()})
			}
		}
		return ring.New(rm).Assign(placementShards, 3)[shard][0]
	}
	shards := c.Shards()
	for id := range uint32(placementShards) {
		s, ok := shards[id]
		if !ok || len(s.Voters) != 3 || first(0, id) != s.Leader {
			continue
		}
		for _, dead := range s.Voters {
			if dead != s.Leader && first(dead, id) == s.Leader {
				other := s.Voters[0] + s.Voters[1] + s.Voters[2] - s.Leader - dead
				return id, c.Index(s.Leader), c.Index(other), c.Index(dead), true
			}
		}
	}
	return 0, 0, 0, 0, false
}

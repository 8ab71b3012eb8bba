package node_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// TestLeaderChangeMidReplacement: a shard's leader adds a learner to replace a dead voter
// and loses its leadership before the learner caught up (here the learner cannot: the link
// between the two is cut, in the partition test's network). The new leader takes the
// replacement over with nothing handed to it but the group's configuration: the learner
// catches up from it, becomes a voter, the dead member is removed, and nothing acknowledged is
// lost. Four nodes, replication 3, DeadAfter 3 s.
func TestLeaderChangeMidReplacement(t *testing.T) {
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

	// Shard 0: leader l, voters b and d besides, and n the fourth node. d dies; the ring
	// without d puts the replica on n, the only node left.
	const sh = 0
	s0 := c.Shards()[sh]
	l := c.Index(s0.Leader)
	var others []int
	for _, id := range s0.Voters {
		if i := c.Index(id); i != l {
			others = append(others, i)
		}
	}
	b, d := others[0], others[1]
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
	ng, ok := c.Nodes[n].Host().Group(sh)
	if lst := lg.Status(); ok && ng.Status().Applied >= lst.Applied {
		t.Fatalf("the learner on n%d applied %d, the leader %d: it caught up across the cut", n+1, ng.Status().Applied, lst.Applied)
	}
	tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
	err = lg.TransferLeadership(tctx, bID)
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

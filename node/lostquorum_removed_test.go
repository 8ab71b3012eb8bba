package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestLostShardAnsweredAtOnceDespiteRemovedReplica: a replica removed from its group stays on
// its node until placement deletes it, which needs the shard's leader to confirm the removal
// (or --dead-after of silence): while the shard has lost its quorum, it stays. Its view still
// names the leader it last knew. That leader's node is gone, and the view must not make the
// nodes' leader caches name it: requests for the shard were forwarded to the dead node, or held
// for the whole routing wait, instead of being answered at once (and TestLostShardAnsweredAtOnce
// failed whenever placement had moved a lost shard's replica off the third node at start).
func TestLostShardAnsweredAtOnceDespiteRemovedReplica(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := testnode.Start(t, 3, testnode.Options{Shards: 1, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			noPlacement(i, cfg)
			cfg.DisableHTTP = true
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	g := firstLeads(t, c)
	addVoters(t, ctx, c, g, 1, 2)
	testnode.WaitFor(t, 20*time.Second, "n3 a voter following n1", func() string {
		g3, ok := c.Nodes[2].Host().Group(0)
		if !ok || g3.Leader() != c.Nodes[0].ID() || !slices.Contains(g3.Status().Voters, c.Nodes[2].ID()) {
			return "not yet"
		}
		return ""
	})
	retry(t, "remove n3", func() error { return g.RemoveMember(ctx, c.Nodes[2].ID()) })
	g3, _ := c.Nodes[2].Host().Group(0)
	testnode.WaitFor(t, 20*time.Second, "n3's replica removed", func() string {
		if !g3.Removed() {
			return "not yet"
		}
		return ""
	})
	if st := g3.Status(); st.Leader != c.Nodes[0].ID() {
		t.Logf("n3's removed replica names leader %d, not n1", st.Leader)
	}

	// The shard's voters are n1 and n2: with n1 gone, it lost its quorum.
	c.Stop(t, 0)
	g2, _ := c.Nodes[1].Host().Group(0)
	after := 3 * c.Nodes[1].Host().ElectionTimeout()
	testnode.WaitFor(t, 20*time.Second, "n2 leaderless", func() string {
		if d, ok := g2.Leaderless(); !ok || d < after {
			return fmt.Sprintf("leader %d, leaderless %v", g2.Leader(), d)
		}
		return ""
	})
	for _, tc := range []struct {
		i    int
		want string
	}{
		{1, "this node's replica has known no leader for"},
		{2, "the shard's replicas that answered have known no leader for"},
	} {
		streams := shoalv1.NewStreamsClient(c.Dial(t, tc.i))
		for k := range 3 {
			start := time.Now()
			_, err := streams.Append(ctx, &shoalv1.AppendRequest{Stream: fmt.Sprintf("lost-%d-%d", tc.i, k),
				Events: []*shoalv1.EventData{{Id: []byte(fmt.Sprintf("%016d", k)), Type: "T"}}})
			took := time.Since(start)
			if s := status.Convert(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), tc.want) {
				t.Fatalf("append %d through n%d to shard 0, which lost its quorum: %v (after %v); want UNAVAILABLE saying %q",
					k, tc.i+1, err, took, tc.want)
			}
			if took > time.Second {
				t.Fatalf("append %d through n%d answered after %v, want at once", k, tc.i+1, took)
			}
		}
	}
}

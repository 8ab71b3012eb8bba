package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testgossip"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestSetReplication: four nodes in four zones, replication 3. Two changes in a row through two
// nodes end at the second. Raising the factor to 4 through one node gives every shard four
// voters; lowering it to 2 removes the extra ones; each node records the factor. Writers append
// with exact expected versions throughout both changes, and every append they had acknowledged
// is there once, at dense versions. A node restarted with the --replication the cluster was
// created with keeps the changed factor, and a node that was down while the factor changed
// follows it once it is back. Out-of-range factors are refused and change nothing.
func TestSetReplication(t *testing.T) {
	t.Parallel()
	c, regs := startPlacementCluster(t, 4)
	waitPlaced(t, c, "initial placement", voters(3, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	set := func(via, r int) *shoalv1.SetReplicationResponse {
		t.Helper()
		res, err := shoalv1.NewClusterClient(c.Dial(t, via)).SetReplication(ctx, &shoalv1.SetReplicationRequest{Replication: uint32(r)})
		if err != nil {
			t.Fatalf("set the replication factor to %d through node %d: %v", r, via, err)
		}
		return res
	}
	following := func(r uint32, nodes ...*node.Node) {
		t.Helper()
		testnode.WaitFor(t, placementWait, fmt.Sprintf("every node at replication %d", r), func() string {
			for _, n := range nodes {
				if got := n.Settings().Replication; got != r {
					return fmt.Sprintf("node %s at replication %d", n.Name(), got)
				}
			}
			return ""
		})
	}

	for _, r := range []uint32{0, node.MaxReplication + 1} {
		_, err := shoalv1.NewClusterClient(c.Dial(t, 0)).SetReplication(ctx, &shoalv1.SetReplicationRequest{Replication: r})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("replication %d: %v, want INVALID_ARGUMENT", r, err)
		}
	}
	if got := c.Nodes[0].Settings(); got.Replication != 3 || got.ReplicationEpoch != 0 {
		t.Fatalf("after refused changes the settings are %+v", got)
	}

	// A change through one node, then at once another through a node that has not heard of the
	// first by gossip yet: the second syncs with every member before it decides, so it goes
	// after the first (it does not find the factor "3 already"), and the cluster ends at it.
	if res := set(0, 5); !res.Changed || res.Epoch != 1 {
		t.Fatalf("raise to 5: %v", res)
	}
	if res := set(1, 3); !res.Changed || res.Epoch != 2 {
		t.Fatalf("back to 3 through another node at once: %v, want a change of epoch 2", res)
	}
	following(3, c.Nodes...)
	waitPlaced(t, c, "back to three voters per shard", voters(3, 0))

	w := startVersionedWriters(ctx, t, c.Addrs(), testSeed(t))
	if res := set(1, 4); !res.Changed || res.Epoch != 3 || res.GetSettings().GetReplication() != 4 {
		t.Fatalf("raise to 4: %v", res)
	}
	following(4, c.Nodes...)
	for n, reg := range regs {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == "shoal_replication_factor" })
		if i < 0 || mfs[i].GetMetric()[0].GetGauge().GetValue() != 4 {
			t.Fatalf("node %d: no shoal_replication_factor of 4 in %v", n, mfs)
		}
	}
	waitPlaced(t, c, "four voters per shard", voters(4, 0))
	placementAppendRead(t, c, 2, 0, "after-raise")
	if res := set(3, 4); res.Changed || res.Epoch != 3 {
		t.Fatalf("raise to 4 again: %v, want nothing changed", res)
	}

	if res := set(2, 2); !res.Changed || res.Epoch != 4 {
		t.Fatalf("lower to 2: %v", res)
	}
	following(2, c.Nodes...)
	waitPlaced(t, c, "two voters per shard", voters(2, 0))
	placementAppendRead(t, c, 0, 3, "after-lower")
	w.stopAndCheck(ctx, t)
	for i, cfg := range c.Configs {
		var s node.Settings
		b, err := os.ReadFile(filepath.Join(cfg.DataDir, "cluster.json"))
		if err == nil {
			err = json.Unmarshal(b, &s)
		}
		if err != nil || s.Replication != 2 || s.ReplicationEpoch != 4 {
			t.Fatalf("node %d's cluster.json: %+v, %v", i, s, err)
		}
	}

	// Down while the factor changes: node 3 comes back at 2 and follows the cluster to 3.
	// Node 2, restarted with the factor the cluster was created with (a unit file's flag),
	// keeps the cluster's.
	c.Stop(t, 2)
	cfg := c.Configs[2]
	cfg.Replication = 3
	back2, _ := startAgain(t, cfg, "restarting node 2 with --replication 3")
	if got := back2.Settings().Replication; got != 2 {
		t.Fatalf("node 2 restarted with --replication 3 took replication %d, want the cluster's 2", got)
	}
	c.Stop(t, 3)
	if res := set(0, 3); !res.Changed || res.Epoch != 5 {
		t.Fatalf("raise to 3 with node 3 down: %v", res)
	}
	back3, _ := startAgain(t, c.Configs[3], "restarting node 3")
	following(3, c.Nodes[0], c.Nodes[1], back2, back3)
	if got := back3.Settings().ReplicationEpoch; got != 5 {
		t.Fatalf("node 3 follows replication epoch %d, want 5", got)
	}
}

// versionedWriters append single events with exact expected versions to streams of their own
// until stopped, resending unknown outcomes (appendResolved), and keep what was acknowledged.
type versionedWriters struct {
	cl      *client.Client
	stop    atomic.Bool
	wg      sync.WaitGroup
	streams []*ownedStream
	mu      sync.Mutex
	failure error
}

func startVersionedWriters(ctx context.Context, t *testing.T, addrs []string, seed uint64) *versionedWriters {
	t.Helper()
	cl, err := client.Dial(ctx, addrs, client.WithRetry(client.RetryPolicy{MaxElapsed: 1500 * time.Millisecond, AttemptTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	const writers, perWriter = 4, 3
	w := &versionedWriters{cl: cl}
	for i := range writers {
		owned := make([]*ownedStream, perWriter)
		for j := range owned {
			owned[j] = &ownedStream{name: fmt.Sprintf("vw-%d-%d-%d", seed%1000, i, j), content: versionedContent}
		}
		w.streams = append(w.streams, owned...)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for !w.stop.Load() {
				st := owned[rng.IntN(len(owned))]
				exp := client.NoStream
				if len(st.ids) > 0 {
					exp = client.Exact(uint64(len(st.ids) - 1))
				}
				typ, data := versionedContent(uint64(len(st.ids)))
				ev := client.Event{ID: seededUUID(rng), Type: typ, Data: data}
				res, _, err := appendResolved(ctx, cl, st.name, exp, []client.Event{ev})
				if err == nil && res.FirstVersion != uint64(len(st.ids)) {
					err = fmt.Errorf("acknowledged at version %d, want %d", res.FirstVersion, len(st.ids))
				}
				if err != nil {
					w.mu.Lock()
					w.failure = fmt.Errorf("writer %d: append to %s expecting %v: %w", i, st.name, exp, err)
					w.mu.Unlock()
					return
				}
				st.ids = append(st.ids, ev.ID)
			}
		}()
	}
	return w
}

// versionedContent is the type and data versionedWriters write at version v, which the
// check compares with what the stream holds.
func versionedContent(v uint64) (string, []byte) {
	return "Written", []byte(strconv.FormatUint(v, 10))
}

// stopAndCheck stops the writers and checks that every stream holds exactly the events
// acknowledged to them, in order, at dense versions, with the type and data written.
func (w *versionedWriters) stopAndCheck(ctx context.Context, t *testing.T) {
	t.Helper()
	w.stop.Store(true)
	w.wg.Wait()
	if w.failure != nil {
		t.Fatal(w.failure)
	}
	total := checkAcknowledged(ctx, t, w.cl, w.streams)
	if total == 0 {
		t.Fatal("the writers had no append acknowledged")
	}
	t.Logf("%d appends acknowledged, all present once", total)
}

// TestSetReplicationNeedsEveryLiveMember: a node whose gossip link to a live member is cut
// (the member stays alive to it through the third node's indirect probes) refuses a change of
// the replication factor, naming that member, and changes nothing; once the link heals it
// takes the change. Two changes at once through two nodes end with every node at one of them.
// A closed node takes none.
func TestSetReplicationNeedsEveryLiveMember(t *testing.T) {
	t.Parallel()
	var cut testgossip.Net
	gossip := make([]string, 3)
	c := testnode.Start(t, 3, testnode.Options{Shards: 2, Replication: 3, Configure: func(i int, cfg *node.Config) {
		placementConfig(cfg)
		gossip[i] = cfg.Gossip
		cfg.GossipTransport = cut.Wrap(cfg.Gossip)
	}})
	c.WaitFormed(t, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cc := shoalv1.NewClusterClient(c.Dial(t, 0))

	cut.Cut(gossip[0], gossip[2], true)
	_, err := cc.SetReplication(ctx, &shoalv1.SetReplicationRequest{Replication: 2})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `member "n3", alive in gossip, did not answer`) {
		t.Fatalf("set-replication with n3's gossip cut off from n1: %v, want a refusal naming n3", err)
	}
	for _, n := range c.Nodes {
		if s := n.Settings(); s.Replication != 3 || s.ReplicationEpoch != 0 {
			t.Fatalf("node %s after a refused change: %+v", n.Name(), s)
		}
	}
	cut.Cut(gossip[0], gossip[2], false)
	testnode.WaitFor(t, 20*time.Second, "the change taken once the link heals", func() string {
		res, err := cc.SetReplication(ctx, &shoalv1.SetReplicationRequest{Replication: 2})
		if err != nil {
			return err.Error()
		}
		if !res.Changed || res.Epoch != 1 {
			return fmt.Sprintf("%v", res)
		}
		return ""
	})
	// Two changes at once through two nodes: whichever order they take, or the same epoch,
	// every node settles on one of them.
	var wg sync.WaitGroup
	for via, r := range map[int]uint32{1: 1, 2: 3} {
		wg.Go(func() {
			if _, err := shoalv1.NewClusterClient(c.Dial(t, via)).SetReplication(ctx, &shoalv1.SetReplicationRequest{Replication: r}); err != nil {
				t.Errorf("set-replication %d through node %d: %v", r, via, err)
			}
		})
	}
	wg.Wait()
	testnode.WaitFor(t, 20*time.Second, "every node at one factor", func() string {
		first := c.Nodes[0].Settings()
		for _, n := range c.Nodes[1:] {
			if s := n.Settings(); s != first || s.Replication != 1 && s.Replication != 3 {
				return fmt.Sprintf("%s at %+v, %s at %+v", c.Nodes[0].Name(), first, n.Name(), s)
			}
		}
		return ""
	})
	// A node that is closing takes no change: it could record it and tell no peer.
	before := c.Nodes[0].Settings()
	c.Stop(t, 0)
	if _, _, err := c.Nodes[0].SetReplication(3); !errors.Is(err, node.ErrClosed) {
		t.Fatalf("set-replication on a closed node: %v, want ErrClosed", err)
	}
	if s := c.Nodes[0].Settings(); s != before {
		t.Fatalf("a closed node's settings changed: %+v, were %+v", s, before)
	}
}

// TestSetReplicationThenDecommission: three nodes with replication 3 cannot drain one (no other
// node can take its replicas); lowering the factor to 2 first lets the drain finish: the node
// holds no voter of any shard, and every shard has two voters on the other two.
func TestSetReplicationThenDecommission(t *testing.T) {
	t.Parallel()
	c, _ := startPlacementCluster(t, 3)
	waitPlaced(t, c, "initial placement", voters(3, 0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cc := shoalv1.NewClusterClient(c.Dial(t, 0))
	if _, err := cc.SetReplication(ctx, &shoalv1.SetReplicationRequest{Replication: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Decommission(ctx, &shoalv1.DecommissionRequest{Node: "n3"}); err != nil {
		t.Fatal(err)
	}
	waitPlaced(t, c, "n3 drained, two voters per shard", voters(2, c.Nodes[2].ID()))
	placementAppendRead(t, c, 0, 1, "after-drain")
}

package e2e

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
)

// hungResumeLimit is how soon writes must resume after a leader hangs, and
// hungResumeAcks how many appends count as resumed. A hung node breaks no
// connection: before the client watched for new leaders and idle followers
// called elections on their own, appends sent to it waited for gRPC's
// keepalive or their deadline, 15 s here, and an idle shard's followers took
// about three seconds to notice. The limit leaves room for a machine busy with
// other tests (race detector, two cores): there, 200 appends after an idle
// leader hung took up to 6.3 s (2.2 s on a quiet machine).
const (
	hungResumeLimit = 10 * time.Second
	hungResumeAcks  = 100
)

// shardReads is what readEveryShard found.
type shardReads struct {
	events int
	took   time.Duration
	err    error
}

// readEveryShard reads the first events of every shard's log, the shards in
// parallel, each read linearizable (so served by its shard's leader) unless opts
// say Stale, within limit, and sends the outcome on the returned channel.
func readEveryShard(c *client.Client, shards uint32, limit time.Duration, opts ...client.ReadOption) <-chan shardReads {
	out := make(chan shardReads, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		start := time.Now()
		var (
			mu  sync.Mutex
			res shardReads
			wg  sync.WaitGroup
		)
		for shard := range shards {
			wg.Go(func() {
				n := 0
				for _, err := range c.ReadShard(ctx, shard, 0, 100, opts...) {
					if err != nil {
						mu.Lock()
						res.err = cmp.Or(res.err, fmt.Errorf("shard %d after %d events: %w", shard, n, err))
						mu.Unlock()
						return
					}
					n++
				}
				mu.Lock()
				res.events += n
				mu.Unlock()
			})
		}
		wg.Wait()
		res.took = time.Since(start)
		out <- res
	}()
	return out
}

// TestClusterHungLeader freezes a leader (SIGSTOP: its process stops, its
// connections stay open, as with a hung process, a paused VM or a cut cable)
// twice: first while the cluster is idle, every group quiesced, with the
// writers starting only after the freeze; then under load. Each time the
// writers, using the client's default retry policy (no attempt timeout), must
// make progress within hungResumeLimit; under load, a linearizable read of
// every shard started at the freeze must also finish within it. The node is then resumed, and at the
// end every acknowledged event is present exactly once with dense versions
// and the replicas of every shard are identical.
func TestClusterHungLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	seed := testSeed(t)
	const shards = 8
	cl := startCluster(t, 3, shards)
	c, err := client.Dial(context.Background(), cl.addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl.waitReplicated(c, 60*time.Second)

	// The victim: the node leading the most shards.
	mostLeader := func() *server {
		st, err := c.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		topo := st.GetTopology()
		led := map[uint64]int{}
		for _, s := range topo.GetShards() {
			led[s.GetLeaderId()]++
		}
		var id uint64
		for l, n := range led {
			if l != 0 && (n > led[id] || n == led[id] && l < id) {
				id = l
			}
		}
		s := cl.byName(nodeNames(topo)[id])
		if s == nil {
			t.Fatalf("no server for leader %d (leaders %v)", id, led)
		}
		t.Logf("%s leads %d of %d shards", s.name, led[id], shards)
		return s
	}

	// Idle: every group quiesces, then the leader hangs, then the writers start.
	time.Sleep(idleSettle)
	victim := mostLeader()
	victim.pause()
	t.Logf("SIGSTOP %s while idle", victim.name)
	ld := startLoad(c, seed, fmt.Sprintf("e2e-hang-%d", seed%1000), 12, 8)
	defer ld.stop()
	took := ld.l.waitAcks(t, hungResumeAcks, hungResumeLimit, "after the idle leader hung")
	t.Logf("%d appends acknowledged %v after the writers started", hungResumeAcks, took.Round(time.Millisecond))
	victim.resume()
	ld.l.waitAcks(t, 200, 20*time.Second, "after the first resume")
	cl.waitReplicated(c, 30*time.Second)

	// Under load.
	time.Sleep(time.Second)
	victim = mostLeader()
	victim.pause()
	t.Logf("SIGSTOP %s under load after %d acknowledged appends", victim.name, ld.l.count())
	reads := readEveryShard(c, shards, hungResumeLimit)
	// Stale reads go to any replica, the hung one included, and leave it once gossip
	// declares it dead.
	staleReads := readEveryShard(c, shards, hungResumeLimit, client.Stale())
	took = ld.l.waitAcks(t, hungResumeAcks, hungResumeLimit, "after the busy leader hung")
	t.Logf("%d appends acknowledged %v after the freeze", hungResumeAcks, took.Round(time.Millisecond))
	for _, rs := range []struct {
		kind  string
		reads <-chan shardReads
	}{{"linearizable", reads}, {"stale", staleReads}} {
		if r := <-rs.reads; r.err != nil {
			t.Errorf("reading every shard (%s) while its leader hung: %v", rs.kind, r.err)
		} else {
			t.Logf("read %d events of %d shards (%s) in %v after the freeze", r.events, shards, rs.kind, r.took.Round(time.Millisecond))
		}
	}
	time.Sleep(time.Second)
	victim.resume()
	ld.l.waitAcks(t, 200, 20*time.Second, "after the second resume")
	time.Sleep(time.Second)

	if !ld.finish(t) {
		t.Log(cl.tails())
		return
	}
	verify(t, c, ld.l)
	if t.Failed() {
		t.Log(cl.tails())
		return
	}
	caught := cl.waitReplicasIdentical(ld.l.acks, 30*time.Second)
	t.Logf("replicas identical %v after the writers stopped", caught.Round(time.Millisecond))
}

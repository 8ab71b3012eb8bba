package e2e

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/ring"
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
// every shard started at the freeze must also finish within it. While idle, a simple client
// (plain gRPC to another node, which forwards to the hung leader) must also get an append
// and a linearizable read through within it. The node is then resumed, and at the
// end every acknowledged event is present exactly once with dense versions
// and the replicas of every shard are identical.
func TestClusterHungLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	seed := testSeed(t)
	const shards = 8
	cl := startCluster(t, 3, shards)
	c := cl.dial()
	cl.waitReplicated(c, 60*time.Second)

	// The victim: the node leading the most shards, and the shards it leads, once every
	// shard names a leader (a leadership transfer of placement's balancing may still be
	// under way after waitReplicated, leaving a shard without one for a moment).
	mostLeader := func() (*server, []uint32) {
		var topo *shoalv1.TopologyResponse
		start := time.Now()
		for polls := 0; ; polls++ {
			st, err := c.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			topo = st.GetTopology()
			if !slices.ContainsFunc(topo.GetShards(), func(s *shoalv1.ShardInfo) bool { return s.GetLeaderId() == 0 }) {
				if polls > 0 {
					t.Logf("every shard named a leader after %v", time.Since(start).Round(time.Millisecond))
				}
				break
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("shards without a leader for %v: %v%s", time.Since(start).Round(time.Millisecond), topo.GetShards(), cl.tails())
			}
			time.Sleep(100 * time.Millisecond)
		}
		id, n := busiestLeader(topo)
		s := cl.byName(nodeNames(topo)[id])
		if s == nil {
			t.Fatalf("no server for leader %d (%v)", id, topo.GetShards())
		}
		t.Logf("%s leads %d of %d shards", s.name, n, shards)
		var ids []uint32
		for _, sh := range topo.GetShards() {
			if sh.GetLeaderId() == id {
				ids = append(ids, sh.GetShard())
			}
		}
		return s, ids
	}

	// Idle: every group quiesces, then the leader hangs, then the writers start.
	time.Sleep(idleSettle)
	victim, victimLed := mostLeader()
	victim.pause()
	t.Logf("SIGSTOP %s while idle", victim.name)
	direct := directCalls(t, cl, victim, victimLed[0], shards, hungResumeLimit)
	ld := startLoad(c, seed, fmt.Sprintf("e2e-hang-%d", seed%1000), 12, 8)
	defer ld.stop()
	took := ld.l.waitAcks(t, hungResumeAcks, hungResumeLimit, "after the idle leader hung")
	t.Logf("%d appends acknowledged %v after the writers started", hungResumeAcks, took.Round(time.Millisecond))
	directAcks := 0
	if err := <-direct; err != nil {
		t.Error(err)
	} else {
		directAcks = 1
	}
	victim.resume()
	ld.l.waitAcks(t, 200, 20*time.Second, "after the first resume")
	cl.waitReplicated(c, 30*time.Second)

	// Under load.
	time.Sleep(time.Second)
	victim, _ = mostLeader()
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
	caught := cl.waitReplicasIdentical(ld.l.acks+directAcks, 30*time.Second)
	t.Logf("replicas identical %v after the writers stopped", caught.Round(time.Millisecond))
}

// directCalls is a simple client: plain gRPC to one node other than the hung victim, with
// no routing of its own, so that the node forwards to the shard's leader, the victim.
// Within limit, an append to a stream of shard sh (led by the victim) must be acknowledged
// and a linearizable read of the shard must return it: the forwarding node must give up on
// the hung leader once the shard elects another, not wait for gRPC's keepalive. The outcome
// arrives on the returned channel (nil: both succeeded).
func directCalls(t *testing.T, cl *cluster, victim *server, sh uint32, shards int, limit time.Duration) <-chan error {
	var via *server
	for _, s := range cl.servers {
		if s != victim {
			via = s
			break
		}
	}
	stream := ""
	for i := 0; stream == ""; i++ {
		if name := fmt.Sprintf("e2e-direct-%d", i); ring.ShardOf(name, uint32(shards)) == sh {
			stream = name
		}
	}
	out := make(chan error, 1)
	go func() {
		out <- func() error {
			conn, err := grpc.NewClient(via.grpcAddr, grpcopt.DialOptions()...)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), limit)
			defer cancel()
			start := time.Now()
			sc := shoalv1.NewStreamsClient(conn)
			id := uuid.New()
			res, err := sc.Append(ctx, &shoalv1.AppendRequest{Stream: stream,
				Events: []*shoalv1.EventData{{Id: id[:], Type: "direct", Data: []byte("{}")}}})
			if err != nil {
				return fmt.Errorf("append through %s to shard %d while its leader %s hung: %w", via.name, sh, victim.name, err)
			}
			t.Logf("append through %s to shard %d acknowledged %v after its leader hung",
				via.name, sh, time.Since(start).Round(time.Millisecond))
			rd, err := sc.ReadShard(ctx, &shoalv1.ReadShardRequest{Shard: sh, FromPosition: res.Position, Count: 1})
			if err != nil {
				return err
			}
			page, err := rd.Recv()
			if err != nil {
				return fmt.Errorf("linearizable read of shard %d through %s while its leader %s hung: %w", sh, via.name, victim.name, err)
			}
			if len(page.Events) != 1 || !bytes.Equal(page.Events[0].Id, id[:]) {
				return fmt.Errorf("read of shard %d at position %d: %d events, not the one appended", sh, res.Position, len(page.Events))
			}
			t.Logf("append and linearizable read through %s took %v", via.name, time.Since(start).Round(time.Millisecond))
			return nil
		}()
	}()
	return out
}

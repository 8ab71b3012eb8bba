package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/ring"
)

// TestMeasureLeaderFailover measures how long a shard takes to accept writes
// again after its leader is SIGKILLed: a writer appends to one stream of the
// shard in a loop, and the time from the kill to the first append
// acknowledged after the process exited is logged, for 5 repetitions, with
// the median. It asserts nothing about the times (they depend on the
// machine); it is how the team reports failover time. Run it with
//
//	SHOAL_E2E_MEASURE=1 go test -run TestMeasureLeaderFailover -v ./internal/e2e/
func TestMeasureLeaderFailover(t *testing.T) {
	if os.Getenv("SHOAL_E2E_MEASURE") != "1" {
		t.Skip("set SHOAL_E2E_MEASURE=1 to measure leader failover")
	}
	seed := testSeed(t)
	const shards, reps = 8, 5
	cl := startCluster(t, 3, shards)
	// A tight retry policy, so that the client's backoff adds little to what
	// is measured (its waits are at most 100 ms).
	retry := client.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond, AttemptTimeout: 2 * time.Second}
	c, err := client.Dial(context.Background(), cl.addrs(), client.WithRetry(retry))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Logf("client retry policy %+v", retry)

	var times []time.Duration
	for rep := range reps {
		topo, _ := cl.waitReplicated(c, 60*time.Second)
		shard := uint32(rep % shards)
		leaderID := topo.GetShards()[shard].GetLeaderId()
		victim := cl.byName(nodeNames(topo)[leaderID])
		if victim == nil {
			t.Fatalf("rep %d: no server for shard %d's leader %d", rep, shard, leaderID)
		}
		stream := ""
		for k := 0; stream == ""; k++ {
			if s := fmt.Sprintf("failover-%d-%d-%d", seed%1000, rep, k); ring.ShardOf(s, shards) == shard {
				stream = s
			}
		}

		var (
			mu   sync.Mutex
			acks []time.Time
			werr error
		)
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				actx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := c.Append(actx, stream, client.Any, client.Event{Type: "e2e.Tick", Data: []byte(`{}`)})
				cancel()
				mu.Lock()
				if err == nil {
					acks = append(acks, time.Now())
				} else if ctx.Err() == nil {
					werr = err
				}
				mu.Unlock()
			}
		}()
		ackedSince := func(since time.Time) (time.Time, bool) {
			mu.Lock()
			defer mu.Unlock()
			i, _ := slices.BinarySearchFunc(acks, since, func(a, b time.Time) int { return a.Compare(b) })
			if i < len(acks) {
				return acks[i], true
			}
			return time.Time{}, false
		}
		lastErr := func() error {
			mu.Lock()
			defer mu.Unlock()
			return werr
		}
		// Let the writer run at steady state first.
		for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
			if _, ok := ackedSince(start.Add(500 * time.Millisecond)); ok {
				break
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("rep %d: the writer made no progress before the kill (last error %v)", rep, lastErr())
			}
		}

		killed := time.Now()
		victim.kill()
		exited := time.Now()
		var first time.Time
		for {
			if at, ok := ackedSince(exited); ok {
				first = at
				break
			}
			if time.Since(exited) > 30*time.Second {
				t.Fatalf("rep %d: shard %d accepted no append within 30s of killing its leader %s (last error %v)%s",
					rep, shard, victim.name, lastErr(), cl.tails())
			}
			time.Sleep(time.Millisecond)
		}
		stop()
		wg.Wait()
		d := first.Sub(killed)
		times = append(times, d)
		t.Logf("rep %d: shard %d, leader %s killed; first append acknowledged %v after the kill (process exit took %v)",
			rep, shard, victim.name, d.Round(time.Millisecond), exited.Sub(killed).Round(time.Millisecond))

		// Bring the node back, with its original command line, before the next round.
		victim.start()
		victim.waitReady(30 * time.Second)
	}
	sorted := slices.Clone(times)
	slices.Sort(sorted)
	t.Logf("leader failover (kill -9 to first acknowledged append), %d runs: %v; median %v",
		reps, roundAll(times), sorted[len(sorted)/2].Round(time.Millisecond))
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

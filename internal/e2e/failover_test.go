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

// TestMeasureLeaderFailover measures how long a shard stops acknowledging
// writes when its leader is SIGKILLed (a crash), SIGTERMed (a planned stop) or
// SIGSTOPped (a hang: a frozen process, a paused VM or a cut cable, where no
// connection breaks): a writer appends to one stream of the shard in a loop,
// and the longest pause between two acknowledged appends, from the signal to
// the first append acknowledged after the process exited, is logged for 5
// repetitions of each, with the medians. The idle variants stop the leader of
// a shard that was idle (quiesced) and only then start the writer: the time is
// from the signal to the first acknowledgement. It asserts nothing about the
// times (they depend on the machine); it is how the team reports failover
// time. Run it with
//
//	SHOAL_E2E_MEASURE=1 go test -run TestMeasureLeaderFailover -v ./internal/e2e/
func TestMeasureLeaderFailover(t *testing.T) {
	if os.Getenv("SHOAL_E2E_MEASURE") != "1" {
		t.Skip("set SHOAL_E2E_MEASURE=1 to measure leader failover")
	}
	restart := func(s *server) {
		s.start()
		s.waitReady(30 * time.Second)
	}
	// A crash: the followers learn it from the broken connections.
	t.Run("kill-9", func(t *testing.T) { measureFailover(t, failure{end: (*server).kill, restore: restart}) })
	// A planned stop: the server hands its leaderships off before it exits.
	t.Run("sigterm", func(t *testing.T) { measureFailover(t, failure{end: (*server).stop, restore: restart}) })
	// A hang: nothing breaks; the followers learn it from the leader's silence.
	t.Run("sigstop", func(t *testing.T) {
		measureFailover(t, failure{end: (*server).pause, restore: (*server).resume})
	})
	t.Run("idle-kill-9", func(t *testing.T) {
		measureFailover(t, failure{end: (*server).kill, restore: restart, idle: true})
	})
	t.Run("idle-sigstop", func(t *testing.T) {
		measureFailover(t, failure{end: (*server).pause, restore: (*server).resume, idle: true})
	})
}

// failure is how measureFailover stops a leader (end) and brings it back (restore); idle
// says that the shard was idle when its leader stopped, and the writer starts after that.
type failure struct {
	end, restore func(*server)
	idle         bool
}

// idleSettle is how long measureFailover leaves an idle cluster alone before it stops a
// leader: long enough for every group to quiesce.
const idleSettle = 3 * time.Second

// measureFailover stops a shard's leader as f says, five times, and logs how long the shard
// took to acknowledge an append again: the longest pause between two acknowledged appends
// from the signal to the first append acknowledged after the process exited.
func measureFailover(t *testing.T, f failure) {
	seed := testSeed(t)
	const shards, reps = 8, 5
	cl := startCluster(t, 3, shards)
	// A tight retry policy, so that the client's backoff adds little to what
	// is measured (its waits are at most 100 ms).
	retry := client.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond}
	c := cl.dial(client.WithRetry(retry))
	t.Logf("client retry policy %+v", retry)

	var times []time.Duration
	for rep := range reps {
		cl.waitReplicated(c, 60*time.Second)
		shard := uint32(rep % shards)
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
		writer := func() {
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
		}
		ackedSince := func(since time.Time) (time.Time, bool) {
			mu.Lock()
			defer mu.Unlock()
			i, _ := slices.BinarySearchFunc(acks, since, time.Time.Compare)
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
		wg.Add(1)
		if f.idle {
			time.Sleep(idleSettle)
		} else {
			// Let the writer run at steady state first.
			go writer()
			for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
				if _, ok := ackedSince(start.Add(500 * time.Millisecond)); ok {
					break
				}
				if time.Since(start) > 20*time.Second {
					t.Fatalf("rep %d: the writer made no progress before the kill (last error %v)", rep, lastErr())
				}
			}
		}

		// The node that leads the shard now: placement may have moved the leadership while
		// the writer warmed up or the cluster idled (leader balancing).
		st, err := c.Status(context.Background())
		if err != nil {
			t.Fatalf("rep %d: status: %v", rep, err)
		}
		topo := st.GetTopology()
		leaderID := topo.GetShards()[shard].GetLeaderId()
		victim := cl.byName(nodeNames(topo)[leaderID])
		if victim == nil {
			t.Fatalf("rep %d: no server for shard %d's leader %d", rep, shard, leaderID)
		}
		killed := time.Now()
		f.end(victim)
		exited := time.Now()
		if f.idle {
			go writer()
		}
		var first time.Time
		for {
			if at, ok := ackedSince(exited); ok {
				first = at
				break
			}
			if time.Since(exited) > 30*time.Second {
				t.Fatalf("rep %d: shard %d accepted no append within 30s of stopping its leader %s (last error %v)%s",
					rep, shard, victim.name, lastErr(), cl.tails())
			}
			time.Sleep(time.Millisecond)
		}
		stop()
		wg.Wait()
		// The longest pause: between the last acknowledgement before the signal and the first
		// after it, or between two later ones, up to the first after the exit.
		mu.Lock()
		i, _ := slices.BinarySearchFunc(acks, killed, time.Time.Compare)
		prev := killed
		if i > 0 {
			prev = acks[i-1]
		}
		var d time.Duration
		for ; i < len(acks) && !acks[i].After(first); i++ {
			d = max(d, acks[i].Sub(prev))
			prev = acks[i]
		}
		mu.Unlock()
		times = append(times, d)
		t.Logf("rep %d: shard %d, leader %s stopped; longest pause between acknowledged appends %v (process exit took %v)",
			rep, shard, victim.name, d.Round(time.Millisecond), exited.Sub(killed).Round(time.Millisecond))

		// Bring the node back before the next round.
		f.restore(victim)
	}
	sorted := slices.Clone(times)
	slices.Sort(sorted)
	t.Logf("leader failover (%s: longest pause between acknowledged appends), %d runs: %v; median %v", t.Name(),
		reps, roundAll(times), sorted[len(sorted)/2].Round(time.Millisecond))
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

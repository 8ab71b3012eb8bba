package replica

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// workload proposes from several goroutines until stop closes, recording acknowledged data.
type workload struct {
	mu    sync.Mutex
	acked []string
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startWorkload(c *cluster, shard uint32, prefix string, workers int) *workload {
	w := &workload{stop: make(chan struct{})}
	for k := range workers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-w.stop:
					return
				default:
				}
				var g *Group
				for id := range c.nodes {
					if gg := c.group(id, shard); gg != nil && gg.IsLeader() {
						g = gg
					}
				}
				if g == nil {
					time.Sleep(2 * time.Millisecond)
					continue
				}
				d := fmt.Sprintf("%s-w%d-%d", prefix, k, i)
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := g.Propose(ctx, []byte(d))
				cancel()
				if err == nil {
					w.mu.Lock()
					w.acked = append(w.acked, d)
					w.mu.Unlock()
				}
			}
		}()
	}
	return w
}

func (w *workload) snapshot() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked)
}

func (w *workload) halt() { close(w.stop); w.wg.Wait() }

// checkDurable waits for a leader, passes a read barrier and checks that every acked value is
// present exactly once on every listed node.
func checkDurable(t *testing.T, c *cluster, shard uint32, acked []string, ids ...uint64) {
	t.Helper()
	eventually(t, 15*time.Second, func() error {
		g := c.leader(shard, ids...)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return g.ReadIndex(ctx)
	})
	eventually(t, 15*time.Second, func() error {
		for _, id := range ids {
			vals := c.sm(id, shard).values(t)
			seen := make(map[string]int, len(vals))
			for _, v := range vals {
				seen[v]++
				if seen[v] > 1 {
					return fmt.Errorf("node %d: %q applied twice", id, v)
				}
			}
			for _, a := range acked {
				if seen[a] == 0 {
					return fmt.Errorf("node %d lost acknowledged %q (%d values, %d acked)", id, a, len(vals), len(acked))
				}
			}
		}
		return nil
	})
}

func TestCrashSingleNodeKeepsAcknowledged(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	fs := vfs.NewCrashableMem()
	o := clusterOpts{nodes: 1, retain: 50, fsFor: func(uint64) vfs.FS { return fs }}
	c := newCluster(t, o)
	c.open(1, 1, []uint64{1})
	var acked []string
	for round := range 4 {
		c.leader(1)
		w := startWorkload(c, 1, fmt.Sprintf("r%d", round), 4)
		time.Sleep(time.Duration(20+rng.IntN(150)) * time.Millisecond)
		acked = append(acked, w.snapshot()...)
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rng})
		w.halt()
		c.stopNode(1)
		fs = clone
		c.start(1, fs, o)
		c.open(1, 1, []uint64{1})
		checkDurable(t, c, 1, acked, 1)
		t.Logf("round %d: %d acknowledged survive", round, len(acked))
	}
}

func TestCrashThreeVotersKeepAcknowledged(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	fss := map[uint64]*vfs.MemFS{}
	for id := uint64(1); id <= 3; id++ {
		fss[id] = vfs.NewCrashableMem()
	}
	o := clusterOpts{nodes: 3, retain: 50, fsFor: func(id uint64) vfs.FS { return fss[id] }}
	c := newCluster(t, o)
	all := []uint64{1, 2, 3}
	for _, id := range all {
		c.open(id, 1, all)
	}
	var acked []string
	for round := range 3 {
		c.leader(1)
		w := startWorkload(c, 1, fmt.Sprintf("r%d", round), 4)
		time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond)
		acked = append(acked, w.snapshot()...)
		clones := map[uint64]*vfs.MemFS{}
		for _, id := range all {
			clones[id] = fss[id].CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rng})
		}
		w.halt()
		for _, id := range all {
			c.stopNode(id)
		}
		for _, id := range all {
			fss[id] = clones[id]
			c.start(id, fss[id], o)
			c.open(id, 1, all)
		}
		checkDurable(t, c, 1, acked, all...)
		t.Logf("round %d: %d acknowledged survive", round, len(acked))
	}
	if len(acked) == 0 {
		t.Fatal(errors.New("workload acknowledged nothing"))
	}
}

// testSeed returns REPLICA_SEED if set, else a fresh seed; either way it is logged.
func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("REPLICA_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with REPLICA_SEED=%d)", seed, seed)
	return seed
}

// TestCrashDuringConfChurn crashes every node while a learner is added and removed over and
// over (conf changes in many apply batches, raft's applied index stored with each) and the log
// is compacted often (snapshots to the learner): after each crash, nothing acknowledged is lost
// and raft restarts without re-applying or skipping a conf change.
func TestCrashDuringConfChurn(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	fss := map[uint64]*vfs.MemFS{}
	for id := uint64(1); id <= 4; id++ {
		fss[id] = vfs.NewCrashableMem()
	}
	o := clusterOpts{nodes: 4, retain: 20, factory: true, fsFor: func(id uint64) vfs.FS { return fss[id] }}
	c := newCluster(t, o)
	all := []uint64{1, 2, 3}
	for _, id := range all {
		c.open(id, 1, all)
	}
	var acked []string
	okCC := 0
	for round := range 5 {
		c.leader(1, all...)
		w := startWorkload(c, 1, fmt.Sprintf("r%d", round), 4)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var g *Group
				for _, id := range all {
					if gg := c.group(id, 1); gg != nil && gg.IsLeader() {
						g = gg
					}
				}
				if g == nil {
					time.Sleep(2 * time.Millisecond)
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				var err error
				if i%2 == 0 {
					err = g.AddLearner(ctx, 4)
				} else {
					err = g.RemoveMember(ctx, 4)
				}
				if err == nil {
					okCC++
				}
				cancel()
			}
		}()
		time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond)
		acked = append(acked, w.snapshot()...)
		clones := map[uint64]*vfs.MemFS{}
		for id := uint64(1); id <= 4; id++ {
			clones[id] = fss[id].CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rng})
		}
		close(stop)
		wg.Wait()
		w.halt()
		for id := uint64(1); id <= 4; id++ {
			c.stopNode(id)
		}
		for id := uint64(1); id <= 4; id++ {
			fss[id] = clones[id]
			c.start(id, fss[id], o)
			if id <= 3 {
				c.open(id, 1, all)
			} else {
				c.open(id, 1, nil)
			}
		}
		checkDurable(t, c, 1, acked, all...)
		t.Logf("round %d: %d acknowledged survive, %d conf changes", round, len(acked), okCC)
	}
	if okCC == 0 || len(acked) == 0 {
		t.Fatalf("vacuous run: %d conf changes and %d appends acknowledged", okCC, len(acked))
	}
}

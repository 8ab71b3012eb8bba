package replica

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
				g := c.leading(shard)
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

// crashFS is the crashable in-memory filesystem of each node, replaced by its crash image at
// every crash.
type crashFS map[uint64]*vfs.MemFS

func newCrashFS(ids ...uint64) crashFS {
	fss := crashFS{}
	for _, id := range ids {
		fss[id] = vfs.NewCrashableMem()
	}
	return fss
}

func (fss crashFS) fsFor(id uint64) vfs.FS { return fss[id] }

// crash takes a crash image of every node's filesystem (a random share of unsynced data
// lost), then calls halt (stop the load), stops every node and starts each again on its image
// with o, calling open to reopen its groups.
//
// The images are taken one after the other while the nodes run, so every link is cut first:
// together they must be a state the cluster could crash in, all at one instant. Otherwise a
// node imaged early could lack an entry that it synced and acknowledged before a node imaged
// later applied it; after the restart that entry would be gone from the quorum that
// committed it, and the later node's state would hold an entry the new leader overwrites.
// With the links cut, whatever a node learns while the images are taken was made durable
// before the first of them.
func (fss crashFS) crash(c *cluster, rng *rand.Rand, o clusterOpts, halt func(), open func(id uint64)) {
	ids := slices.Sorted(maps.Keys(fss))
	for _, id := range ids {
		c.net.isolate(id, true)
	}
	clones := crashFS{}
	for _, id := range ids {
		clones[id] = fss[id].CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rng})
	}
	halt()
	for _, id := range ids {
		c.stopNode(id)
	}
	for _, id := range ids {
		fss[id] = clones[id]
		c.start(id, clones[id], o)
		open(id)
	}
	for _, id := range ids {
		c.net.isolate(id, false)
	}
}

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
	fss := newCrashFS(1)
	o := clusterOpts{nodes: 1, retain: 50, fsFor: fss.fsFor}
	c := newCluster(t, o)
	open := func(id uint64) { c.open(id, 1, []uint64{1}) }
	open(1)
	var acked []string
	for round := range 4 {
		c.leader(1)
		w := startWorkload(c, 1, fmt.Sprintf("r%d", round), 4)
		time.Sleep(time.Duration(20+rng.IntN(150)) * time.Millisecond)
		acked = append(acked, w.snapshot()...)
		fss.crash(c, rng, o, w.halt, open)
		checkDurable(t, c, 1, acked, 1)
		t.Logf("round %d: %d acknowledged survive", round, len(acked))
	}
}

func TestCrashThreeVotersKeepAcknowledged(t *testing.T) {
	crashThreeVoters(t, clusterOpts{}, 4)
}

// TestCrashWithCommitDelayKeepsAcknowledged: WAL syncs held back (CommitDelay, with enough
// callers for it to hold them) acknowledge nothing before it is synced.
func TestCrashWithCommitDelayKeepsAcknowledged(t *testing.T) {
	crashThreeVoters(t, clusterOpts{delay: 2 * time.Millisecond}, 16)
}

// crashThreeVoters runs three voters of options o (nodes, log retention and file systems set
// here) under workers proposing callers, crashes all three at once three times and checks
// that every acknowledged proposal survived.
func crashThreeVoters(t *testing.T, o clusterOpts, workers int) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	all := []uint64{1, 2, 3}
	fss := newCrashFS(all...)
	o.nodes, o.retain, o.fsFor = 3, 50, fss.fsFor
	c := newCluster(t, o)
	open := func(id uint64) { c.open(id, 1, all) }
	for _, id := range all {
		open(id)
	}
	var acked []string
	for round := range 3 {
		c.leader(1)
		w := startWorkload(c, 1, fmt.Sprintf("r%d", round), workers)
		time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond)
		acked = append(acked, w.snapshot()...)
		fss.crash(c, rng, o, w.halt, open)
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
	all := []uint64{1, 2, 3}
	fss := newCrashFS(1, 2, 3, 4)
	o := clusterOpts{nodes: 4, retain: 20, factory: true, fsFor: fss.fsFor}
	c := newCluster(t, o)
	open := func(id uint64) {
		if id == 4 {
			c.open(id, 1, nil) // the learner: created by the leader's messages
		} else {
			c.open(id, 1, all)
		}
	}
	for _, id := range all {
		open(id)
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
				g := c.leading(1, all...)
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
		fss.crash(c, rng, o, func() { close(stop); wg.Wait(); w.halt() }, open)
		checkDurable(t, c, 1, acked, all...)
		t.Logf("round %d: %d acknowledged survive, %d conf changes", round, len(acked), okCC)
	}
	if okCC == 0 || len(acked) == 0 {
		t.Fatalf("vacuous run: %d conf changes and %d appends acknowledged", okCC, len(acked))
	}
}

// TestCrashSingleNodeReadIndexSeesAcknowledged: after a crash, a sole voter's first read
// barrier already covers every acknowledged entry, even one whose apply the crash lost. raft
// answers a sole voter's read index at once with its commit index, which a restart raises
// only to what the stored state proves committed; the barrier waits for the entries of
// earlier terms instead. The read is asked for as the node begins to lead, before the new
// term's first entry commits.
func TestCrashSingleNodeReadIndexSeesAcknowledged(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	reads := make(chan *waiter, 1)
	t.Cleanup(func() { testHookLeading.Store(nil) }) // after the cluster's cleanup stops its loops
	hook := func(g *Group) {
		w := newWaiter()
		g.startRead(w)
		select {
		case reads <- w:
		default:
		}
	}
	testHookLeading.Store(&hook)
	fss := newCrashFS(1)
	o := clusterOpts{nodes: 1, retain: 50, fsFor: fss.fsFor}
	c := newCluster(t, o)
	open := func(id uint64) { c.open(id, 1, []uint64{1}) }
	open(1)
	var acked []string
	for round := range 8 {
		c.leader(1)
		w := startWorkload(c, 1, fmt.Sprintf("r%d", round), 4)
		time.Sleep(time.Duration(20+rng.IntN(100)) * time.Millisecond)
		acked = append(acked, w.snapshot()...)
		select {
		case <-reads: // the read of the last start
		default:
		}
		fss.crash(c, rng, o, w.halt, open)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var rw *waiter
		select {
		case rw = <-reads:
		case <-ctx.Done():
			t.Fatalf("round %d: the restarted node did not lead", round)
		}
		_, err := rw.wait(ctx, c.group(1, 1).h.done)
		cancel()
		if err != nil {
			t.Fatalf("round %d: read barrier: %v", round, err)
		}
		seen := map[string]bool{}
		for _, v := range c.sm(1, 1).values(t) {
			seen[v] = true
		}
		for _, a := range acked {
			if !seen[a] {
				t.Fatalf("round %d: %q acknowledged, not applied when the first read barrier passed (%d acked)", round, a, len(acked))
			}
		}
	}
	t.Logf("%d acknowledged entries seen by the first read after each of 8 crashes", len(acked))
}

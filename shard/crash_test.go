package shard

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestCrash applies batches committed with pebble.Sync (like the replica's
// group commit) while CrashClone snapshots the filesystem at random moments,
// keeping a random share of unsynced data. Each clone is reopened and must
// hold every acknowledged entry, exactly the entries up to a batch boundary
// (nothing torn or duplicated), and report that boundary as Applied().
func TestCrash(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	fs := vfs.NewCrashableMem()
	ts := newTestShard(t, fs, 3)

	var (
		mu         sync.Mutex
		history    [][]byte                   // entry i+1 = history[i]
		boundaries = map[uint64]bool{0: true} // indexes at which a batch ended
		acked      atomic.Uint64              // last index whose batch was synced
		stop       atomic.Bool
		done       = make(chan struct{})
	)
	wrng := rand.New(rand.NewPCG(seed, 2))
	go func() {
		defer close(done)
		gen := newModel(3)
		for !stop.Load() && ts.index < 3000 {
			ts.begin()
			for n := 1 + wrng.IntN(8); n > 0; n-- {
				data := randCommand(wrng, gen, nil)
				cmd, _ := DecodeCommand(data)
				gen.apply(cmd)
				mu.Lock()
				history = append(history, data)
				mu.Unlock()
				ts.index++
				if err, ok := ts.s.Apply(ts.batch, ts.index, data).(error); ok && errors.Is(err, ErrStorage) {
					panic(err)
				}
			}
			idx := ts.index
			if err := ts.s.FinishBatch(ts.batch); err != nil {
				panic(err)
			}
			// The boundary is recorded before the commit: a crash clone taken while
			// Commit runs may already hold the batch.
			mu.Lock()
			boundaries[idx] = true
			mu.Unlock()
			if err := ts.batch.Commit(pebble.Sync); err != nil {
				panic(err)
			}
			ts.batch.Close()
			ts.batch = nil
			ts.s.Committed()
			acked.Store(idx)
		}
	}()

	for clone := 0; clone < 8; clone++ {
		select {
		case <-done:
			clone = 7 // the writer finished: one last clone of the final state
		case <-time.After(time.Duration(2+rng.IntN(15)) * time.Millisecond):
		}
		minIndex := acked.Load()
		cfs := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
		db, err := pebble.Open("db", &pebble.Options{FS: cfs, Logger: quietLogger{}})
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(db, 3, Options{})
		if err != nil {
			t.Fatal(err)
		}
		applied := s.Applied()
		mu.Lock()
		isBoundary := boundaries[applied]
		cmds := append([][]byte(nil), history[:min(int(applied), len(history))]...)
		mu.Unlock()
		if applied < minIndex || !isBoundary || int(applied) > len(cmds) {
			t.Fatalf("clone %d: Applied %d, acknowledged %d, batch boundary %v", clone, applied, minIndex, isBoundary)
		}
		m := newModel(3)
		for _, data := range cmds {
			cmd, _ := DecodeCommand(data)
			m.apply(cmd)
		}
		m.check(t, s)
		t.Logf("clone %d: acknowledged %d, recovered %d entries, %d events", clone, minIndex, applied, s.LastPosition())
		s.Close()
		db.Close()
	}
	stop.Store(true)
	<-done
}

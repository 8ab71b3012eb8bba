package shard

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestReclaimKeepsSpansApart: while the node's disk is short of space, the truncations of two
// streams at both ends of the shard are compacted apart, not as one span over the whole
// shard: that compaction would rewrite every table between them, and need as much free space
// for a while, on a node that has little.
func TestReclaimKeepsSpansApart(t *testing.T) {
	defer func(v uint64) { reclaimMergeBytes = v }(reclaimMergeBytes)
	reclaimMergeBytes = 1 << 20
	const streams = 64
	opts := &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}, DisableAutomaticCompactions: true}
	for i := range opts.TargetFileSizes {
		opts.TargetFileSizes[i] = 128 << 10 // many tables, each over a few streams
	}
	db, err := pebble.Open("db", opts)
	if err != nil {
		t.Fatal(err)
	}
	var short atomic.Bool
	short.Store(true)
	s, err := Open(db, 1, Options{ReclaimNow: &short})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testShard{t: t, fs: opts.FS, db: db, s: s, index: s.Applied()}
	t.Cleanup(func() {
		ts.s.Close()
		if err := ts.db.Close(); err != nil {
			t.Error(err)
		}
	})
	ts.apply(EncodeSetFormat(&SetFormatCommand{Format: MaxFormat}))
	rng := rand.New(rand.NewPCG(5, 6)) // incompressible data, the same every run
	for i := range streams {
		c := &AppendCommand{Stream: fmt.Sprintf("s-%02d", i)}
		for j := range 8 {
			data := make([]byte, 8<<10)
			for k := range data {
				data[k] = byte(rng.Uint32())
			}
			c.Events = append(c.Events, Event{ID: testID(uint64(i*10 + j + 1)), Type: "T", Data: data})
		}
		if _, ok := ts.apply(EncodeAppend(c)).(*AppendResult); !ok {
			t.Fatal("append refused")
		}
	}
	// Into the last level, in tables of a few streams each, as a shard's data sits there.
	if err := db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
		t.Fatal(err)
	}
	// The tables holding only the events of the streams between the two truncated ones.
	lo, hi := ts.s.keys.eventStreamEnd(nil, 0), ts.s.keys.eventStream(nil, streams-1)
	levels, err := db.SSTables()
	if err != nil {
		t.Fatal(err)
	}
	between := map[uint64]bool{}
	var betweenBytes uint64
	for _, level := range levels {
		for _, f := range level {
			if bytes.Compare(f.Smallest.UserKey, lo) >= 0 && bytes.Compare(f.Largest.UserKey, hi) < 0 {
				between[uint64(f.FileNum)] = true
				betweenBytes += f.Size
			}
		}
	}
	if betweenBytes < 2<<20 {
		t.Fatalf("setup: %d bytes in %d tables between the truncated streams, want at least 2 MiB", betweenBytes, len(between))
	}

	written := func() uint64 {
		var n uint64
		for _, l := range db.Metrics().Levels {
			n += l.TableBytesCompacted
		}
		return n
	}
	before := written()
	ts.begin() // one batch: both spans are queued at once
	for _, name := range []string{"s-00", fmt.Sprintf("s-%02d", streams-1)} {
		if r, ok := ts.apply(EncodeTruncate(&TruncateCommand{Stream: name, Before: math.MaxUint64})).(*TruncateResult); !ok || r.Start != 7 {
			t.Fatalf("truncate %s: %s", name, fmtResult(r))
		}
	}
	ts.commit(pebble.NoSync)
	ts.s.compact.idle(t)

	levels, err = db.SSTables()
	if err != nil {
		t.Fatal(err)
	}
	kept := 0
	for _, level := range levels {
		for _, f := range level {
			if between[uint64(f.FileNum)] {
				kept++
			}
		}
	}
	w := written() - before
	if kept != len(between) || w >= betweenBytes/2 {
		t.Fatalf("compacting the two truncations rewrote %d of the %d tables (%d bytes) between them, writing %d bytes",
			len(between)-kept, len(between), betweenBytes, w)
	}
	t.Logf("%d tables (%d bytes) between the truncations kept; compactions wrote %d bytes", kept, betweenBytes, w)
}

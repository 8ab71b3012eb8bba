package shard

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// TestReadLogSkipBudget: a ReadLog over a long run of truncated events returns early once it
// skipped maxLogSkip of them, with next past them and below LastPosition, so a read across
// any truncation answers in bounded time; reading on from next delivers the rest.
func TestReadLogSkipBudget(t *testing.T) {
	defer func(v int) { maxLogSkip = v }(maxLogSkip)
	maxLogSkip = 8
	ts := newTestShard(t, nil, 1)
	ts.apply(EncodeSetFormat(&SetFormatCommand{Format: Format4}))
	for i := range 50 {
		ts.apply(EncodeAppend(&AppendCommand{Stream: "a", Events: []Event{{ID: testID(uint64(i + 1)), Type: "T"}}}))
	}
	ts.apply(EncodeAppend(&AppendCommand{Stream: "b", Events: []Event{{ID: testID(100), Type: "T"}}}))
	if r, ok := ts.apply(EncodeTruncate(&TruncateCommand{Stream: "a", Before: 49})).(*TruncateResult); !ok || r.Start != 49 {
		t.Fatalf("truncate: %s", fmtResult(r))
	}

	next, err := ts.s.ReadLog(0, 0, func(ev *RecordedEvent) error {
		t.Fatalf("first read delivered %s@%d", ev.Stream, ev.Version)
		return nil
	})
	if err != nil || next != 8 || next >= ts.s.LastPosition() {
		t.Fatalf("first read: next %d, %v; want 8 (8 truncated events skipped), below LastPosition %d", next, err, ts.s.LastPosition())
	}
	var got []string
	reads := 1
	for next < ts.s.LastPosition() {
		reads++
		if next, err = ts.s.ReadLog(next, 0, func(ev *RecordedEvent) error {
			got = append(got, fmt.Sprintf("%s@%d pos=%d", ev.Stream, ev.Version, ev.Position))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(got) != "[a@49 pos=49 b@0 pos=50]" || reads != 7 {
		t.Fatalf("read on from next: %v in %d reads, want [a@49 pos=49 b@0 pos=50] in 7", got, reads)
	}
}

// TestTruncateReclaimsSpace: the events a truncation removes leave the disk soon after it
// commits, on a shard that writes nothing more: the shard compacts their span in the
// background, where Pebble alone would keep them until its levels called for a compaction.
func TestTruncateReclaimsSpace(t *testing.T) {
	ts := newTestShard(t, nil, 1)
	ts.apply(EncodeSetFormat(&SetFormatCommand{Format: Format4}))
	rng := rand.New(rand.NewPCG(1, 2)) // incompressible data, the same every run
	for i := range 20 {
		c := &AppendCommand{Stream: "big"}
		for j := range 100 {
			data := make([]byte, 1024)
			for k := range data {
				data[k] = byte(rng.Uint32())
			}
			c.Events = append(c.Events, Event{ID: testID(uint64(i*100 + j + 1)), Type: "T", Data: data})
		}
		if _, ok := ts.apply(EncodeAppend(c)).(*AppendResult); !ok {
			t.Fatal("append refused")
		}
	}
	if err := ts.db.Flush(); err != nil {
		t.Fatal(err)
	}
	lo, hi := ts.s.keys.eventStream(nil, 0), ts.s.keys.eventStreamEnd(nil, 0)
	usage := func() uint64 {
		n, err := ts.db.EstimateDiskUsage(lo, hi)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := usage()
	if before < 1<<20 {
		t.Fatalf("setup: the stream's events take %d bytes on disk, want at least 1 MiB", before)
	}
	if r, ok := ts.apply(EncodeTruncate(&TruncateCommand{Stream: "big", Before: math.MaxUint64})).(*TruncateResult); !ok || r.Start != 1999 {
		t.Fatalf("truncate: %s", fmtResult(r))
	}
	deadline := time.Now().Add(10 * time.Second)
	for usage() > before/20 {
		if time.Now().After(deadline) {
			t.Fatalf("the truncated events still take %d of %d bytes on disk after 10 s", usage(), before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the stream's events took %d bytes on disk, %d after the truncation", before, usage())
}

// idle waits until c has nothing queued or under way.
func (c *compactor) idle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		done := !c.running && len(c.queue) == 0
		c.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the compactor is still busy after 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSmallTruncateNoFlush: a truncation of little data in tables (a snapshot store prunes its
// older record at every save) is left to Pebble's own compactions: compacting its span would
// flush the memtable every time, cutting a small table per truncation.
func TestSmallTruncateNoFlush(t *testing.T) {
	ts := newTestShard(t, nil, 1)
	ts.apply(EncodeSetFormat(&SetFormatCommand{Format: Format4}))
	for i := range 5 {
		ts.apply(EncodeAppend(&AppendCommand{Stream: "small", Events: []Event{{ID: testID(uint64(i + 1)), Type: "T", Data: make([]byte, 4096)}}}))
	}
	if err := ts.db.Flush(); err != nil {
		t.Fatal(err)
	}
	flushes := ts.db.Metrics().Flush.Count
	for before := uint64(1); before <= 4; before++ {
		if r, ok := ts.apply(EncodeTruncate(&TruncateCommand{Stream: "small", Before: before})).(*TruncateResult); !ok || r.Start != before {
			t.Fatalf("truncate before %d: %s", before, fmtResult(r))
		}
		if ts.s.compact != nil {
			ts.s.compact.idle(t)
		}
	}
	if n := ts.db.Metrics().Flush.Count; n != flushes {
		t.Fatalf("%d flushes for four small truncations, want none", n-flushes)
	}
}

// TestTruncateSmallWritesNoRangeDeletion: a truncation of at most truncatePointDeletes events
// deletes their keys one by one, and a larger one writes a single range deletion. Range
// deletions in a memtable cost every iterator opened after them; a retention round of small
// truncations wrote thousands.
func TestTruncateSmallWritesNoRangeDeletion(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		events         int
		size           int // random bytes of data per event
		points, ranges int
		ids            int // ID entries deleted (Format7), when not all events-1
	}{
		{events: 10, points: 9},
		{events: truncatePointDeletes + 1, points: truncatePointDeletes},
		{events: truncatePointDeletes + 2, ranges: 1},
		{events: 3, size: 3 << 20, ranges: 1},           // past truncatePointBytes
		{events: 24, size: 3 << 20, ranges: 1, ids: 22}, // IDs forgotten up to forgetIDsBytes
	} {
		if tc.ids == 0 {
			tc.ids = tc.events - 1
		}
		ts := newTestShard(t, nil, 1)
		ts.apply(EncodeSetFormat(&SetFormatCommand{Format: MaxFormat}))
		evs := make([]Event, tc.events)
		for i := range evs {
			evs[i] = Event{ID: testID(uint64(i + 1)), Type: "T", Data: make([]byte, tc.size)}
			for j := range evs[i].Data {
				evs[i].Data[j] = byte(rnd.Uint32())
			}
		}
		for rest := evs; len(rest) > 0; { // within an append's 16 MiB
			n := min(len(rest), 4)
			if res := ts.apply(EncodeAppend(&AppendCommand{Stream: "s", Events: rest[:n]})); fmtResult(res)[:2] != "ok" {
				t.Fatal(fmtResult(res))
			}
			rest = rest[n:]
		}
		ts.begin()
		if res := ts.apply(EncodeTruncate(&TruncateCommand{Stream: "s", Before: math.MaxUint64})); fmtResult(res) != fmt.Sprintf("ok start=%d", tc.events-1) {
			t.Fatal(fmtResult(res))
		}
		idKeys := map[string]bool{}
		for i := range evs {
			idKeys[string(ts.s.keys.id(nil, &evs[i].ID))] = true
		}
		var points, ranges, ids int
		for r := ts.batch.Reader(); ; {
			kind, key, _, ok, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			switch kind {
			case pebble.InternalKeyKindDelete:
				if idKeys[string(key)] {
					ids++ // Format7: the removed events' IDs are forgotten
				} else {
					points++
				}
			case pebble.InternalKeyKindRangeDelete:
				ranges++
			}
		}
		ts.commit(nil)
		if points != tc.points || ranges != tc.ranges || ids != tc.ids {
			t.Errorf("truncating %d of %d events: %d event key deletions, %d range deletions and %d ID deletions, want %d, %d and %d",
				tc.events-1, tc.events, points, ranges, ids, tc.points, tc.ranges, tc.ids)
		}
		if got := storedVersions(t, ts, "s"); got != fmt.Sprintf("%d\n", tc.events-1) {
			t.Errorf("stored after truncating %d of %d: %s", tc.events-1, tc.events, got)
		}
	}
}

// TestTruncateSteps: a truncation split where TruncateStep says forgets every removed event's
// ID at Format7, where one truncation of them all leaves the entries past forgetIDsMax; steps
// start at a marked start and respect forgetIDsBytes.
func TestTruncateSteps(t *testing.T) {
	defer func(n, b int) { forgetIDsMax, forgetIDsBytes = n, b }(forgetIDsMax, forgetIDsBytes)
	forgetIDsMax = 100
	ids := func(ts *testShard) int { return strings.Count(dumpIDs(t, ts), "\n") }
	steps := func(ts *testShard, before uint64) (ends []uint64) {
		t.Helper()
		for from := uint64(0); ; {
			end, more, err := ts.s.TruncateStep("s", from, before)
			if err != nil {
				t.Fatal(err)
			}
			if !more {
				return ends
			}
			ends, from = append(ends, end), end
		}
	}
	for _, split := range []bool{false, true} {
		ts := newTestShard(t, nil, 1)
		ts.apply(EncodeSetFormat(&SetFormatCommand{Format: Format7}))
		evs := make([]Event, 1000)
		for i := range evs {
			evs[i] = Event{ID: testID(uint64(i + 1)), Type: "T"}
		}
		// The stream record is written at the truncation, before the second append: a live
		// stream's last version comes from its events.
		if res := fmtResult(ts.apply(EncodeAppend(&AppendCommand{Stream: "s", Events: evs[:500]}))); res[:2] != "ok" {
			t.Fatal(res)
		}
		if res := fmtResult(ts.apply(EncodeTruncate(&TruncateCommand{Stream: "s", Before: 50}))); res != "ok start=50" {
			t.Fatal(res)
		}
		if res := fmtResult(ts.apply(EncodeAppend(&AppendCommand{Stream: "s", Events: evs[500:]}))); res[:2] != "ok" {
			t.Fatal(res)
		}
		ends := steps(ts, math.MaxUint64)
		if got := fmt.Sprint(ends); got != "[150 250 350 450 550 650 750 850 950]" {
			t.Fatalf("steps from the marked start 50 to the last event, 999: %s", got)
		}
		if split {
			for _, b := range ends {
				ts.apply(EncodeTruncate(&TruncateCommand{Stream: "s", Before: b}))
			}
		}
		if res := fmtResult(ts.apply(EncodeTruncate(&TruncateCommand{Stream: "s", Before: 999}))); res != "ok start=999" {
			t.Fatal(res)
		}
		want := 1 // the last event's
		if !split {
			want = 1 + 949 - 100 // the entries past the first 100 of one truncation of 949
		}
		if got := ids(ts); got != want {
			t.Errorf("split %t: %d ID entries left, want %d", split, got, want)
		}
		if ends := steps(ts, 999); ends != nil {
			t.Errorf("steps after the truncation: %v; want none", ends)
		}
	}
	// The byte bound: 10 events of 1 KiB with forgetIDsBytes 3 KiB, three to a step, the last
	// event (kept) in none.
	forgetIDsBytes = 3 << 10
	ts := newTestShard(t, nil, 1)
	evs := make([]Event, 10)
	for i := range evs {
		evs[i] = Event{ID: testID(uint64(i + 1)), Type: "T", Data: make([]byte, 1<<10)}
	}
	if res := fmtResult(ts.apply(EncodeAppend(&AppendCommand{Stream: "s", Events: evs}))); res[:2] != "ok" {
		t.Fatal(res)
	}
	if ends := steps(ts, 10); fmt.Sprint(ends) != "[3 6]" {
		t.Fatalf("steps of 1 KiB events within 3 KiB: %v; want [3 6]", ends)
	}
}

// TestListStreamsSkipBudget: a listing without deleted streams returns early once it skipped
// maxListSkip of them, naming the last it looked at, so that a prefix of many deleted streams
// holds no view of the DB for long; listing on after it gives the rest, and RetentionCuts,
// which lists so too, goes on from there rather than taking the early stop for the end.
func TestListStreamsSkipBudget(t *testing.T) {
	defer func(v int) { maxListSkip = v }(maxListSkip)
	maxListSkip = 4
	ts := newTestShard(t, nil, 1)
	ts.apply(EncodeSetFormat(&SetFormatCommand{Format: Format7}))
	for i := range 12 {
		name := fmt.Sprintf("s%02d", i)
		ts.apply(EncodeAppend(&AppendCommand{Stream: name, Events: []Event{{ID: testID(uint64(i + 1)), Type: "T"}}}))
		if i != 0 && i != 11 { // s01 to s10 deleted
			if _, ok := ts.apply(EncodeDelete(&DeleteCommand{Stream: name})).(*DeleteResult); !ok {
				t.Fatalf("delete %s refused", name)
			}
		}
	}
	var (
		got     []string
		resumes []string
		after   string
	)
	for calls := 0; ; calls++ {
		if calls == 10 {
			t.Fatalf("listing did not end: %v, resumed after %v", got, resumes)
		}
		resume, err := ts.s.ListStreams("s", after, false, 0, func(m *StreamSummary) error {
			got, after = append(got, m.Name), m.Name
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if resume == "" {
			break
		}
		resumes, after = append(resumes, resume), resume
	}
	if fmt.Sprint(got) != "[s00 s11]" || fmt.Sprint(resumes) != "[s04 s08]" {
		t.Fatalf("listed %v, resumed after %v; want [s00 s11], resumed after [s04 s08]", got, resumes)
	}
	p := RetentionPolicy{Prefix: "s", KeepLast: 1}
	if _, last, err := ts.s.RetentionCuts(p, []RetentionPolicy{p}, CutOptions{Now: time.Now().UnixNano()}); err != nil || last != "s04" {
		t.Fatalf("RetentionCuts over deleted streams: last %q, %v; want s04 (on after it)", last, err)
	}
}

// TestSmallTruncatesReclaimWhenShort: while the node's disk is short of space
// (Options.ReclaimNow), small truncations, whose keys are deleted one by one and left to
// Pebble's own compactions otherwise, have their space compacted back too: a node refusing appends for want of space writes nothing that would start
// Pebble's compactions, and a retention round of many small truncations freed nothing.
func TestSmallTruncatesReclaimWhenShort(t *testing.T) {
	const streams = 40
	ts := newTestShard(t, nil, 1)
	var short atomic.Bool
	short.Store(true)
	ts.s.opts.ReclaimNow = &short
	ts.apply(EncodeSetFormat(&SetFormatCommand{Format: MaxFormat}))
	rng := rand.New(rand.NewPCG(3, 4)) // incompressible data, the same every run
	for i := range streams {
		c := &AppendCommand{Stream: fmt.Sprintf("s-%d", i)}
		for j := range 5 {
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
	if err := ts.db.Flush(); err != nil {
		t.Fatal(err)
	}
	lo, hi := ts.s.keys.eventStream(nil, 0), ts.s.keys.eventStreamEnd(nil, streams)
	usage := func() uint64 {
		n, err := ts.db.EstimateDiskUsage(lo, hi)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before, compactions := usage(), ts.db.Metrics().Compact.Count
	for i := range streams {
		if r, ok := ts.apply(EncodeTruncate(&TruncateCommand{Stream: fmt.Sprintf("s-%d", i), Before: 4})).(*TruncateResult); !ok || r.Start != 4 {
			t.Fatalf("truncate: %s", fmtResult(r))
		}
	}
	if ts.s.compact == nil {
		t.Fatal("no compaction queued for the small truncations of a shard short of space")
	}
	ts.s.compact.idle(t)
	after := usage()
	if after > before/3 {
		t.Fatalf("the truncated events still take %d of %d bytes on disk", after, before)
	}
	t.Logf("the events took %d bytes on disk, %d after %d small truncations (%d compactions)",
		before, after, streams, ts.db.Metrics().Compact.Count-compactions)
}

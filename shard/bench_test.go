package shard

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// BenchmarkApplyAppend measures Apply+Commit (NoSync; the replica's fsync is
// elsewhere) for appends of 256-byte events spread over 10,000 streams, at
// each shard format, grouped into indexed batches of entries like the apply
// loop does: a few entries per batch for single events under load, about
// 1,000 events per batch otherwise. One op = one raft entry.
func BenchmarkApplyAppend(b *testing.B) {
	for _, bc := range []struct{ perEntry, perBatch int }{{1, 4}, {1, 1000}, {100, 10}} {
		for _, format := range []uint64{Format2, Format3} {
			b.Run(fmt.Sprintf("events=%d/batch=%d/format=%d", bc.perEntry, bc.perBatch, format), func(b *testing.B) {
				benchApplyAppend(b, bc.perEntry, bc.perBatch, format)
			})
		}
	}
}

func benchApplyAppend(b *testing.B, perEntry, entriesPerBatch int, format uint64) {
	// Node-like settings: large memtables so flushes do not stall the loop.
	db, err := pebble.Open("db", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{},
		MemTableSize: 64 << 20, MemTableStopWritesThreshold: 4,
		L0CompactionThreshold: 4, L0StopWritesThreshold: 32})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s, err := Open(db, 1, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	index := uint64(1)
	fb := db.NewIndexedBatch()
	if res, ok := s.Apply(fb, index, EncodeSetFormat(&SetFormatCommand{Format: format})).(*FormatResult); !ok || res.Format != format {
		b.Fatalf("set format: %v", res)
	}
	if err := fb.Commit(pebble.NoSync); err != nil {
		b.Fatal(err)
	}
	s.Committed()
	const streams = 10000
	names := make([]string, streams)
	for i := range names {
		names[i] = fmt.Sprintf("order-%08d", i)
	}
	data := make([]byte, 256)
	c := &AppendCommand{Events: make([]Event, perEntry)}
	var idc uint64
	var batch *pebble.Batch
	var applyTime time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if batch == nil {
			batch = db.NewIndexedBatch()
			s.BeginBatch(batch) // as the replica's apply loop does
		}
		c.Stream = names[i%streams]
		for j := range c.Events {
			idc++
			var id [16]byte
			binary.BigEndian.PutUint64(id[8:], idc)
			id[0] = 0x5a
			c.Events[j] = Event{ID: id, Type: "OrderPlaced", Data: data}
		}
		index++
		data := EncodeAppend(c)
		t0 := time.Now()
		if res, ok := s.Apply(batch, index, data).(*AppendResult); !ok || res.Duplicate {
			b.Fatalf("apply: %v", res)
		}
		applyTime += time.Since(t0)
		if (i+1)%entriesPerBatch == 0 || i == b.N-1 {
			if err := s.FinishBatch(batch); err != nil {
				b.Fatal(err)
			}
			if err := batch.Commit(pebble.NoSync); err != nil {
				b.Fatal(err)
			}
			batch.Close()
			batch = nil
			s.Committed()
		}
	}
	b.ReportMetric(float64(b.N*perEntry)/b.Elapsed().Seconds(), "events/s")
	// Apply alone (decode, checks, record encoding, batch writes), without Commit.
	b.ReportMetric(float64(b.N*perEntry)/applyTime.Seconds(), "apply-events/s")
}

func BenchmarkKeyEncode(b *testing.B) {
	k := newKeys(7)
	var buf []byte
	id := testID(99)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = k.event(buf[:0], uint64(i), uint64(i))
		buf = k.id(buf[:0], &id)
		buf = k.stream(buf[:0], "order-00001234")
	}
}

func benchEvent(size int) Event {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return Event{ID: testID(1), Type: "OrderPlaced", Data: data, Metadata: []byte(`{"user":"u1"}`), ContentType: "application/json"}
}

func BenchmarkRecordEncode(b *testing.B) {
	for _, size := range []int{256, 16 << 10} {
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			e := benchEvent(size)
			var rec, scratch []byte
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				rec, scratch = appendRecord(rec[:0], &e, 1, uint64(i), scratch)
			}
		})
	}
}

func BenchmarkRecordDecode(b *testing.B) {
	for _, size := range []int{256, 16 << 10} {
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			e := benchEvent(size)
			rec, _ := appendRecord(nil, &e, 1, 2, nil)
			var ev RecordedEvent
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := decodeRecord(rec, &ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReload measures how long Reload holds its caller (the node's raft
// loop, after a snapshot is installed) for a shard of 200,000 events; the
// event-ID scan that follows runs in the background and is not timed.
func BenchmarkReload(b *testing.B) {
	const events = 200000
	ts := newTestShard(b, nil, 1)
	ts.begin()
	for i := range uint64(events) {
		ts.apply(appendOne(fmt.Sprintf("s-%d", i%1000), i+1))
		if i%1000 == 999 {
			ts.commit(pebble.NoSync)
			ts.begin()
		}
	}
	ts.commit(pebble.NoSync)
	if err := ts.db.Flush(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := ts.s.Reload(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		ts.s.waitFilters(b)
		b.StartTimer()
	}
}

// BenchmarkValidateAppend measures the checks every replica runs on every append it applies:
// one event of 256 bytes, the common case.
func BenchmarkValidateAppend(b *testing.B) {
	c := &AppendCommand{Stream: "order-00001234", Events: []Event{{
		ID: [16]byte{1}, Type: "OrderPlaced", ContentType: "application/json", Data: make([]byte, 256)}}}
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateAppend(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyTruncate measures the apply and commit (NoSync) of one truncation of a stream's
// first events, 256-byte each, flushed to tables as a stream's older events are: at Format6,
// and at Format7, which also reads the removed events' IDs and deletes their index entries.
// One op = one truncation; the stream is written again, untimed, before each.
func BenchmarkApplyTruncate(b *testing.B) {
	for _, events := range []int{100, 10000, 100000} {
		for _, format := range []uint64{Format6, Format7} {
			b.Run(fmt.Sprintf("events=%d/format=%d", events, format), func(b *testing.B) {
				ts := newTestShard(b, nil, 1)
				ts.apply(EncodeSetFormat(&SetFormatCommand{Format: format}))
				data := make([]byte, 256)
				var idc uint64
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					stream := fmt.Sprintf("s-%d", i)
					for left := events + 1; left > 0; left -= 1000 {
						evs := make([]Event, min(left, 1000))
						for j := range evs {
							idc++
							evs[j] = Event{ID: testID(idc), Type: "T", Data: data}
						}
						if res := fmtResult(ts.apply(EncodeAppend(&AppendCommand{Stream: stream, Events: evs}))); res[:2] != "ok" {
							b.Fatal(res)
						}
					}
					if err := ts.db.Flush(); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					ts.begin()
					if res := fmtResult(ts.apply(EncodeTruncate(&TruncateCommand{Stream: stream, Before: uint64(events)}))); res[:2] != "ok" {
						b.Fatal(res)
					}
					ts.commit(pebble.NoSync)
				}
			})
		}
	}
}

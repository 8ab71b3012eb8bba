package shard

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// TestReadLogStorageError: a shard log read whose tables cannot be read (a failing disk, a
// block failing its checksum) fails with the storage's error. It used to end as if it had
// reached the log's end (no event, no error), and a subscriber, told it was caught up, waited
// for new events for good instead of failing over to another replica.
func TestReadLogStorageError(t *testing.T) {
	var failing atomic.Bool
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if failing.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsRead && strings.HasSuffix(op.Path, ".sst") {
			return errorfs.ErrInjected
		}
		return nil
	}))
	open := func() *pebble.DB {
		db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: quietLogger{}, CacheSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open()
	s, err := Open(db, 1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(50) {
		b := db.NewIndexedBatch()
		cmd := &AppendCommand{Stream: fmt.Sprint("s", i%5), Events: []Event{{ID: testID(i + 1), Type: "T", Data: []byte(strings.Repeat("x", 200))}}}
		if res := s.Apply(b, i+1, EncodeAppend(cmd)); s.ApplyFailure(res) != nil {
			t.Fatal(res)
		}
		if err := b.Commit(pebble.Sync); err != nil {
			t.Fatal(err)
		}
		b.Close()
		s.Committed()
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db.Close()
	db = open() // no block cached
	defer db.Close()
	if s, err = Open(db, 1, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.build != nil {
		<-s.build.done
	}
	failing.Store(true)
	n := 0
	next, err := s.ReadLog(0, 0, func(*RecordedEvent) error { n++; return nil })
	failing.Store(false)
	if err == nil {
		t.Fatalf("ReadLog with every table read failing: %d events, next %d, no error (the log holds %d)", n, next, s.LastPosition())
	}
	// Readable again, it reads the whole log.
	n = 0
	if _, err := s.ReadLog(0, 0, func(*RecordedEvent) error { n++; return nil }); err != nil || n != 50 {
		t.Fatalf("ReadLog: %d events, %v; want 50", n, err)
	}
}

package shard_test

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"

	"github.com/shoaldb/shoal/shard"
)

// TestChanged checks that a channel from Changed closes at the next Committed, Reload or
// Close, and not before.
func TestChanged(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := shard.Open(db, 0, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}

	ch := s.Changed()
	if s.Changed() != ch {
		t.Fatal("two waiters got different channels")
	}
	b := db.NewIndexedBatch()
	s.Apply(b, 1, shard.EncodeAppend(&shard.AppendCommand{Stream: "s", Expected: shard.Expected{Kind: shard.ExpectAny},
		Events: []shard.Event{{ID: uuid.New(), Type: "T"}}, Time: 1}))
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if closed(ch) {
		t.Fatal("closed before Committed")
	}
	s.Committed()
	if !closed(ch) {
		t.Fatal("not closed by Committed")
	}
	if s.LastPosition() != 1 {
		t.Fatalf("LastPosition %d after the wake-up, want 1", s.LastPosition())
	}

	ch = s.Changed()
	if closed(ch) {
		t.Fatal("a new channel is already closed")
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if !closed(ch) {
		t.Fatal("not closed by Reload")
	}
	// Per stream: a commit wakes the readers of the streams it changed, not the others.
	defer s.WatchStreams()()
	other := ""
	for i := 0; other == ""; i++ {
		if name := fmt.Sprint("o", i); s.StreamChanged(name) != s.StreamChanged("s") {
			other = name // in another slot
		}
	}
	chS, chO := s.StreamChanged("s"), s.StreamChanged(other)
	b = db.NewIndexedBatch()
	s.Apply(b, 2, shard.EncodeAppend(&shard.AppendCommand{Stream: "s", Expected: shard.Expected{Kind: shard.ExpectAny},
		Events: []shard.Event{{ID: uuid.New(), Type: "T"}}, Time: 2}))
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	b.Close()
	s.Committed()
	if !closed(chS) || closed(chO) {
		t.Fatalf("after a commit of s: its channel closed %v, another stream's %v; want true, false", closed(chS), closed(chO))
	}

	ch = s.Changed()
	chO = s.StreamChanged(other)
	s.Close()
	if !closed(ch) || !closed(chO) {
		t.Fatal("not closed by Close")
	}
}

package shard_test

import (
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
	ch = s.Changed()
	s.Close()
	if !closed(ch) {
		t.Fatal("not closed by Close")
	}
}

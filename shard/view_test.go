package shard

import (
	"context"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestViewOutlivesExcise: a View sees the shard as it was when taken, even after the shard's
// keys are excised (as a raft snapshot installed over the shard excises them), which a plain
// Pebble snapshot shows through: a read in pages over one found its stream gone half-way.
func TestViewOutlivesExcise(t *testing.T) {
	db, err := pebble.Open("db", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}, FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(db, 1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testShard{t: t, db: db, s: s, index: s.Applied()}
	t.Cleanup(func() {
		s.Close()
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	for i := range 5 {
		ts.apply(EncodeAppend(&AppendCommand{Stream: "s", Events: []Event{{ID: testID(uint64(i + 1)), Type: "T"}}}))
	}
	if err := db.Flush(); err != nil { // in tables, which the excise removes from the LSM
		t.Fatal(err)
	}
	v := s.NewView()
	defer v.Close()
	lo, hi := s.keys.span()
	if err := db.Excise(context.Background(), pebble.KeyRange{Start: lo, End: hi}); err != nil {
		t.Fatal(err)
	}
	if err := s.ReadStream("s", 0, false, false, 0, func(*RecordedEvent) error { return nil }); err != ErrStreamNotFound {
		t.Fatalf("read of the excised shard: %v, want ErrStreamNotFound (the excise took effect)", err)
	}
	var got int
	err = s.ReadStreamIn(v, "s", 0, false, false, 0, false, func(*RecordedEvent) error { got++; return nil })
	if err != nil || got != 5 {
		t.Fatalf("read through the view taken before the excise: %d events, %v; want 5", got, err)
	}
}

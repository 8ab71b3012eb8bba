package node

import (
	"log/slog"
	"testing"
	"time"
)

// A store reopened after a run that wrote nothing (a start held by the restore check and
// stopped, a start that failed after opening the store) replays an empty WAL, and Pebble
// reports the empty memtable's flush to FlushEnd as "pebble: empty table": it is no failure.
func TestReopenedUnwrittenStoreIsNoStall(t *testing.T) {
	dir := t.TempDir()
	stalls := make(chan DiskStall, 1)
	open := func() func() {
		w := newDiskWatch(slog.Default(), MinMaxSyncDuration, func(s DiskStall) { stalls <- s })
		w.watchFlushes(dir)
		db, _, err := openPebble(dir, slog.Default(), nil, pebbleCreate, w, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		return func() { db.Close(); w.close() }
	}
	open()()          // creates the store
	open()()          // writes nothing
	closeDB := open() // replays the empty WAL
	defer closeDB()
	select {
	case s := <-stalls:
		t.Fatalf("stall reported for a store reopened idle: %v", s)
	case <-time.After(3 * MinMaxSyncDuration):
	}
}

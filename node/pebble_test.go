package node

import (
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2/bloom"
)

// The sstables of received snapshots are written with the options of the
// node's last level, so that ingested tables carry its bloom filters and
// block size.
func TestSnapshotTableOptions(t *testing.T) {
	db, opts, err := openPebble(t.TempDir(), slog.New(slog.DiscardHandler), nil, pebbleCreate, nil, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	w := opts.MakeWriterOptions(len(opts.Levels)-1, db.TableFormat())
	if w.FilterPolicy == nil || w.FilterPolicy.Name() != bloom.FilterPolicy(10).Name() {
		t.Fatalf("filter policy %v, want a bloom filter", w.FilterPolicy)
	}
	if w.BlockSize != 32<<10 || w.TableFormat != db.TableFormat() || w.Comparer == nil {
		t.Fatalf("writer options %+v", w)
	}
}

package query

import (
	"errors"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// builtUnder runs a projection with the filters set by with to the end of src's log in a new
// in-memory Dir, closes it, and returns the file system.
func builtUnder(t *testing.T, src *fakeSource, with func(*Config)) vfs.FS {
	t.Helper()
	fs := vfs.NewMem()
	cfg := testConfig(fs, HandlerFunc(countingHandler))
	with(&cfg)
	p, err := open(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, p, src.add(40))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	return fs
}

// TestProjectionRefusesOtherFilters: a Dir whose checkpoint was built under some filters is
// refused by Open under others (ErrFilterMismatch naming both), where it used to open and
// silently never hand on the events the old filters had skipped (widened EventTypes: the
// existing events of the added type never reached the handler). The same filters, event
// types in another order or repeated, open it.
func TestProjectionRefusesOtherFilters(t *testing.T) {
	built := func(c *Config) { c.EventTypes = []string{"Deposited"} }
	for _, tc := range []struct {
		name   string
		with   func(*Config)
		refuse bool
	}{
		{"same", func(c *Config) { c.EventTypes = []string{"Deposited"} }, false},
		{"same, repeated", func(c *Config) { c.EventTypes = []string{"Deposited", "Deposited"} }, false},
		{"widened types", func(c *Config) { c.EventTypes = []string{"Noise", "Deposited"} }, true},
		{"all types", func(c *Config) { c.EventTypes = nil }, true},
		{"other type", func(c *Config) { c.EventTypes = []string{"Noise"} }, true},
		{"stream prefix", func(c *Config) { c.EventTypes = []string{"Deposited"}; c.StreamPrefix = "acct-1" }, true},
		{"deletes", func(c *Config) { c.EventTypes = []string{"Deposited"}; c.Deletes = true }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFakeSource(2, 3)
			fs := builtUnder(t, src, built)
			cfg := testConfig(fs, HandlerFunc(countingHandler))
			tc.with(&cfg)
			p, err := open(cfg, src)
			if !tc.refuse {
				if err != nil {
					t.Fatalf("open under the same filters: %v", err)
				}
				p.Close()
				return
			}
			var fe *FilterMismatchError
			if !errors.As(err, &fe) || !errors.Is(err, ErrFilterMismatch) {
				if err == nil {
					p.Close()
				}
				t.Fatalf("open under other filters = %v, want a FilterMismatchError", err)
			}
			if !slices.Equal(fe.Stored.EventTypes, []string{"Deposited"}) || fe.Stored.StreamPrefix != "" || fe.Stored.Deletes ||
				!fe.Given.equal(cfg.filters()) || fe.Dir != cfg.Dir {
				t.Fatalf("FilterMismatchError %+v: want stored Deposited only, given %v", fe, cfg.filters())
			}
			// The Dir is left as it was: under its own filters it opens.
			cfg = testConfig(fs, HandlerFunc(countingHandler))
			built(&cfg)
			if p, err = open(cfg, src); err != nil {
				t.Fatalf("reopen under the stored filters: %v", err)
			}
			p.Close()
		})
	}
}

// TestProjectionFiltersOfEarlierVersion: a Dir bound to a cluster by a version that stored
// no filters opens under any (what it was built under is unknown), and stores them: other
// filters are refused from then on.
func TestProjectionFiltersOfEarlierVersion(t *testing.T) {
	src := newFakeSource(2, 4)
	fs := builtUnder(t, src, func(c *Config) {})
	db, err := pebble.Open("proj", &pebble.Options{FS: fs, Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Delete([]byte{prefixFilters}, pebble.Sync); err != nil { // as an earlier version left it
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(fs, HandlerFunc(countingHandler))
	cfg.StreamPrefix = "acct-"
	p, err := open(cfg, src)
	if err != nil {
		t.Fatalf("open of an earlier version's Dir: %v", err)
	}
	runUntil(t, p, src.add(5))
	p.Close()
	cfg.StreamPrefix = ""
	if p, err := open(cfg, src); !errors.Is(err, ErrFilterMismatch) {
		if err == nil {
			p.Close()
		}
		t.Fatalf("open under other filters than the ones stored on upgrade = %v, want ErrFilterMismatch", err)
	}
}

// TestProjectionNewDirTakesAnyFilters: a Dir no Run bound to a cluster has no checkpoint, so
// whatever filters it was first opened with bind nothing.
func TestProjectionNewDirTakesAnyFilters(t *testing.T) {
	fs := vfs.NewMem()
	src := newFakeSource(1, 6)
	cfg := testConfig(fs, HandlerFunc(countingHandler))
	cfg.EventTypes = []string{"Deposited"}
	p, err := open(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	cfg.EventTypes = nil
	if p, err = open(cfg, src); err != nil {
		t.Fatalf("reopen of an unbound Dir under other filters: %v", err)
	}
	p.Close()
}

func TestFiltersEncoding(t *testing.T) {
	for _, f := range []Filters{
		{},
		{StreamPrefix: "order-", EventTypes: []string{"Paid", "Placed"}, Deletes: true},
		{EventTypes: []string{"é", "x"}},
	} {
		got, err := decodeFilters(f.encode())
		if err != nil || !got.equal(f) {
			t.Fatalf("decode(encode(%v)) = %v, %v", f, got, err)
		}
		enc := f.encode()
		for i := range enc { // every cut short record is corrupt, not another filter
			if _, err := decodeFilters(enc[:i]); err == nil {
				t.Fatalf("%v cut to %d bytes decoded", f, i)
			}
		}
		if _, err := decodeFilters(append(enc, 0)); err == nil {
			t.Fatalf("%v with a trailing byte decoded", f)
		}
	}
	if _, err := decodeFilters([]byte{2, 0, 0}); err == nil {
		t.Fatal("an unknown flag decoded")
	}
	cfg := Config{EventTypes: []string{"b", "a", "b"}}
	if got := cfg.filters(); !slices.Equal(got.EventTypes, []string{"a", "b"}) {
		t.Fatalf("filters of %v: %v", cfg.EventTypes, got.EventTypes)
	}
}

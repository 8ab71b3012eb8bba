package query

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Filters are the Config fields that choose which of a shard's entries reach the Handler:
// StreamPrefix, EventTypes and Deletes. The entries they skip still advance the checkpoint,
// so a database stores the filters its checkpoint was built under, and Open refuses other
// ones (ErrFilterMismatch).
type Filters struct {
	StreamPrefix string
	EventTypes   []string // sorted, without duplicates; empty means all
	Deletes      bool
}

// filters returns c's filters, EventTypes sorted and without duplicates: their order in the
// Config chooses nothing.
func (c *Config) filters() Filters {
	types := slices.Compact(slices.Sorted(slices.Values(c.EventTypes)))
	if len(types) == 0 {
		types = nil
	}
	return Filters{StreamPrefix: c.StreamPrefix, EventTypes: types, Deletes: c.Deletes}
}

func (f Filters) String() string {
	types := "all"
	if len(f.EventTypes) > 0 {
		types = fmt.Sprintf("%q", f.EventTypes)
	}
	return fmt.Sprintf("{StreamPrefix %q, EventTypes %s, Deletes %v}", f.StreamPrefix, types, f.Deletes)
}

func (f Filters) equal(g Filters) bool {
	return f.StreamPrefix == g.StreamPrefix && slices.Equal(f.EventTypes, g.EventTypes) && f.Deletes == g.Deletes
}

// The filters record, under the key 'f' (see batch.go):
//
//	+-------+-------------------------------------------------------------+
//	| bytes | field                                                       |
//	+-------+-------------------------------------------------------------+
//	| 1     | flags: bit 0 Deletes; the other bits are zero               |
//	| var   | uvarint length, StreamPrefix                                |
//	| var   | uvarint count, then per event type: uvarint length, type    |
//	+-------+-------------------------------------------------------------+
//
// Event types are stored sorted, without duplicates. A record that does not decode whole is
// corrupt: a filter added later changes what the record must say, and is not to be ignored.
const filtersDeletes = 1 << 0

func (f Filters) encode() []byte {
	var flags byte
	if f.Deletes {
		flags |= filtersDeletes
	}
	out := []byte{flags}
	out = binary.AppendUvarint(out, uint64(len(f.StreamPrefix)))
	out = append(out, f.StreamPrefix...)
	out = binary.AppendUvarint(out, uint64(len(f.EventTypes)))
	for _, t := range f.EventTypes {
		out = binary.AppendUvarint(out, uint64(len(t)))
		out = append(out, t...)
	}
	return out
}

var errCorruptFilters = errors.New("corrupt filters record")

func decodeFilters(v []byte) (Filters, error) {
	if len(v) == 0 || v[0]&^filtersDeletes != 0 {
		return Filters{}, errCorruptFilters
	}
	f := Filters{Deletes: v[0]&filtersDeletes != 0}
	v = v[1:]
	str := func() (string, bool) {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > uint64(len(v)-k) {
			return "", false
		}
		s := string(v[k : k+int(n)])
		v = v[k+int(n):]
		return s, true
	}
	var ok bool
	if f.StreamPrefix, ok = str(); !ok {
		return Filters{}, errCorruptFilters
	}
	count, k := binary.Uvarint(v)
	if k <= 0 || count > uint64(len(v)) { // each type takes at least one byte
		return Filters{}, errCorruptFilters
	}
	v = v[k:]
	for range count {
		t, ok := str()
		if !ok {
			return Filters{}, errCorruptFilters
		}
		f.EventTypes = append(f.EventTypes, t)
	}
	if len(v) != 0 {
		return Filters{}, errCorruptFilters
	}
	return f, nil
}

// checkFilters refuses a database whose checkpoint was built under other filters than
// p.cfg's (*FilterMismatchError). A database not yet bound to a cluster has no checkpoint:
// bind stores the filters with the cluster. One bound by an earlier version, which did not
// store its filters, takes p.cfg's, and refuses other ones from then on.
func (p *Projection) checkFilters(bound bool) error {
	given := p.cfg.filters()
	v, closer, err := p.db.Get([]byte{prefixFilters})
	switch {
	case err == pebble.ErrNotFound && !bound:
		return nil
	case err == pebble.ErrNotFound:
		// What the earlier version's filters were is not known. Refusing the database would
		// leave its owner only a rebuild from the log, which lacks what truncations and
		// retention removed since it was built, for every model upgraded, most of which are
		// opened with the Config they were built with; accepting and storing the Config's
		// filters keeps those working and catches every change made from now on. A change
		// made in the same upgrade is the one case not caught (the Config comment says so).
		p.cfg.Logger.Warn("query: projection database stores no filters (written by an earlier version); taking the Config's",
			"projection", p.cfg.Name, "filters", given.String())
		if err := p.db.Set([]byte{prefixFilters}, given.encode(), pebble.Sync); err != nil {
			return fmt.Errorf("query: projection %q: storing filters: %w", p.cfg.Name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("query: projection %q: %w", p.cfg.Name, err)
	}
	stored, err := decodeFilters(v)
	closer.Close()
	if err != nil {
		return fmt.Errorf("query: projection %q: %w", p.cfg.Name, err)
	}
	if !stored.equal(given) {
		return &FilterMismatchError{Projection: p.cfg.Name, Dir: p.cfg.Dir, Stored: stored, Given: given}
	}
	return nil
}

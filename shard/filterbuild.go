package shard

import (
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
)

// The event-ID and stream-name filters (bloom.go) are rebuilt from the ID
// index ('I' keys) and the stream index ('N' keys) when the shard opens and
// after every Reload: one scan of every event ID and stream name the shard
// holds, about 0.6 µs per key. Open and Reload run on the replica's raft loop,
// which serves every shard of the node, so the scan runs in the background:
// Reload opens two iterators (a consistent view of what is stored so far: only
// this goroutine writes the shard's keys) and returns. Until the scan ends,
// Apply confirms every event ID and every uncached stream in Pebble, as it
// does for a filter hit, and remembers the IDs and names it stores; the first
// Apply after the scan adds them to the new filters and starts using them.
// Verdicts never depend on the filters, only the cost of an append does.

// filterBuildCheckEvery is how many keys the scan reads between checks for
// cancellation.
const filterBuildCheckEvery = 4096

// filterBuild is one background scan of the ID and stream indexes.
type filterBuild struct {
	quit       chan struct{} // closed to cancel the scan
	done       chan struct{} // closed when the scan ends; then ids, names and err are set
	ids, names *hashFilter
	err        error
	start, end time.Time // when the scan started and ended (set before done is closed)
	// gate, when set by a test, holds the scan before its first key.
	gate chan struct{}
}

// startFilterBuild starts a scan over the event IDs and streams stored now.
// Reload has stopped the previous scan and dropped the filters.
// Apply-goroutine only.
func (s *Shard) startFilterBuild(events, streams int) error {
	lo, hi := s.keys.tagSpan(tagID)
	idIt, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	lo, hi = s.keys.tagSpan(tagStream)
	nameIt, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		idIt.Close()
		return err
	}
	b := &filterBuild{quit: make(chan struct{}), done: make(chan struct{}), start: time.Now(), gate: s.filterBuildGate}
	s.build = b
	s.idsAdded, s.namesAdded = s.idsAdded[:0], s.namesAdded[:0]
	s.forgotten = 0
	go b.run(idIt, nameIt, events, streams)
	return nil
}

func (b *filterBuild) run(idIt, nameIt *pebble.Iterator, events, streams int) {
	defer func() {
		b.end = time.Now()
		close(b.done)
	}()
	if b.gate != nil {
		select {
		case <-b.gate:
		case <-b.quit:
		}
	}
	if b.stopped() {
		b.err = errFilterBuildStopped
		idIt.Close()
		nameIt.Close()
		return
	}
	b.ids = newHashFilter(events)
	b.names = newHashFilter(streams)
	b.err = b.scan(idIt, b.ids, func(rest []byte) (uint64, error) {
		if len(rest) != 16 {
			return 0, errCorrupt("event ID key")
		}
		return xxhash.Sum64(rest), nil // idHash
	})
	if b.err == nil {
		b.err = b.scan(nameIt, b.names, func(rest []byte) (uint64, error) {
			return xxhash.Sum64(rest), nil // nameHash
		})
	}
	for _, it := range []*pebble.Iterator{idIt, nameIt} {
		if err := it.Close(); err != nil && b.err == nil {
			b.err = err
		}
	}
}

// scan adds the hash of every key of it (after the tag) to f.
func (b *filterBuild) scan(it *pebble.Iterator, f *hashFilter, hash func(rest []byte) (uint64, error)) error {
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if n%filterBuildCheckEvery == 0 && b.stopped() {
			return errFilterBuildStopped
		}
		n++
		h, err := hash(it.Key()[prefixLen+1:])
		if err != nil {
			return err
		}
		f.add(h)
	}
	return it.Error()
}

func (b *filterBuild) stopped() bool {
	select {
	case <-b.quit:
		return true
	default:
		return false
	}
}

// stopFilterBuild cancels the scan in progress, if any, and waits for it to
// close its iterators. Apply-goroutine only (or Close).
func (s *Shard) stopFilterBuild() {
	if s.build == nil {
		return
	}
	close(s.build.quit)
	<-s.build.done
	s.build = nil
}

// idsEstimate returns how many event IDs to size the ID filter's first stage for: the events
// the shard ever appended (appended), or fewer when its ID index takes less room on disk than
// that many entries would (from Format7 on truncations forget IDs), plus what the memtables
// may hold. A filter sized below its entries adds stages, only raising its false positives.
func (s *Shard) idsEstimate(appended uint64) int {
	n := min(appended, bloomMaxFirst)
	lo, hi := s.keys.tagSpan(tagID)
	if size, err := s.db.EstimateDiskUsage(lo, hi); err == nil {
		n = min(n, size/idEntryDiskMin+idsUnflushed)
	}
	return int(n)
}

// idEntryDiskMin is fewer bytes than an ID index entry takes in a table (a 22-byte key whose
// last 10 bytes, of a UUID version 7, or 16 of another, are random; a 24-byte value, which
// compresses), so that idsEstimate errs high.
const idEntryDiskMin = 12

// idsUnflushed is what idsEstimate allows for the entries in memtables, which take no room in
// tables yet. A variable for tests.
var idsUnflushed uint64 = 1 << 18

// filterRebuildMin is how many event IDs truncations must have forgotten (Format7) since the
// filters were built before Committed rebuilds them, and only once they are at least half of
// the IDs the filter holds: a filter never drops an entry, so without rebuilds a node that
// runs for months under retention would hold a filter of every ID it ever stored. A rebuild
// scans the IDs left, at least as many as were forgotten, in the background (appends check
// Pebble meanwhile).
var filterRebuildMin = 1 << 20

// maybeRebuildFilters starts a rebuild of the filters when truncations have forgotten enough
// of their IDs. Called by Committed: the scan's view then holds every batch applied.
// Apply-goroutine only.
func (s *Shard) maybeRebuildFilters() {
	if s.ids == nil || s.build != nil || s.forgotten < filterRebuildMin || s.forgotten < s.ids.count()/2 {
		return
	}
	left := max(s.ids.count()-s.forgotten, 0)
	s.opts.Logger.Info("shard: rebuilding the event-ID filter after truncations forgot IDs", "shard", s.id,
		"forgotten", s.forgotten, "ids", s.ids.count())
	s.ids, s.names = nil, nil
	if err := s.startFilterBuild(left, int(min(s.meta.nextStreamID, bloomMaxFirst))); err != nil {
		// Appends check Pebble until the next Reload: correct, only slower.
		s.opts.Logger.Error("shard: rebuilding the filters failed to start; appends check Pebble", "shard", s.id, "err", err)
	}
}

// filters returns the event-ID and stream-name filters, or nils while the
// background scan runs (Apply then looks every ID and uncached stream up in
// Pebble). It installs the scan's filters once the scan has ended.
// Apply-goroutine only.
func (s *Shard) filters() (ids, names *hashFilter) {
	if s.ids != nil || s.build == nil {
		return s.ids, s.names
	}
	b := s.build
	select {
	case <-b.done:
	default:
		return nil, nil
	}
	s.build = nil
	if b.err != nil {
		// The scan read a broken key or Pebble failed: keep confirming in Pebble
		// (correct, only slower) until the next Reload.
		s.opts.Logger.Error("shard: building the event-ID and stream filters failed; appends check Pebble",
			"shard", s.id, "err", b.err)
		return nil, nil
	}
	for _, h := range s.idsAdded {
		b.ids.add(h)
	}
	for _, h := range s.namesAdded {
		b.names.add(h)
	}
	s.ids, s.names, s.idsAdded, s.namesAdded = b.ids, b.names, nil, nil
	// Installed by the first apply after the scan: an idle shard's may come long after.
	s.opts.Logger.Info("shard filters built", "shard", s.id,
		"ids", b.ids.count(), "streams", b.names.count(), "bytes", b.ids.bytes()+b.names.bytes(),
		"took", b.end.Sub(b.start), "installed_after", time.Since(b.start))
	return s.ids, s.names
}

// addID records that the batch being applied stores the event ID.
func (s *Shard) addID(id *[16]byte) {
	if ids, _ := s.filters(); ids != nil {
		ids.add(idHash(id))
	} else if s.build != nil {
		s.idsAdded = append(s.idsAdded, idHash(id))
	}
}

// addName records that the batch being applied creates the stream.
func (s *Shard) addName(name string) {
	if _, names := s.filters(); names != nil {
		names.add(nameHash(name))
	} else if s.build != nil {
		s.namesAdded = append(s.namesAdded, nameHash(name))
	}
}

// Close stops the shard's background work (the filter scan, the compaction of truncated
// events). Call it before closing the DB; the shard must not be used afterwards. Idempotent.
func (s *Shard) Close() {
	s.stopFilterBuild()
	if s.compact != nil {
		s.compact.stop()
	}
	s.notifyAllStreams()
	s.notify()
}

package shard

import (
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// The event-ID filter is rebuilt from the ID index ('I' keys) when the shard
// opens and after every Reload: one scan of every event ID the shard holds,
// about 0.6 µs per ID. Open and Reload run on the replica's raft loop, which
// serves every shard of the node, so the scan runs in the background: Reload
// opens an iterator (a consistent view of the IDs stored so far) and returns.
// Until the scan ends, Apply confirms every event ID in Pebble, as it does
// for a filter hit, and remembers the IDs it stores; the first Apply after the
// scan adds them to the new filter and starts using it. Verdicts never depend
// on the filter, only the cost of an append does.

// idBuildCheckEvery is how many keys the scan reads between checks for
// cancellation.
const idBuildCheckEvery = 4096

// idBuild is one background scan of the ID index.
type idBuild struct {
	quit  chan struct{} // closed to cancel the scan
	done  chan struct{} // closed when the scan ends; then f and err are set
	f     *idFilter
	err   error
	start time.Time
	// gate, when set by a test, holds the scan before its first key.
	gate chan struct{}
}

// startIDBuild cancels a scan in progress and starts a new one over the IDs
// stored now. Apply-goroutine only.
func (s *Shard) startIDBuild(capacity int) error {
	s.stopIDBuild()
	lo, hi := s.keys.tagSpan(tagID)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	b := &idBuild{quit: make(chan struct{}), done: make(chan struct{}), start: time.Now(), gate: s.idBuildGate}
	s.ids, s.idsAdded, s.build = nil, s.idsAdded[:0], b
	go b.run(it, capacity)
	return nil
}

func (b *idBuild) run(it *pebble.Iterator, capacity int) {
	defer close(b.done)
	if b.gate != nil {
		select {
		case <-b.gate:
		case <-b.quit:
		}
	}
	f := newIDFilter(capacity)
	var id [16]byte
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if n%idBuildCheckEvery == 0 && b.stopped() {
			b.err = errIDBuildStopped
			break
		}
		n++
		k := it.Key()
		if len(k) != prefixLen+1+16 {
			b.err = errCorrupt("event ID key")
			break
		}
		copy(id[:], k[prefixLen+1:])
		f.add(&id)
	}
	if err := it.Close(); err != nil && b.err == nil {
		b.err = err
	}
	b.f = f
}

func (b *idBuild) stopped() bool {
	select {
	case <-b.quit:
		return true
	default:
		return false
	}
}

// stopIDBuild cancels the scan in progress, if any, and waits for it to close
// its iterator. Apply-goroutine only (or Close).
func (s *Shard) stopIDBuild() {
	if s.build == nil {
		return
	}
	close(s.build.quit)
	<-s.build.done
	s.build = nil
}

// idFilterReady returns the event-ID filter, or nil while the background scan
// runs (Apply then looks every ID up in Pebble). It installs the scan's filter
// once the scan has ended. Apply-goroutine only.
func (s *Shard) idFilterReady() *idFilter {
	if s.ids != nil || s.build == nil {
		return s.ids
	}
	b := s.build
	select {
	case <-b.done:
	default:
		return nil
	}
	s.build = nil
	if b.err != nil {
		// The scan read a broken key or Pebble failed: keep confirming every ID in
		// Pebble (correct, only slower) until the next Reload.
		s.opts.Logger.Error("shard: building the event-ID filter failed; event IDs are checked in Pebble",
			"shard", s.id, "err", b.err)
		return nil
	}
	for i := range s.idsAdded {
		b.f.add(&s.idsAdded[i])
	}
	s.ids, s.idsAdded = b.f, nil
	s.opts.Logger.Info("shard event-ID filter built", "shard", s.id,
		"ids", b.f.count(), "bytes", b.f.bytes(), "took", time.Since(b.start))
	return s.ids
}

// addID records that id is stored (by the batch being applied).
func (s *Shard) addID(id *[16]byte) {
	if f := s.idFilterReady(); f != nil {
		f.add(id)
		return
	}
	if s.build != nil {
		s.idsAdded = append(s.idsAdded, *id)
	}
}

// Close stops the shard's background work (the event-ID scan). Call it before
// closing the DB; the shard must not be used afterwards. Idempotent.
func (s *Shard) Close() {
	s.stopIDBuild()
}

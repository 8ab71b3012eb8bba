package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxCachedStreams is the default bound on the committed stream
// metadata cache (entries; about 100 bytes each plus the name).
const DefaultMaxCachedStreams = 1 << 20

// Options configures a Shard. The zero value is valid: zero means default.
type Options struct {
	// Logger receives startup and Reload messages. Nil: discard.
	Logger *slog.Logger
	// MaxCachedStreams bounds the committed stream-metadata cache, in
	// entries. When exceeded, Committed evicts arbitrary entries (they are
	// re-read from Pebble on the next append). 0 = DefaultMaxCachedStreams.
	MaxCachedStreams int
	// Metrics, shared by the node's shards (see NewMetrics). Nil: none.
	Metrics *Metrics
	// ReclaimNow, while it holds true (the node's disk is short of space), has the space of
	// every truncation compacted back at once, however little it held: otherwise a small one
	// is left to Pebble's own compactions, which writes start, and a node refusing appends
	// for want of space has none (compact.go). Nil: never.
	ReclaimNow *atomic.Bool
}

// Validate reports bad option values.
func (o Options) Validate() error {
	if o.MaxCachedStreams < 0 {
		return fmt.Errorf("shard: Options.MaxCachedStreams must be >= 0, got %d", o.MaxCachedStreams)
	}
	return nil
}

func (o *Options) ensureDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxCachedStreams == 0 {
		o.MaxCachedStreams = DefaultMaxCachedStreams
	}
}

// ErrStorage wraps a Pebble error met inside Apply (an addition to the
// contract). The entry was NOT applied and b holds partial writes: the
// caller must discard b, must not call Committed, and must stop applying
// (or Reload and retry). It is never a verdict to hand to a client.
var ErrStorage = errors.New("shard: storage error during apply")

// ErrUnsupportedFormat is returned by Open and Reload for a shard whose
// stored format is above MaxFormat (its data was written by a later
// version: downgrades are not supported), and wrapped by Apply's result for
// a SetFormatCommand above MaxFormat. Like ErrStorage, Apply's is a failure
// (ApplyFailure): the replica must stop rather than apply later entries in
// a format it does not know.
var ErrUnsupportedFormat = errors.New("shard: format not supported by this version")

// Shard is the deterministic state machine of one shard over a key prefix of
// a shared Pebble DB. Reads (ReadStream, ReadLog, StreamInfo, LastPosition,
// Applied, Span, ID) are safe for concurrent use. Apply, SetApplied,
// Committed and Reload must be called from one goroutine at a time (the
// replica's apply loop); they share the fields in the "apply state" group.
type Shard struct {
	db   *pebble.DB
	id   uint32
	keys keys
	opts Options
	m    *shardMetrics // nil when Options.Metrics is nil

	// Apply state: touched only by the apply goroutine.
	pending    map[string]streamMeta // streams changed by applies not yet Committed
	cache      map[string]streamMeta // streams as of the last commit (bounded)
	meta       shardMeta             // includes uncommitted applies
	pendFormat uint64                // format including uncommitted applies
	pendApply  uint64                // applied index including uncommitted applies
	ids        *hashFilter           // superset of the stored event IDs; nil while build runs
	names      *hashFilter           // superset of the stored stream names; nil while build runs
	build      *filterBuild          // background scan rebuilding ids and names, or nil (filterbuild.go)
	idsAdded   []uint64              // hashes of the IDs stored while build runs, for its filter
	namesAdded []uint64              // hashes of the streams created while build runs
	forgotten  int                   // IDs truncations forgot since the filters were built (Format7)
	// filterBuildGate, when set by a test before Reload, holds the next scan until closed.
	filterBuildGate chan struct{}
	keyBuf          []byte
	valBuf          []byte
	scratchBuf      []byte
	// pendCompact are the spans that truncations applied since the last Committed removed;
	// Committed hands them to compact, which reclaims their space in the background.
	pendCompact []span
	compact     *compactor // nil until the first truncation commits
	// deferTo is the batch given to BeginBatch: Apply and SetApplied into it leave the applied
	// index and the shard meta to FinishBatch (written once per batch, not once per entry).
	deferTo     *pebble.Batch
	appliedDirt bool // deferTo lacks the applied index (pendApply)
	metaDirty   bool // deferTo lacks the shard meta

	// As of the last Committed (or Open/Reload); read by any goroutine.
	cachedStreams atomic.Int64 // len(cache)
	applied       atomic.Uint64
	nextPos       atomic.Uint64
	format        atomic.Uint64
	// changed is closed by the next Committed, Reload or Close, for readers that wait for
	// the shard to change (Changed); nil while no one waits.
	changed atomic.Pointer[chan struct{}]
	// streamWatchers counts the readers that wait for single streams (WatchStreams); while
	// there are any, Committed closes streamChanged[hash(stream) % streamSlots] for every
	// stream it commits a change of, and Reload and Close close them all (StreamChanged).
	streamWatchers atomic.Int32
	streamChanged  [streamSlots]atomic.Pointer[chan struct{}]
}

// streamSlots is the number of per-stream wake-up channels per shard (8 KB of pointers):
// streams whose hashes share a slot wake each other's readers, which then find nothing new.
const streamSlots = 1024

// Open returns the shard with the given id over db, loading the applied
// index and the shard meta and starting the background scan that builds the
// event-ID filter (see doc.go). Close the shard before closing db.
func Open(db *pebble.DB, id uint32, opts Options) (*Shard, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.ensureDefaults()
	s := &Shard{db: db, id: id, keys: newKeys(id), opts: opts, m: opts.Metrics.forShard(id)}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// ID returns the shard id.
func (s *Shard) ID() uint32 { return s.id }

// Span returns the shard's state keyspace [lo, hi) (all S|shard keys).
func (s *Shard) Span() (lo, hi []byte) { return s.keys.span() }

// Applied returns the last applied raft index as of the last Committed.
func (s *Shard) Applied() uint64 { return s.applied.Load() }

// LastPosition returns the next position to be assigned as of the last
// Committed (0 when the shard log is empty).
func (s *Shard) LastPosition() uint64 { return s.nextPos.Load() }

// Format returns the shard's format (Format1, Format2, ...) as of the last
// Committed.
func (s *Shard) Format() uint64 { return s.format.Load() }

// Changed returns a channel closed the next time the shard changes: after Committed (new
// entries applied), Reload or Close. A reader that takes the channel before it reads the
// shard cannot miss a change made after its read: wait on the channel, then read again.
func (s *Shard) Changed() <-chan struct{} { return changedChan(&s.changed) }

// WatchStreams registers a reader that waits for single streams with StreamChanged, until
// the returned func is called. While none is registered, Committed signals no stream.
func (s *Shard) WatchStreams() (release func()) {
	s.streamWatchers.Add(1)
	var once sync.Once
	return func() { once.Do(func() { s.streamWatchers.Add(-1) }) }
}

// StreamChanged is Changed for one stream, for a reader registered with WatchStreams: the
// channel closes the next time a change of stream is committed (or of another stream that
// shares its slot), or at Reload or Close. A commit of other streams does not wake it.
func (s *Shard) StreamChanged(stream string) <-chan struct{} {
	return changedChan(&s.streamChanged[nameHash(stream)%streamSlots])
}

// changedChan returns the channel at p, making one if there is none.
func changedChan(p *atomic.Pointer[chan struct{}]) <-chan struct{} {
	for {
		if c := p.Load(); c != nil {
			return *c
		}
		ch := make(chan struct{})
		if p.CompareAndSwap(nil, &ch) {
			return ch
		}
	}
}

// closeChan closes the channel at p, if any, waking its readers.
func closeChan(p *atomic.Pointer[chan struct{}]) {
	if c := p.Swap(nil); c != nil {
		close(*c)
	}
}

// notifyAllStreams wakes every stream's readers: after a Reload or at Close, any stream may
// have changed.
func (s *Shard) notifyAllStreams() {
	for i := range s.streamChanged {
		closeChan(&s.streamChanged[i])
	}
}

// notify wakes the readers waiting on Changed, after the change is visible to them.
func (s *Shard) notify() { closeChan(&s.changed) }

// Reload drops every cache and re-reads the shard's state from the DB. Call
// it after the keyspace was replaced (snapshot) or after a batch holding
// applies was discarded. Apply-goroutine only.
func (s *Shard) Reload() error {
	start := time.Now()
	// The filters describe the keyspace being replaced: drop them first, so
	// that a failed Reload leaves the shard checking Pebble, not trusting them.
	s.stopFilterBuild()
	s.ids, s.names = nil, nil
	s.pendCompact = nil // truncations not committed
	applied, format, m, err := loadState(s.db, &s.keys, s.id)
	if err != nil {
		return err
	}
	if err := s.startFilterBuild(s.idsEstimate(m.nextPosition), int(min(m.nextStreamID, bloomMaxFirst))); err != nil {
		return err
	}
	s.deferTo, s.appliedDirt, s.metaDirty = nil, false, false
	s.pending = make(map[string]streamMeta)
	s.cache = make(map[string]streamMeta)
	s.meta = m
	s.pendApply = applied
	s.pendFormat = format
	s.format.Store(format)
	s.nextPos.Store(m.nextPosition)
	s.applied.Store(applied)
	s.cachedStreams.Store(0)
	s.notifyAllStreams()
	s.notify()
	s.opts.Logger.Debug("shard loaded", "shard", s.id, "applied", applied, "format", format,
		"positions", m.nextPosition, "streams", m.nextStreamID,
		"took", time.Since(start))
	return nil
}

// loadState reads shard id's applied index, format and meta record from db, checking that they
// go together.
func loadState(db *pebble.DB, k *keys, id uint32) (applied, format uint64, m shardMeta, err error) {
	if applied, err = getUint64(db, k.applied(nil)); err != nil {
		return 0, 0, m, err
	}
	if format, err = getUint64(db, k.format(nil)); err != nil {
		return 0, 0, m, err
	}
	if format == 0 {
		format = Format1
	}
	if format > MaxFormat {
		return 0, 0, m, fmt.Errorf("%w: shard %d is at format %d, this version knows up to %d "+
			"(it was written by a later version; run that version or a later one)", ErrUnsupportedFormat, id, format, MaxFormat)
	}
	v, closer, err := db.Get(k.meta(nil))
	switch {
	case errors.Is(err, pebble.ErrNotFound) && format >= Format3:
		return 0, 0, m, errCorrupt(fmt.Sprintf("shard %d at format %d has no meta record", id, format))
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return 0, 0, m, err
	default:
		metaApplied, hasApplied, err := m.decode(v)
		closer.Close()
		switch {
		case err != nil:
			return 0, 0, m, err
		case hasApplied != (format >= Format3):
			return 0, 0, m, errCorrupt(fmt.Sprintf("shard meta record of %d bytes at format %d", len(v), format))
		case hasApplied:
			applied = metaApplied // from Format3 on, 'X' is absent
		case applied == 0:
			// Up to Format2 the batch that writes the meta record also writes 'X': a state
			// without it would apply its log again from the start.
			return 0, 0, m, errCorrupt(fmt.Sprintf("shard %d at format %d has a meta record and no applied index", id, format))
		}
	}
	return applied, format, m, nil
}

// StoredState is what a shard's state machine stored of itself (Stored).
type StoredState struct {
	Applied      uint64 // the raft index it applied
	Format       uint64
	LastPosition uint64 // the next position its log assigns
}

// Stored reads shard id's state from db without opening it (no filters are built), for an
// offline look at a node's store.
func Stored(db *pebble.DB, id uint32) (StoredState, error) {
	k := newKeys(id)
	applied, format, m, err := loadState(db, &k, id)
	return StoredState{Applied: applied, Format: format, LastPosition: m.nextPosition}, err
}

func getUint64(db *pebble.DB, key []byte) (uint64, error) {
	v, closer, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, errCorrupt("uint64 record")
	}
	return binary.BigEndian.Uint64(v), nil
}

// Apply applies one committed raft entry (data at index) into b, an indexed
// batch, and records index as applied in b. It returns *AppendResult,
// *DeleteResult, *TruncateResult, *FormatResult, *RetentionResult or a verdict error (ErrStreamNotFound,
// ErrStreamDeleted, *WrongExpectedVersionError, *IDConflictError, *InvalidError,
// ErrNeedsFormat). A refused
// command writes nothing but the applied index. An error wrapping ErrStorage
// or ErrUnsupportedFormat is not a verdict: see ErrStorage.
func (s *Shard) Apply(b *pebble.Batch, index uint64, data []byte) any {
	cmd, err := DecodeCommand(data)
	var res any
	switch {
	case errors.Is(err, ErrUnsupportedFormat):
		// A later version's encoding: a failure, not a refusal, and nothing is recorded.
		return fmt.Errorf("entry %d of shard %d: %w", index, s.id, err)
	case err != nil:
		res = err
	default:
		switch c := cmd.(type) {
		case *AppendCommand:
			res, err = s.applyAppend(b, c)
		case *DeleteCommand:
			res, err = s.applyDelete(b, c)
		case *TruncateCommand:
			res, err = s.applyTruncate(b, c)
		case *SetRetentionCommand:
			res, err = s.applySetRetention(b, c)
		case *SetFormatCommand:
			if c.Format > MaxFormat {
				return fmt.Errorf("%w: entry %d raises shard %d to format %d, this version knows up to %d "+
					"(upgrade this node)", ErrUnsupportedFormat, index, s.id, c.Format, MaxFormat)
			}
			res, err = s.applySetFormat(b, c)
		}
		if err != nil {
			return fmt.Errorf("%w: entry %d: %w", ErrStorage, index, err)
		}
	}
	if err := s.setApplied(b, index); err != nil {
		return fmt.Errorf("%w: entry %d: %w", ErrStorage, index, err)
	}
	s.m.observe(res)
	return res
}

// ApplyFailure returns result when it is an error wrapping ErrStorage or ErrUnsupportedFormat
// (a failure, not a verdict), else nil. It implements replica.ApplyFailer.
func (s *Shard) ApplyFailure(result any) error {
	if err, ok := result.(error); ok && (errors.Is(err, ErrStorage) || errors.Is(err, ErrUnsupportedFormat)) {
		return err
	}
	return nil
}

// SetApplied records index as applied in b, for entries without a command.
func (s *Shard) SetApplied(b *pebble.Batch, index uint64) {
	if err := s.setApplied(b, index); err != nil {
		// Set fails only on a read-only or closed batch: a caller bug.
		panic(fmt.Sprintf("shard: SetApplied: %v", err))
	}
}

// BeginBatch tells the shard that every Apply/SetApplied into b until FinishBatch(b) belongs
// to one batch: the applied index ('X'; inside 'Z' from Format3 on) and shard meta ('Z') are
// then written once, by FinishBatch, instead of after every entry (an optional optimisation of the apply loop;
// callers that never call it get the per-entry writes). Apply-goroutine only.
func (s *Shard) BeginBatch(b *pebble.Batch) {
	s.deferTo, s.appliedDirt, s.metaDirty = b, false, false
}

// FinishBatch writes what BeginBatch deferred into b. It must be called before b is committed.
// An error (a closed batch) means b must be discarded, as with ErrStorage.
func (s *Shard) FinishBatch(b *pebble.Batch) error {
	if s.deferTo != b {
		return nil
	}
	s.deferTo = nil
	metaDirty, appliedDirty := s.metaDirty, s.appliedDirt
	s.metaDirty, s.appliedDirt = false, false
	if s.pendFormat >= Format3 {
		metaDirty, appliedDirty = metaDirty || appliedDirty, false // one record holds both
	}
	if metaDirty {
		if err := s.writeMeta(b); err != nil {
			return fmt.Errorf("%w: %w", ErrStorage, err)
		}
	}
	if appliedDirty {
		if err := s.setApplied(b, s.pendApply); err != nil {
			return fmt.Errorf("%w: %w", ErrStorage, err)
		}
	}
	return nil
}

// metaChanged records that an apply into b changed the shard meta: written now, or by
// FinishBatch when b defers it.
func (s *Shard) metaChanged(b *pebble.Batch) error {
	if b == s.deferTo {
		s.metaDirty = true
		return nil
	}
	return s.writeMeta(b)
}

// writeMeta writes the shard meta record, which from Format3 on holds the applied index
// (pendApply) too.
func (s *Shard) writeMeta(b *pebble.Batch) error {
	s.keyBuf = s.keys.meta(s.keyBuf[:0])
	s.valBuf = s.meta.encode(s.valBuf[:0], s.pendFormat >= Format3, s.pendApply)
	return b.Set(s.keyBuf, s.valBuf, nil)
}

func (s *Shard) setApplied(b *pebble.Batch, index uint64) error {
	if b == s.deferTo {
		s.pendApply, s.appliedDirt = index, true
		return nil
	}
	if s.pendFormat >= Format3 {
		s.pendApply = index
		return s.writeMeta(b)
	}
	s.keyBuf = s.keys.applied(s.keyBuf[:0])
	s.valBuf = binary.BigEndian.AppendUint64(s.valBuf[:0], index)
	if err := b.Set(s.keyBuf, s.valBuf, nil); err != nil {
		return err
	}
	s.pendApply = index
	return nil
}

// Committed tells the shard that every batch passed to Apply/SetApplied so
// far is committed: the pending stream metadata becomes authoritative and
// Applied/LastPosition advance. Apply-goroutine only.
func (s *Shard) Committed() {
	if len(s.cache)+len(s.pending) > s.opts.MaxCachedStreams {
		// Evict arbitrary entries down to 7/8 of the bound.
		excess := len(s.cache) + len(s.pending) - s.opts.MaxCachedStreams*7/8
		for name := range s.cache {
			if excess <= 0 {
				break
			}
			delete(s.cache, name)
			excess--
		}
	}
	watched := s.streamWatchers.Load() > 0
	for name, m := range s.pending {
		s.cache[name] = m
		if watched {
			closeChan(&s.streamChanged[nameHash(name)%streamSlots]) // committed: visible to a reader it wakes
		}
	}
	clear(s.pending)
	if len(s.pendCompact) > 0 {
		if s.compact == nil { // at the shard's first truncation
			s.compact = newCompactor(s.db, s.opts.Logger, s.id, s.opts.ReclaimNow)
		}
		s.compact.add(s.pendCompact)
		s.pendCompact = nil
	}
	// The format first: a reader that sees the new applied index sees its format too.
	s.format.Store(s.pendFormat)
	s.nextPos.Store(s.meta.nextPosition)
	s.applied.Store(s.pendApply)
	s.cachedStreams.Store(int64(len(s.cache)))
	s.maybeRebuildFilters()
	// A large event leaves its buffers at its size: give them back rather than hold them
	// for the life of the shard.
	for _, b := range []*[]byte{&s.keyBuf, &s.valBuf, &s.scratchBuf} {
		if cap(*b) > maxKeptBuffer {
			*b = nil
		}
	}
	s.notify()
}

// maxKeptBuffer is the largest apply buffer a shard keeps between batches.
const maxKeptBuffer = 64 << 10

// CachedStreams returns how many streams' metadata the shard caches (Options.MaxCachedStreams
// bounds it), as of the last Committed.
func (s *Shard) CachedStreams() int { return int(s.cachedStreams.Load()) }

// lookup returns the stream's metadata as seen through b.
func (s *Shard) lookup(b *pebble.Batch, name string) (streamMeta, bool, error) {
	if m, ok := s.pending[name]; ok {
		return m, true, nil
	}
	if m, ok := s.cache[name]; ok {
		s.m.inc(func(sm *shardMetrics) prometheus.Counter { return sm.cacheHit })
		return m, true, nil
	}
	if _, names := s.filters(); names != nil && !names.mayContain(nameHash(name)) {
		s.m.inc(func(sm *shardMetrics) prometheus.Counter { return sm.cacheNew })
		return streamMeta{}, false, nil // never created: no need to ask Pebble
	}
	s.m.inc(func(sm *shardMetrics) prometheus.Counter { return sm.cacheMiss })
	s.keyBuf = s.keys.stream(s.keyBuf[:0], name)
	v, closer, err := b.Get(s.keyBuf)
	if errors.Is(err, pebble.ErrNotFound) {
		return streamMeta{}, false, nil
	}
	if err != nil {
		return streamMeta{}, false, err
	}
	var m streamMeta
	err = m.decode(v)
	closer.Close()
	if err != nil {
		return streamMeta{}, false, err
	}
	// Not in pending, so b holds no uncommitted change to it: the committed state, where
	// from Format3 on a live stream's last version is its last event's.
	if m.state == stateLive && s.pendFormat >= Format3 {
		if m.last, err = s.lastVersion(s.db, m.id); err != nil {
			return streamMeta{}, false, err
		}
	}
	s.cache[name] = m
	return m, true, nil
}

// lastVersion returns the version of stream id's last event as r sees it.
func (s *Shard) lastVersion(r pebble.Reader, id uint64) (uint64, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: s.keys.eventStream(nil, id), UpperBound: s.keys.eventStreamEnd(nil, id)})
	if err != nil {
		return 0, err
	}
	last, ok, err := lastEvent(it)
	if err == nil && !ok {
		err = errCorrupt(fmt.Sprintf("stream %d has a record but no event", id))
	}
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	return last, err
}

// lastEvent positions it, bounded to events, at its last key and returns that event's
// version; ok is false when it holds no key.
func lastEvent(it *pebble.Iterator) (version uint64, ok bool, err error) {
	if !it.Last() {
		return 0, false, it.Error()
	}
	version, err = eventVersion(it.Key())
	return version, err == nil, err
}

// streamName returns the name of stream id as seen through r.
func (s *Shard) streamName(r pebble.Reader, id uint64) (string, error) {
	v, closer, err := r.Get(s.keys.name(nil, id))
	if err != nil {
		return "", err
	}
	defer closer.Close()
	return string(v), nil
}

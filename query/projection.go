package query

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/client"
)

// MaxPageBytes ends a page before PageSize events once its events hold this many bytes (data,
// metadata and names): what a page holds in memory, and commits at once.
const MaxPageBytes = 16 << 20

// Defaults of Config fields left zero.
const (
	DefaultPageSize    = 500
	DefaultConcurrency = 8
	DefaultPollMin     = 20 * time.Millisecond
	DefaultPollMax     = 1 * time.Second
	DefaultRetryMax    = 5 * time.Second
)

// Handler applies one event to the read model through b. It may be called
// again for the same event after a crash or a failed commit (never after a
// successful one), and calls are never concurrent.
type Handler interface {
	Handle(ctx context.Context, b *Batch, ev client.RecordedEvent) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, b *Batch, ev client.RecordedEvent) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, b *Batch, ev client.RecordedEvent) error {
	return f(ctx, b, ev)
}

// Config configures a Projection.
type Config struct {
	Name    string         // label for logs, metrics and errors; required
	Client  *client.Client // source of events; required (not owned)
	Handler Handler        // required
	Dir     string         // the projection's Pebble directory; required
	FS      vfs.FS         // nil = the OS file system (vfs.NewMem() in tests)

	// Filters: events failing them advance the checkpoint without a
	// Handle call. Empty means all. The database stores the filters its
	// checkpoint was built under (StreamPrefix, EventTypes as a set, and
	// Deletes), and Open refuses a Config with other ones
	// (*FilterMismatchError): the checkpoint has passed the events the old
	// filters skipped, which widened filters would never hand on. To change
	// them, build the model in a new or empty Dir. A database written by a
	// version that did not store them takes the filters of the first Config
	// that opens it: open it with the filters it was built with.
	StreamPrefix string
	EventTypes   []string
	// Deletes makes Handle see the deletes of streams too, at their
	// positions: ev.Deletion is client.SoftDeleted or client.Tombstoned, and
	// ev.Version is the stream's last version at the delete (the versions a
	// soft delete hides). A model that must forget deleted streams sets it.
	// StreamPrefix applies to deletes; EventTypes does not. Deletes are in
	// the shard log from the shard's format 2 on: a delete made before (or
	// on a cluster still running older versions) is never seen.
	Deletes bool

	PageSize    int           // events per ReadShard page and commit; default 500, at most 10000 (and MaxPageBytes)
	Concurrency int           // shards read at once; default 8 (a read not answered within PollMax waits outside it)
	PollMax     time.Duration // long poll of a caught-up shard; default 1s (or PollMin if larger), at most client.MaxWait
	PollMin     time.Duration // first idle wait (doubling up to PollMax, for servers that do not long-poll) and first backoff after a read error; default 20ms (or PollMax if smaller)
	RetryMax    time.Duration // cap of the backoff after a read error; default 5s
	// NoSync commits pages without fsync. Still exactly-once for the model
	// (a lost commit loses model writes and checkpoint together), but a
	// crash may rewind the projection.
	NoSync bool

	Logger *slog.Logger // nil discards
	// Registerer receives the projection's metrics (labelled with Name)
	// until Close; nil does not register.
	Registerer prometheus.Registerer
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.Name == "":
		return &ConfigError{Field: "Name", Reason: "must not be empty"}
	case c.Client == nil:
		return &ConfigError{Field: "Client", Reason: "must not be nil"}
	case c.Handler == nil:
		return &ConfigError{Field: "Handler", Reason: "must not be nil"}
	case c.Dir == "":
		return &ConfigError{Field: "Dir", Reason: "must not be empty"}
	case c.PageSize < 0 || c.PageSize > 10000:
		return &ConfigError{Field: "PageSize", Reason: "must be within 0..10000"}
	case c.Concurrency < 0:
		return &ConfigError{Field: "Concurrency", Reason: "must not be negative"}
	case c.PollMin < 0 || c.PollMax < 0 || c.RetryMax < 0:
		return &ConfigError{Field: "PollMin/PollMax/RetryMax", Reason: "must not be negative"}
	case len(c.StreamPrefix) > 512:
		return &ConfigError{Field: "StreamPrefix", Reason: fmt.Sprintf("must be at most 512 bytes (the servers' filter limit), got %d", len(c.StreamPrefix))}
	case !utf8.ValidString(c.StreamPrefix):
		return &ConfigError{Field: "StreamPrefix", Reason: "must be valid UTF-8 (every read refuses it otherwise)"}
	case len(c.EventTypes) > 100:
		return &ConfigError{Field: "EventTypes", Reason: fmt.Sprintf("must hold at most 100 types (the servers' filter limit), got %d", len(c.EventTypes))}
	case slices.ContainsFunc(c.EventTypes, func(t string) bool { return len(t) == 0 || len(t) > 256 }):
		return &ConfigError{Field: "EventTypes", Reason: "each type must be 1..256 bytes"}
	case slices.ContainsFunc(c.EventTypes, func(t string) bool { return !utf8.ValidString(t) }):
		return &ConfigError{Field: "EventTypes", Reason: "each type must be valid UTF-8 (every read refuses it otherwise)"}
	case c.PollMin > client.MaxWait:
		return &ConfigError{Field: "PollMin", Reason: fmt.Sprintf("must not exceed %v (client.MaxWait)", client.MaxWait)}
	case c.PollMax > client.MaxWait:
		return &ConfigError{Field: "PollMax", Reason: fmt.Sprintf("must not exceed %v (client.MaxWait)", client.MaxWait)}
	case c.PollMax != 0 && c.PollMin > c.PollMax:
		return &ConfigError{Field: "PollMin", Reason: "must not exceed PollMax"}
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.PollMin == 0 {
		c.PollMin = DefaultPollMin
		if c.PollMax != 0 {
			c.PollMin = min(c.PollMin, c.PollMax) // a PollMax below the default's PollMin
		}
	}
	if c.PollMax == 0 {
		c.PollMax = max(DefaultPollMax, c.PollMin)
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Checkpoint is a vector of shard positions: Checkpoint[s] is the next
// position of shard s to read, so every event of shard s below it has been
// applied. There is no single global position across shards.
type Checkpoint []uint64

// Covers reports whether the event at position of shard has been applied.
func (c Checkpoint) Covers(shard uint32, position uint64) bool {
	return int(shard) < len(c) && c[shard] > position
}

// Projection builds a read model in its own Pebble database from every
// shard's log. Queries (Get, Scan, Checkpoint) are safe for concurrent use,
// also while Run is active.
type Projection struct {
	cfg     Config
	db      *pebble.DB
	src     source
	metrics *metrics
	wo      *pebble.WriteOptions

	applyMu sync.Mutex // serializes Handle calls and page commits across shards

	// reads counts the Gets and Scans using db: Close marks it closed, so that a read that
	// starts after answers ErrClosed, and closes db only once the count is back to zero. Its
	// lock is held only to count, never while a read uses db or a Scan calls back, so a Get
	// or Scan inside a Scan callback never waits for Close (as it did on a lock held shared
	// by the Scan and wanted exclusively by Close); it answers ErrClosed instead.
	reads struct {
		sync.Mutex
		n      int           // reads using db
		closed bool          // Close began: no read starts
		idle   chan struct{} // made by Close while n > 0, closed when n drops to zero
	}

	// mu and reads are never held together.
	mu struct {
		sync.Mutex
		running bool
		closed  bool
		cp      Checkpoint
		// stopped is what WaitFor returns for a position cp does not cover: set (wrapping
		// ErrNotRunning) when a Run returns, cleared when one starts; nil before the first.
		stopped error
		changed chan struct{} // closed and replaced on every commit and when Run returns; closed by Close (wakes WaitFor)
		// closeDone is closed when the first Close has closed the database; a Close called
		// meanwhile waits for it.
		closeDone chan struct{}
	}
}

// Open opens (or creates) the projection's database. Call Run to process
// events and Close when done. A database whose checkpoint was built under
// other filters than cfg's (StreamPrefix, EventTypes, Deletes) is refused
// with a *FilterMismatchError (ErrFilterMismatch): build the model in a new
// or empty Dir instead.
func Open(cfg Config) (*Projection, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return open(cfg, newClientSource(cfg))
}

func open(cfg Config, src source) (*Projection, error) {
	m := newMetrics(cfg.Name)
	if err := m.register(cfg.Registerer); err != nil {
		return nil, err
	}
	db, err := pebble.Open(cfg.Dir, &pebble.Options{FS: cfg.FS, Logger: quietLogger{}})
	if err != nil {
		m.unregister(cfg.Registerer)
		if inUse(err) {
			return nil, fmt.Errorf("%w: %q is open in another process, or already in this one (a Projection not "+
				"closed; its LOCK is held: %w)", ErrInUse, cfg.Dir, err)
		}
		return nil, fmt.Errorf("query: open %q: %w", cfg.Dir, err)
	}
	p := &Projection{cfg: cfg, db: db, src: src, metrics: m, wo: pebble.Sync}
	if cfg.NoSync {
		p.wo = pebble.NoSync
	}
	p.mu.changed = make(chan struct{})
	cp, err := p.loadCheckpoint()
	if err != nil {
		m.unregister(cfg.Registerer)
		db.Close()
		return nil, err
	}
	p.mu.cp = cp
	if err := p.checkFilters(cp != nil); err != nil {
		m.unregister(cfg.Registerer)
		db.Close()
		return nil, err
	}
	return p, nil
}

// Close closes the database. Run must have returned. Close waits for the Gets and Scans
// under way (a Scan's callback included, which must not call Close) and wakes every WaitFor;
// those and any later query answer ErrClosed. A Close while another runs returns once the
// database is closed.
func (p *Projection) Close() error {
	p.mu.Lock()
	if p.mu.closed {
		done := p.mu.closeDone
		p.mu.Unlock()
		<-done // the first Close's: its caller may reopen the directory once this returns
		return nil
	}
	if p.mu.running {
		p.mu.Unlock()
		return fmt.Errorf("query: close %q: %w", p.cfg.Name, ErrRunning)
	}
	p.mu.closed = true
	p.mu.closeDone = make(chan struct{})
	defer close(p.mu.closeDone) // set once, under p.mu; read by later Closes
	close(p.mu.changed)         // no commit follows: Run has returned and will not start again
	p.mu.Unlock()
	p.metrics.unregister(p.cfg.Registerer)

	p.reads.Lock()
	p.reads.closed = true
	var idle chan struct{}
	if p.reads.n > 0 {
		idle = make(chan struct{})
		p.reads.idle = idle
	}
	p.reads.Unlock()
	if idle != nil {
		<-idle
	}
	return p.db.Close()
}

// startRead counts a Get or Scan in, or reports ErrClosed once Close began. The caller calls
// endRead when it no longer uses db.
func (p *Projection) startRead() error {
	p.reads.Lock()
	defer p.reads.Unlock()
	if p.reads.closed {
		return p.errClosed()
	}
	p.reads.n++
	return nil
}

// endRead counts a read out, and lets a waiting Close go on after the last.
func (p *Projection) endRead() {
	p.reads.Lock()
	defer p.reads.Unlock()
	p.reads.n--
	if p.reads.n == 0 && p.reads.idle != nil {
		close(p.reads.idle)
		p.reads.idle = nil
	}
}

func (p *Projection) errClosed() error { return fmt.Errorf("%w: %q", ErrClosed, p.cfg.Name) }

// Get returns a copy of key's value in the read model, or ErrNotFound.
func (p *Projection) Get(key []byte) ([]byte, error) {
	if err := p.startRead(); err != nil {
		return nil, err
	}
	defer p.endRead()
	v, ok, err := get(p.db.Get, key)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNotFound
	}
	return v, nil
}

// Scan calls fn for every read-model key starting with prefix, in key
// order, over a consistent point-in-time view. key and value are valid only
// during the call. An error from fn stops the scan and is returned. fn may
// call Get and Scan; once Close began they answer ErrClosed, and Close waits
// for the Scan to return.
func (p *Projection) Scan(prefix []byte, fn func(key, value []byte) error) error {
	if err := p.startRead(); err != nil {
		return err
	}
	defer p.endRead()
	lo := modelKey(prefix)
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		if err := fn(it.Key()[1:], v); err != nil {
			it.Close()
			return err
		}
	}
	return errors.Join(it.Error(), it.Close())
}

// Checkpoint returns a copy of the committed checkpoint (empty before the
// first Run learned the shard count).
func (p *Projection) Checkpoint() Checkpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.mu.cp)
}

// WaitFor blocks until the event at position of shard has been applied and
// committed (e.g. an AppendResult's Shard and Position, for
// read-your-writes), or ctx is done, or the projection is closed (ErrClosed,
// also when it was closed before). A shard the cluster does not have, once a
// Run learned the shard count, is refused (ErrNoShard) rather than waited for
// until ctx ends. An entry the projection's filters skip (another StreamPrefix,
// an event type not in EventTypes, a delete without Deletes) ends a caught-up
// shard's long poll only with a later entry it wants, or at the poll's end:
// waiting for one takes up to PollMax.
//
// WaitFor does not outlive Run: once Run has returned, and until it is called
// again, a position not yet covered answers ErrNotRunning at once, and a
// WaitFor already waiting is woken with it. When Run failed (a *HandlerError,
// a commit error, ErrClusterMismatch...) the error wraps Run's too, for
// errors.As; when Run returned as its context ended, the error names the
// cause without wrapping it, so that errors.Is(err, context.Canceled) still
// means the caller's own ctx. Before the first Run it waits, so that it may
// be called while Run starts; a caller that runs the same Projection again in
// another goroutine and waits at once may see the previous Run's end.
func (p *Projection) WaitFor(ctx context.Context, shard uint32, position uint64) error {
	for {
		p.mu.Lock()
		closed, done, ch := p.mu.closed, p.mu.cp.Covers(shard, position), p.mu.changed
		shards, stopped := len(p.mu.cp), p.mu.stopped
		p.mu.Unlock()
		switch {
		case closed:
			return p.errClosed()
		case done:
			return nil
		case shards > 0 && int64(shard) >= int64(shards):
			return fmt.Errorf("%w: projection %q: shard %d, the cluster's shards are 0..%d", ErrNoShard, p.cfg.Name, shard, shards-1)
		case stopped != nil:
			return stopped
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// WaitForAppend waits until every event of the append that returned r is
// applied and committed, as WaitFor does. A zero r is a real result (the
// first event of a new stream at position 0 of shard 0: positions and
// versions start at 0), so it is not refused; the zero result a failed
// Append returns beside its error must not be passed.
func (p *Projection) WaitForAppend(ctx context.Context, r client.AppendResult) error {
	return p.WaitFor(ctx, r.Shard, max(r.LastPosition, r.Position+(r.LastVersion-r.FirstVersion)))
}

// WaitForDelete waits until the read model reflects the delete that returned r
// (client.DeleteResultTo): its handler saw the delete (with Config.Deletes)
// and every event before it. A delete that took no position in the shard
// log (a shard before format 2) waits for the events before it only.
func (p *Projection) WaitForDelete(ctx context.Context, r client.DeleteResult) error {
	switch {
	case r.Logged:
		return p.WaitFor(ctx, r.Shard, r.Position)
	case r.Position > 0:
		return p.WaitFor(ctx, r.Shard, r.Position-1)
	}
	return nil
}

func (p *Projection) loadCheckpoint() (Checkpoint, error) {
	cp, err := readCheckpoint(p.db.Get)
	if err != nil {
		return nil, fmt.Errorf("query: projection %q: %w", p.cfg.Name, err)
	}
	return cp, nil
}

// readCheckpoint reads the checkpoint of a projection's database through get (a DB's or a
// snapshot's): nil before the database was bound to a cluster.
func readCheckpoint(get func([]byte) ([]byte, io.Closer, error)) (Checkpoint, error) {
	v, closer, err := get([]byte{prefixInfo})
	if err == pebble.ErrNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	shards, n := binary.Uvarint(v)
	closer.Close()
	if n <= 0 || shards > 1<<20 {
		return nil, errors.New("corrupt info record")
	}
	cp := make(Checkpoint, shards)
	for s := range cp {
		v, closer, err := get(checkpointKey(uint32(s)))
		if err == pebble.ErrNotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(v) != 8 {
			closer.Close()
			return nil, fmt.Errorf("corrupt checkpoint of shard %d", s)
		}
		cp[s] = binary.BigEndian.Uint64(v)
		closer.Close()
	}
	return cp, nil
}

// bind checks (or, on first use, records) the cluster the database follows,
// and on first use the filters its checkpoint is built under (checkFilters).
func (p *Projection) bind(shards uint32, cluster string) error {
	v, closer, err := p.db.Get([]byte{prefixInfo})
	switch {
	case err == pebble.ErrNotFound:
		info := binary.AppendUvarint(nil, uint64(shards))
		info = append(info, cluster...)
		b := p.db.NewBatch()
		defer b.Close()
		if err := errors.Join(b.Set([]byte{prefixInfo}, info, nil), b.Set([]byte{prefixFilters}, p.cfg.filters().encode(), nil)); err != nil {
			return err
		}
		if err := b.Commit(pebble.Sync); err != nil {
			return err
		}
		p.mu.Lock()
		p.mu.cp = make(Checkpoint, shards)
		p.mu.Unlock()
		return nil
	case err != nil:
		return err
	}
	defer closer.Close()
	stored, n := binary.Uvarint(v)
	if n <= 0 {
		return fmt.Errorf("query: projection %q: corrupt info record", p.cfg.Name)
	}
	storedCluster := string(v[n:])
	if stored != uint64(shards) || storedCluster != cluster {
		return &ClusterMismatchError{StoredCluster: storedCluster, StoredShards: uint32(stored), Cluster: cluster, Shards: shards}
	}
	return nil
}

func (p *Projection) wanted(ev *client.RecordedEvent) bool {
	if !strings.HasPrefix(ev.Stream, p.cfg.StreamPrefix) {
		return false
	}
	if ev.Deletion != client.NotDeleted {
		return p.cfg.Deletes
	}
	return len(p.cfg.EventTypes) == 0 || slices.Contains(p.cfg.EventTypes, ev.Type)
}

// apply hands one page to the handler and commits the model writes with
// the shard's new checkpoint in one batch.
func (p *Projection) apply(ctx context.Context, shard uint32, evs []client.RecordedEvent, next uint64) error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	b := p.db.NewIndexedBatch()
	defer b.Close()
	handled := 0
	for i := range evs {
		ev := &evs[i]
		if !p.wanted(ev) {
			continue
		}
		// A page whose run ended (Run's context, or another shard's handler failed) is not
		// committed: the handler does not run on the rest of it, whose side effects outside
		// the batch would run again after the restart. With many shards waiting for applyMu,
		// handling each one's page in full delayed Run's return by as many pages.
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.cfg.Handler.Handle(ctx, &Batch{b: b}, *ev); err != nil {
			return &HandlerError{Projection: p.cfg.Name, Shard: shard, Position: ev.Position,
				Stream: ev.Stream, Version: ev.Version, Err: err}
		}
		handled++
	}
	if err := b.Set(checkpointKey(shard), binary.BigEndian.AppendUint64(nil, next), nil); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err // do not commit a page the handler may have cut short
	}
	if err := b.Commit(p.wo); err != nil {
		return fmt.Errorf("query: projection %q: commit shard %d: %w", p.cfg.Name, shard, err)
	}
	p.metrics.handled.Add(float64(handled))
	p.metrics.skipped.Add(float64(len(evs) - handled))
	p.metrics.commits.Inc()
	p.metrics.position.WithLabelValues(fmt.Sprint(shard)).Set(float64(next))
	p.mu.Lock()
	p.mu.cp[shard] = next
	close(p.mu.changed)
	p.mu.changed = make(chan struct{})
	p.mu.Unlock()
	return nil
}

// quietLogger drops pebble's informational logs.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

package shard

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// compactMinBytes is the least a truncated span must hold in tables for the compactor to
// compact it: a compaction of the span first flushes the memtable holding its range deletion,
// which for the small truncations that are common (a snapshot store pruning its older
// records at every save) would cut a small table per truncation and feed L0 for little
// reclaimed. Smaller spans are left to Pebble's own compactions (and events still in a
// memtable are dropped by its flush, which applies the range deletion).
const compactMinBytes = 1 << 20

// compactor compacts, one after another and in the background, the key spans of the events
// that truncations removed, so that their space comes back soon: a range deletion frees
// nothing until a compaction drops the keys it covers, and Pebble compacts for its own
// reasons (a level's size), which an idle or read-mostly shard may not meet for a long time.
// While the node's disk is short of space (Options.ReclaimNow), every truncation's span is
// compacted, the small ones too: a node that refuses appends for want of space writes nothing
// that would start Pebble's own compactions, and truncations that freed nothing kept it
// refusing them.
type compactor struct {
	db     *pebble.DB
	log    *slog.Logger
	shard  uint32
	now    *atomic.Bool // Options.ReclaimNow
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	queue   []span
	running bool
}

// span is a key range [lo, hi).
type span struct{ lo, hi []byte }

func newCompactor(db *pebble.DB, log *slog.Logger, shard uint32, now *atomic.Bool) *compactor {
	ctx, cancel := context.WithCancel(context.Background())
	return &compactor{db: db, log: log, shard: shard, now: now, ctx: ctx, cancel: cancel}
}

// reclaimNow reports whether the node's disk is short of space (Options.ReclaimNow).
func (s *Shard) reclaimNow() bool { return s.opts.ReclaimNow != nil && s.opts.ReclaimNow.Load() }

// add queues spans for compaction, starting the worker if it is not running.
func (c *compactor) add(spans []span) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue = append(c.queue, spans...)
	if c.running || c.ctx.Err() != nil {
		return
	}
	c.running = true
	c.wg.Add(1)
	go c.run()
}

func (c *compactor) run() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.ctx.Err() != nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		sp := c.queue[0]
		c.queue = c.queue[1:]
		short := c.now != nil && c.now.Load()
		if short {
			// One compaction of the span covering them all: a retention round truncates
			// thousands of streams, and each compaction rewrites the tables its span
			// overlaps, whatever the span's size.
			for _, q := range c.queue {
				sp = span{lo: minKey(sp.lo, q.lo), hi: maxKey(sp.hi, q.hi)}
			}
			c.queue = nil
		}
		c.mu.Unlock()
		start := time.Now()
		if n, err := c.db.EstimateDiskUsage(sp.lo, sp.hi); !short && (err != nil || n < compactMinBytes) {
			continue // little in tables (or not known): not worth a flush
		}
		// The memtable holding the range deletion is flushed first if it overlaps the span.
		if err := c.db.Compact(c.ctx, sp.lo, sp.hi, false); err != nil {
			if c.ctx.Err() == nil {
				c.log.Warn("shard: compacting a truncated stream's events failed; Pebble reclaims them in its own time",
					"shard", c.shard, "err", err)
			}
			continue
		}
		c.log.Debug("shard: compacted a truncated stream's events", "shard", c.shard, "took", time.Since(start))
	}
}

// stop cancels the compaction under way and the queued ones, and waits for the worker.
// Before the DB closes: Pebble's Compact panics on a closed DB. Idempotent.
func (c *compactor) stop() {
	c.mu.Lock()
	c.cancel()
	c.queue = nil
	c.mu.Unlock()
	c.wg.Wait()
}

func minKey(a, b []byte) []byte {
	if bytes.Compare(a, b) <= 0 {
		return a
	}
	return b
}

func maxKey(a, b []byte) []byte {
	if bytes.Compare(a, b) >= 0 {
		return a
	}
	return b
}

package shard

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
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

// reclaimMergeBytes bounds the table bytes a group of truncated spans may cover for the
// compactor to compact them as one while the node is short of space. It bounds the input, and
// so the temporary space, of each compaction on a node that has little: Pebble rewrites every
// table overlapping a compacted span and deletes the inputs only when the compaction ends, so
// one span over two far-apart truncations would rewrite all the live data between them. A var
// for tests.
var reclaimMergeBytes uint64 = 64 << 20

// compactor compacts, one after another and in the background, the key spans of the events
// that truncations removed, so that their space comes back soon: a range deletion frees
// nothing until a compaction drops the keys it covers, and Pebble compacts for its own
// reasons (a level's size), which an idle or read-mostly shard may not meet for a long time.
// While the node's disk is short of space (Options.ReclaimNow), every truncation's span is
// compacted, the small ones too: a node that refuses appends for want of space writes nothing
// that would start Pebble's own compactions, and truncations that freed nothing kept it
// refusing them. Then the queued spans are compacted in groups of neighbours (groups): a
// retention round truncates thousands of streams, and compacting each tiny span alone would
// rewrite the tables they share thousands of times, while one span over them all would
// rewrite the whole shard, needing as much free space for a while.
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
		if c.now != nil && c.now.Load() {
			// Every queued span, in groups of neighbours each covering at most about
			// reclaimMergeBytes of tables; spans queued meanwhile wait for the next round.
			spans := c.queue
			c.queue = nil
			c.mu.Unlock()
			for _, sp := range c.groups(spans) {
				if c.ctx.Err() != nil {
					break
				}
				c.compact(sp)
			}
			continue
		}
		sp := c.queue[0]
		c.queue = c.queue[1:]
		c.mu.Unlock()
		if n, err := c.db.EstimateDiskUsage(sp.lo, sp.hi); err != nil || n < compactMinBytes {
			continue // little in tables (or not known): not worth a flush
		}
		c.compact(sp)
	}
}

// groups sorts spans by lo and merges them greedily into the spans to compact: a span joins
// the group before it if it overlaps or touches it, or if the group extended to it holds at
// most reclaimMergeBytes in tables; otherwise it starts a new group. A span larger than the
// bound is thus compacted alone (its space is needed). Reorders spans.
func (c *compactor) groups(spans []span) []span {
	slices.SortFunc(spans, func(a, b span) int { return bytes.Compare(a.lo, b.lo) })
	groups := []span{spans[0]}
	for _, sp := range spans[1:] {
		g := &groups[len(groups)-1]
		if bytes.Compare(sp.lo, g.hi) <= 0 {
			g.hi = maxKey(g.hi, sp.hi)
			continue
		}
		if n, err := c.db.EstimateDiskUsage(g.lo, sp.hi); err == nil && n <= reclaimMergeBytes {
			g.hi = sp.hi // past g.hi: sp starts past it
			continue
		}
		groups = append(groups, sp)
	}
	return groups
}

// compact compacts the span sp; on failure Pebble reclaims its space in its own time.
func (c *compactor) compact(sp span) {
	start := time.Now()
	// The memtable holding the range deletion is flushed first if it overlaps the span.
	if err := c.db.Compact(c.ctx, sp.lo, sp.hi, false); err != nil {
		if c.ctx.Err() == nil {
			c.log.Warn("shard: compacting a truncated stream's events failed; Pebble reclaims them in its own time",
				"shard", c.shard, "err", err)
		}
		return
	}
	c.log.Debug("shard: compacted a truncated stream's events", "shard", c.shard, "took", time.Since(start))
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

func maxKey(a, b []byte) []byte {
	if bytes.Compare(a, b) >= 0 {
		return a
	}
	return b
}

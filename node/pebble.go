package node

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shoaldb/shoal/internal/loglimit"
	"github.com/shoaldb/shoal/replica"
)

// pebbleMode is how openPebble opens a store.
type pebbleMode int

const (
	pebbleCreate pebbleMode = iota // created when absent
	// pebbleMustExist: pebble.ErrDBDoesNotExist when absent, for a node with raft state, which
	// a new, empty store would silently lose.
	pebbleMustExist
	// pebbleReadOnly: opened as it is, changing nothing (the WAL is replayed into memory, not
	// flushed; nothing is compacted), for an offline look (Inspect). It must exist.
	pebbleReadOnly
)

// openPebble opens the node's single Pebble instance, tuned for the write
// path: the replica syncs one WAL batch per Ready (group commit), so large
// memtables and a relaxed L0 keep flushes and compactions out of the way.
//
// Appends spread over every shard and stream, so each flushed memtable
// overlaps the whole key range and every L0 file costs a rewrite of the
// overlapping Lbase data (and, in turn, of L6). The memtable size therefore
// sets the write amplification: 64 MB memtables flush ~4x less often than
// 16 MB ones, which halves the bytes compactions write and gives the CPU back
// to the write path (~+20% batched-append throughput on 2 cores). The cost is
// memory (up to MemTableStopWritesThreshold x 64 MB = 256 MB of memtables
// when flushes fall behind; 64 MB steady state) and up to 64 MB more WAL to
// replay on restart.
//
// It also returns the options (with Pebble's defaults filled in), from which the replica
// host takes the sstable options of received snapshots. fs is the file system (the node's
// comes from diskWatch.wrap; nil: the operating system's, with Pebble's own health checks).
// mode says whether the store may be created, must exist or is only read. w, if not
// nil, is told of flushes and write stalls; memTableSize 0 is the default (tests shrink it).
func openPebble(dir string, log *slog.Logger, fs vfs.FS, mode pebbleMode, w *diskWatch, memTableSize uint64, delay *replica.CommitDelay) (*pebble.DB, *pebble.Options, error) {
	bgErrors := &loglimit.Limiter{Every: backgroundErrorLogEvery}
	opts := &pebble.Options{
		FS:                          fs,
		ErrorIfNotExists:            mode != pebbleCreate, // pebble.ErrDBDoesNotExist rather than an empty store
		ReadOnly:                    mode == pebbleReadOnly,
		MemTableSize:                cmp.Or(memTableSize, 64<<20),
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0CompactionFileThreshold:   500,
		L0StopWritesThreshold:       1000,
		LBaseMaxBytes:               256 << 20,
		MaxOpenFiles:                4096,
		CacheSize:                   256 << 20,
		BytesPerSync:                1 << 20,
		WALBytesPerSync:             0, // the replica syncs explicitly
		FormatMajorVersion:          storeFormat,
		CompactionConcurrencyRange:  func() (int, int) { return 1, 2 },
		Logger:                      pebbleLogger{log},
		EventListener: &pebble.EventListener{
			DataCorruption: onDataCorruption(log, mode),
			BackgroundError: func(err error) {
				// A snapshot install (an excise) cancels overlapping compactions,
				// which Pebble retries: expected, not an error.
				if errors.Is(err, pebble.ErrCancelledCompaction) {
					log.Info("pebble: compaction cancelled; it will be retried", "component", "pebble")
					return
				}
				// A failing flush or compaction is retried at once, again and again: its
				// error is logged once per backgroundErrorLogEvery, with the count.
				if n, ok := bgErrors.Allow(); ok {
					log.Error("pebble: background error", "component", "pebble", "err", err, "errors_since_last_logged", n)
				}
			},
		},
	}
	if delay != nil {
		opts.WALMinSyncInterval = delay.Func
	}
	if w != nil {
		opts.EventListener.FlushEnd = func(info pebble.FlushInfo) {
			err := info.Err
			if emptyFlush(info) {
				err = nil // it succeeded: the memtables left the queue, and MinUnflushedLogNum advanced
			}
			w.flushEnded(err)
		}
		opts.EventListener.WriteStallBegin = func(pebble.WriteStallBeginInfo) { w.writeStallBegan() }
		opts.EventListener.WriteStallEnd = w.writeStallEnded
	}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		opts.Levels[i].BlockSize = 32 << 10
	}
	opts.EnsureDefaults()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("node: opening pebble in %s: %w", dir, err)
	}
	return db, opts, nil
}

// emptyFlush reports a flush that succeeded with no table to write: Pebble hands FlushEnd
// "pebble: empty table" for it (an unexported error, compaction.go), though it neither fails
// nor is retried. Opening a store flushes every WAL it replays, an empty one too: that of a
// run that wrote nothing (a start held by the restore check and stopped, one that failed
// after the open).
func emptyFlush(info pebble.FlushInfo) bool {
	return info.Err != nil && len(info.Output) == 0 && info.Err.Error() == "pebble: empty table"
}

// storeFormat is the Pebble format major version stores are created with, and opened stores
// are raised to. Pinned, not pebble.FormatNewest: a Pebble update whose newest format is
// later would otherwise raise every store the first time the new binary opens it, after which
// the previous binary cannot open it, and an upgrade could no longer be rolled back. Raise it
// on purpose, in a release that says so (docs/operations.md, "Upgrades").
const storeFormat = pebble.FormatValueSeparation

// backgroundErrorLogEvery bounds how often a repeated background error is logged.
const backgroundErrorLogEvery = 5 * time.Second

// pebbleLogger sends Pebble's logs to slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg, "component", "pebble", "fatal", true)
	fmt.Fprintln(os.Stderr, "pebble: fatal:", msg)
	os.Exit(ExitDiskStall) // a store that cannot go on (a failed write or sync of its files): as a stall, docs/operations.md

}

// pebbleCollector exports the basics of db.Metrics() at scrape time.
type pebbleCollector struct {
	db                                                 *pebble.DB
	memtable, memtables, l0Files, l0Sublevels, readAmp *prometheus.Desc
	compactions, compactDebt, flushes, walBytes        *prometheus.Desc
	walBytesWritten, walSize, diskUsage, cacheHits     *prometheus.Desc
	cacheMisses, cacheSize, levelFiles, levelBytes     *prometheus.Desc
	walFsyncs, walFsyncSeconds                         *prometheus.Desc
	flushedBytes, compactedBytes                       *prometheus.Desc
}

func newPebbleCollector(db *pebble.DB) *pebbleCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("shoal_pebble_"+name, help, labels, nil)
	}
	return &pebbleCollector{
		db:              db,
		memtable:        d("memtable_bytes", "Bytes allocated by memtables and large batches."),
		memtables:       d("memtables", "Number of memtables."),
		l0Files:         d("l0_files", "Number of sstables in L0."),
		l0Sublevels:     d("l0_sublevels", "Number of L0 sublevels (L0 read amplification)."),
		readAmp:         d("read_amplification", "Read amplification over all levels."),
		compactions:     d("compactions_total", "Compactions completed."),
		compactDebt:     d("compaction_debt_bytes", "Estimated bytes to compact to reach a stable LSM."),
		flushes:         d("flushes_total", "Memtable flushes completed."),
		walBytes:        d("wal_bytes_in_total", "Logical bytes written to the WAL."),
		walBytesWritten: d("wal_bytes_written_total", "Physical bytes written to the WAL."),
		walSize:         d("wal_physical_bytes", "Physical size of live WAL files."),
		diskUsage:       d("disk_usage_bytes", "Disk space used by the store."),
		cacheHits:       d("block_cache_hits_total", "Block cache hits."),
		cacheMisses:     d("block_cache_misses_total", "Block cache misses."),
		cacheSize:       d("block_cache_bytes", "Bytes the block cache holds (at most its capacity, 256 MiB), outside the Go heap."),
		levelFiles:      d("level_files", "Number of sstables per level.", "level"),
		levelBytes:      d("level_bytes", "Bytes of sstables per level.", "level"),
		walFsyncs:       d("wal_fsyncs_total", "WAL fsyncs (each makes every write queued before it durable)."),
		walFsyncSeconds: d("wal_fsync_seconds_total", "Time spent in WAL fsyncs."),
		flushedBytes:    d("flushed_bytes_total", "Bytes of sstables written by memtable flushes."),
		compactedBytes:  d("compacted_bytes_total", "Bytes of sstables written by compactions (with flushed bytes and WAL bytes, the store's write amplification)."),
	}
}

func (c *pebbleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.memtable, c.memtables, c.l0Files, c.l0Sublevels,
		c.readAmp, c.compactions, c.compactDebt, c.flushes, c.walBytes, c.walBytesWritten,
		c.walSize, c.diskUsage, c.cacheHits, c.cacheMisses, c.cacheSize, c.levelFiles, c.levelBytes,
		c.walFsyncs, c.walFsyncSeconds, c.flushedBytes, c.compactedBytes} {
		ch <- d
	}
}

func (c *pebbleCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.db.Metrics()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ctr := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	g(c.memtable, float64(m.MemTable.Size))
	g(c.memtables, float64(m.MemTable.Count))
	g(c.l0Files, float64(m.Levels[0].TablesCount))
	g(c.l0Sublevels, float64(m.Levels[0].Sublevels))
	g(c.readAmp, float64(m.ReadAmp()))
	ctr(c.compactions, float64(m.Compact.Count))
	g(c.compactDebt, float64(m.Compact.EstimatedDebt))
	ctr(c.flushes, float64(m.Flush.Count))
	ctr(c.walBytes, float64(m.WAL.BytesIn))
	ctr(c.walBytesWritten, float64(m.WAL.BytesWritten))
	g(c.walSize, float64(m.WAL.PhysicalSize))
	g(c.diskUsage, float64(m.DiskSpaceUsage()))
	ctr(c.cacheHits, float64(m.BlockCache.Hits))
	ctr(c.cacheMisses, float64(m.BlockCache.Misses))
	g(c.cacheSize, float64(m.BlockCache.Size))
	if h := m.LogWriter.FsyncLatency; h != nil {
		var hm dto.Metric
		if err := h.Write(&hm); err == nil {
			ctr(c.walFsyncs, float64(hm.GetHistogram().GetSampleCount()))
			ctr(c.walFsyncSeconds, hm.GetHistogram().GetSampleSum()/1e9) // Pebble observes nanoseconds
		}
	}
	var flushed, compacted uint64
	for i, l := range m.Levels {
		flushed += l.TableBytesFlushed
		compacted += l.TableBytesCompacted
		g(c.levelFiles, float64(l.TablesCount), fmt.Sprint(i))
		g(c.levelBytes, float64(l.TablesSize), fmt.Sprint(i))
	}
	ctr(c.flushedBytes, float64(flushed))
	ctr(c.compactedBytes, float64(compacted))
}

package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/shoaldb/shoal/internal/kvframe"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

const (
	snapMagic   = "SHS1"
	maxSnapItem = 64 << 20 // largest key or value accepted in a snapshot stream
)

// WriteSnapshot streams the shard's state keyspace, read by one Pebble iterator (a consistent
// view), in the framed format of doc.go. The data may be ahead of snap's index (never behind).
// It reads through an iterator rather than a pebble.Snapshot because a snapshot install on
// this node excises the span from open snapshots, while an open iterator keeps its view. It
// ends with an error once this node no longer leads the shard, as it streams (looked at every
// 1,024 records or 4 MiB).
func (h *Host) WriteSnapshot(shard uint32, snap *pb.Snapshot, w io.Writer) error {
	done, err := h.useDB()
	if err != nil {
		return err
	}
	defer done()
	h.mu.Lock()
	g := h.mu.groups[shard]
	h.mu.Unlock()
	if g == nil {
		return fmt.Errorf("replica: unknown shard %d", shard)
	}
	// The data may be ahead of the snapshot, never behind: the group may have been dropped and
	// created again, empty, since raft asked for the snapshot, and a receiver would replace its
	// state with that. The applied index is read, and the iterator opened, in one step of the
	// loop, after which a drop (DropGroup, on the loop too) cannot change the iterator's view:
	// opened after that step, it could see the span a drop had just deleted, and stream an
	// empty state under the snapshot's index.
	var (
		applied uint64
		it      *pebble.Iterator
	)
	lo, hi := g.sm.Span()
	if err := h.call(noCancel, func() error {
		if h.mu.groups[shard] != g {
			return fmt.Errorf("replica: shard %d: its group was dropped while a snapshot of it waited to be sent", shard)
		}
		applied = g.sm.Applied()
		var err error
		it, err = h.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		return err
	}); err != nil {
		return err
	}
	defer it.Close()
	if index := snap.GetMetadata().GetIndex(); applied < index {
		return fmt.Errorf("replica: shard %d: snapshot at index %d, but the state applied only %d (the group was created again since)",
			shard, index, applied)
	}

	fw := kvframe.NewWriter(w, 64<<10)
	var hdr []byte
	hdr = append(hdr, snapMagic...)
	hdr = binary.BigEndian.AppendUint32(hdr, shard)
	hdr = binary.BigEndian.AppendUint64(hdr, snap.GetMetadata().GetIndex())
	hdr = binary.BigEndian.AppendUint64(hdr, snap.GetMetadata().GetTerm())
	hdr = binary.AppendUvarint(hdr, uint64(len(lo)))
	hdr = append(hdr, lo...)
	hdr = binary.AppendUvarint(hdr, uint64(len(hi)))
	hdr = append(hdr, hi...)
	if _, err := fw.Write(hdr); err != nil {
		return err
	}
	var since int // bytes since the last look at the host and the leadership
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fw.Record(it.Key(), v); err != nil {
			return err
		}
		if since += len(it.Key()) + len(v); since >= 4<<20 || fw.Count()%1024 == 0 {
			since = 0
			select {
			case <-h.stop:
				return ErrStopped
			default:
			}
			// A deposed leader's snapshot is refused once received (staleSnapshot): streaming
			// the rest of a large one would only take the receiver's disk and both nodes'
			// bandwidth, for a minute or more, from the new leader's.
			if !g.isLeader.Load() || g.retired.Load() {
				return fmt.Errorf("replica: shard %d: this node no longer leads it: its snapshot is abandoned (the new leader sends its own)", shard)
			}
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	if err := fw.Close(); err != nil {
		return err
	}
	h.metrics.SnapshotsSent.Inc()
	return nil
}

// badSnapshot says that a snapshot stream did not read whole (kvframe.ErrBad).
func badSnapshot(err error) error { return fmt.Errorf("%w: %w", ErrBadSnapshot, err) }

// snapTableBytes is the size at which a received snapshot moves on to its next sstable
// (Host.snapTableBytes, lowered by tests). The sstable writer buffers the table's index until
// the table is finished (about 1% of the table), so this bounds the memory of a receive
// whatever the snapshot's size.
const snapTableBytes = 64 << 20

// snapTables writes a received snapshot's records, in strictly increasing key order, into
// scratch sstables of about target bytes each. Not safe for concurrent use.
type snapTables struct {
	fs     vfs.FS
	prefix string // paths are prefix-<n>.sst
	opts   sstable.WriterOptions
	target uint64
	// room, if set, reserves room on the disk for the next table, refusing it if there is
	// none; release gives the table's reservation back once it is closed.
	room    func() (release func(), err error)
	release func()
	w       *sstable.Writer // the table being written, nil between tables
	paths   []string        // every table created, the last one possibly unfinished
}

// defaultSnapWriterOptions, Config.SnapshotTables' default, are db's table format with Pebble's defaults otherwise: the
// comparer and key schema are Pebble's defaults, as are the DB's. Keys have no suffix, so no
// value blocks would be written; disabling them says so.
func defaultSnapWriterOptions(db *pebble.DB) sstable.WriterOptions {
	return sstable.WriterOptions{TableFormat: db.TableFormat(), DisableValueBlocks: true}
}

func (t *snapTables) set(k, v []byte) error {
	if t.w != nil && t.w.Raw().EstimatedSize() >= t.target {
		if err := t.finish(); err != nil {
			return err
		}
	}
	if t.w == nil {
		if t.room != nil {
			release, err := t.room()
			if err != nil {
				return err
			}
			t.release = release
		}
		path := fmt.Sprintf("%s-%d.sst", t.prefix, len(t.paths))
		f, err := t.fs.Create(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.releaseRoom()
			return fmt.Errorf("replica: creating snapshot file: %w", err)
		}
		t.paths = append(t.paths, path)
		t.w = sstable.NewWriter(objstorageprovider.NewFileWritable(f), t.opts)
	}
	return t.w.Set(k, v)
}

// finish completes the current table: its data is synced and its file closed.
func (t *snapTables) finish() error {
	if t.w == nil {
		return nil
	}
	err := t.w.Close()
	t.w = nil
	t.releaseRoom()
	if err != nil {
		return fmt.Errorf("replica: writing snapshot file: %w", err)
	}
	return nil
}

// releaseRoom gives back the current table's reservation (room), if any.
func (t *snapTables) releaseRoom() {
	if t.release != nil {
		t.release()
		t.release = nil
	}
}

// remove closes and deletes every table; ingested ones are already gone (the DB removes a
// file it ingested).
func (t *snapTables) remove(log *slog.Logger) {
	if t.w != nil {
		_ = t.w.Close()
		t.w = nil
	}
	t.releaseRoom()
	for _, p := range t.paths {
		if err := t.fs.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("removing snapshot file", "path", p, "err", err)
		}
	}
}

// ReceiveSnapshot reads and verifies a whole snapshot stream for m (a MsgSnap) and installs it.
// Memory stays bounded whatever the snapshot's size (a 64 KiB read buffer, the largest key
// and value, the sstable writer's blocks and index): while reading, it checks that every key
// lies in the state span, above the previous one, and writes the records into sstables of at
// most about 64 MiB in Config.SnapshotDir. Once the checksum and the record count match, on
// the loop goroutine, it creates the group with the factory if it is unknown. When the
// snapshot is ahead of the local state, it pauses the group (processReady passes it by) and,
// off the loop, replaces the state span with the tables (ingestSnapshot); back on the loop it
// reloads the state machine. Then it steps m into the group, which resets its log to the
// snapshot. The scratch tables are removed in every case.
func (h *Host) ReceiveSnapshot(m ShardMessage, r io.Reader) error {
	if m.Msg.GetType() != pb.MsgSnap {
		return fmt.Errorf("replica: ReceiveSnapshot of a %v message", m.Msg.GetType())
	}
	md := m.Msg.GetSnapshot().GetMetadata()
	// On the loop, before the data is read:
	//   - A snapshot sent at an earlier term than the replica's is one raft would drop once
	//     stepped (a deposed leader's, sent before it learned of its successor): refused. The
	//     loop checks again before installing it, as the term may have moved on meanwhile.
	//   - drops: a replica deleted while its snapshot streamed in (an addition given up, the
	//     replica retired and dropped) is not created again by it: the snapshot may name this
	//     node in a configuration that has removed it since.
	//   - mayOverlap: the shard's span may have keys in the memtables, which the install's
	//     ingest would wait for a flush over (below): this process deleted a replica of the
	//     shard (its range deletion), or the replica has state of its own (a lagging one). A
	//     new replica's span is empty.
	var (
		drops      uint64
		mayOverlap bool
	)
	if err := h.call(noCancel, func() error {
		if err := h.staleSnapshot(m); err != nil {
			return err
		}
		if h.installing[m.Shard] { // refused before its data is read; checked again below
			return errInstalling(m.Shard)
		}
		g := h.mu.groups[m.Shard] // the loop writes groups and drops: read here without mu
		drops = h.mu.drops[m.Shard]
		mayOverlap = drops > 0 || g != nil && g.sm.Applied() > 0
		return nil
	}); err != nil {
		return err
	}
	sr := kvframe.NewReader(r, 64<<10, maxSnapItem)
	fixed := make([]byte, 4+4+8+8)
	if err := sr.ReadFull(fixed); err != nil {
		return badSnapshot(err)
	}
	if string(fixed[:4]) != snapMagic {
		return fmt.Errorf("%w: bad magic", ErrBadSnapshot)
	}
	shard, index := binary.BigEndian.Uint32(fixed[4:]), binary.BigEndian.Uint64(fixed[8:])
	if shard != m.Shard || index != md.GetIndex() {
		return fmt.Errorf("%w: stream is shard %d index %d, message is shard %d index %d",
			ErrBadSnapshot, shard, index, m.Shard, md.GetIndex())
	}
	lo, err := sr.Bytes()
	if err != nil {
		return badSnapshot(err)
	}
	hi, err := sr.Bytes()
	if err != nil {
		return badSnapshot(err)
	}
	if bytes.Compare(lo, hi) >= 0 {
		return fmt.Errorf("%w: empty span [%q, %q)", ErrBadSnapshot, lo, hi)
	}
	tables := &snapTables{
		fs: h.cfg.FS,
		prefix: h.cfg.FS.PathJoin(h.cfg.SnapshotDir,
			fmt.Sprintf("snap-%d-%d-%d-%d", h.cfg.NodeID, shard, index, h.nextID.Add(1))),
		opts:   h.cfg.SnapshotTables,
		target: h.snapTableBytes,
	}
	tables.room = func() (func(), error) { return h.snapshotRoom(m.Shard, tables.target) }
	defer tables.remove(h.log)
	// held is the records' bytes received. What SnapshotFits reserved for this receive counts
	// against Config.MaxSnapshotBytes until its caller gives it back, after the receive; the
	// receive counts (charged) what its records take past that, given back when it ends: its
	// tables are then ingested (the DB holds their data) or removed.
	reserved := h.snapshotReserved(m.Msg)
	var held, charged uint64
	defer func() { h.snapBytes.Add(-charged) }()
	var prev []byte
	for {
		k, v, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return badSnapshot(err)
		}
		if bytes.Compare(k, lo) < 0 || bytes.Compare(k, hi) >= 0 {
			return fmt.Errorf("%w: key %q outside the span", ErrBadSnapshot, k)
		}
		if sr.Count() > 1 && bytes.Compare(k, prev) <= 0 {
			return fmt.Errorf("%w: key %q not above the previous key %q", ErrBadSnapshot, k, prev)
		}
		held += uint64(len(k) + len(v))
		if past := held - min(held, reserved); past > charged {
			total := h.snapBytes.Add(past - charged)
			charged = past
			if total > h.cfg.MaxSnapshotBytes {
				return fmt.Errorf("%w: shard %d: refused after %d bytes of records: the snapshots being received would hold %d bytes, past %s (%d)",
					ErrSnapshotTooLarge, m.Shard, held, total, maxSnapshotBytesName, h.cfg.MaxSnapshotBytes)
			}
		}
		if err := tables.set(k, v); err != nil {
			return err
		}
		prev = append(prev[:0], k...)
	}
	if err := tables.finish(); err != nil {
		return err
	}
	h.metrics.SnapshotsReceived.Inc()
	// The install below ingests the tables, excising the shard's span. An ingest that overlaps
	// keys in the memtables (the range deletion that dropped an earlier replica of the shard
	// here, a lagging replica's last writes) waits for a memtable flush, or queues one, which
	// took 0.2-0.6 s, with the group paused. Flushing first leaves the ingest the quick path.
	// Only then: a flush before every install cost writers more while a node took in many new
	// replicas.
	if mayOverlap {
		if err := h.flushForInstall(m.Shard); err != nil {
			return err
		}
	}

	// On the loop: the checks, and the group, which is paused while its state is replaced.
	var (
		g       *Group
		install bool
	)
	if err := h.call(noCancel, func() error {
		if h.mu.drops[m.Shard] != drops { // written under mu by this goroutine only
			return fmt.Errorf("%w: shard %d: the replica was deleted while its snapshot was received", ErrGroupRemoved, m.Shard)
		}
		if err := h.staleSnapshot(m); err != nil {
			return err
		}
		var err error
		if g, err = h.groupFor(m.Shard, m.Msg); err != nil {
			return err
		}
		if g.retired.Load() {
			return ErrGroupRemoved
		}
		if glo, ghi := g.sm.Span(); !bytes.Equal(glo, lo) || !bytes.Equal(ghi, hi) {
			return fmt.Errorf("%w: span differs from the local state machine's", ErrBadSnapshot)
		}
		if index <= max(g.sm.Applied(), g.st.applied, g.st.hs.GetCommit()) {
			g.stepSnapshot(m.Msg) // nothing to install: raft answers where the replica is
			return nil
		}
		if h.installing[m.Shard] {
			return errInstalling(m.Shard)
		}
		if g.state == raft.StateLeader {
			// Its term's leader sends no snapshot: raft steps it down first. Paused, it would
			// go on claiming the leadership it no longer has.
			return fmt.Errorf("replica: shard %d: a snapshot for the group's leader", m.Shard)
		}
		h.installing[m.Shard] = true
		g.installing = true
		install = true
		return nil
	}); err != nil || !install {
		return err
	}
	// Off the loop: the ingest, which took up to half a second on a loaded machine, holding
	// every group of the node when it ran on the loop. Only this group waits for it:
	// processReady passes it by, so that it neither persists nor applies anything meanwhile.
	start := time.Now()
	stats, ingestErr := h.ingestSnapshot(m.Shard, tables.paths, lo, hi)
	ingested := time.Now()
	return h.call(noCancel, func() error {
		delete(h.installing, m.Shard)
		g.installing = false
		g.stir() // what it was stepped meanwhile
		if ingestErr != nil {
			return ingestErr
		}
		if h.mu.drops[m.Shard] != drops {
			// Dropped while the tables went in (DropGroup): they may have landed after its range
			// deletion. No replica of the shard was created meanwhile (groupFor, OpenGroup):
			// delete the span again.
			h.must(h.db.DeleteRange(lo, hi, pebble.Sync))
			return fmt.Errorf("%w: shard %d: the replica was deleted while its snapshot was installed", ErrGroupRemoved, m.Shard)
		}
		if g.retired.Load() {
			return ErrGroupRemoved
		}
		// The span now holds the snapshot's state. A state machine that cannot load it, or
		// whose applied index is behind the snapshot's, must not apply another entry: raft
		// would go on from its applied index over a state it does not describe. Stop, as on
		// any storage failure; a restart loads the span from disk.
		if err := g.sm.Reload(); err != nil {
			h.must(fmt.Errorf("shard %d: loading the state of the snapshot at %d just ingested: %w", m.Shard, index, err))
		}
		if a := g.sm.Applied(); a < index {
			h.must(fmt.Errorf("shard %d: the snapshot's state is at applied index %d, behind its metadata's %d", m.Shard, a, index))
		}
		h.log.Info("snapshot installed", "shard", m.Shard, "index", index, "records", sr.Count(),
			"tables", len(tables.paths), "memtable_overlap", stats.MemtableOverlappingFiles,
			"ingest", ingested.Sub(start).Round(time.Microsecond),
			"reload", time.Since(ingested).Round(time.Microsecond)) // the reload held the loop
		g.stepSnapshot(m.Msg)
		return nil
	})
}

// ingestSnapshot replaces shard's span [lo, hi) with the tables at paths, atomically and
// durably (DB.IngestAndExcise: the tables and the MANIFEST, or the WAL record of a flushable
// ingest, are synced before it returns; no tables only excises), unless the host is closed
// (useDB).
func (h *Host) ingestSnapshot(shard uint32, paths []string, lo, hi []byte) (pebble.IngestOperationStats, error) {
	done, err := h.useDB()
	if err != nil {
		return pebble.IngestOperationStats{}, err
	}
	defer done()
	if hook := testHookInstallIngest.Load(); hook != nil {
		(*hook)()
	}
	stats, err := h.db.IngestAndExcise(noCancel, paths, nil, nil, pebble.KeyRange{Start: lo, End: hi})
	if err != nil {
		return stats, fmt.Errorf("replica: shard %d: ingesting snapshot: %w", shard, err)
	}
	return stats, nil
}

// useDB lets a caller off the loop use the DB until it calls done: Close waits for it (snaps),
// as the host's owner closes the DB after the host. ErrStopped once the host is closed.
func (h *Host) useDB() (done func(), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.closed {
		return nil, ErrStopped
	}
	h.snaps.Add(1)
	return h.snaps.Done, nil
}

// errInstalling refuses what would touch shard while a snapshot of it is ingested.
func errInstalling(shard uint32) error {
	return fmt.Errorf("replica: shard %d: a snapshot of it is being installed", shard)
}

// testHookInstallIngest, set by tests, runs in ingestSnapshot just before the ingest.
var testHookInstallIngest atomic.Pointer[func()]

// stepSnapshot steps the MsgSnap m, whose state is installed, into the group's raft, which
// resets its log to the snapshot (or, behind the replica, answers where the replica is).
// Loop goroutine.
func (g *Group) stepSnapshot(m *pb.Message) {
	g.wake()
	if err := g.rn.Step(m); err != nil {
		g.h.log.Debug("raft step snapshot", "shard", g.shard, "err", err)
	}
	now := time.Now()
	g.heardFrom(m, now, now)
	g.stir()
}

// flushForInstall flushes the DB's memtables before shard's snapshot install (useDB).
func (h *Host) flushForInstall(shard uint32) error {
	done, err := h.useDB()
	if err != nil {
		return err
	}
	defer done()
	if hook := testHookInstallFlush.Load(); hook != nil {
		(*hook)()
	}
	if err := h.db.Flush(); err != nil {
		return fmt.Errorf("replica: shard %d: flushing before installing a snapshot: %w", shard, err)
	}
	return nil
}

// testHookInstallFlush, set by tests, runs in flushForInstall just before the flush.
var testHookInstallFlush atomic.Pointer[func()]

// SnapshotSize estimates the bytes shard's state takes in the DB's tables (Pebble's
// estimate, which counts overwritten and deleted data not yet compacted away, and not the
// memtables); 0 for an unknown shard, on error or once the host is closed. It is sent as a
// snapshot's size hint.
func (h *Host) SnapshotSize(shard uint32) uint64 {
	done, err := h.useDB()
	if err != nil {
		return 0
	}
	defer done()
	g, ok := h.Group(shard)
	if !ok {
		return 0
	}
	lo, hi := g.sm.Span()
	n, err := h.db.EstimateDiskUsage(lo, hi)
	if err != nil {
		return 0
	}
	return n
}

// maxSnapshotBytesName names Config.MaxSnapshotBytes in refusals, which reach the sender's
// log too: the node sets it from shoal server's --max-snapshot-size.
const maxSnapshotBytesName = "Config.MaxSnapshotBytes (--max-snapshot-size)"

// SnapshotFits refuses (ErrSnapshotTooLarge) a snapshot m whose sender estimates its state at
// size bytes on disk (SnapshotSize; 0: unknown, never refused) if this node's snapshot
// directory has less free space than that beside Config.SnapshotMinFreeBytes and the tables
// other receives are writing: the receive would stop at the floor anyway, after writing up
// to it, again at each of the sender's retries. The estimate may count data the snapshot
// does not carry (overwritten or deleted, not yet compacted away), so a snapshot refused here
// could have fitted, on a disk left within about that much of the floor.
//
// It refuses one, too, whose size alone passes Config.MaxSnapshotBytes, or which would take the
// snapshots being received past it: without the check, each attempt was streamed up to the
// limit and refused there, again at every retry, hundreds of MB each time. A snapshot it lets
// through holds size bytes of the limit from then on, so that receives that start together
// do not each find it free; release gives them back, and is called once the receive of m
// (ReceiveSnapshot) has ended, or in its place.
func (h *Host) SnapshotFits(m ShardMessage, size uint64) (release func(), err error) {
	if size == 0 {
		return func() {}, nil
	}
	limit := h.cfg.MaxSnapshotBytes
	if size > limit {
		return nil, fmt.Errorf("%w: shard %d: its state takes about %d bytes on the sender's disk, more than the snapshots this node receives may hold (%s, %d): raise it past the shard's size",
			ErrSnapshotTooLarge, m.Shard, size, maxSnapshotBytesName, limit)
	}
	open := uint64(max(h.snapTablesOpen.Load(), 0))
	if avail, short := h.snapshotDiskShort(size + open*h.snapTableBytes); short {
		return nil, fmt.Errorf("%w: shard %d: its state takes about %d bytes on the sender's disk; %s has %d bytes free, which would leave less than Config.SnapshotMinFreeBytes (%d) beside the %d snapshot files being written",
			ErrSnapshotTooLarge, m.Shard, size, h.cfg.SnapshotDir, avail, h.cfg.SnapshotMinFreeBytes, open)
	}
	h.snapReserve.Lock()
	defer h.snapReserve.Unlock()
	if held := h.snapBytes.Load(); held+size > limit {
		return nil, fmt.Errorf("%w: shard %d: its state takes about %d bytes on the sender's disk, and the snapshots being received hold %d: together past %s (%d); the sender retries later",
			ErrSnapshotTooLarge, m.Shard, size, held, maxSnapshotBytesName, limit)
	}
	h.snapBytes.Add(size)
	h.snapReserved[m.Msg] = size
	var once sync.Once
	return func() {
		once.Do(func() {
			h.snapReserve.Lock()
			delete(h.snapReserved, m.Msg)
			h.snapReserve.Unlock()
			h.snapBytes.Add(-size)
		})
	}, nil
}

// snapshotReserved returns what SnapshotFits reserved for receiving msg (0: nothing).
func (h *Host) snapshotReserved(msg *pb.Message) uint64 {
	h.snapReserve.Lock()
	defer h.snapReserve.Unlock()
	return h.snapReserved[msg]
}

// snapshotDiskShort reports whether SnapshotDir's file system has less than
// Config.SnapshotMinFreeBytes free beyond need bytes, and what it has free. A file system that
// cannot tell (an in-memory one) is never short.
func (h *Host) snapshotDiskShort(need uint64) (avail uint64, short bool) {
	du, err := h.cfg.FS.GetDiskUsage(h.cfg.SnapshotDir)
	if err != nil {
		return 0, false
	}
	return du.AvailBytes, du.AvailBytes < h.cfg.SnapshotMinFreeBytes+need
}

// staleSnapshot refuses m, a MsgSnap, if its term is before the local replica's (none: no
// refusal). Loop goroutine only.
func (h *Host) staleSnapshot(m ShardMessage) error {
	g := h.mu.groups[m.Shard]
	if g == nil {
		return nil
	}
	if term := g.rn.BasicStatus().HardState.GetTerm(); m.Msg.GetTerm() < term {
		return fmt.Errorf("%w: shard %d: snapshot at index %d sent at term %d, the replica is at term %d",
			ErrStaleSnapshot, m.Shard, m.Msg.GetSnapshot().GetMetadata().GetIndex(), m.Msg.GetTerm(), term)
	}
	return nil
}

// snapshotRoom reserves room for a receive's next scratch table of about size bytes, and
// refuses it if the table, with the others being written (each counted at size: receives
// under way check the same free space), would leave less than Config.SnapshotMinFreeBytes
// free on SnapshotDir's file system (snapshotDiskShort). The returned func gives the
// reservation back.
func (h *Host) snapshotRoom(shard uint32, size uint64) (func(), error) {
	n := h.snapTablesOpen.Add(1)
	release := func() { h.snapTablesOpen.Add(-1) }
	if avail, short := h.snapshotDiskShort(uint64(n) * size); short {
		release()
		return nil, fmt.Errorf("%w: shard %d: %s has %d bytes free, and a snapshot's next file of up to %d bytes, with the %d others being written, would leave less than Config.SnapshotMinFreeBytes (%d)",
			ErrSnapshotTooLarge, shard, h.cfg.SnapshotDir, avail, size, n-1, h.cfg.SnapshotMinFreeBytes)
	}
	return release, nil
}

var noCancel = context.Background()

package query

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/klauspost/compress/zstd"
	"github.com/shoaldb/shoal/internal/kvframe"
)

// A projection snapshot is the whole of a projection's database (read model, checkpoint, the
// cluster it is bound to and the filters it was built under) as of one moment, in internal/kvframe's framing:
//
//	magic   "SHQSNAP1" (8 bytes), then one zstd stream of:
//	record  0x01 | uvarint len | key | uvarint len | value     (repeated, key order)
//	trailer 0x00 | record count (8B BE) | xxhash64 of every preceding byte of the stream (8B BE)
//
// The trailer makes a truncated or damaged snapshot detectable whatever the compression
// says; Restore checks it before the directory is usable.
const snapshotMagic = "SHQSNAP1"

// restoreBatchBytes bounds the writes Restore buffers before it commits them.
const restoreBatchBytes = 4 << 20

// maxRestoreItem is the longest key or value Restore takes: past it, the length is damage.
const maxRestoreItem = 1 << 30

// ErrBadSnapshot is returned by Restore for input that is not a complete projection snapshot:
// another format, truncated, or damaged. Nothing is left in the directory.
var ErrBadSnapshot = errors.New("query: not a complete projection snapshot")

// WriteSnapshot writes the projection's database to w as of one moment, read model and
// checkpoint together, and returns that checkpoint. It may run while Run does: it reads one
// Pebble snapshot, and commits go on meanwhile. Restore makes a projection directory of it,
// which Open and Run take up from the checkpoint: a read model moved to another machine, or
// kept against the loss of its disk. (Rebuilt from scratch instead, a model lacks the events a
// truncation or retention removed from the log since; restored, it keeps what it built from
// them.)
func (p *Projection) WriteSnapshot(w io.Writer) (Checkpoint, error) {
	if err := p.startRead(); err != nil {
		return nil, err
	}
	defer p.endRead()
	snap := p.db.NewSnapshot()
	defer snap.Close()
	cp, err := readCheckpoint(snap.Get)
	if err != nil {
		return nil, fmt.Errorf("query: snapshot of %q: %w", p.cfg.Name, err)
	}
	if _, err := io.WriteString(w, snapshotMagic); err != nil {
		return nil, fmt.Errorf("query: snapshot of %q: %w", p.cfg.Name, err)
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, err
	}
	fw := kvframe.NewWriter(zw, 256<<10)
	it, err := snap.NewIter(nil)
	if err != nil {
		zw.Close()
		return nil, err
	}
	var werr error
	for ok := it.First(); ok && werr == nil; ok = it.Next() {
		var v []byte
		if v, werr = it.ValueAndErr(); werr == nil {
			werr = fw.Record(it.Key(), v)
		}
	}
	err = errors.Join(werr, it.Error(), it.Close())
	if err == nil {
		err = fw.Close()
	}
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("query: snapshot of %q: %w", p.cfg.Name, err)
	}
	return cp, nil
}

// Restore makes the projection directory dir (on fs; nil: the OS file system) of a snapshot
// that WriteSnapshot wrote, and returns its checkpoint. dir must not exist, or be empty. The
// database is built in dir+".restoring" and renamed to dir once the snapshot checked whole
// (its record count and checksum): input that is not a complete snapshot returns
// ErrBadSnapshot and leaves no dir, and a restore cut short leaves only dir+".restoring",
// which the next Restore to dir removes. Open
// the directory with the Config the projection had: Open refuses other filters
// (ErrFilterMismatch), and Run goes on from the checkpoint, and refuses a cluster other than
// the one the model was built from (ErrClusterMismatch).
func Restore(r io.Reader, dir string, fs vfs.FS) (Checkpoint, error) {
	if fs == nil {
		fs = vfs.Default
	}
	names, err := fs.List(dir)
	exists := err == nil
	if exists && len(names) > 0 {
		return nil, fmt.Errorf("query: restore into %q: the directory is not empty (%d entries); give a new one", dir, len(names))
	}
	// The database is built beside dir and renamed to it once the snapshot checked whole: a
	// restore cut short (a crash, a kill) leaves no directory that opens as a projection with
	// a checkpoint and part of its model. What such a restore left there is its own.
	tmp := filepath.Clean(dir) + restoringSuffix
	if err := fs.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("query: restore into %q: removing an earlier restore's %s: %w", dir, tmp, err)
	}
	err = fs.MkdirAll(tmp, 0o755)
	var cp Checkpoint
	if err == nil {
		cp, err = restore(r, tmp, fs)
	}
	if err == nil && exists {
		err = fs.Remove(dir) // empty: checked above
	}
	if err == nil {
		err = fs.Rename(tmp, dir)
	}
	if err == nil {
		err = syncDir(fs, fs.PathDir(filepath.Clean(dir)))
	}
	if err != nil {
		if rerr := fs.RemoveAll(tmp); rerr != nil {
			err = errors.Join(err, fmt.Errorf("removing what the restore wrote: %w", rerr))
		}
		return nil, fmt.Errorf("query: restore into %q: %w", dir, err)
	}
	return cp, nil
}

// restoringSuffix names the directory beside the target that Restore builds the database in.
const restoringSuffix = ".restoring"

// syncDir makes a rename in dir durable.
func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

func restore(r io.Reader, dir string, fs vfs.FS) (Checkpoint, error) {
	br := bufio.NewReader(r)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, fmt.Errorf("%w: no projection snapshot header", ErrBadSnapshot)
	}
	zr, err := zstd.NewReader(br)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	db, err := pebble.Open(dir, &pebble.Options{FS: fs, Logger: quietLogger{}})
	if err != nil {
		return nil, err
	}
	cp, err := load(zr, db)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return cp, err
}

// load writes a snapshot's records into db and checks its trailer; the last commit syncs.
func load(zr io.Reader, db *pebble.DB) (Checkpoint, error) {
	rd := kvframe.NewReader(zr, 256<<10, maxRestoreItem)
	b := db.NewBatch()
	defer func() { b.Close() }()
	for {
		k, v, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadSnapshot, err)
		}
		if len(k) == 0 || (k[0] != prefixModel && k[0] != prefixCheckpoint && k[0] != prefixInfo && k[0] != prefixFilters) {
			return nil, fmt.Errorf("%w: record %d: a key of no projection database", ErrBadSnapshot, rd.Count()-1)
		}
		if err := b.Set(k, v, nil); err != nil {
			return nil, err
		}
		if b.Len() >= restoreBatchBytes {
			if err := b.Commit(pebble.NoSync); err != nil {
				return nil, err
			}
			b.Close()
			b = db.NewBatch()
		}
	}
	if err := rd.CheckEnd(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return nil, err
	}
	return readCheckpoint(db.Get)
}

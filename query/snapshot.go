package query

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/klauspost/compress/zstd"
)

// A projection snapshot is the whole of a projection's database (read model, checkpoint and
// the cluster it is bound to) as of one moment:
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
	sw := &summer{w: bufio.NewWriterSize(zw, 256<<10), h: xxhash.New()}
	it, err := snap.NewIter(nil)
	if err != nil {
		zw.Close()
		return nil, err
	}
	var count uint64
	var verr error
	for ok := it.First(); ok; ok = it.Next() {
		var v []byte
		if v, verr = it.ValueAndErr(); verr != nil {
			break
		}
		sw.byte(1)
		sw.bytes(it.Key())
		sw.bytes(v)
		count++
	}
	err = errors.Join(verr, it.Error(), it.Close())
	if err == nil {
		sw.byte(0)
		sw.raw(binary.BigEndian.AppendUint64(nil, count))
		sw.raw(binary.BigEndian.AppendUint64(nil, sw.h.Sum64()))
		err = sw.err
	}
	if err == nil {
		err = sw.w.Flush()
	}
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("query: snapshot of %q: %w", p.cfg.Name, err)
	}
	return cp, nil
}

// summer writes a snapshot's stream and sums what it wrote; the first error sticks.
type summer struct {
	w   *bufio.Writer
	h   *xxhash.Digest
	err error
	buf [binary.MaxVarintLen64]byte
}

func (s *summer) raw(b []byte) {
	if s.err != nil {
		return
	}
	s.h.Write(b)
	_, s.err = s.w.Write(b)
}

func (s *summer) byte(b byte) { s.raw(append(s.buf[:0], b)) }

func (s *summer) bytes(b []byte) {
	s.raw(binary.AppendUvarint(s.buf[:0], uint64(len(b))))
	s.raw(b)
}

// Restore makes the projection directory dir (on fs; nil: the OS file system) of a snapshot
// that WriteSnapshot wrote, and returns its checkpoint. dir must not exist, or be empty. The
// database is built in dir+".restoring" and renamed to dir once the snapshot checked whole
// (its record count and checksum): input that is not a complete snapshot returns
// ErrBadSnapshot and leaves no dir, and a restore cut short leaves only dir+".restoring",
// which the next Restore to dir removes. Open
// the directory with the Config the projection had: Run goes on from the checkpoint, and
// refuses a cluster other than the one the model was built from (ErrClusterMismatch).
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
	cp, err := load(bufio.NewReaderSize(zr, 256<<10), db)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return cp, err
}

// load writes a snapshot's records into db and checks its trailer; the last commit syncs.
func load(zr *bufio.Reader, db *pebble.DB) (Checkpoint, error) {
	rd := &sumReader{r: zr, h: xxhash.New()}
	b := db.NewBatch()
	defer func() { b.Close() }()
	var count uint64
	readBytes := func(what string) ([]byte, error) {
		n, err := binary.ReadUvarint(rd)
		if err != nil || n > 1<<30 {
			return nil, fmt.Errorf("%w: record %d: bad %s length", ErrBadSnapshot, count, what)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return nil, fmt.Errorf("%w: record %d: %s cut short", ErrBadSnapshot, count, what)
		}
		return buf, nil
	}
	for {
		tag, err := rd.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("%w: cut short after %d records", ErrBadSnapshot, count)
		}
		if tag == 0 {
			break
		}
		if tag != 1 {
			return nil, fmt.Errorf("%w: record %d: unknown tag %#x", ErrBadSnapshot, count, tag)
		}
		k, err := readBytes("key")
		if err != nil {
			return nil, err
		}
		v, err := readBytes("value")
		if err != nil {
			return nil, err
		}
		if len(k) == 0 || (k[0] != prefixModel && k[0] != prefixCheckpoint && k[0] != prefixInfo) {
			return nil, fmt.Errorf("%w: record %d: a key of no projection database", ErrBadSnapshot, count)
		}
		if err := b.Set(k, v, nil); err != nil {
			return nil, err
		}
		count++
		if b.Len() >= restoreBatchBytes {
			if err := b.Commit(pebble.NoSync); err != nil {
				return nil, err
			}
			b.Close()
			b = db.NewBatch()
		}
	}
	var n, sum [8]byte
	if _, err := io.ReadFull(rd, n[:]); err != nil {
		return nil, fmt.Errorf("%w: trailer cut short", ErrBadSnapshot)
	}
	want := rd.h.Sum64() // of every byte before the checksum
	if _, err := io.ReadFull(zr, sum[:]); err != nil {
		return nil, fmt.Errorf("%w: trailer cut short", ErrBadSnapshot)
	}
	if got := binary.BigEndian.Uint64(n[:]); got != count {
		return nil, fmt.Errorf("%w: %d records, the trailer says %d", ErrBadSnapshot, count, got)
	}
	if binary.BigEndian.Uint64(sum[:]) != want {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if _, err := zr.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the trailer", ErrBadSnapshot)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return nil, err
	}
	return readCheckpoint(db.Get)
}

// sumReader reads a snapshot's stream and sums every byte it hands out.
type sumReader struct {
	r *bufio.Reader
	h *xxhash.Digest
}

func (s *sumReader) ReadByte() (byte, error) {
	c, err := s.r.ReadByte()
	if err == nil {
		s.h.Write([]byte{c})
	}
	return c, err
}

func (s *sumReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	return n, err
}

// Package kvframe frames a stream of key-value records, as shoal's streamed copies of a
// keyspace use it: a shard's snapshot sent to a replica (replica/) and a projection's
// snapshot (query/).
//
//	header  what the user writes with Writer.Write: magic, identifiers (hashed, not framed)
//	record  0x01 | uvarint len | key | uvarint len | value   (repeated)
//	trailer 0x00 | record count (8 bytes, big-endian) | xxhash64 of every byte before it (8 bytes)
//
// The trailer makes a stream cut short, or damaged, detectable whatever carried it: a reader
// trusts no record until Next has checked it.
package kvframe

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cespare/xxhash/v2"
)

const (
	tagRecord = 1
	tagEnd    = 0
)

// ErrBad is wrapped by every error a Reader returns for a stream that is not a complete,
// intact one: cut short, damaged, or of another format. The caller's read errors are
// wrapped too: a stream that cannot be read to its end is not a complete one.
var ErrBad = errors.New("kvframe: damaged or incomplete record stream")

// A Writer writes a header and records, then the trailer on Close. The first error sticks.
type Writer struct {
	w     *bufio.Writer
	h     *xxhash.Digest
	count uint64
	err   error
	buf   [1 + binary.MaxVarintLen64]byte
}

// NewWriter returns a Writer to w buffering size bytes.
func NewWriter(w io.Writer, size int) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, size), h: xxhash.New()}
}

// Write writes b as it is, a header's bytes, and sums it with the records.
func (w *Writer) Write(b []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	_, _ = w.h.Write(b)
	var n int
	n, w.err = w.w.Write(b)
	return n, w.err
}

// Record writes one record.
func (w *Writer) Record(k, v []byte) error {
	w.field(append(w.buf[:0], tagRecord), k)
	w.field(w.buf[:0], v)
	w.count++
	return w.err
}

// field writes pre, then b's length and b.
func (w *Writer) field(pre, b []byte) {
	_, _ = w.Write(binary.AppendUvarint(pre, uint64(len(b))))
	_, _ = w.Write(b)
}

// Count is the number of records written.
func (w *Writer) Count() uint64 { return w.count }

// Close writes the trailer and flushes; it does not close the io.Writer under it.
func (w *Writer) Close() error {
	_, _ = w.Write(binary.BigEndian.AppendUint64([]byte{tagEnd}, w.count))
	if w.err != nil {
		return w.err
	}
	if _, err := w.w.Write(binary.BigEndian.AppendUint64(nil, w.h.Sum64())); err != nil {
		return err
	}
	return w.w.Flush()
}

// A Reader reads what a Writer wrote: the header with ReadFull and Bytes, then the records
// with Next, which checks the trailer at their end.
type Reader struct {
	r       *bufio.Reader
	h       *xxhash.Digest
	maxItem uint64
	count   uint64
	k, v    []byte
	one     [1]byte // ReadByte's byte, summed without an allocation
	done    bool
}

// NewReader returns a Reader of r buffering size bytes that refuses a key, value or header
// field longer than maxItem bytes.
func NewReader(r io.Reader, size int, maxItem uint64) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, size), h: xxhash.New(), maxItem: maxItem}
}

// ReadByte reads one header byte.
func (r *Reader) ReadByte() (byte, error) {
	c, err := r.r.ReadByte()
	if err != nil {
		return 0, bad("%v", err)
	}
	r.one[0] = c
	_, _ = r.h.Write(r.one[:])
	return c, nil
}

// ReadFull fills b with header bytes.
func (r *Reader) ReadFull(b []byte) error {
	if _, err := io.ReadFull(r.r, b); err != nil {
		return bad("%v", err)
	}
	_, _ = r.h.Write(b)
	return nil
}

// Bytes reads a length-prefixed header field into a new slice.
func (r *Reader) Bytes() ([]byte, error) { return r.field(nil) }

// field reads a uvarint length and that many bytes into buf's storage.
func (r *Reader) field(buf []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if !errors.Is(err, ErrBad) {
			err = bad("%v", err) // a length past 64 bits
		}
		return nil, err
	}
	if n > r.maxItem {
		return nil, bad("an item of %d bytes, past the limit of %d", n, r.maxItem)
	}
	b := slices.Grow(buf[:0], int(n))[:n]
	return b, r.ReadFull(b)
}

// Next reads the next record. The key and value are valid until the next call. After the
// last record it reads the trailer, and returns io.EOF once the count and checksum in it
// match what was read; anything else is an error wrapping ErrBad.
func (r *Reader) Next() (k, v []byte, err error) {
	if r.done {
		return nil, nil, io.EOF
	}
	tag, err := r.ReadByte()
	if err != nil {
		return nil, nil, fmt.Errorf("%w (after %d records)", err, r.count)
	}
	switch tag {
	case tagRecord:
		if r.k, err = r.field(r.k); err != nil {
			return nil, nil, fmt.Errorf("record %d: key: %w", r.count, err)
		}
		if r.v, err = r.field(r.v); err != nil {
			return nil, nil, fmt.Errorf("record %d: value: %w", r.count, err)
		}
		r.count++
		return r.k, r.v, nil
	case tagEnd:
		return nil, nil, r.trailer()
	default:
		return nil, nil, bad("record %d: unknown tag %#x", r.count, tag)
	}
}

func (r *Reader) trailer() error {
	var cnt, sum [8]byte
	if err := r.ReadFull(cnt[:]); err != nil {
		return fmt.Errorf("trailer: %w", err)
	}
	want := r.h.Sum64()
	if _, err := io.ReadFull(r.r, sum[:]); err != nil {
		return bad("trailer: checksum: %v", err)
	}
	if binary.BigEndian.Uint64(sum[:]) != want {
		return bad("checksum mismatch")
	}
	if n := binary.BigEndian.Uint64(cnt[:]); n != r.count {
		return bad("%d records, the trailer says %d", r.count, n)
	}
	r.done = true
	return io.EOF
}

// Count is the number of records read.
func (r *Reader) Count() uint64 { return r.count }

// CheckEnd returns an error wrapping ErrBad unless the stream ends after the trailer.
func (r *Reader) CheckEnd() error {
	if _, err := r.r.ReadByte(); err != io.EOF {
		if err != nil {
			return bad("after the trailer: %v", err)
		}
		return bad("data after the trailer")
	}
	return nil
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBad, fmt.Sprintf(format, args...))
}

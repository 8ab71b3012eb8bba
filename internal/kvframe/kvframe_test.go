package kvframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
)

type rec struct{ k, v string }

func write(t *testing.T, header string, recs []rec) []byte {
	t.Helper()
	var b bytes.Buffer
	w := NewWriter(&b, 16)
	if _, err := w.Write([]byte(header)); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Record([]byte(r.k), []byte(r.v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// read reads a header of n bytes and every record, then checks the end.
func read(data []byte, n int, maxItem uint64) (string, []rec, error) {
	r := NewReader(bytes.NewReader(data), 16, maxItem)
	hdr := make([]byte, n)
	if err := r.ReadFull(hdr); err != nil {
		return "", nil, err
	}
	var out []rec
	for {
		k, v, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", nil, err
		}
		out = append(out, rec{string(k), string(v)})
	}
	if uint64(len(out)) != r.Count() {
		return "", nil, fmt.Errorf("Count %d, read %d", r.Count(), len(out))
	}
	if _, _, err := r.Next(); err != io.EOF {
		return "", nil, fmt.Errorf("Next after the end = %v, want io.EOF", err)
	}
	return string(hdr), out, r.CheckEnd()
}

func TestRoundTrip(t *testing.T) {
	for _, recs := range [][]rec{
		nil,
		{{"", ""}},
		{{"a", "1"}, {"b", string(bytes.Repeat([]byte{'x'}, 300))}, {"c", ""}},
	} {
		data := write(t, "HDR1", recs)
		hdr, got, err := read(data, 4, 1<<20)
		if err != nil || hdr != "HDR1" || fmt.Sprint(got) != fmt.Sprint(recs) {
			t.Fatalf("read = %q, %v, %v; want HDR1, %v", hdr, got, err, recs)
		}
	}
}

// Every damage to a stream is refused with ErrBad: each cut, each flipped bit, and bytes added.
func TestDamageRefused(t *testing.T) {
	data := write(t, "HDR1", []rec{{"a", "1"}, {"bb", "22"}, {"ccc", "333"}})
	for n := range len(data) {
		if _, _, err := read(data[:n], 4, 1<<20); !errors.Is(err, ErrBad) {
			t.Fatalf("cut to %d of %d bytes: err = %v, want ErrBad", n, len(data), err)
		}
	}
	for i := range len(data) {
		for bit := range 8 {
			d := bytes.Clone(data)
			d[i] ^= 1 << bit
			if _, _, err := read(d, 4, 1<<20); !errors.Is(err, ErrBad) {
				t.Fatalf("bit %d of byte %d flipped: err = %v, want ErrBad", bit, i, err)
			}
		}
	}
	if _, _, err := read(append(bytes.Clone(data), 0), 4, 1<<20); !errors.Is(err, ErrBad) {
		t.Fatalf("a byte after the trailer: err = %v, want ErrBad", err)
	}
	// A count that disagrees with the records, under a checksum that agrees with it.
	d := bytes.Clone(data[:len(data)-8])
	binary.BigEndian.PutUint64(d[len(d)-8:], 2)
	d = binary.BigEndian.AppendUint64(d, xxhash.Sum64(d))
	if _, _, err := read(d, 4, 1<<20); !errors.Is(err, ErrBad) || !strings.Contains(err.Error(), "3 records, the trailer says 2") {
		t.Fatalf("a wrong count with its checksum: err = %v, want ErrBad naming both counts", err)
	}
}

func TestItemLimit(t *testing.T) {
	data := write(t, "", []rec{{"key", "12345"}})
	if _, _, err := read(data, 0, 5); err != nil {
		t.Fatalf("items at the limit: %v", err)
	}
	_, _, err := read(data, 0, 4)
	if !errors.Is(err, ErrBad) || !bytes.Contains([]byte(err.Error()), []byte("limit of 4")) {
		t.Fatalf("an item past the limit: err = %v, want ErrBad naming the limit", err)
	}
}

// A write error sticks and is returned by Close.
func TestWriteErrorSticks(t *testing.T) {
	boom := errors.New("boom")
	w := NewWriter(failWriter{boom}, 16)
	_ = w.Record([]byte("k"), bytes.Repeat([]byte{'v'}, 64))
	if err := w.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close = %v, want the write error", err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

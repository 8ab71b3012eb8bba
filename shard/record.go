package shard

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Event record format (value of S|shard|E|streamID|version); see doc.go.
const (
	recordFormat      byte = 1
	flagZstd          byte = 1 << 0 // payload is one zstd frame of data||metadata
	knownFlags             = flagZstd
	recordHeaderLen        = 1 + 1 + 8 + 8 + 16
	compressThreshold      = 4 << 10 // compress payloads larger than this
)

var (
	zstdOnce sync.Once
	zstdEnc  *zstd.Encoder
	zstdDec  *zstd.Decoder
)

// codecs returns the shared zstd encoder and decoder. Both are safe for
// concurrent EncodeAll/DecodeAll. The encoder is single-threaded so its output
// is a pure function of its input (apply must be deterministic).
func codecs() (*zstd.Encoder, *zstd.Decoder) {
	zstdOnce.Do(func() {
		var err error
		zstdEnc, err = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(1),
			zstd.WithLowerEncoderMem(true))
		if err != nil {
			panic(err) // only bad options
		}
		zstdDec, err = zstd.NewReader(nil,
			zstd.WithDecoderMaxMemory(2*MaxEventSize),
			zstd.WithDecoderMaxWindow(2*MaxEventSize),
			zstd.WithDecoderConcurrency(0))
		if err != nil {
			panic(err)
		}
	})
	return zstdEnc, zstdDec
}

// appendRecord appends the record of e to dst. scratch is a reusable buffer
// for the uncompressed payload; the (possibly grown) scratch is returned.
func appendRecord(dst []byte, e *Event, created int64, position uint64, scratch []byte) (rec, scr []byte) {
	size := len(e.Data) + len(e.Metadata)
	compress := size > compressThreshold
	var payload []byte
	if compress {
		enc, _ := codecs()
		scratch = append(append(scratch[:0], e.Data...), e.Metadata...)
		payload = enc.EncodeAll(scratch, nil)
		if len(payload) >= size {
			compress, payload = false, nil
		}
	}
	var flags byte
	if compress {
		flags |= flagZstd
	}
	dst = append(dst, recordFormat, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(created))
	dst = binary.BigEndian.AppendUint64(dst, position)
	dst = append(dst, e.ID[:]...)
	dst = appendString(dst, e.Type)
	dst = appendString(dst, e.ContentType)
	dst = binary.AppendUvarint(dst, uint64(len(e.Data)))
	dst = binary.AppendUvarint(dst, uint64(len(e.Metadata)))
	if compress {
		dst = append(dst, payload...)
	} else {
		dst = append(append(dst, e.Data...), e.Metadata...)
	}
	return dst, scratch
}

// decodeRecordHeader decodes the header of event record rec into ev: Created, Position and
// ID, without the payload.
func decodeRecordHeader(rec []byte, ev *RecordedEvent) error {
	if len(rec) < recordHeaderLen {
		return errCorrupt("event record: truncated header")
	}
	if rec[0] != recordFormat {
		return errCorrupt(fmt.Sprintf("event record: unknown format %d", rec[0]))
	}
	if flags := rec[1]; flags&^knownFlags != 0 {
		return errCorrupt(fmt.Sprintf("event record: unknown flags %#x", flags))
	}
	ev.Created = int64(binary.BigEndian.Uint64(rec[2:]))
	ev.Position = binary.BigEndian.Uint64(rec[10:])
	copy(ev.ID[:], rec[18:34])
	return nil
}

// decodeRecord decodes rec into ev (Created, Position, ID, Type, ContentType,
// Data, Metadata; not Stream or Version, which come from the key). ev does
// not alias rec. Truncated or corrupt input yields an error wrapping
// ErrCorrupt; it never panics.
func decodeRecord(rec []byte, ev *RecordedEvent) error {
	if err := decodeRecordHeader(rec, ev); err != nil {
		return err
	}
	flags := rec[1]
	d := decoder{b: rec[recordHeaderLen:]}
	ev.Type = d.string()
	ev.ContentType = d.string()
	dataLen := d.uvarint()
	metaLen := d.uvarint()
	if d.err != nil {
		return errCorrupt("event record: truncated")
	}
	if dataLen > MaxEventSize || metaLen > MaxEventSize || dataLen+metaLen > MaxEventSize {
		return errCorrupt("event record: payload too large")
	}
	n := int(dataLen + metaLen)
	var payload []byte
	if flags&flagZstd != 0 {
		_, dec := codecs()
		out, err := dec.DecodeAll(d.b, make([]byte, 0, n))
		if err != nil {
			return errCorrupt("event record: " + err.Error())
		}
		if len(out) != n {
			return errCorrupt("event record: payload length mismatch")
		}
		payload = out
	} else {
		if len(d.b) != n {
			return errCorrupt("event record: payload length mismatch")
		}
		if n > 0 {
			payload = append(make([]byte, 0, n), d.b...)
		}
	}
	ev.Data, ev.Metadata = nil, nil
	if dataLen > 0 {
		ev.Data = payload[:dataLen:dataLen]
	}
	if metaLen > 0 {
		ev.Metadata = payload[dataLen:n:n]
	}
	return nil
}

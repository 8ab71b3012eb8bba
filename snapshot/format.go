package snapshot

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
)

// Record format constants. Both enums are append-only: never renumber or
// reuse a value, readers must keep decoding every value ever written.
const (
	// FormatVersion is the record layout written by this package.
	FormatVersion uint8 = 1

	// CompressionZstd marks a zstd frame payload (the only one written).
	CompressionZstd uint8 = 1

	magic = "SHSN"
	// minRecordLen is magic, format, compression, two empty strings, the
	// version, a zero raw length and the checksum.
	minRecordLen = 4 + 1 + 1 + 1 + 1 + 8 + 1 + 4
	// MaxCodecNameLen bounds the codec name in the header, bytes.
	MaxCodecNameLen = 64
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is the decoded record header (everything but the payload).
type header struct {
	Format      uint8
	Compression uint8
	Stream      string // source stream
	Codec       string
	Version     uint64 // source stream version the state reflects
	RawLen      uint64 // uncompressed state length
}

var (
	encOnce sync.Once
	encoder *zstd.Encoder
	decOnce sync.Once
	decoder *zstd.Decoder
)

// zstdEncoder returns a process-wide encoder; EncodeAll is safe for
// concurrent use.
func zstdEncoder() *zstd.Encoder {
	encOnce.Do(func() {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			panic(fmt.Sprintf("snapshot: zstd encoder: %v", err)) // options are constant
		}
		encoder = e
	})
	return encoder
}

// zstdDecoder returns a process-wide decoder; DecodeAll is safe for
// concurrent use. Output is capped by the raw length from the header, which
// is checked against Options.MaxStateSize before decoding.
func zstdDecoder() *zstd.Decoder {
	decOnce.Do(func() {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic(fmt.Sprintf("snapshot: zstd decoder: %v", err))
		}
		decoder = d
	})
	return decoder
}

// encodeRecord builds the event data of one snapshot record.
func encodeRecord(stream, codec string, version uint64, state []byte) []byte {
	comp := zstdEncoder().EncodeAll(state, nil)
	n := 4 + 1 + 1 + binary.MaxVarintLen64*3 + len(stream) + len(codec) + 8 + len(comp) + 4
	b := make([]byte, 0, n)
	b = append(b, magic...)
	b = append(b, FormatVersion, CompressionZstd)
	b = binary.AppendUvarint(b, uint64(len(stream)))
	b = append(b, stream...)
	b = binary.AppendUvarint(b, uint64(len(codec)))
	b = append(b, codec...)
	b = binary.BigEndian.AppendUint64(b, version)
	b = binary.AppendUvarint(b, uint64(len(state)))
	b = append(b, comp...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeHeader verifies the checksum and parses the header. It returns the
// header and the compressed payload. The reason string of a failure is
// meant for CorruptError.
func decodeHeader(rec []byte) (header, []byte, string) {
	var h header
	if len(rec) < minRecordLen {
		return h, nil, fmt.Sprintf("record is %d bytes, shorter than the %d-byte minimum", len(rec), minRecordLen)
	}
	if string(rec[:4]) != magic {
		return h, nil, fmt.Sprintf("bad magic %q", rec[:4])
	}
	body, sum := rec[:len(rec)-4], binary.BigEndian.Uint32(rec[len(rec)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return h, nil, fmt.Sprintf("checksum mismatch: stored %08x, computed %08x", sum, got)
	}
	h.Format, h.Compression = body[4], body[5]
	if h.Format != FormatVersion {
		return h, nil, fmt.Sprintf("unknown format version %d", h.Format)
	}
	if h.Compression != CompressionZstd {
		return h, nil, fmt.Sprintf("unknown compression %d", h.Compression)
	}
	p := body[6:]
	readString := func(field string, max int) (string, string) {
		l, n := binary.Uvarint(p)
		if n <= 0 || l > uint64(len(p)-n) || l > uint64(max) {
			return "", "bad " + field + " length"
		}
		s := string(p[n : n+int(l)])
		p = p[n+int(l):]
		if !utf8.ValidString(s) {
			return "", field + " is not valid UTF-8"
		}
		return s, ""
	}
	var why string
	if h.Stream, why = readString("stream", maxStreamNameLen); why != "" {
		return h, nil, why
	}
	if h.Codec, why = readString("codec", MaxCodecNameLen); why != "" {
		return h, nil, why
	}
	if len(p) < 8 {
		return h, nil, "truncated version"
	}
	h.Version = binary.BigEndian.Uint64(p)
	p = p[8:]
	l, n := binary.Uvarint(p)
	if n <= 0 {
		return h, nil, "bad state length"
	}
	h.RawLen = l
	return h, p[n:], ""
}

// decompress inflates a payload whose header said rawLen bytes, refusing
// more than max bytes of output.
func decompress(payload []byte, rawLen uint64, max int) ([]byte, string) {
	if rawLen > uint64(max) {
		return nil, fmt.Sprintf("state is %d bytes, more than MaxStateSize %d", rawLen, max)
	}
	out, err := zstdDecoder().DecodeAll(payload, make([]byte, 0, rawLen))
	if err != nil {
		return nil, "zstd: " + err.Error()
	}
	if uint64(len(out)) != rawLen {
		return nil, fmt.Sprintf("state is %d bytes, header says %d", len(out), rawLen)
	}
	return out, ""
}

package snapshot

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, stream, codec string
		version             uint64
		state               []byte
	}{
		{"empty state", "order-1", "json", 0, nil},
		{"small", "order-1", "json", 7, []byte(`{"total":42}`)},
		{"max version", "o", "raw", ^uint64(0), []byte("x")},
		{"large repetitive", "big", "raw", 1000, bytes.Repeat([]byte("abcdefgh"), 1<<16)},
		{"unicode stream", "заказ-λ", "json/v2", 3, []byte("état")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := encodeRecord(tc.stream, tc.codec, tc.version, tc.state)
			h, payload, why := decodeHeader(rec)
			if why != "" {
				t.Fatalf("decodeHeader: %s", why)
			}
			if h.Stream != tc.stream || h.Codec != tc.codec || h.Version != tc.version || h.RawLen != uint64(len(tc.state)) {
				t.Fatalf("header = %+v", h)
			}
			got, why := decompress(payload, h.RawLen, DefaultMaxStateSize)
			if why != "" {
				t.Fatalf("decompress: %s", why)
			}
			if !bytes.Equal(got, tc.state) {
				t.Fatalf("state mismatch: %d bytes, want %d", len(got), len(tc.state))
			}
		})
	}
}

func TestRecordCompresses(t *testing.T) {
	state := bytes.Repeat([]byte(`{"sku":"A-1","qty":3},`), 10000)
	rec := encodeRecord("s", "json", 1, state)
	if len(rec)*10 > len(state) {
		t.Fatalf("record %d bytes for %d bytes of repetitive state", len(rec), len(state))
	}
}

// Every single-bit flip and every truncation of a record must be detected.
func TestRecordCorruptionDetected(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	state := make([]byte, 300)
	for i := range state {
		state[i] = byte(rng.IntN(8))
	}
	rec := encodeRecord("acct-9", "json", 41, state)
	for i := range rec {
		for bit := range 8 {
			bad := bytes.Clone(rec)
			bad[i] ^= 1 << bit
			if _, _, why := decodeHeader(bad); why == "" {
				t.Fatalf("flip of byte %d bit %d not detected", i, bit)
			}
		}
	}
	for n := range len(rec) {
		if _, _, why := decodeHeader(rec[:n]); why == "" {
			t.Fatalf("truncation to %d bytes not detected", n)
		}
	}
}

func TestDecompressLimits(t *testing.T) {
	state := bytes.Repeat([]byte{0}, 1<<20)
	rec := encodeRecord("s", "raw", 1, state)
	h, payload, why := decodeHeader(rec)
	if why != "" {
		t.Fatal(why)
	}
	if _, why := decompress(payload, h.RawLen, 1<<10); !strings.Contains(why, "MaxStateSize") {
		t.Fatalf("over-limit state: %q", why)
	}
	// A header lying about the size (checksum recomputed by an attacker) is
	// still caught by the decoder's cap.
	if _, why := decompress(payload, 100, DefaultMaxStateSize); why == "" {
		t.Fatal("raw length smaller than the frame not detected")
	}
}

func TestCompanionStream(t *testing.T) {
	long := strings.Repeat("x", maxStreamNameLen)
	for _, tc := range []struct{ prefix, stream, want string }{
		{"", "order-1", "snapshot~order-1"},
		{"snap", "a", "snap~a"},
		{"", "snapshot~a", "snapshot~snapshot~a"},
	} {
		if got := CompanionStream(tc.prefix, tc.stream); got != tc.want {
			t.Errorf("CompanionStream(%q, %q) = %q, want %q", tc.prefix, tc.stream, got, tc.want)
		}
	}
	got := CompanionStream("", long)
	if !strings.HasPrefix(got, "snapshot#") || len(got) != len("snapshot#")+64 {
		t.Fatalf("long name companion = %q", got)
	}
	if CompanionStream("", long) == CompanionStream("", long[1:]) {
		t.Fatal("hashed names collide")
	}
	// Boundary: the longest direct name fits exactly.
	edge := strings.Repeat("y", maxStreamNameLen-len("snapshot~"))
	if c := CompanionStream("", edge); len(c) != maxStreamNameLen || !strings.HasPrefix(c, "snapshot~") {
		t.Fatalf("edge companion %q (%d bytes)", c[:20], len(c))
	}
	if c := CompanionStream("", edge+"y"); !strings.HasPrefix(c, "snapshot#") {
		t.Fatalf("edge+1 companion %q", c[:20])
	}
	for _, s := range []string{"a", edge, long} {
		if c := CompanionStream("", s); len(c) > maxStreamNameLen || !utf8.ValidString(c) || strings.HasPrefix(c, "$") {
			t.Fatalf("invalid companion name for %d-byte stream", len(s))
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		bad  string
	}{
		{"zero", Options{}, ""},
		{"dollar prefix", Options{Prefix: "$snap"}, "Prefix"},
		{"control prefix", Options{Prefix: "a\x01"}, "Prefix"},
		{"long prefix", Options{Prefix: strings.Repeat("p", 448)}, "Prefix"},
		{"long codec", Options{Codec: strings.Repeat("c", MaxCodecNameLen+1)}, "Codec"},
		{"negative size", Options{MaxStateSize: -1}, "MaxStateSize"},
	} {
		err := tc.o.Validate()
		var ce *ConfigError
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.bad != "" && (!errors.As(err, &ce) || ce.Field != tc.bad || !errors.Is(err, ErrInvalidConfig)):
			t.Errorf("%s: err = %v, want ConfigError on %s", tc.name, err, tc.bad)
		}
	}
}

func TestCorruptErrorIs(t *testing.T) {
	err := error(&CorruptError{Stream: "s", Companion: "snapshot~s", Reason: "x"})
	if !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrCodecMismatch) || !strings.Contains(err.Error(), `"s"`) {
		t.Fatalf("corrupt: %v", err)
	}
	err = &CorruptError{Stream: "s", codec: true}
	if errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrCodecMismatch) {
		t.Fatalf("codec: %v", err)
	}
}

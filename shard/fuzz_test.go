package shard

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

func fuzzCommands() [][]byte {
	return [][]byte{
		EncodeAppend(&AppendCommand{Stream: "a", Expected: Expected{Kind: ExpectExact, Version: 7}, Time: 42,
			Events: []Event{{ID: testID(1), Type: "T", Data: []byte("d"), Metadata: []byte("m"), ContentType: "application/json"}}}),
		EncodeAppend(&AppendCommand{Stream: "stream-2", Events: []Event{{ID: testID(1), Type: "A"}, {ID: testID(2), Type: "B"}}}),
		EncodeDelete(&DeleteCommand{Stream: "a", Expected: Expected{Kind: ExpectExists}, Tombstone: true, Time: 1}),
		EncodeDelete(&DeleteCommand{Stream: "b"}),
		EncodeTruncate(&TruncateCommand{Stream: "c", Before: 9, Expected: Expected{Kind: ExpectExact, Version: 12}}),
		EncodeTruncate(&TruncateCommand{Stream: "d", Before: 3, Policy: &RetentionRef{Prefix: "d", Set: 5}}),
		EncodeSetFormat(&SetFormatCommand{Format: Format6}),
		EncodeSetRetention(&SetRetentionCommand{Policy: RetentionPolicy{Prefix: "order-", KeepLast: 10,
			MaxAge: time.Hour, Deleted: true, Set: 77}}),
		EncodeSetRetention(&SetRetentionCommand{Policy: RetentionPolicy{Prefix: "x"}, Remove: true}),
		{}, {1}, {2}, {9, 9, 9},
	}
}

// FuzzDecodeCommand: DecodeCommand never panics, and whatever it accepts
// re-encodes to the same bytes.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range fuzzCommands() {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := DecodeCommand(data)
		if err != nil {
			if cmd != nil {
				t.Fatal("error with a command")
			}
			return
		}
		var re []byte
		switch c := cmd.(type) {
		case *AppendCommand:
			_ = ValidateAppend(c)
			re = EncodeAppend(c)
		case *DeleteCommand:
			_ = ValidateDelete(c)
			re = EncodeDelete(c)
		case *TruncateCommand:
			_ = ValidateTruncate(c)
			re = EncodeTruncate(c)
		case *SetFormatCommand:
			re = EncodeSetFormat(c)
		case *SetRetentionCommand:
			_ = ValidateRetention(c)
			re = EncodeSetRetention(c)
		default:
			t.Fatalf("unexpected %T", cmd)
		}
		if !bytes.Equal(re, data) {
			t.Fatalf("re-encoding differs:\n%x\n%x", data, re)
		}
	})
}

func fuzzRecords() [][]byte {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1024) // compressible, > 4 KiB
	var out [][]byte
	for _, e := range []Event{
		{ID: testID(1), Type: "T"},
		{ID: testID(2), Type: "Type", Data: []byte("data"), Metadata: []byte("meta"), ContentType: "text/plain"},
		{ID: testID(3), Type: "Big", Data: big, Metadata: big[:5000]},
	} {
		rec, _ := appendRecord(nil, &e, 12345, 678, nil)
		out = append(out, rec)
	}
	return append(out, nil, []byte{1, 1}, []byte{2, 0, 0})
}

// FuzzDecodeRecord: decodeRecord never panics, and whatever it accepts
// re-encodes to an equivalent record.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range fuzzRecords() {
		f.Add(r)
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		var ev RecordedEvent
		if err := decodeRecord(rec, &ev); err != nil {
			return
		}
		e := Event{ID: ev.ID, Type: ev.Type, Data: ev.Data, Metadata: ev.Metadata, ContentType: ev.ContentType}
		re, _ := appendRecord(nil, &e, ev.Created, ev.Position, nil)
		var ev2 RecordedEvent
		if err := decodeRecord(re, &ev2); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(ev, ev2) {
			t.Fatalf("round trip differs:\n%+v\n%+v", ev, ev2)
		}
	})
}

func TestRecordRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("xy"), 8<<10)
	for _, e := range []Event{
		{ID: testID(1), Type: "T"},
		{ID: testID(2), Type: "T", Data: []byte("d"), ContentType: "c"},
		{ID: testID(3), Type: "T", Metadata: []byte("m")},
		{ID: testID(4), Type: "T", Data: big, Metadata: big[:4097]},
		{ID: testID(5), Type: "T", Data: big[:4097]},
	} {
		rec, _ := appendRecord(nil, &e, -5, 9, nil)
		compressed := rec[1]&flagZstd != 0
		if want := len(e.Data)+len(e.Metadata) > compressThreshold; compressed != want {
			t.Errorf("event %d: compressed=%v, want %v", idNum(e.ID), compressed, want)
		}
		var ev RecordedEvent
		if err := decodeRecord(rec, &ev); err != nil {
			t.Fatal(err)
		}
		got := Event{ID: ev.ID, Type: ev.Type, Data: ev.Data, Metadata: ev.Metadata, ContentType: ev.ContentType}
		if !reflect.DeepEqual(got, e) || ev.Created != -5 || ev.Position != 9 {
			t.Errorf("round trip: got %+v", ev)
		}
		// Every truncation fails cleanly.
		for i := 0; i < len(rec); i += 1 + len(rec)/200 {
			if err := decodeRecord(rec[:i], &ev); err == nil {
				t.Errorf("event %d: truncation to %d decoded", idNum(e.ID), i)
			}
		}
	}
}

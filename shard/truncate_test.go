package shard

import (
	"fmt"
	"testing"
)

// TestReadLogSkipBudget: a ReadLog over a long run of truncated events returns early once it
// skipped maxLogSkip of them, with next past them and below LastPosition, so a read across
// any truncation answers in bounded time; reading on from next delivers the rest.
func TestReadLogSkipBudget(t *testing.T) {
	defer func(v int) { maxLogSkip = v }(maxLogSkip)
	maxLogSkip = 8
	ts := newTestShard(t, nil, 1)
	ts.apply(EncodeSetFormat(&SetFormatCommand{Format: Format4}))
	for i := range 50 {
		ts.apply(EncodeAppend(&AppendCommand{Stream: "a", Events: []Event{{ID: testID(uint64(i + 1)), Type: "T"}}}))
	}
	ts.apply(EncodeAppend(&AppendCommand{Stream: "b", Events: []Event{{ID: testID(100), Type: "T"}}}))
	if r, ok := ts.apply(EncodeTruncate(&TruncateCommand{Stream: "a", Before: 49})).(*TruncateResult); !ok || r.Start != 49 {
		t.Fatalf("truncate: %s", fmtResult(r))
	}

	next, err := ts.s.ReadLog(0, 0, func(ev *RecordedEvent) error {
		t.Fatalf("first read delivered %s@%d", ev.Stream, ev.Version)
		return nil
	})
	if err != nil || next != 8 || next >= ts.s.LastPosition() {
		t.Fatalf("first read: next %d, %v; want 8 (8 truncated events skipped), below LastPosition %d", next, err, ts.s.LastPosition())
	}
	var got []string
	reads := 1
	for next < ts.s.LastPosition() {
		reads++
		if next, err = ts.s.ReadLog(next, 0, func(ev *RecordedEvent) error {
			got = append(got, fmt.Sprintf("%s@%d pos=%d", ev.Stream, ev.Version, ev.Position))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(got) != "[a@49 pos=49 b@0 pos=50]" || reads != 7 {
		t.Fatalf("read on from next: %v in %d reads, want [a@49 pos=49 b@0 pos=50] in 7", got, reads)
	}
}

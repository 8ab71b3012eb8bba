package replica

import (
	"testing"
	"time"
)

func TestCommitDelay(t *testing.T) {
	var none *CommitDelay
	none.synced(100)
	if d := none.Func(); d != 0 {
		t.Fatalf("a nil CommitDelay delays %v", d)
	}
	zero := NewCommitDelay(0, 1)
	zero.synced(100)
	if d := zero.Func(); d != 0 {
		t.Fatalf("a CommitDelay of 0 delays %v", d)
	}
	c := NewCommitDelay(2*time.Millisecond, CommitSiblings)
	for _, step := range []struct {
		entries int
		want    time.Duration
	}{
		{0, 0}, // nothing synced yet
		{CommitSiblings - 1, 0},
		{CommitSiblings, 2 * time.Millisecond},
		{64, 2 * time.Millisecond},
		{1, 0}, // a lone caller again: no wait
	} {
		if step.entries > 0 {
			c.synced(step.entries)
		}
		if got := c.Func(); got != step.want {
			t.Errorf("after a synced write of %d entries: delay %v, want %v", step.entries, got, step.want)
		}
	}
}

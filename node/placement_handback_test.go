package node

import (
	"slices"
	"testing"
	"time"
)

// TestHandBackWaitGrows: as a replica sees its shard's leader change, a preferred leader that
// keeps losing briefly held leaderships waits twice as long each time to be handed one back,
// up to handBackMaxDoublings doublings; one that held its leadership long starts again at the
// first wait; a leader that hands over as it leaves (stopping, decommissioning) lost nothing;
// a loss is forgotten after handBackForgetRounds intervals. 2 is the preferred leader.
func TestHandBackWaitGrows(t *testing.T) {
	const interval = time.Second
	now := time.Unix(1_000_000, 0)
	var sp shardPlacement
	see := func(leader uint64, leaving map[uint64]bool) {
		sp.observeLeader(leader, 2, leaving, now, interval)
		now = now.Add(interval)
	}
	wait := func(id uint64) time.Duration {
		l, ok := sp.lost[id]
		if !ok {
			return 0
		}
		return handBackWait(l.losses, interval)
	}
	see(2, nil)
	see(2, nil)
	if w := wait(2); w != 0 {
		t.Fatalf("a leader that lost nothing waits %v", w)
	}
	var waits []time.Duration
	for range handBackMaxDoublings + 3 {
		see(0, nil) // an election under way
		see(3, nil) // 2 lost it
		waits = append(waits, wait(2))
		see(2, nil) // handed back: no loss of 3's
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 320 * time.Second, 320 * time.Second, 320 * time.Second}
	if !slices.Equal(waits, want) {
		t.Fatalf("waits after losses in a row %v, want %v", waits, want)
	}
	if got, want := sp.lost[2].at, now.Add(-2*interval); !got.Equal(want) {
		t.Errorf("last loss seen at %v, want %v", got, want)
	}

	now = now.Add(handBackForgetRounds * interval) // 2 held the leadership long
	see(3, nil)
	if w := wait(2); w != 10*time.Second {
		t.Errorf("wait after losing a leadership held long %v, want 10s", w)
	}
	see(4, map[uint64]bool{3: true}) // 3 hands over as it stops
	if l, ok := sp.lost[3]; ok {
		t.Errorf("a hand-over by a leaving leader counted as a loss: %+v", l)
	}
	now = now.Add(handBackForgetRounds * interval)
	see(2, nil)
	if len(sp.lost) != 0 {
		t.Errorf("losses %v not forgotten after %d intervals", sp.lost, handBackForgetRounds)
	}
}

// TestHandBackToPreferredIsNoLoss: a replica that led a shard each time its preferred leader
// (1) was cut off, and handed the leadership back each time, lost nothing: once it is the
// preferred leader itself (1 decommissioned, or gone), the leader in place (3) hands it the
// leadership without a wait, where it waited as long as for the flapping node (160 s here).
func TestHandBackToPreferredIsNoLoss(t *testing.T) {
	const interval = time.Second
	now := time.Unix(1_000_000, 0)
	var sp shardPlacement
	see := func(leader uint64) {
		sp.observeLeader(leader, 1, nil, now, interval)
		now = now.Add(interval)
	}
	see(1)
	for range 5 {
		see(2) // 1 cut off: 2 elected
		for range handBackRounds {
			see(2)
		}
		see(1) // handed back
	}
	see(3) // 1 cut off once more: 3 elected
	if l := sp.lost[1]; l.losses != 6 {
		t.Errorf("the flapping preferred leader's losses in a row: %d, want 6", l.losses)
	}
	if l, ok := sp.lost[2]; ok {
		t.Errorf("the leader that handed the leadership back 5 times waits %v once it is the preferred leader (%+v)",
			handBackWait(l.losses, interval), l)
	}
}

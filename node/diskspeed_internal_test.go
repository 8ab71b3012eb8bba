package node

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/membership"
)

// The mean sync is taken over the readings of the last diskSpeedWindow: a burst of slow syncs
// ages out of it, and a window in which no sync completed has no mean.
func TestDiskSpeedWindowMean(t *testing.T) {
	var d diskSpeed
	ms := time.Millisecond
	if got, _ := d.windowMean(syncSample{count: 100, total: 100 * ms}); got != 0 {
		t.Fatalf("one reading: mean %v, want 0 (no window yet)", got)
	}
	if got, n := d.windowMean(syncSample{count: 110, total: 100*ms + 10*200*ms}); got != 200*ms || n != 10 {
		t.Fatalf("10 syncs of 200ms: mean %v of %d", got, n)
	}
	// Fast syncs from here on: the slow ones leave the window after diskSpeedWindow.
	count, total := uint64(110), 100*ms+2000*ms
	n := int(diskSpeedWindow / diskSpeedEvery)
	var got time.Duration
	for range n {
		count, total = count+100, total+100*ms
		got, _ = d.windowMean(syncSample{count: count, total: total})
	}
	if got != ms {
		t.Fatalf("after %d readings of 1ms syncs: mean %v, want 1ms", n, got)
	}
	if got, _ := d.windowMean(syncSample{count: count, total: total}); got == 0 {
		t.Fatal("a reading with no new sync emptied a window that still holds syncs")
	}
	for range n + 1 {
		got, _ = d.windowMean(syncSample{count: count, total: total})
	}
	if got != 0 {
		t.Fatalf("a window without syncs: mean %v, want 0", got)
	}
}

func TestDiskSlowNow(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		name           string
		mean           time.Duration
		n              uint64
		fastest, bound time.Duration
		stalled, want  bool
	}{
		{"far slower than the fastest member and past the bound", 200 * ms, 50, 2 * ms, 20 * ms, false, true},
		{"too few syncs to tell", 200 * ms, slowSyncMinCount - 1, 2 * ms, 20 * ms, false, false},
		{"slower, but within the bound", 15 * ms, 50, 1 * ms, 20 * ms, false, false},
		{"past the bound, but as slow as the others (a slow machine)", 40 * ms, 50, 30 * ms, 20 * ms, false, false},
		{"no other member's speed known", 200 * ms, 50, 0, 20 * ms, false, false},
		{"speed not compared (a negative bound)", 200 * ms, 50, 2 * ms, -1, false, false},
		{"a hang, whatever the speeds", 0, 0, 2 * ms, -1, true, true},
	} {
		if got := diskSlowNow(c.mean, c.n, c.fastest, c.bound, c.stalled); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// A mean sync is gossiped again when it changed by a quarter, or at all after syncRegossip.
func TestSyncChanged(t *testing.T) {
	for _, c := range []struct {
		was, now uint64
		ago      time.Duration
		want     bool
	}{
		{1000, 1000, time.Hour, false},
		{1000, 1100, time.Second, false},
		{1000, 1250, time.Second, true},
		{1000, 760, time.Second, false},
		{1000, 750, time.Second, true},
		{0, 5, time.Second, true},
		{1000, 1100, syncRegossip, true},
	} {
		if got := syncChanged(c.was, c.now, c.ago); got != c.want {
			t.Errorf("syncChanged(%d, %d, %v) = %v, want %v", c.was, c.now, c.ago, got, c.want)
		}
	}
}

// A slow disk counts as healthy again only after diskSlowClear of windows that tell: an idle
// spell (too few syncs) clears nothing, and a hang or a slow window starts the wait again.
func TestDiskSlowClears(t *testing.T) {
	ms := time.Millisecond
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var d diskSpeed
	at := func(s time.Duration) time.Time { return start.Add(s) }
	if !d.decide(at(0), false, 200*ms, 50, 2*ms, 20*ms, false) {
		t.Fatal("a slow window did not count the disk slow")
	}
	// Idle for a minute: nothing to tell, and it stays slow.
	for s := 2 * time.Second; s <= time.Minute; s += 2 * time.Second {
		if !d.decide(at(s), true, 0, 0, 2*ms, 20*ms, false) {
			t.Fatalf("idle %v after a slow window: counted healthy", s)
		}
	}
	// Nothing to compare with (no other member's mean known): it stays slow too.
	for s := time.Minute - 10*time.Second; s <= time.Minute; s += 2 * time.Second {
		if !d.decide(at(s), true, 2*ms, 50, 0, 20*ms, false) {
			t.Fatalf("%v with no other member's mean to compare: counted healthy", s)
		}
	}
	// Within bounds from here on: healthy diskSlowClear after the last reading that did not
	// tell.
	last := time.Minute
	for s := last + 2*time.Second; s < last+diskSlowClear; s += 2 * time.Second {
		if !d.decide(at(s), true, 2*ms, 50, 2*ms, 20*ms, false) {
			t.Fatalf("healthy %v after the last idle reading, want %v", s-last, diskSlowClear)
		}
	}
	if d.decide(at(last+diskSlowClear), true, 2*ms, 50, 2*ms, 20*ms, false) {
		t.Fatalf("still slow %v after the last idle reading, within bounds since", diskSlowClear)
	}
	// A hang counts at once, whatever the window says.
	if !d.decide(at(last+diskSlowClear+time.Second), false, 0, 0, 2*ms, 20*ms, true) {
		t.Fatal("a hang did not count the disk slow")
	}
}

// The gossip metadata of a node let through at its limit still fits when the node gossips its
// longest mean sync: else every update, the disk's slowness with it, would fail.
func TestMetaFitsSyncMicros(t *testing.T) {
	m := membership.Meta{NodeID: math.MaxUint64, Zone: "z", GRPCAddr: "10.0.0.1:7400", HTTPAddr: "10.0.0.1:7480", Version: "v1"}
	for n := 1; n < membership.MaxMetaSize; n++ {
		m.Name = strings.Repeat("n", n)
		if withSettingsFits(m) != nil {
			m.Name = strings.Repeat("n", n-1)
			break
		}
	}
	m.ClusterID = strings.Repeat("0", len(newClusterID()))
	m.Shards, m.Replication, m.ReplicationEpoch = math.MaxUint32, math.MaxUint32, math.MaxUint64
	m.DiskSlow, m.SyncMicros = true, maxSyncMicros
	if _, err := membership.EncodeMeta(m); err != nil {
		t.Fatalf("metadata withSettingsFits let through, gossiping the longest mean sync: %v", err)
	}
}

// With no bound (--slow-sync negative), only hangs count, and a disk clears diskSlowClear
// after the last, whatever its syncs.
func TestDiskSlowClearsWithoutBound(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var d diskSpeed
	if !d.decide(start, false, 0, 0, 0, -1, true) {
		t.Fatal("a hang did not count the disk slow")
	}
	if !d.decide(start.Add(diskSlowClear-time.Second), true, 0, 0, 0, -1, false) {
		t.Fatal("healthy before diskSlowClear after the hang")
	}
	if d.decide(start.Add(diskSlowClear), true, 0, 0, 0, -1, false) {
		t.Fatal("still slow diskSlowClear after the hang, with no bound on speed")
	}
}

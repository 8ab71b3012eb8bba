package node

import (
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/replica"
)

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Listen: "nope"},
		{Shards: -1},
		{Shards: MaxShards + 1},
		{Replication: 99},
		{GossipKey: []byte("short")},
		{DeadAfter: -time.Second},
		{MaxSyncDuration: MinMaxSyncDuration - time.Millisecond},
		{WALCommitDelay: -time.Millisecond},
		{WALCommitDelay: MaxWALCommitDelay + time.Millisecond},
		{Tick: MinTick - time.Millisecond},
		{Tick: MaxTick + time.Millisecond},
		{Listen: "127.0.0.1:99999"},
		{Gossip: "127.0.0.1:70000"},
		{Zone: strings.Repeat("z", MaxZoneLen+1)},
		{Zone: "z1 "}, // a zone of its own, next to z1
		{Zone: " z1"},
		{Zone: "z\x01"},
		{Name: strings.Repeat("n", MaxNameLen+1)},
		{Name: "n\xff"}, // gossip metadata that no member decodes, the node itself included
		{Name: "n1 "},   // 'shoal node decommission n1' finds no such node
		{Name: "n\t1"},
		{Zone: "z\xff"},
		{Advertise: "h\xff:7400"},
		{Advertise: "10.0.0.1:0"}, // told to peers and clients, who cannot dial it
		{GossipAdvertise: "10.0.0.1:0"},
		{MaxSubscriptions: -1},
		{MaxLongPolls: -1},
		{MaxAppendPipelines: -1},
		{MaxSnapshotSends: -1},
		{SnapshotRate: 1 << 20, MaxSnapshotSends: 4},       // 256 KiB/s a send: sends would be abandoned as stalled
		{Listen: "127.0.0.1:7400", HTTP: "127.0.0.1:7400"}, // the second listener would fail: address in use
		{Listen: ":7401"},                                  // all interfaces, the default gossip port among them
		{HTTP: "127.0.0.1:7401", Gossip: "0.0.0.0:7401"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: want an error", c)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Config{Zone: "us east", Name: "node 1"}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{
		{Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0", Gossip: "127.0.0.1:0"}, // a free port each
		{Listen: "127.0.0.1:7400", HTTP: "127.0.0.2:7400", Gossip: "127.0.0.3:7400"},
		{HTTP: "127.0.0.1:7400", DisableHTTP: true},
		{SnapshotRate: 1 << 20}, // 512 KiB/s for each of the default 2 sends
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	if err := (Config{MaxSyncDuration: -1}).Validate(); err != nil {
		t.Fatalf("a negative MaxSyncDuration (never): %v", err)
	}
	d := DefaultConfig()
	if d.Listen != DefaultListen || d.HTTP != DefaultHTTP || d.Gossip != DefaultGossip || d.DataDir != DefaultDataDir ||
		d.Shards != 32 || d.Replication != 3 || d.DeadAfter != 60*time.Second || d.MaxSyncDuration != 20*time.Second {
		t.Fatalf("defaults: %+v", d)
	}
}

// The default tick is raft's, and gossip's defaults are its timings at that tick.
func TestDefaultTick(t *testing.T) {
	if DefaultTick != replica.DefaultTickInterval {
		t.Fatalf("DefaultTick %v, replica.DefaultTickInterval %v", DefaultTick, replica.DefaultTickInterval)
	}
	if 10*DefaultTick != membership.DefaultProbeInterval || 5*DefaultTick != membership.DefaultProbeTimeout ||
		2*DefaultTick != membership.DefaultGossipInterval {
		t.Fatalf("gossip's defaults (probe every %v, waiting %v; gossip every %v) are not 10, 5 and 2 ticks of %v",
			membership.DefaultProbeInterval, membership.DefaultProbeTimeout, membership.DefaultGossipInterval, DefaultTick)
	}
}

// A request waits for a leaderless shard's election for 30 ticks, at least 3 s: with a long
// --tick an election (10 to 20 ticks) outlasts 3 s, and the request would be answered
// UNAVAILABLE while one was under way.
func TestNoLeaderWaitFollowsTick(t *testing.T) {
	for _, c := range []struct{ tick, want time.Duration }{
		{DefaultTick, 3 * time.Second},
		{MinTick, 3 * time.Second},
		{100 * time.Millisecond, 3 * time.Second},
		{200 * time.Millisecond, 6 * time.Second},
		{MaxTick, 7500 * time.Millisecond},
	} {
		n := &Node{cfg: Config{Tick: c.tick}}
		if got := n.noLeaderWait(); got != c.want {
			t.Errorf("--tick %v: a request waits %v for a leader, want %v", c.tick, got, c.want)
		}
		if got := n.noLeaderWait(); got < 20*c.tick+time.Second {
			t.Errorf("--tick %v: a wait of %v ends before a slow election (20 ticks) and a second of votes", c.tick, got)
		}
	}
}

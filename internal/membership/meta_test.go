package membership

import (
	"errors"
	"strings"
	"testing"
)

func fullMeta() Meta {
	return Meta{NodeID: 1<<63 + 12345, Name: "node-a", Zone: "eu-1a", GRPCAddr: "10.0.0.1:7400",
		HTTPAddr: "10.0.0.1:7480", ClusterID: "c0ffee", Version: "v0.1.0", Shards: 32, Replication: 3, Decommissioning: true, ShardFormat: 2,
		ReplicationEpoch: 4, FollowsReplication: true, DiskSlow: true, SyncMicros: 187_654}
}

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []Meta{{FollowsReplication: true}, {NodeID: 1, FollowsReplication: true}, fullMeta(),
		{NodeID: 2, Stopping: true, FollowsReplication: true}, {NodeID: 3, DiskLow: true, FollowsReplication: true},
		{NodeID: 4, DiskSlow: true, SyncMicros: 1, FollowsReplication: true}} {
		b, err := EncodeMeta(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMeta(b)
		if err != nil {
			t.Fatal(err)
		}
		if got != m {
			t.Fatalf("round trip: got %+v, want %+v", got, m)
		}
	}
	b, _ := EncodeMeta(fullMeta())
	t.Logf("full meta encodes to %d bytes", len(b))
	// A later version appending fields is still readable.
	b = append(b, 0xAA, 0xBB)
	b[0] = 2
	if got, err := DecodeMeta(b); err != nil || got != fullMeta() {
		t.Fatalf("v2 with trailing fields: %+v, %v", got, err)
	}
}

// A flag a version does not know is ignored: a node of a version before Stopping reads the
// meta of a stopping node as that of a running one.
func TestMetaUnknownFlagsIgnored(t *testing.T) {
	b, err := EncodeMeta(Meta{NodeID: 3, Name: "n3"})
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-4] = 0x80 // a flag of some later version (the last bytes are ShardFormat, ReplicationEpoch and SyncMicros)
	got, err := DecodeMeta(b)
	if err != nil || got != (Meta{NodeID: 3, Name: "n3", FollowsReplication: true}) {
		t.Fatalf("decoding with an unknown flag: %+v, %v", got, err)
	}
}

// A node of a version before ShardFormat sends meta that ends after the flags: it applies
// format 1 only, read as 0.
func TestMetaWithoutShardFormat(t *testing.T) {
	m := fullMeta()
	m.SyncMicros = 0 // one byte, as are ShardFormat and ReplicationEpoch
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(b[:len(b)-3])
	m.ShardFormat, m.ReplicationEpoch, m.FollowsReplication = 0, 0, false
	if err != nil || got != m {
		t.Fatalf("meta without the shard format: %+v, %v; want %+v", got, err, m)
	}
}

// A node of a version before ReplicationEpoch sends meta that ends after the shard format: it
// does not follow changes of the replication factor.
func TestMetaWithoutReplicationEpoch(t *testing.T) {
	m := fullMeta()
	m.SyncMicros = 0 // one byte, as is ReplicationEpoch
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(b[:len(b)-2])
	m.ReplicationEpoch, m.FollowsReplication = 0, false
	if err != nil || got != m {
		t.Fatalf("meta without the replication epoch: %+v, %v; want %+v", got, err, m)
	}
}

func TestMetaTooLong(t *testing.T) {
	m := fullMeta()
	m.Version = strings.Repeat("v", MaxMetaSize)
	_, err := EncodeMeta(m)
	var tl *MetaTooLongError
	if !errors.As(err, &tl) || !errors.Is(err, ErrMetaTooLong) || tl.Limit != MaxMetaSize || tl.Size <= MaxMetaSize {
		t.Fatalf("EncodeMeta(long) = %v", err)
	}
	if !strings.Contains(err.Error(), "512") {
		t.Fatalf("error does not name the limit: %v", err)
	}
}

func TestDecodeMetaCorrupt(t *testing.T) {
	good, _ := EncodeMeta(fullMeta())
	for name, b := range map[string][]byte{
		"empty":     nil,
		"version 0": {0, 1},
		"truncated": good[:len(good)-8], // inside the version string
		"bad len":   {1, 1, 200, 'a'},
		"bad utf8":  {1, 1, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0},
		"shards64":  append([]byte{1, 1, 0, 0, 0, 0, 0, 0}, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0),
	} {
		if _, err := DecodeMeta(b); err == nil {
			t.Errorf("%s: DecodeMeta(%x) succeeded", name, b)
		}
	}
}

func FuzzMemberMeta(f *testing.F) {
	for _, m := range []Meta{{}, {NodeID: 7, Name: "n"}, fullMeta()} {
		b, _ := EncodeMeta(m)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{1, 0x80})
	f.Add([]byte{2, 1, 1, 'x', 0, 0, 0, 0, 0, 5, 3, 1, 9, 9})
	f.Add([]byte("00\x00\x00\x00\x00\x00\x00000")) // ends before the epoch (found by fuzzing)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		enc, err := EncodeMeta(m)
		if err != nil {
			t.Fatalf("decoded meta does not re-encode: %v", err)
		}
		again, err := DecodeMeta(enc)
		m.FollowsReplication = true // EncodeMeta writes the epoch whether or not b had one
		if err != nil || again != m {
			t.Fatalf("re-decode: %+v %v, want %+v", again, err, m)
		}
	})
}

// A node of a version before SyncMicros sends meta that ends after ReplicationEpoch: its sync
// duration is unknown, read as 0, and its disk never slow.
func TestMetaWithoutSyncMicros(t *testing.T) {
	m := fullMeta()
	m.DiskSlow = false
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	b = b[:len(b)-3] // SyncMicros 187,654 takes three bytes
	got, err := DecodeMeta(b)
	m.SyncMicros = 0
	if err != nil || got != m {
		t.Fatalf("meta without SyncMicros: %+v, %v; want %+v", got, err, m)
	}
}

package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testaddr"
)

// A write-ahead log damaged in its middle (a disk that rotted, not a torn tail) refuses the
// start with ErrCorruptData and the advice to start empty, which the CLI exits with
// ExitCorrupt for: a restart would find the same damage.
func TestStartRefusesCorruptWAL(t *testing.T) {
	dir := t.TempDir()
	cfg := writeAndStop(t, dir, 200, 4<<10, false)
	logs, err := filepath.Glob(filepath.Join(dir, pebbleDir, "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no write-ahead log in %s (%v)", dir, err)
	}
	var wal string
	var size int64
	for _, l := range logs { // the one holding the appends
		if fi, err := os.Stat(l); err == nil && fi.Size() > size {
			wal, size = l, fi.Size()
		}
	}
	b, err := os.ReadFile(wal)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 3; i < len(b)/3+64; i++ { // damage well before its last record
		b[i] ^= 0xff
	}
	if err := os.WriteFile(wal, b, 0o644); err != nil {
		t.Fatal(err)
	}
	err = restartRefused(t, cfg)
	for _, want := range []string{dir, "move the data directory away", "--join", "Corrupt data"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal lacks %q: %v", want, err)
		}
	}
}

// A table the store's manifest names but the directory lacks (deleted by hand, or removed by
// Pebble after a damaged manifest) refuses the start as corrupt data too.
func TestStartRefusesMissingTable(t *testing.T) {
	dir := t.TempDir()
	cfg := writeAndStop(t, dir, 50, 1, true)
	tables, err := filepath.Glob(filepath.Join(dir, pebbleDir, "*.sst"))
	if err != nil || len(tables) == 0 {
		t.Fatalf("no table in %s (%v)", dir, err)
	}
	if err := os.Remove(tables[0]); err != nil {
		t.Fatal(err)
	}
	restartRefused(t, cfg)
}

// writeAndStop starts a single node in dir, appends n events of size bytes over 20 streams,
// flushes its memtables if flush, stops it and returns its config.
func writeAndStop(t *testing.T, dir string, n, size int, flush bool) Config {
	t.Helper()
	cfg := testConfig(t, dir)
	nd := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, []string{nd.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := []byte(strings.Repeat("x", size))
	for i := range n {
		if _, err := c.Append(ctx, "s-"+string(rune('a'+i%20)), client.Any, client.Event{Type: "T", Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	if flush {
		if err := nd.db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := nd.Close(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// restartRefused starts a node with cfg (on a new gossip port) and returns its refusal, which
// must be ErrCorruptData.
func restartRefused(t *testing.T, cfg Config) error {
	t.Helper()
	cfg.Gossip = testaddr.Gossip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err == nil {
		n.Close()
		t.Fatal("a node started on a damaged data directory")
	}
	if !errors.Is(err, ErrCorruptData) {
		t.Fatalf("Start: %v, want ErrCorruptData", err)
	}
	return err
}

func TestShardsOfKeys(t *testing.T) {
	key := func(tag byte, shard uint32, rest string) []byte {
		return append([]byte{tag, byte(shard >> 24), byte(shard >> 16), byte(shard >> 8), byte(shard)}, rest...)
	}
	for _, tc := range []struct {
		lo, hi []byte
		want   string
	}{
		{key('S', 24, "A\x00"), key('S', 24, "Z"), "24"},
		{key('S', 3, "E"), key('S', 7, "A"), "3 to 7"},
		{key('R', 30, "L"), key('S', 2, "E"), "the raft logs of 30 and above, the state of 0 to 2"},
		{key('S', 5, ""), []byte("zzz"), "5"},
		{[]byte("meta"), key('R', 9, "H"), "9"},
		{[]byte("a"), []byte("b"), "unknown"},
	} {
		if got := shardsOfKeys(tc.lo, tc.hi); got != tc.want {
			t.Errorf("shardsOfKeys(%q, %q) = %q, want %q", tc.lo, tc.hi, got, tc.want)
		}
	}
}

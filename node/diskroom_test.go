package node_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// freeSpaceFS is the real file system, but for the free space it reports, which the test
// sets (0: the disk's own).
type freeSpaceFS struct {
	vfs.FS
	avail atomic.Uint64
}

func (f *freeSpaceFS) GetDiskUsage(path string) (vfs.DiskUsage, error) {
	du, err := f.FS.GetDiskUsage(path)
	if a := f.avail.Load(); err == nil && a != 0 {
		du.AvailBytes = a
	}
	return du, err
}

// TestDiskLowRefusesAppends: nodes whose data directory's disk falls below --min-free-disk say
// so in gossip. One of three (a minority of every shard's voters) stops nothing: it would fill
// and stop, and the majority go on, as with one node down. Two of three (a majority) make the
// leader of every shard refuse appends with ErrDiskLow naming them, before anything is
// written, whichever node the append reaches (forwarded to the leader); reads, deletes and
// truncations go on. Appends resume once a disk has the floor free and the slack more, not
// before.
func TestDiskLowRefusesAppends(t *testing.T) {
	t.Parallel()
	fss := []*freeSpaceFS{{FS: vfs.Default}, {FS: vfs.Default}, {FS: vfs.Default}}
	regs := make([]*prometheus.Registry, 3)
	cl := testnode.Start(t, 3, testnode.Options{Shards: 4, Configure: func(i int, cfg *node.Config) {
		regs[i] = prometheus.NewRegistry()
		cfg.Registry = regs[i]
		node.SetFS(cfg, fss[i])
	}})
	testnode.WaitFor(t, 30*time.Second, "every shard at 3 voters", func() string {
		shards := cl.Shards()
		for sh := range uint32(4) {
			if st, ok := shards[sh]; !ok || len(st.Voters) != 3 || len(st.Learners) != 0 {
				return fmt.Sprintf("shard %d: %v", sh, st)
			}
		}
		return ""
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cl.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	streams, probes := map[uint32]string{}, map[uint32]string{} // one of each per shard
	for i := 0; len(streams) < 4 || len(probes) < 4; i++ {
		for prefix, m := range map[string]map[uint32]string{"s": streams, "probe": probes} {
			s := fmt.Sprintf("%s-%d", prefix, i)
			if _, ok := m[ring.ShardOf(s, 4)]; !ok {
				m[ring.ShardOf(s, 4)] = s
			}
		}
	}
	for _, s := range streams {
		if _, err := c.Append(ctx, s, client.NoStream, client.Event{Type: "A"}, client.Event{Type: "B"}); err != nil {
			t.Fatal(err)
		}
	}

	const plenty = 1 << 40
	floor := uint64(node.DefaultMinFreeDisk)
	for _, fs := range fss {
		fs.avail.Store(plenty)
	}
	fss[2].avail.Store(floor - 1)
	testnode.WaitFor(t, 10*time.Second, "n3's disk low", func() string {
		if v := metricSum(t, regs[2:3], "shoal_disk_low", ""); v != 1 {
			return fmt.Sprintf("n3's shoal_disk_low %v", v)
		}
		return ""
	})
	time.Sleep(time.Second) // gossip
	for sh, s := range streams {
		if _, err := c.Append(ctx, s, client.Exact(1), client.Event{Type: "C"}); err != nil {
			t.Fatalf("append to shard %d with only n3's disk low (a minority): %v", sh, err)
		}
	}

	fss[1].avail.Store(floor - 1)
	testnode.WaitFor(t, 10*time.Second, "every shard's leader to refuse appends for n2's and n3's disks", func() string {
		for sh, p := range probes {
			if _, err := c.Append(ctx, p, client.Any, client.Event{Type: "probe"}); !errors.Is(err, client.ErrDiskLow) {
				return fmt.Sprintf("append to shard %d: %v", sh, err)
			}
		}
		return ""
	})
	for sh, s := range streams {
		_, err := c.Append(ctx, s, client.Exact(2), client.Event{Type: "D"})
		if !errors.Is(err, client.ErrDiskLow) || !strings.Contains(err.Error(), "'s 3 voters (n2 and n3) have less free space") ||
			!strings.Contains(err.Error(), "--min-free-disk") {
			t.Fatalf("append to shard %d with n2's and n3's disks low: %v; want ErrDiskLow naming n2 and n3 and --min-free-disk", sh, err)
		}
		// Sent to each node as a plain gRPC call: those that do not lead the shard forward it,
		// and answer the leader's refusal as it is.
		for i := range cl.Nodes {
			_, err := shoalv1.NewStreamsClient(cl.Dial(t, i)).Append(ctx, &shoalv1.AppendRequest{Stream: s, Events: []*shoalv1.EventData{event("E")}})
			if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !shoalv1.IsDiskLow(st) {
				t.Fatalf("append to shard %d through n%d with n2's and n3's disks low: %v; want RESOURCE_EXHAUSTED, DISK_LOW", sh, i+1, err)
			}
		}
		// Nothing of them was written; reads, deletes and truncations go on.
		var n int
		for _, err := range c.Read(ctx, s) {
			if err != nil {
				t.Fatalf("read %s with disks low: %v", s, err)
			}
			n++
		}
		if n != 3 {
			t.Fatalf("%s holds %d events after the refused appends, want 3", s, n)
		}
		if _, err := c.Truncate(ctx, s, 1, client.Exact(2)); err != nil {
			t.Fatalf("truncate %s with disks low: %v", s, err)
		}
	}
	if err := c.Delete(ctx, streams[1], client.Any); err != nil {
		t.Fatalf("delete with disks low: %v", err)
	}
	var refused float64
	for _, reg := range regs {
		refused += counterValue(t, reg, "shoal_appends_total", "disk_low")
	}
	if refused < 16 {
		t.Fatalf("shoal_appends_total{result=\"disk_low\"} %v over the nodes, want at least 16", refused)
	}

	// n2 at the floor again, but not past the slack: still refused.
	fss[1].avail.Store(floor + 1)
	time.Sleep(2 * time.Second) // two readings
	if _, err := c.Append(ctx, streams[2], client.Exact(2), client.Event{Type: "D"}); !errors.Is(err, client.ErrDiskLow) {
		t.Fatalf("append with n2's disk just above the floor (within the slack): %v; want ErrDiskLow still", err)
	}
	fss[1].avail.Store(plenty)
	testnode.WaitFor(t, 10*time.Second, "every shard's leader to take appends again", func() string {
		for sh, p := range probes {
			if _, err := c.Append(ctx, p, client.Any, client.Event{Type: "probe"}); err != nil {
				return fmt.Sprintf("append to shard %d: %v", sh, err)
			}
		}
		return ""
	})
	for sh, s := range streams {
		if s == streams[1] {
			continue // deleted
		}
		if _, err := c.Append(ctx, s, client.Exact(2), client.Event{Type: "D"}); err != nil {
			t.Fatalf("append to shard %d once n2's disk has room: %v", sh, err)
		}
	}
	if v := metricSum(t, regs[1:2], "shoal_disk_low", ""); v != 0 {
		t.Fatalf("n2's shoal_disk_low %v once it has room, want 0", v)
	}
}

// TestDiskLowLine: a disk is low below the floor, and stays low until it has the floor and
// the slack free (a tenth of the floor, at least 64 MiB).
func TestDiskLowLine(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		avail, floor uint64
		was, want    bool
	}{
		{gib - 1, gib, false, true},
		{gib, gib, false, false},
		{gib, gib, true, true},
		{gib + gib/10 - 1, gib, true, true},
		{gib + gib/10, gib, true, false},
		{1<<20 + 64<<20 - 1, 1 << 20, true, true}, // the slack is 64 MiB at least
		{1<<20 + 64<<20, 1 << 20, true, false},
	} {
		if got := node.DiskLow(tc.avail, tc.floor, tc.was); got != tc.want {
			t.Errorf("DiskLow(%d, %d, was %v) = %v, want %v", tc.avail, tc.floor, tc.was, got, tc.want)
		}
	}
}

// TestDiskLowCountsWAL: the free space a node counts leaves out what Pebble's write-ahead log
// may still take (its files are preallocated, so they take their space in large steps): a disk
// with the floor and the slack free, but not the log's reserve as well, is low from the start.
func TestDiskLowCountsWAL(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	reserve := node.DefaultWALReserve()
	if reserve != 10*(64*mib+64*mib/10) {
		t.Fatalf("the WAL reserve of 64 MiB memtables: %d, want ten logs of 70.4 MiB", reserve)
	}
	for _, tc := range []struct{ avail, held, want uint64 }{
		{2000 * mib, 0, 2000*mib - reserve},
		{2000 * mib, 100 * mib, 2000*mib - reserve + 100*mib},
		{2000 * mib, reserve + 1, 2000 * mib},
		{100 * mib, 0, 0},
	} {
		if got := node.RoomLeft(tc.avail, reserve, tc.held); got != tc.want {
			t.Errorf("RoomLeft(%d, %d, %d) = %d, want %d", tc.avail, reserve, tc.held, got, tc.want)
		}
	}

	fs := &freeSpaceFS{FS: vfs.Default}
	floor := uint64(node.DefaultMinFreeDisk)
	fs.avail.Store(floor + floor/10 + 64*mib) // past the floor and the slack, not the log's reserve
	reg := prometheus.NewRegistry()
	testnode.Start(t, 1, testnode.Options{Shards: 1, Configure: func(_ int, cfg *node.Config) {
		cfg.Registry = reg
		node.SetFS(cfg, fs)
	}})
	regs := []*prometheus.Registry{reg}
	testnode.WaitFor(t, 10*time.Second, "the disk low", func() string {
		if v := metricSum(t, regs, "shoal_disk_low", ""); v != 1 {
			return fmt.Sprintf("shoal_disk_low %v", v)
		}
		return ""
	})
	fs.avail.Store(floor + floor/10 + reserve + mib) // the floor, the slack and the whole reserve
	testnode.WaitFor(t, 10*time.Second, "the disk with room again", func() string {
		if v := metricSum(t, regs, "shoal_disk_low", ""); v != 0 {
			return fmt.Sprintf("shoal_disk_low %v", v)
		}
		return ""
	})
}

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
	dto "github.com/prometheus/client_model/go"

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
		du.AvailBytes = min(du.AvailBytes, a)
	}
	return du, err
}

// TestDiskLowRefusesAppends: a node whose data directory's disk falls below --min-free-disk
// says so in gossip, and the leaders of every shard it holds a replica of (all of them here,
// replication 3 on three nodes), itself included, refuse appends with ErrDiskLow naming it,
// before anything is written; reads, deletes and truncations go on. Appends resume once the
// disk has the floor free and the slack more, not before.
func TestDiskLowRefusesAppends(t *testing.T) {
	t.Parallel()
	fs := &freeSpaceFS{FS: vfs.Default}
	regs := make([]*prometheus.Registry, 3)
	cl := testnode.Start(t, 3, testnode.Options{Shards: 4, Configure: func(i int, cfg *node.Config) {
		regs[i] = prometheus.NewRegistry()
		cfg.Registry = regs[i]
		if i == 2 {
			node.SetFS(cfg, fs)
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cl.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	streams := map[uint32]string{} // one stream per shard
	for i := 0; len(streams) < 4; i++ {
		s := fmt.Sprintf("s-%d", i)
		if _, ok := streams[ring.ShardOf(s, 4)]; !ok {
			streams[ring.ShardOf(s, 4)] = s
		}
	}
	for _, s := range streams {
		if _, err := c.Append(ctx, s, client.NoStream, client.Event{Type: "A"}, client.Event{Type: "B"}); err != nil {
			t.Fatal(err)
		}
	}

	floor := uint64(node.DefaultMinFreeDisk)
	fs.avail.Store(floor - 1)
	testnode.WaitFor(t, 10*time.Second, "appends refused for n3's disk", func() string {
		_, err := c.Append(ctx, "probe", client.Any, client.Event{Type: "probe"})
		if errors.Is(err, client.ErrDiskLow) {
			return ""
		}
		return fmt.Sprintf("append: %v", err)
	})
	if v := gauge(t, regs[2], "shoal_disk_low"); v != 1 {
		t.Fatalf("n3's shoal_disk_low %v, want 1", v)
	}
	for sh, s := range streams {
		_, err := c.Append(ctx, s, client.Exact(1), client.Event{Type: "C"})
		if !errors.Is(err, client.ErrDiskLow) || !strings.Contains(err.Error(), "node n3") ||
			!strings.Contains(err.Error(), "--min-free-disk") {
			t.Fatalf("append to shard %d with n3's disk low: %v; want ErrDiskLow naming n3 and --min-free-disk", sh, err)
		}
		// Nothing of it was written; reads, deletes and truncations go on.
		var n int
		for _, err := range c.Read(ctx, s) {
			if err != nil {
				t.Fatalf("read %s with n3's disk low: %v", s, err)
			}
			n++
		}
		if n != 2 {
			t.Fatalf("%s holds %d events after the refused append, want 2", s, n)
		}
		if _, err := c.Truncate(ctx, s, 1, client.Exact(1)); err != nil {
			t.Fatalf("truncate %s with n3's disk low: %v", s, err)
		}
	}
	if err := c.Delete(ctx, streams[1], client.Any); err != nil {
		t.Fatalf("delete with n3's disk low: %v", err)
	}
	var refused float64
	for _, reg := range regs {
		refused += counter(t, reg, "shoal_appends_total", "result", "disk_low")
	}
	if refused < 4 {
		t.Fatalf("shoal_appends_total{result=\"disk_low\"} %v over the nodes, want at least 4", refused)
	}

	// At the floor again, but not past the slack: still refused.
	fs.avail.Store(floor + 1)
	time.Sleep(2 * time.Second) // two readings
	if _, err := c.Append(ctx, streams[2], client.Exact(1), client.Event{Type: "C"}); !errors.Is(err, client.ErrDiskLow) {
		t.Fatalf("append with n3's disk just above the floor (within the slack): %v; want ErrDiskLow still", err)
	}
	fs.avail.Store(0) // the disk's own free space: plenty
	testnode.WaitFor(t, 10*time.Second, "appends to resume", func() string {
		if _, err := c.Append(ctx, streams[2], client.Exact(1), client.Event{Type: "C"}); err != nil {
			return fmt.Sprintf("append: %v", err)
		}
		return ""
	})
	for sh, s := range streams {
		if sh == 2 || s == streams[1] {
			continue
		}
		if _, err := c.Append(ctx, s, client.Exact(1), client.Event{Type: "C"}); err != nil {
			t.Fatalf("append to shard %d once n3's disk has room: %v", sh, err)
		}
	}
	if v := gauge(t, regs[2], "shoal_disk_low"); v != 0 {
		t.Fatalf("n3's shoal_disk_low %v once it has room, want 0", v)
	}
}

// gauge reads an unlabelled gauge of reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return metricValue(t, reg, name, "", "", func(m *dto.Metric) float64 { return m.GetGauge().GetValue() })
}

// counter reads the counter name{label=value} of reg (0 if absent).
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	return metricValue(t, reg, name, label, value, func(m *dto.Metric) float64 { return m.GetCounter().GetValue() })
}

func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string, get func(*dto.Metric) float64) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return get(m)
			}
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return get(m)
				}
			}
		}
	}
	return 0
}

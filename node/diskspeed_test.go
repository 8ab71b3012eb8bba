package node_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// slowSyncFS is the operating system's file system whose file syncs take delay longer, as on
// a disk that slowed down without failing.
type slowSyncFS struct {
	vfs.FS
	delay atomic.Int64 // nanoseconds
}

func (fs *slowSyncFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return slowSyncFile{f, fs}, err
}

func (fs *slowSyncFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return slowSyncFile{f, fs}, err
}

type slowSyncFile struct {
	vfs.File
	fs *slowSyncFS
}

func (f slowSyncFile) wait()           { time.Sleep(time.Duration(f.fs.delay.Load())) }
func (f slowSyncFile) Sync() error     { f.wait(); return f.File.Sync() }
func (f slowSyncFile) SyncData() error { f.wait(); return f.File.SyncData() }
func (f slowSyncFile) SyncTo(n int64) (bool, error) {
	f.wait()
	return f.File.SyncTo(n)
}

// TestSlowDiskShedsLeaderships: a node whose disk syncs far slower than the others' (100 ms
// against a few) counts its disk as slow, says so in cluster status, and hands every
// leadership it holds to voters on healthy disks, though the ring prefers it for some; no
// leadership goes back to it while it is slow. Appends go on throughout.
func TestSlowDiskShedsLeaderships(t *testing.T) {
	t.Parallel()
	const shards = 6
	fss := []*slowSyncFS{{FS: vfs.Default}, {FS: vfs.Default}, {FS: vfs.Default}}
	regs := make([]*prometheus.Registry, 3)
	cl := testnode.Start(t, 3, testnode.Options{Shards: shards, Configure: func(i int, cfg *node.Config) {
		regs[i] = prometheus.NewRegistry()
		cfg.Registry = regs[i]
		node.SetFS(cfg, fss[i])
	}})
	slow := cl.Nodes[1]
	testnode.WaitFor(t, 60*time.Second, "every shard at 3 voters, and n2 leading some", func() string {
		led := 0
		for sh, st := range cl.Shards() {
			if len(st.Voters) != 3 || len(st.Learners) != 0 {
				return fmt.Sprintf("shard %d: %v", sh, st)
			}
			if st.Leader == slow.ID() {
				led++
			}
		}
		if led == 0 {
			return "n2 leads no shard yet"
		}
		return ""
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := client.Dial(ctx, cl.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Writers keep every node syncing, which is what times the disks.
	var wg sync.WaitGroup
	var appended, failed atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				actx, acancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := c.Append(actx, fmt.Sprintf("w%d-%d", w, i%50), client.Any, client.Event{Type: "E"})
				acancel()
				switch {
				case err == nil:
					appended.Add(1)
				case ctx.Err() == nil:
					failed.Add(1)
				}
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	fss[1].delay.Store(int64(100 * time.Millisecond))
	testnode.WaitFor(t, 60*time.Second, "n2 to count its disk slow, gossip it and lead no shard", func() string {
		if v := metricSum(t, regs[1:2], "shoal_disk_counted_slow", ""); v != 1 {
			return fmt.Sprintf("n2's shoal_disk_counted_slow %v", v)
		}
		var info string
		for _, ni := range cl.Nodes[0].Topology(ctx).GetNodes() {
			if ni.GetId() == slow.ID() {
				if !ni.GetDiskSlow() || ni.GetSyncMicros() < 50_000 {
					return fmt.Sprintf("n1's view of n2: disk_slow %v, sync %d µs", ni.GetDiskSlow(), ni.GetSyncMicros())
				}
				info = "seen"
			}
		}
		if info == "" {
			return "n1's topology has no n2"
		}
		for sh, st := range cl.Shards() {
			if st.Leader == slow.ID() {
				return fmt.Sprintf("n2 still leads shard %d", sh)
			}
		}
		return ""
	})
	for i, n := range cl.Nodes {
		if n.ID() != slow.ID() {
			if v := metricSum(t, regs[i:i+1], "shoal_disk_counted_slow", ""); v != 0 {
				t.Fatalf("node %d (a healthy disk) counts its disk slow", i+1)
			}
		}
	}
	// While it stays slow, placement gives it none back (the ring prefers it for some shards).
	before := appended.Load()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for sh, st := range cl.Shards() {
			if st.Leader == slow.ID() {
				t.Fatalf("n2, its disk slow, leads shard %d again", sh)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if appended.Load() == before {
		t.Fatal("no append succeeded while n2's disk was slow and it led nothing")
	}
	t.Logf("%d appends, %d failed", appended.Load(), failed.Load())
}

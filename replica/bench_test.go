package replica

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// BenchmarkStorageAppend measures staging and syncing 64 entries of 256 bytes per batch on a
// real directory (one fsync per op).
func BenchmarkStorageAppend(b *testing.B) {
	db, err := pebble.Open(b.TempDir(), &pebble.Options{FS: vfs.Default, Logger: quietLogger{}})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	st, err := openStorage(db, 1)
	if err != nil {
		b.Fatal(err)
	}
	const per = 64
	data := make([]byte, 256)
	next := uint64(1)
	b.SetBytes(per * 256)
	b.ReportAllocs()
	for b.Loop() {
		es := make([]*pb.Entry, per)
		for i := range es {
			es[i] = &pb.Entry{Term: new(uint64(1)), Index: new(next), Type: pb.EntryNormal.Enum(), Data: data}
			next++
		}
		batch := db.NewBatch()
		if err := st.append(batch, es); err != nil {
			b.Fatal(err)
		}
		if err := batch.Commit(pebble.Sync); err != nil {
			b.Fatal(err)
		}
		st.trimCache()
	}
}

// BenchmarkPropose measures end-to-end proposals (propose, group-committed fsync, apply) on a
// single-voter group on a real directory, with concurrent proposers.
func BenchmarkPropose(b *testing.B) {
	c := newCluster(b, clusterOpts{nodes: 1, fsFor: func(uint64) vfs.FS {
		return vfs.Default
	}, dir: b.TempDir()})
	g := c.open(1, 1, []uint64{1})
	c.leader(1)
	data := make([]byte, 256)
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := g.Propose(context.Background(), data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.StopTimer()
	if sum, n := testutilHistogram(c.nodes[1].host.metrics.EntriesPerSync); n > 0 {
		b.ReportMetric(sum/float64(n), "entries/fsync")
	}
}

// BenchmarkProposeSerial measures the latency of one proposer (two loop iterations, one fsync).
func BenchmarkProposeSerial(b *testing.B) {
	c := newCluster(b, clusterOpts{nodes: 1, fsFor: func(uint64) vfs.FS { return vfs.Default }, dir: b.TempDir()})
	g := c.open(1, 1, []uint64{1})
	c.leader(1)
	data := make([]byte, 256)
	for b.Loop() {
		if _, err := g.Propose(context.Background(), data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProposeAmongIdleGroups measures one proposer's round trips on a single-voter group
// (in-memory file system, so that the loop's own work shows, not an fsync) while the host also
// holds idle groups: what an iteration costs beyond the groups it has work for.
func BenchmarkProposeAmongIdleGroups(b *testing.B) {
	for _, idle := range []int{0, 1023} {
		b.Run(fmt.Sprintf("idle=%d", idle), func(b *testing.B) {
			c := newCluster(b, clusterOpts{nodes: 1})
			g := c.open(1, 1, []uint64{1})
			for shard := range idle {
				c.open(1, uint32(shard+2), []uint64{1})
			}
			c.leader(1)
			data := make([]byte, 256)
			for b.Loop() {
				if _, err := g.Propose(context.Background(), data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

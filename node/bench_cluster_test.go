package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/bench"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/node"
)

// BenchmarkClusterAppend measures durable appends on three in-process nodes
// in three zones, every shard replicated three ways, through the real client
// (routing to each shard's leader) and the real gRPC transport on loopback:
// the workload of `shoal bench append` (64 callers, 10,000 streams, 256-byte
// events, exact expected version). b.N is the number of append calls.
//
//	go test -run '^$' -bench BenchmarkClusterAppend -benchtime 30000x ./node/
func BenchmarkClusterAppend(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchClusterAppend(b, batch) })
	}
}

func benchClusterAppend(b *testing.B, batch int) {
	c, regs := startReplicatedCluster(b, 32, func(_ int, cfg *node.Config) {
		cfg.Logger = slog.New(slog.DiscardHandler)
	})
	ctx := context.Background()
	addrs := c.Addrs()
	cl, err := client.Dial(ctx, addrs)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()

	cfg := bench.DefaultAppendConfig()
	cfg.Expected = "exact"
	cfg.Batch = batch
	cfg.Warmup = -1
	cfg.Count = int64(b.N)
	cfg.Seed = 1
	cfg.StreamPrefix = fmt.Sprintf("bench-%d-", b.N)
	before := gatherLoopStats(b, regs)
	cpu0 := node.ProcessCPU(b)
	b.ResetTimer()
	res, err := bench.RunAppend(ctx, cfg, bench.NewShoalTarget(cl))
	b.StopTimer()
	cpu := node.ProcessCPU(b) - cpu0
	if err != nil {
		b.Fatal(err)
	}
	if res.ErrorCount > 0 || res.Conflicts > 0 {
		b.Fatalf("%d appends failed and %d conflicted: %v", res.ErrorCount, res.Conflicts, res.Errors)
	}
	b.ReportMetric(res.OpsPerSec, "appends/s")
	b.ReportMetric(res.EventsPerSec, "events/s")
	b.ReportMetric(cpu.Seconds()*1e6/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(res.Latency.P50)/1000, "p50-ms")
	b.ReportMetric(float64(res.Latency.P99)/1000, "p99-ms")
	// Where the nodes' loops spend their time, summed over the three nodes.
	after := gatherLoopStats(b, regs)
	if n := after.srv.count - before.srv.count; n > 0 {
		b.ReportMetric((after.srv.sum-before.srv.sum)/float64(n)*1000, "server-mean-ms")
		b.ReportMetric((after.forwarded-before.forwarded)/float64(b.N), "forwarded/op")
	}
	if n := after.sync.count - before.sync.count; n > 0 {
		b.ReportMetric(float64(n)/res.ElapsedSeconds/3, "batches/s/node")
		b.ReportMetric((after.sync.sum-before.sync.sum)/float64(n)*1000, "batch-sync-ms")
		b.ReportMetric((after.ents.sum-before.ents.sum)/float64(n), "entries/batch")
	}
	if n := after.walFsyncs - before.walFsyncs; n > 0 {
		b.ReportMetric(n/res.ElapsedSeconds/3, "wal-fsyncs/s/node")
		b.ReportMetric((after.walSeconds-before.walSeconds)/n*1000, "wal-fsync-ms")
		b.ReportMetric(float64(res.Ops*int64(batch)*3)/n, "entries/wal-fsync")
	}
	if n := after.apply.count - before.apply.count; n > 0 {
		b.ReportMetric((after.apply.sum-before.apply.sum)/float64(n)*1000, "apply-ms")
	}
}

type histStat struct {
	sum   float64
	count uint64
}

// loopStats is what the three nodes' metrics say about their write path, summed.
type loopStats struct {
	sync, ents, apply, srv histStat // replica loop batches, entries per batch, applies, appends served
	forwarded              float64  // requests forwarded to another node
	walFsyncs, walSeconds  float64  // Pebble's WAL fsyncs and the time they took
}

func gatherLoopStats(b *testing.B, regs []*prometheus.Registry) loopStats {
	var s loopStats
	for _, h := range []struct {
		stat *histStat
		name string
	}{
		{&s.sync, "shoal_replica_sync_seconds"},
		{&s.ents, "shoal_replica_entries_per_sync"},
		{&s.apply, "shoal_replica_apply_seconds"},
		{&s.srv, "shoal_append_duration_seconds"},
	} {
		h.stat.sum, h.stat.count = histogramSum(b, regs, h.name)
	}
	s.forwarded = metricSum(b, regs, "shoal_forwarded_requests_total", "")
	s.walFsyncs = metricSum(b, regs, "shoal_pebble_wal_fsyncs_total", "")
	s.walSeconds = metricSum(b, regs, "shoal_pebble_wal_fsync_seconds_total", "")
	return s
}

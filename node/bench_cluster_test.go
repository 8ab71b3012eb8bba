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
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
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
	sync0, ents0, apply0, wal0, srv0 := loopStats(b, regs)
	b.ResetTimer()
	res, err := bench.RunAppend(ctx, cfg, bench.NewShoalTarget(cl))
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.ErrorCount > 0 || res.Conflicts > 0 {
		b.Fatalf("%d appends failed and %d conflicted: %v", res.ErrorCount, res.Conflicts, res.Errors)
	}
	b.ReportMetric(res.OpsPerSec, "appends/s")
	b.ReportMetric(res.EventsPerSec, "events/s")
	b.ReportMetric(float64(res.Latency.P50)/1000, "p50-ms")
	b.ReportMetric(float64(res.Latency.P99)/1000, "p99-ms")
	// Where the nodes' loops spend their time, summed over the three nodes.
	sync1, ents1, apply1, wal1, srv1 := loopStats(b, regs)
	if n := srv1.count - srv0.count; n > 0 {
		b.ReportMetric((srv1.sum-srv0.sum)/float64(n)*1000, "server-mean-ms")
		b.ReportMetric((srv1.forwarded-srv0.forwarded)/float64(b.N), "forwarded/op")
	}
	if n := sync1.count - sync0.count; n > 0 {
		b.ReportMetric(float64(n)/res.ElapsedSeconds/3, "batches/s/node")
		b.ReportMetric((sync1.sum-sync0.sum)/float64(n)*1000, "batch-sync-ms")
		b.ReportMetric((ents1.sum-ents0.sum)/float64(n), "entries/batch")
	}
	if n := wal1.count - wal0.count; n > 0 {
		b.ReportMetric(float64(n)/res.ElapsedSeconds/3, "wal-fsyncs/s/node")
		b.ReportMetric((wal1.sum-wal0.sum)/float64(n)*1000, "wal-fsync-ms")
		b.ReportMetric(float64(res.Ops*int64(batch)*3)/float64(n), "entries/wal-fsync")
	}
	if n := apply1.count - apply0.count; n > 0 {
		b.ReportMetric((apply1.sum-apply0.sum)/float64(n)*1000, "apply-ms")
	}
}

type histStat struct {
	sum       float64
	count     uint64
	forwarded float64 // only in the append latency's stat: requests forwarded to another node
}

// loopStats sums the replica loop's fsync, entries-per-fsync and apply
// histograms over regs.
func loopStats(b *testing.B, regs []*prometheus.Registry) (sync, ents, apply, wal, srv histStat) {
	for _, r := range regs {
		mfs, err := r.Gather()
		if err != nil {
			b.Fatal(err)
		}
		for _, mf := range mfs {
			var h *histStat
			switch mf.GetName() {
			case "shoal_replica_sync_seconds":
				h = &sync
			case "shoal_replica_entries_per_sync":
				h = &ents
			case "shoal_replica_apply_seconds":
				h = &apply
			case "shoal_append_duration_seconds":
				h = &srv
			case "shoal_forwarded_requests_total":
				for _, m := range mf.GetMetric() {
					srv.forwarded += m.GetCounter().GetValue()
				}
				continue
			case "shoal_pebble_wal_fsyncs_total":
				for _, m := range mf.GetMetric() {
					wal.count += uint64(m.GetCounter().GetValue())
				}
				continue
			case "shoal_pebble_wal_fsync_seconds_total":
				for _, m := range mf.GetMetric() {
					wal.sum += m.GetCounter().GetValue()
				}
				continue
			default:
				continue
			}
			for _, m := range mf.GetMetric() {
				h.sum += m.GetHistogram().GetSampleSum()
				h.count += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return sync, ents, apply, wal, srv
}

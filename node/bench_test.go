package node

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// BenchmarkAppend measures durable appends (fsynced WAL, one node) through
// the real gRPC server on loopback: 64 concurrent callers over 10,000
// streams (each caller owns its share), 256-byte events, exact expected
// version, in batches of 1 and 100 events. b.N is the number of append calls.
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchAppend(b, batch) })
	}
}

func benchAppend(b *testing.B, batch int) {
	const (
		callers   = 64
		streams   = 10000
		eventSize = 256
	)
	cfg := testConfig(b, b.TempDir())
	cfg.Shards = 32
	cfg.DisableHTTP = true
	n := startNode(b, cfg)
	conns := make([]shoalv1.StreamsClient, 4) // a few HTTP/2 connections, like a pool of clients
	for i := range conns {
		conns[i] = shoalv1.NewStreamsClient(dial(b, n.Addr()))
	}
	payload := make([]byte, eventSize)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	ctx := context.Background()

	hm := n.host.Metrics()
	syncSum0, syncs0 := histSum(hm.SyncLatency)
	entSum0, _ := histSum(hm.EntriesPerSync)
	applySum0, applies0 := histSum(hm.ApplyLatency)
	walSum0, walSyncs0 := histSum(n.db.Metrics().LogWriter.FsyncLatency)
	srvSum0, srvN0 := histSum(n.metrics.appendLatency)
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	hists := make([]*hdrhistogram.Histogram, callers)
	var wg sync.WaitGroup
	cpu0 := ProcessCPU(b)
	b.ResetTimer()
	start := time.Now()
	for w := range callers {
		hists[w] = hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := conns[w%len(conns)]
			// Caller w owns streams w, w+callers, ... and appends to them round-robin with
			// the exact expected version (no-stream first), as an event-sourced service does.
			owned := (streams - w + callers - 1) / callers
			last := make([]uint64, owned) // last version + 1; 0 = no stream yet
			for k := 0; ; k++ {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				slot := k % owned
				exp := &shoalv1.ExpectedVersion{Kind: shoalv1.ExpectedVersion_KIND_NO_STREAM}
				if last[slot] > 0 {
					exp = &shoalv1.ExpectedVersion{Kind: shoalv1.ExpectedVersion_KIND_EXACT, Version: last[slot] - 1}
				}
				evs := make([]*shoalv1.EventData, batch)
				for j := range evs {
					id := uuid.New()
					evs[j] = &shoalv1.EventData{Id: id[:], Type: "Benchmarked", Data: payload}
				}
				t0 := time.Now()
				resp, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: fmt.Sprintf("bench-%d", w+slot*callers),
					Expected: exp, Events: evs})
				if err != nil {
					if failed.Add(1) == 1 {
						firstErr.Store(err)
					}
					continue
				}
				last[slot] = resp.LastVersion + 1
				hists[w].RecordValue(time.Since(t0).Microseconds())
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := ProcessCPU(b) - cpu0
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d appends failed, the first with: %v", f, firstErr.Load())
	}
	h := hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3)
	for _, x := range hists {
		h.Merge(x)
	}
	secs := elapsed.Seconds()
	b.ReportMetric(float64(b.N)/secs, "appends/s")
	b.ReportMetric(cpu.Seconds()*1e6/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(b.N*batch)/secs, "events/s")
	b.ReportMetric(float64(h.ValueAtQuantile(50))/1000, "p50-ms")
	b.ReportMetric(float64(h.ValueAtQuantile(99))/1000, "p99-ms")
	// Where the loop's time goes: entries per fsync, fsync and apply latency.
	syncSum, syncs := histSum(hm.SyncLatency)
	entSum, _ := histSum(hm.EntriesPerSync)
	applySum, applies := histSum(hm.ApplyLatency)
	if syncs > syncs0 {
		b.ReportMetric((entSum-entSum0)/float64(syncs-syncs0), "entries/batch")
		b.ReportMetric((syncSum-syncSum0)/float64(syncs-syncs0)*1000, "batch-sync-ms")
	}
	if walSum, walSyncs := histSum(n.db.Metrics().LogWriter.FsyncLatency); walSyncs > walSyncs0 {
		// Pebble's own WAL fsyncs (nanoseconds), which group the loop's synced batches.
		b.ReportMetric(float64(walSyncs-walSyncs0)/secs, "wal-fsyncs/s")
		b.ReportMetric((walSum-walSum0)/float64(walSyncs-walSyncs0)/1e6, "wal-fsync-ms")
	}
	if srvSum, srvN := histSum(n.metrics.appendLatency); srvN > srvN0 {
		b.ReportMetric((srvSum-srvSum0)/float64(srvN-srvN0)*1000, "server-mean-ms")
	}
	if applies > applies0 {
		b.ReportMetric((applySum-applySum0)/float64(applies-applies0)*1000, "apply-ms")
	}
}

func histSum(h prometheus.Histogram) (sum float64, count uint64) {
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		return 0, 0
	}
	return m.GetHistogram().GetSampleSum(), m.GetHistogram().GetSampleCount()
}

// ProcessCPU returns the CPU time (user and system) the test process has used: nodes, client
// and load generator together. Per append it is steadier than throughput on a machine whose
// cores are all busy, where throughput follows whatever else runs.
func ProcessCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

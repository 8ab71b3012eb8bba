package node

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/google/uuid"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// BenchmarkAppend measures durable appends (fsynced WAL, one node) through
// the real gRPC server on loopback: 64 concurrent callers over 10,000
// streams, 256-byte events, in batches of 1 and 100 events. b.N is the
// number of append calls.
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

	var next atomic.Int64
	var failed atomic.Int64
	hists := make([]*hdrhistogram.Histogram, callers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range callers {
		hists[w] = hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := conns[w%len(conns)]
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				evs := make([]*shoalv1.EventData, batch)
				for j := range evs {
					id := uuid.New()
					evs[j] = &shoalv1.EventData{Id: id[:], Type: "Benchmarked", Data: payload}
				}
				t0 := time.Now()
				_, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: fmt.Sprintf("bench-%d", i%streams), Events: evs})
				if err != nil {
					failed.Add(1)
					continue
				}
				hists[w].RecordValue(time.Since(t0).Microseconds())
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d appends failed", f)
	}
	h := hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3)
	for _, x := range hists {
		h.Merge(x)
	}
	secs := elapsed.Seconds()
	b.ReportMetric(float64(b.N)/secs, "appends/s")
	b.ReportMetric(float64(b.N*batch)/secs, "events/s")
	b.ReportMetric(float64(h.ValueAtQuantile(50))/1000, "p50-ms")
	b.ReportMetric(float64(h.ValueAtQuantile(99))/1000, "p99-ms")
}

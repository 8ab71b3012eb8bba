package transport

import (
	"sync/atomic"
	"testing"

	"github.com/shoaldb/shoal/replica"
)

// BenchmarkSendBatch measures raft message throughput over loopback: MsgApp
// messages with one 256-byte entry, across 16 shards, sent in slices of 64
// (one Ready's worth). The sender keeps at most half a queue in flight so
// nothing is dropped; bytes/s counts entry payload.
func BenchmarkSendBatch(b *testing.B) {
	const payload, perSend, shards = 256, 64, 16
	dir := newDirectory()
	n1 := startNode(b, 1, "c", dir, nil)
	n2 := startNode(b, 2, "c", dir, nil)
	var got atomic.Int64
	progress := make(chan struct{}, 1)
	n2.rec.onBatch = func(msgs []replica.ShardMessage) {
		got.Add(int64(len(msgs)))
		select {
		case progress <- struct{}{}:
		default:
		}
	}
	// Keep the recorder from retaining every message.
	n2.tr.SetHandler(countingHandler{n2.rec})

	window := int64(DefaultQueueSize / 2)
	data := make([]byte, payload)
	batch := make([]replica.ShardMessage, perSend)
	b.SetBytes(payload)
	b.ReportAllocs()
	b.ResetTimer()
	var sent int64
	for sent < int64(b.N) {
		for sent-got.Load() > window {
			<-progress
		}
		k := min(perSend, b.N-int(sent))
		for i := range k {
			batch[i] = msg(uint32(int(sent)+i)%shards, 1, 2, uint64(sent)+uint64(i), data)
		}
		n1.tr.Send(batch[:k])
		sent += int64(k)
	}
	for got.Load() < int64(b.N) {
		<-progress
	}
	b.StopTimer()
	m := n1.tr.Metrics()
	batches := counterValue(m.BatchesSent.WithLabelValues("2"))
	b.ReportMetric(float64(b.N)/max(batches, 1), "msgs/batch")
	b.ReportMetric(counterValue(m.MessagesDropped.WithLabelValues("2", dropQueueFull)), "dropped")
}

// countingHandler forwards only HandleMessages to the recorder's onBatch.
type countingHandler struct{ *recorder }

func (c countingHandler) HandleMessages(msgs []replica.ShardMessage) { c.onBatch(msgs) }

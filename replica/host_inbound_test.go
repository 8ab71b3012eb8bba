package replica

import (
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
)

// TestInboundDropsCounted: messages from peers beyond the inbound queue's bound are dropped,
// and counted (shoal_replica_inbound_dropped_total); they were dropped silently, while the
// transport counted them received.
func TestInboundDropsCounted(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 1})
	h := c.nodes[1].host
	max := h.cfg.MaxQueuedMsgs
	h.mu.Lock()
	queued := len(h.mu.msgs)
	h.mu.Unlock()
	msgs := make([]ShardMessage, max-queued+5)
	for i := range msgs {
		// For a shard the node does not hold: the loop drops them once it takes them.
		msgs[i] = ShardMessage{Shard: 999, Msg: &pb.Message{Type: pb.MsgHeartbeat.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(1))}}
	}
	h.HandleMessages(msgs)
	if got := testutilCounter(h.metrics.InboundDropped); got < 5 {
		t.Fatalf("inbound_dropped_total %v after %d messages over the bound, want at least 5", got, 5)
	}
}

package replica

import (
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
)

// TestInboundDropsCounted: messages from peers beyond the inbound queue's bound are dropped,
// and counted (shoal_replica_inbound_dropped_total; they were dropped silently, while the
// transport counted them received). Appends past the bound are dropped while a vote still
// finds room: appends held back behind slow fsyncs must not crowd out the messages that keep
// elections and leaderships going.
func TestInboundDropsCounted(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 1})
	h := c.nodes[1].host
	msg := func(typ pb.MessageType) ShardMessage {
		// For a shard the node does not hold: the loop drops them once it takes them.
		return ShardMessage{Shard: 999, Msg: &pb.Message{Type: typ.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(1))}}
	}
	h.mu.Lock()
	room := h.cfg.MaxQueuedMsgs - len(h.mu.msgs)
	h.mu.Unlock()
	var msgs []ShardMessage
	for range room + 3 {
		msgs = append(msgs, msg(pb.MsgApp))
	}
	msgs = append(msgs, msg(pb.MsgVote), msg(pb.MsgHeartbeatResp))
	h.HandleMessages(msgs) // under one hold of the queue's lock: the loop takes none meanwhile
	if got := testutilCounter(h.metrics.InboundDropped); got != 3 {
		t.Fatalf("inbound_dropped_total %v, want 3 (the appends past the bound; not the vote nor the answer)", got)
	}
}

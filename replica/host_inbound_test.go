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

// TestInboundAppendBytesBounded: appends from peers take at most MaxQueuedMsgBytes of entries
// in the inbound queue (it was bounded by count only: 8192 appends of up to 1 MiB each), one
// append of any size when the queue holds no other; an empty append and a vote still find room.
func TestInboundAppendBytesBounded(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 1})
	h := c.nodes[1].host
	h.cfg.MaxQueuedMsgBytes = 1000
	msg := func(typ pb.MessageType, size int) ShardMessage {
		m := &pb.Message{Type: typ.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(1))}
		if size > 0 {
			m.Entries = []*pb.Entry{{Data: make([]byte, size)}}
		}
		return ShardMessage{Shard: 999, Msg: m}
	}
	h.mu.Lock()
	queued := h.mu.msgBytes
	h.mu.Unlock()
	if queued != 0 {
		t.Fatalf("%d bytes of appends queued before the test", queued)
	}
	h.HandleMessages([]ShardMessage{
		msg(pb.MsgApp, 1500), // taken: the queue holds no other append
		msg(pb.MsgApp, 10),   // dropped: past the bound
		msg(pb.MsgApp, 0),    // taken: no entries
		msg(pb.MsgVote, 0),   // taken
	})
	if got := testutilCounter(h.metrics.InboundDropped); got != 1 {
		t.Fatalf("inbound_dropped_total %v, want 1 (the second append, past MaxQueuedMsgBytes)", got)
	}
}

package node

import (
	"sync/atomic"
	"time"
)

// drainGrace is how long Close lets the calls in flight run on once it stopped taking new
// ones, with raft still flowing, before it cuts them; and then how long it waits for the gRPC
// server to stop.
const drainGrace = 500 * time.Millisecond

// callCount counts the calls in flight other than the peers' raft streams (clients', and those
// other nodes forward), so that Close cuts raft only once they ended or drainGrace passed.
type callCount struct{ n atomic.Int64 }

// drain waits until no counted call runs, stopped is closed, or grace passed, and reports
// whether the calls ended (false: grace passed).
func (c *callCount) drain(stopped <-chan struct{}, grace time.Duration) bool {
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for c.n.Load() > 0 {
		select {
		case <-stopped:
			return true
		case <-deadline.C:
			return false
		case <-poll.C:
		}
	}
	return true
}

// stopGRPC stops the gRPC server (Close): no call starts any more, those in flight get
// drainGrace to end with raft flowing both ways (an append this node leads commits only once
// its followers' acknowledgements come in on their raft streams into this node), then the
// peers' raft streams into this node end, telling them it stops (not a fault), and the calls
// still running are cut.
func (n *Node) stopGRPC() {
	if n.grpcSrv == nil {
		n.stopServingRaft()
		if n.grpcLis != nil {
			n.grpcLis.Close()
		}
		return
	}
	stopped := make(chan struct{})
	go func() { n.grpcSrv.GracefulStop(); close(stopped) }()
	drained := n.calls.drain(stopped, drainGrace)
	n.stopServingRaft()
	if !drained {
		n.grpcSrv.Stop()
	}
	select {
	case <-stopped:
	case <-time.After(drainGrace):
		n.grpcSrv.Stop()
		<-stopped
	}
}

// stopServingRaft ends the peers' raft streams into this node.
func (n *Node) stopServingRaft() {
	if n.tr != nil {
		n.tr.StopServing()
	}
}

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

// stopServingRaft ends the peers' raft streams into this node, telling them it stops (not a
// fault).
func (n *Node) stopServingRaft() {
	if n.tr != nil {
		n.tr.StopServing()
	}
}

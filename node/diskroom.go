package node

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/replica"
)

// A disk that fills ends its node (a WAL write that fails cannot be gone on from: the server
// exits with status 74), and the replicas of a shard hold the same data, so their disks fill
// together: the whole cluster would stop at once, and start again only once space is freed
// on each. So a node keeps Config.MinFreeDisk free. Every diskRoomEvery it reads its data
// directory's free space; below the floor it says so in gossip (membership.Meta.DiskLow), and
// the leader of a shard refuses appends while it or another node holding a replica of the
// shard says so: RESOURCE_EXHAUSTED with reason DISK_LOW, naming the node, the space and the
// flag, before anything is proposed. Reads, deletes, truncations and retention go on (the last
// two free space, once compactions drop what they removed), as do raft's own writes. The node
// leaves the state once the disk has the floor free and diskRoomSlack more, so that appends
// do not flap on and off at the line.

// diskRoomEvery is how often a node reads its disk's free space.
const diskRoomEvery = time.Second

// diskRoomSlack is how much more than min a disk needs free for its node to take appends
// again, once it refused them: a tenth of min, at least 64 MiB.
func diskRoomSlack(min uint64) uint64 { return max(min/10, 64<<20) }

// diskRoom is a node's view of its own free space and of the members short of it.
type diskRoom struct {
	low   atomic.Bool   // this node's disk is below Config.MinFreeDisk
	avail atomic.Uint64 // bytes free at the last reading
	// others: the live members other than this node that say their disk is low, by node ID
	// (nil: none, the usual case, which costs an append one atomic load).
	others atomic.Pointer[map[uint64]string]
	loop   sync.WaitGroup
}

// startDiskRoom reads the disk's free space now and then every diskRoomEvery until Close.
func (n *Node) startDiskRoom() {
	n.checkDiskRoom()
	n.room.loop.Go(func() {
		t := time.NewTicker(diskRoomEvery)
		defer t.Stop()
		for {
			select {
			case <-n.done:
				return
			case <-t.C:
				n.checkDiskRoom()
			}
		}
	})
}

// checkDiskRoom reads the data directory's free space and, when it crosses the floor (down
// below Config.MinFreeDisk, or back up past it and diskRoomSlack), says so in the log, the
// metrics and gossip. A file system that cannot tell (an in-memory one) is never low.
func (n *Node) checkDiskRoom() {
	if n.fs == nil {
		return
	}
	du, err := n.fs.GetDiskUsage(n.cfg.DataDir)
	if err != nil {
		return
	}
	n.room.avail.Store(du.AvailBytes)
	floor := n.cfg.MinFreeDisk
	was := n.room.low.Load()
	low := du.AvailBytes < floor || was && du.AvailBytes < floor+diskRoomSlack(floor)
	if low == was {
		return
	}
	n.room.low.Store(low)
	if low {
		n.metrics.diskLow.Set(1)
		n.log.Error("the data directory's disk is below --min-free-disk: the shards this node holds a replica of refuse appends "+
			"until space is freed (reads, deletes and truncations go on)",
			"free", du.AvailBytes, "min_free_disk", floor, "data", n.cfg.DataDir)
	} else {
		n.metrics.diskLow.Set(0)
		n.log.Info("the data directory's disk has room again: appends resume", "free", du.AvailBytes, "min_free_disk", floor)
	}
	if err := n.gossip().UpdateMeta(func(m *membership.Meta) { m.DiskLow = low }); err != nil {
		n.log.Warn("gossiping the disk's state", "low", low, "err", err)
	}
}

// noteDiskLowMembers records which live members other than this node say their disk is low
// (refreshMembers, on every change of gossip).
func (n *Node) noteDiskLowMembers(members []membership.Member) {
	var low map[uint64]string
	for _, m := range members {
		if m.Alive && m.DiskLow && m.NodeID != n.dir.id.NodeID {
			if low == nil {
				low = map[uint64]string{}
			}
			low[m.NodeID] = m.Name
		}
	}
	if low == nil {
		n.room.others.Store(nil)
		return
	}
	n.room.others.Store(&low)
}

// appendRoom refuses an append to shard g, led here, while this node's disk or that of
// another node holding a replica of the shard is below its floor (DiskLowError).
func (n *Node) appendRoom(g *replica.Group) error {
	if n.room.low.Load() {
		return shoalv1.DiskLowError(fmt.Sprintf("append refused: node %s, the leader of shard %d, has %d bytes free on its data "+
			"directory's disk, below its --min-free-disk (%d): free space on it (a retention policy or shoal truncate, old "+
			"backups under --backup-dir) or give the node a larger disk; reads, deletes and truncations go on",
			n.Name(), g.Shard(), n.room.avail.Load(), n.cfg.MinFreeDisk), n.Name(), g.Shard())
	}
	others := n.room.others.Load()
	if others == nil {
		return nil
	}
	st := g.Status()
	for _, id := range append(st.Voters, st.Learners...) {
		if name, ok := (*others)[id]; ok {
			return shoalv1.DiskLowError(fmt.Sprintf("append refused: node %s, which holds a replica of shard %d, has less "+
				"free space on its data directory's disk than its --min-free-disk: free space on it (a retention policy or "+
				"shoal truncate, old backups under --backup-dir) or give it a larger disk; reads, deletes and truncations go on",
				name, g.Shard()), name, g.Shard())
		}
	}
	return nil
}

package node

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/dustin/go-humanize"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/clusterstatus"
	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/replica"
)

// A disk that fills ends its node (a WAL write that fails cannot be gone on from: the server
// exits with status 74), and the replicas of a shard hold the same data, so their disks fill
// together: the whole cluster would stop at once, and start again only once space is freed on
// each. So a node keeps Config.MinFreeDisk free. Every diskRoomEvery it reads its data
// directory's free space; below the floor it says so in gossip (membership.Meta.DiskLow), and
// the leader of a shard refuses appends while a majority of the shard's voters say so (itself
// included): RESOURCE_EXHAUSTED with reason DISK_LOW, naming the nodes, the space and the flag,
// before anything is proposed. A minority of them low does not stop the shard, as a minority of
// them down would not: such a node fills and stops, the majority goes on, and ShoalDiskLow has
// paged before. Reads, deletes, truncations and retention go on (the last two free space, once
// compactions drop what they removed), as do raft's own writes. The node leaves the state once
// the disk has diskRoomResume free (the floor and a tenth more), so that appends do not flap on
// and off at the line. Placement gives a node in the state no new replica (lacksDiskRoom), and
// snapshots leave it diskRoomResume and the log's reserve (Config.SnapshotMinFreeBytes is raised
// to them).
//
// The free space counted is the disk's less what Pebble's write-ahead log may still take
// (walReserve less what its files hold now): its files take their space in large steps, at
// once, whatever was written, so a node that did not count them went from far above its floor
// to far below it within a second (a new store's memtables start small, and each of the first
// flushes made a new log file), or, a minority of its shards' voters low and so still written
// to, to a full disk; and a restart, which deletes them, brought appends back only until they
// were made again.

// diskRoomEvery is how often a node reads its disk's free space.
const diskRoomEvery = time.Second

// diskRoomResume is how much a disk needs free for its node to take appends again, once it
// refused them: floor and a tenth more, at least 64 MiB more.
func diskRoomResume(floor uint64) uint64 { return floor + max(floor/10, 64<<20) }

// walReserve is the most disk space Pebble's write-ahead log files with opts take at once:
// each is preallocated (fallocate) to 1.1 times the memtable size, and there is one for every
// memtable not flushed yet (up to MemTableStopWritesThreshold of them and the one being
// filled) and as many flushed ones kept for reuse. 704 MB with the default 64 MB memtables.
func walReserve(opts *pebble.Options) uint64 {
	perLog := opts.MemTableSize + opts.MemTableSize/10
	return uint64(2*opts.MemTableStopWritesThreshold+2) * perLog
}

// roomLeft is the free space a node counts: avail less what of reserve (walReserve) the log's
// files, holding walHeld, do not take yet.
func roomLeft(avail, reserve, walHeld uint64) uint64 {
	if walHeld >= reserve {
		return avail
	}
	return avail - min(avail, reserve-walHeld)
}

// walHeld is the disk space the write-ahead log's files in dir take (their allocated blocks,
// preallocation included); 0 when it cannot be read.
func walHeld(fs vfs.FS, dir string) uint64 {
	names, err := fs.List(dir)
	if err != nil {
		return 0
	}
	var held uint64
	for _, name := range names {
		if !strings.HasSuffix(name, ".log") {
			continue
		}
		if fi, err := fs.Stat(fs.PathJoin(dir, name)); err == nil {
			held += allocatedBytes(fi)
		}
	}
	return held
}

// diskLow tells whether a disk with avail bytes free is low, given floor (Config.MinFreeDisk)
// and whether it was low at the last reading.
func diskLow(avail, floor uint64, was bool) bool {
	return avail < floor || was && avail < diskRoomResume(floor)
}

// diskRoom is a node's view of its own free space and of the members short of it.
type diskRoom struct {
	low   atomic.Bool   // this node's disk is below Config.MinFreeDisk (or within the slack)
	avail atomic.Uint64 // bytes free at the last reading, less the log's reserve (roomLeft)
	// walReserve: walReserve of the node's Pebble options.
	walReserve uint64
	// others: the live members other than this node that say their disk is low, by node ID
	// (nil: none, the usual case, which costs an append two atomic loads).
	others atomic.Pointer[map[uint64]string]
	loop   sync.WaitGroup
}

// startDiskRoom reads the disk's free space now and then every diskRoomEvery until Close.
func (n *Node) startDiskRoom() {
	n.metrics.minFreeDisk.Set(float64(n.cfg.MinFreeDisk))
	n.checkDiskRoom()
	n.everyUntilClosed(diskRoomEvery, func(time.Time) { n.checkDiskRoom() })
}

// everyUntilClosed calls f every interval, with the tick's time, on a goroutine of its own
// (counted in room.loop) until Close. A tick that comes with Close is not run: the DB may be
// closing.
func (n *Node) everyUntilClosed(interval time.Duration, f func(now time.Time)) {
	n.room.loop.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-n.done:
				return
			case now := <-t.C:
				select {
				case <-n.done:
					return
				default:
				}
				f(now)
			}
		}
	})
}

// checkDiskRoom reads the data directory's free space and, when it crosses the floor (down
// below Config.MinFreeDisk, or back up past diskRoomResume), says so in the log and the
// metrics; gossip says what the last reading found (a failed update is tried again at the
// next). A file system that cannot tell (an in-memory one) is never low.
func (n *Node) checkDiskRoom() {
	if n.fs == nil {
		return
	}
	du, err := n.fs.GetDiskUsage(n.cfg.DataDir)
	if err != nil {
		return
	}
	held := walHeld(n.fs, n.dir.pebblePath())
	room := roomLeft(du.AvailBytes, n.room.walReserve, held)
	n.room.avail.Store(room)
	floor := n.cfg.MinFreeDisk
	was := n.room.low.Load()
	low := diskLow(room, floor, was)
	if low != was {
		n.room.low.Store(low)
		if low {
			n.metrics.diskLow.Set(1)
			n.log.Error("the data directory's disk is below --min-free-disk, counting the space the write-ahead log may "+
				"still take: a shard most of whose voters are below theirs refuses appends until space is freed (reads, "+
				"deletes and truncations go on)",
				"free", humanize.IBytes(du.AvailBytes), "wal_yet_to_take", humanize.IBytes(du.AvailBytes-room),
				"min_free_disk", humanize.IBytes(floor), "resume_at", humanize.IBytes(diskRoomResume(floor)),
				"data", n.cfg.DataDir)
		} else {
			n.metrics.diskLow.Set(0)
			n.log.Info("the data directory's disk has room again", "free", humanize.IBytes(du.AvailBytes),
				"wal_yet_to_take", humanize.IBytes(du.AvailBytes-room), "min_free_disk", humanize.IBytes(floor))
		}
	}
	if ml := n.gossip(); ml != nil && ml.Self().DiskLow != low {
		if err := ml.UpdateMeta(func(m *membership.Meta) { m.DiskLow = low }); err != nil {
			n.log.Warn("gossiping the disk's state; trying again in a second", "low", low, "err", err)
		}
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

// appendRoom refuses an append to shard g, led here, while a majority of the shard's voters,
// this node included, have their disk below their floor (DiskLowError).
func (n *Node) appendRoom(g *replica.Group) error {
	selfLow, others := n.room.low.Load(), n.room.others.Load()
	if !selfLow && others == nil {
		return nil
	}
	voters := g.Voters()
	var low []string
	for _, id := range voters {
		if id == n.dir.id.NodeID && selfLow {
			low = append(low, n.Name())
		} else if others != nil {
			if name, ok := (*others)[id]; ok {
				low = append(low, name)
			}
		}
	}
	if !clusterstatus.RefusesAppends(len(voters), len(low)) {
		return nil // a majority of the voters has room
	}
	slices.Sort(low)
	floor := n.cfg.MinFreeDisk
	var own string
	if selfLow {
		own = fmt.Sprintf(" (this node, %s, has %s free once what its write-ahead log may still take is counted, against its floor of %s; appends resume at %s free)",
			n.Name(), humanize.IBytes(n.room.avail.Load()), humanize.IBytes(floor), humanize.IBytes(diskRoomResume(floor)))
	}
	return shoalv1.DiskLowError(fmt.Sprintf("append refused: %d of shard %d's %s (%s) %s less free space on the data "+
		"directory's disk than --min-free-disk%s, and appends would fill the disks of a majority: free space there (a "+
		"retention policy or shoal truncate, old backups under --backup-dir) or give them larger disks; reads, deletes "+
		"and truncations go on", len(low), g.Shard(), clusterstatus.Count(len(voters), "voter"), clusterstatus.List(low),
		clusterstatus.Agree(len(low), "has", "have"), own), low[0], g.Shard())
}

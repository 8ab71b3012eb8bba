package node

import (
	"context"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// Test hooks for the package's external tests.

// LeaderViews is leaderViews: per shard, the view of the member that reports leading it.
func (n *Node) LeaderViews(ctx context.Context) map[uint32]*shoalv1.ShardInfo {
	views, _ := n.leaderViews(ctx)
	return views
}

// DropConfirmed runs the placement loop's deletion of removed replicas (dropConfirmed) once, on
// a node whose loop may be disabled.
func (n *Node) DropConfirmed(shards []uint32, since time.Time, leaders map[uint32]*shoalv1.ShardInfo, maxTerm map[uint32]uint64) {
	p := &placer{n: n, log: n.log.With("component", "placement"), metrics: newPlacementMetrics(nil)}
	p.dropConfirmed(shards, since, leaders, maxTerm)
}

// RefreshLeaders is refreshLeaders: learn the other nodes' leaders for the leader cache.
func (n *Node) RefreshLeaders(ctx context.Context) { n.refreshLeaders(ctx) }

// CachedLeader is the leader cache's entry for shard.
func (n *Node) CachedLeader(shard uint32) (uint64, bool) { return n.leaders.get(shard) }

// SetCachedLeader makes the leader cache name leader for shard, as if a refresh had just
// learned it.
func (n *Node) SetCachedLeader(shard uint32, leader uint64) {
	n.leaders.mu.Lock()
	defer n.leaders.mu.Unlock()
	n.leaders.leaders[shard] = cachedLeader{id: leader, at: time.Now()}
}

// SetIslandRejoinEvery sets how often islandLoop asks, for the nodes started after it, until
// the returned func restores it.
func SetIslandRejoinEvery(d time.Duration) (restore func()) {
	old := islandRejoinEvery.Swap(int64(d))
	return func() { islandRejoinEvery.Store(old) }
}

// PointMemberAt makes this node's view of member id's gRPC address addr until gossip next
// changes the member list: a stale address, as one another node took since.
func (n *Node) PointMemberAt(id uint64, addr string) {
	list := slices.Clone(n.memberList())
	for i := range list {
		if list[i].NodeID == id {
			list[i].GRPCAddr = addr
		}
	}
	n.members.Store(&list)
}

// SetFS sets the file system under a node's Pebble and data directory (faults, a disk's free
// space).
func SetFS(cfg *Config, fs vfs.FS) { cfg.fs = fs }

// DiskLow is diskLow.
func DiskLow(avail, floor uint64, was bool) bool { return diskLow(avail, floor, was) }

// RoomLeft is roomLeft.
func RoomLeft(avail, reserve, walHeld uint64) uint64 { return roomLeft(avail, reserve, walHeld) }

// DefaultWALReserve is walReserve with the node's default Pebble options.
func DefaultWALReserve() uint64 {
	return walReserve(&pebble.Options{MemTableSize: 64 << 20, MemTableStopWritesThreshold: 4})
}

// HoldPipelineAppends makes n's AppendPipeline items wait, each reporting its stream on
// started, until release is closed (or their context ends), and then run as Append runs them.
func HoldPipelineAppends(n *Node) (started <-chan string, release chan<- struct{}) {
	return holdPipeline(n, n.streams.Append)
}

package replica

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults used for zero Config fields.
const (
	DefaultTickInterval  = 50 * time.Millisecond
	DefaultElectionTicks = 10
	// DefaultHeartbeatTicks: a heartbeat every 100 ms, five per election timeout. Every 50 ms,
	// three idle nodes with 32 shards used 18.5% of a core between them, 11.3% at 100 ms; under
	// load, appends reset the followers' clocks anyway (no difference beyond the noise).
	DefaultHeartbeatTicks   = 2
	DefaultMaxSizePerMsg    = 1 << 20 // 1 MiB
	DefaultMaxInflightMsgs  = 256
	DefaultMaxInflightBytes = 8 << 20 // 8 MiB
	DefaultLogRetainEntries = 5000
	DefaultMaxLogBytes      = 64 << 20 // 64 MiB
	DefaultMaxQueuedMsgs    = 8192
	// DefaultMaxQueuedMsgBytes bounds the entries of the append messages queued from peers.
	DefaultMaxQueuedMsgBytes = 256 << 20 // 256 MiB
	// DefaultMaxQueuedProposals and DefaultMaxQueuedProposalBytes bound the proposals
	// waiting for the loop (a held group commit waits for an fsync): far above what a
	// node's callers keep in flight, which the loop drains every iteration.
	DefaultMaxQueuedProposals     = 1 << 16
	DefaultMaxQueuedProposalBytes = 256 << 20 // 256 MiB
	// DefaultMaxSnapshotBytes bounds the scratch files of the snapshots a host receives at
	// once; DefaultSnapshotMinFreeBytes is the free space a receive leaves on their disk.
	DefaultMaxSnapshotBytes     = 256 << 30 // 256 GiB
	DefaultSnapshotMinFreeBytes = 1 << 30   // 1 GiB
)

// minFormatMajorVersion is the oldest DB format that supports DB.IngestAndExcise.
const minFormatMajorVersion = pebble.FormatVirtualSSTables

// Config configures a Host. Zero fields take the defaults above.
type Config struct {
	// NodeID is this node's raft ID in every group; never 0, never reused by a node that lost
	// its data.
	NodeID uint64
	// DB holds every group's raft log and state machine; owned by the caller (Close does not
	// close it). Its FormatMajorVersion must be at least pebble.FormatVirtualSSTables
	// (snapshots are installed with DB.IngestAndExcise); its Comparer the default one.
	DB *pebble.DB
	// FS is the file system the DB was opened on (default vfs.Default). Snapshots being
	// received are written to it as sstables, which the DB then links in.
	FS vfs.FS
	// SnapshotDir is the directory of FS where received snapshots are written before they are
	// ingested, one or more files of at most about 64 MiB per snapshot, removed once ingested
	// or refused. It should sit on the DB's file system so that ingesting links rather than
	// copies (default os.TempDir(), which may not). NewHost creates it if absent; files left
	// there by a crash are the caller's to remove (a server gives every host a directory of
	// its own and empties it before NewHost).
	SnapshotDir string
	// SnapshotTables are the options of the sstables a received snapshot is written to. Give
	// the DB's own for its last level (pebble.Options.MakeWriterOptions), so that ingested
	// tables carry the filters, block sizes and compression of the tables compactions write.
	// The zero value means Pebble's defaults at the DB's table format (no filters).
	SnapshotTables sstable.WriterOptions
	// MaxSnapshotBytes bounds what the snapshots being received at once write to SnapshotDir,
	// counted as their records' keys and values (default 256 GiB). A sender could otherwise
	// fill the disk with a stream that never ends, or that names a shard larger than the node
	// can hold. A receive that would pass it is refused (ErrSnapshotTooLarge) and its files
	// removed; raft sends a snapshot again later.
	MaxSnapshotBytes uint64
	// SnapshotMinFreeBytes is the free space a receive leaves on SnapshotDir's file system
	// (default 1 GiB): before it starts each of its scratch tables it checks that the file
	// system has this much free beyond the table and the tables other receives are writing,
	// and is refused (ErrSnapshotTooLarge) otherwise. The DB's writes share the disk; a full
	// one stops the node. A file system that cannot tell its free space (an in-memory one) is
	// not checked.
	SnapshotMinFreeBytes uint64
	// Transport carries messages to peers. Required.
	Transport Transport
	// TickInterval is the raft logical clock period (default 50ms, > 0).
	TickInterval time.Duration
	// ElectionTicks is the election timeout in ticks (default 10, > HeartbeatTicks).
	ElectionTicks int
	// HeartbeatTicks is the heartbeat period in ticks (default 2).
	HeartbeatTicks int
	// MaxSizePerMsg limits the bytes of entries in one append message (default 1 MiB).
	MaxSizePerMsg uint64
	// MaxInflightMsgs limits unacknowledged append messages per follower (default 256).
	MaxInflightMsgs int
	// MaxInflightBytes limits the bytes of entries in unacknowledged append messages per
	// follower (default 8 MiB; one message larger than it still goes, alone): a follower
	// catching up on a shard of large entries gets them a few megabytes at a time, not 256
	// messages of up to 16 MiB queued on its peer stream at once.
	MaxInflightBytes uint64
	// LogRetainEntries is the most applied entries a group keeps behind its applied index for a
	// follower that is behind (default 5000), and what a follower keeps until its leader says
	// how far to drop (logtrim.go). Followers further behind catch up by snapshot. With every
	// follower current, the log keeps min(256, LogRetainEntries) entries.
	LogRetainEntries uint64
	// MaxLogBytes compacts a group's log down to its applied index once the retained log
	// exceeds this many bytes, whatever LogRetainEntries says (default 64 MiB). A leader keeps
	// what its followers still need up to twice this: one slightly behind catches up from the
	// log rather than by a snapshot of the whole shard.
	MaxLogBytes uint64
	// MaxQueuedMsgs bounds the inbound raft message queue; messages beyond it are dropped
	// (raft retries). Default 8192.
	MaxQueuedMsgs int
	// MaxQueuedMsgBytes bounds the entries' bytes of the append messages in that queue: an
	// append beyond it is dropped (raft retries), unless the queue holds no other (default
	// 256 MiB). Every leader keeps MaxInflightBytes in flight to each follower, so a node
	// following many shards' leaders could otherwise queue that much for each.
	MaxQueuedMsgBytes int
	// MaxQueuedProposals and MaxQueuedProposalBytes bound the proposals queued for the loop,
	// by count and by their data's bytes; Propose beyond either returns ErrBusy, proposing
	// nothing (defaults 65,536 and 256 MiB). A single proposal larger than the byte bound is
	// taken when the queue is empty.
	MaxQueuedProposals     int
	MaxQueuedProposalBytes int
	// NoQuiesce keeps every group ticking and heartbeating while idle (see doc.go,
	// "Quiescence").
	NoQuiesce bool
	// CommitDelay, if not nil, is told of every write the host syncs, for the DB's
	// WALMinSyncInterval (CommitDelay.Func) to hold back the next sync under load.
	CommitDelay *CommitDelay
	// Logger receives the host's and raft's logs (nil = discard). The host
	// adds the attribute node_id.
	Logger *slog.Logger
	// Registerer registers the host's metrics (nil = not registered).
	Registerer prometheus.Registerer
	// OnStorageFailure is called, on the goroutine that met it (the raft loop or the one
	// waiting for its fsyncs), when the host cannot go on with its storage: a write, commit
	// or sync of the DB failed (a full disk, an I/O error), or what it read back cannot be
	// right. Nothing of the failed batch is committed, and the loop cannot continue without
	// it: the function must end the process, which a restart recovers from, replaying the
	// log from what is durable. nil: panic with the error (if the function returns, the
	// host panics all the same).
	OnStorageFailure func(error)
}

// Validate fills the defaults into zero fields and checks the rest.
func (c *Config) Validate() error {
	if c.NodeID == 0 {
		return errors.New("replica: Config.NodeID must not be 0")
	}
	if c.DB == nil {
		return errors.New("replica: Config.DB is required")
	}
	if c.Transport == nil {
		return errors.New("replica: Config.Transport is required")
	}
	if v := c.DB.FormatMajorVersion(); v < minFormatMajorVersion {
		return fmt.Errorf("replica: Config.DB has format major version %d; installing snapshots needs at least %d (pebble.FormatVirtualSSTables)",
			v, minFormatMajorVersion)
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.SnapshotDir == "" {
		c.SnapshotDir = os.TempDir()
	}
	if c.SnapshotTables.TableFormat == 0 {
		c.SnapshotTables = defaultSnapWriterOptions(c.DB)
	}
	if c.MaxSnapshotBytes == 0 {
		c.MaxSnapshotBytes = DefaultMaxSnapshotBytes
	}
	if c.SnapshotMinFreeBytes == 0 {
		c.SnapshotMinFreeBytes = DefaultSnapshotMinFreeBytes
	}
	if c.TickInterval == 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = DefaultElectionTicks
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = DefaultHeartbeatTicks
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = DefaultMaxSizePerMsg
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = DefaultMaxInflightMsgs
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if c.LogRetainEntries == 0 {
		c.LogRetainEntries = DefaultLogRetainEntries
	}
	if c.MaxLogBytes == 0 {
		c.MaxLogBytes = DefaultMaxLogBytes
	}
	if c.MaxQueuedMsgs == 0 {
		c.MaxQueuedMsgs = DefaultMaxQueuedMsgs
	}
	if c.MaxQueuedMsgBytes == 0 {
		c.MaxQueuedMsgBytes = DefaultMaxQueuedMsgBytes
	}
	if c.MaxQueuedProposals == 0 {
		c.MaxQueuedProposals = DefaultMaxQueuedProposals
	}
	if c.MaxQueuedProposalBytes == 0 {
		c.MaxQueuedProposalBytes = DefaultMaxQueuedProposalBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch {
	case c.TickInterval < 0:
		return fmt.Errorf("replica: Config.TickInterval %v must be > 0", c.TickInterval)
	case c.HeartbeatTicks < 0:
		return fmt.Errorf("replica: Config.HeartbeatTicks %d must be > 0", c.HeartbeatTicks)
	case c.ElectionTicks <= c.HeartbeatTicks:
		return fmt.Errorf("replica: Config.ElectionTicks %d must be > HeartbeatTicks %d", c.ElectionTicks, c.HeartbeatTicks)
	case c.MaxInflightMsgs < 0 || c.MaxQueuedMsgs < 0 || c.MaxQueuedMsgBytes < 0:
		return errors.New("replica: Config.MaxInflightMsgs, MaxQueuedMsgs and MaxQueuedMsgBytes must be > 0")
	case c.MaxQueuedProposals < 0 || c.MaxQueuedProposalBytes < 0:
		return errors.New("replica: Config.MaxQueuedProposals and MaxQueuedProposalBytes must be > 0")
	}
	return nil
}

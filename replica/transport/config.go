package transport

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/shoaldb/shoal/internal/grpcopt"
)

// Defaults for Config fields left zero.
const (
	DefaultQueueSize         = 4096     // messages per peer and queue
	DefaultQueueBytes        = 64 << 20 // bytes of entries per peer in the append queue
	DefaultMaxBatchMessages  = 512      // messages per RaftBatch
	DefaultMaxBatchBytes     = 2 << 20  // bytes of marshalled messages per RaftBatch
	DefaultSnapshotChunkSize = 1 << 20  // bytes of compressed data per SnapshotChunk
	DefaultMaxSnapshotSends  = 2        // concurrent outgoing snapshot streams
	// MinSnapshotRate is the least Config.SnapshotRate other than 0, per concurrent send
	// (Config.MaxSnapshotSends): twice the slowest average a send may keep before it is
	// abandoned (snapshotMinRate).
	MinSnapshotRate       = 512 << 10
	DefaultBackoffInitial = 100 * time.Millisecond
	DefaultBackoffMax     = time.Second
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultSnapshotStall  = time.Minute
	// DefaultSnapshotBackoffInitial and DefaultSnapshotBackoffMax bound the wait before a
	// snapshot to a destination whose last one failed.
	DefaultSnapshotBackoffInitial = 500 * time.Millisecond
	DefaultSnapshotBackoffMax     = 30 * time.Second

	// MaxMessageSize is the largest single marshalled raft message the
	// transport sends; a larger one is dropped (and reported unreachable)
	// because the peer's gRPC server would refuse the whole stream.
	MaxMessageSize = grpcopt.MaxMessageSize - 64<<10
)

// Config configures a Transport. Zero values mean the defaults above.
type Config struct {
	// NodeID is this node's raft ID. Required (non-zero). Incoming batches
	// addressed to another ID are refused.
	NodeID uint64
	// ClusterID returns the cluster's ID; it is stamped on outgoing batches
	// and compared with incoming ones. It may return "" while unknown (a
	// joining node); the check is skipped when either side is "". nil means
	// always "".
	ClusterID func() string
	// Resolve maps a peer's node ID to its gRPC address ("host:port"). It is
	// called at every (re)dial, from the peer's goroutine, and must be safe
	// for concurrent use. ok=false drops the messages and reports the peer
	// unreachable. Required.
	Resolve func(nodeID uint64) (addr string, ok bool)
	// DialOptions for peer connections; nil means grpcopt.PeerDialOptions().
	DialOptions []grpc.DialOption
	// ProbeDial opens the plain connection with which a peer whose stream broke is probed
	// (see Handler.ReportPeerDown). nil means a TCP dial; set it with the dialer given to
	// DialOptions, if any.
	ProbeDial func(ctx context.Context, addr string) (net.Conn, error)
	// QueueSize bounds each of a peer's two outbound queues, in messages: one for appends,
	// one for everything else (heartbeats, votes, answers), so that appends filling theirs
	// hold back no heartbeat. Default 4096.
	QueueSize int
	// QueueBytes bounds the bytes of entries in a peer's append queue (an append larger than
	// that goes when the queue is empty). Default 64 MiB. Raft bounds the entries in flight per
	// shard and follower (replica.Config.MaxInflightBytes); this bounds them per peer, whatever
	// the shard count, while the peer's stream is slower than raft.
	QueueBytes int64
	// MaxBatchMessages bounds the messages packed into one RaftBatch.
	// Default 512.
	MaxBatchMessages int
	// MaxBatchBytes bounds the marshalled bytes packed into one RaftBatch
	// (a single larger message still goes alone). Default 2 MiB.
	MaxBatchBytes int
	// SnapshotChunkSize is the compressed bytes per SnapshotChunk. Default 1 MiB.
	SnapshotChunkSize int
	// MaxSnapshotSends bounds concurrent outgoing snapshot streams, of which
	// at most one goes to each destination node. Further SendSnapshot calls
	// wait their turn: per destination in call order (a call for a shard
	// that is still waiting replaces the waiting snapshot), and destinations
	// take free streams in turn, so a slow receiver holds at most one and
	// snapshots to the other nodes go on. Default 2.
	MaxSnapshotSends int
	// SnapshotRate bounds the bytes per second of compressed snapshot data this node sends,
	// all streams together, so that copying shards leaves CPU, disk and network to the
	// writes (as CockroachDB's snapshot rate). 0: no bound; otherwise at least
	// MinSnapshotRate for each of MaxSnapshotSends.
	SnapshotRate uint64
	// BackoffInitial and BackoffMax bound the reconnect delay after a failed
	// dial or stream (exponential, ±50% jitter, reset by a successful send
	// on a stream that has lived at least a second).
	// Defaults 100 ms and 1 s: a peer back from a partition hears from
	// this node again within 1.5 s of this backoff, and up to 1.2 s more
	// while gRPC's own reconnect delay under it runs (a stream opened
	// while the connection waits to redial fails at once): 2.7 s at worst.
	BackoffInitial, BackoffMax time.Duration
	// SnapshotBackoffInitial and SnapshotBackoffMax bound the wait before a snapshot goes
	// to a destination whose last snapshot failed (exponential, ±50% jitter, reset by a
	// success). raft asks again a heartbeat after a failure: a node that keeps refusing (its
	// disk short of space, a snapshot past its bound, its replica deleted) or failing would
	// otherwise be sent the shard ten times a second, each time on a new connection and a
	// new read of the shard. The wait holds no send slot, and is not waiting its turn
	// (SnapshotWaiting): the destination did fail to take a snapshot. Defaults 500 ms and 30 s.
	SnapshotBackoffInitial, SnapshotBackoffMax time.Duration
	// SnapshotStallTimeout aborts an outgoing snapshot stream when no chunk
	// could be sent for this long (including while WriteSnapshot produces
	// data); the receiver's final answer may take 10× as long. Default 1 min;
	// negative disables.
	SnapshotStallTimeout time.Duration
	// IdleTimeout closes a peer's stream and connection after this long
	// without traffic (a removed node), and removes the peer after twice as
	// long: its goroutine, queue and metric series go, and the next message
	// for the node starts it anew. Nodes replaced by new IDs thus cost
	// nothing once raft stops addressing them. Default 2 min; negative
	// disables both.
	IdleTimeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer for Metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// LeastSnapshotRate is the least Config.SnapshotRate other than 0 for a Config.MaxSnapshotSends
// of sends (0: the default): MinSnapshotRate for each send.
func LeastSnapshotRate(sends int) uint64 {
	return MinSnapshotRate * uint64(cmp.Or(sends, DefaultMaxSnapshotSends))
}

// Validate reports a configuration error, or nil.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == 0:
		return errors.New("transport: Config.NodeID is required")
	case c.Resolve == nil:
		return errors.New("transport: Config.Resolve is required")
	case c.QueueSize < 0, c.QueueBytes < 0, c.MaxBatchMessages < 0, c.MaxBatchBytes < 0, c.SnapshotChunkSize < 0, c.MaxSnapshotSends < 0:
		return errors.New("transport: Config sizes must not be negative")
	case c.BackoffInitial < 0, c.BackoffMax < 0, c.SnapshotBackoffInitial < 0, c.SnapshotBackoffMax < 0:
		return errors.New("transport: Config backoff must not be negative")
	case c.BackoffMax != 0 && c.BackoffInitial > c.BackoffMax:
		return fmt.Errorf("transport: Config.BackoffInitial %v > BackoffMax %v", c.BackoffInitial, c.BackoffMax)
	case c.SnapshotBackoffMax != 0 && c.SnapshotBackoffInitial > c.SnapshotBackoffMax:
		return fmt.Errorf("transport: Config.SnapshotBackoffInitial %v > SnapshotBackoffMax %v", c.SnapshotBackoffInitial, c.SnapshotBackoffMax)
	case c.MaxBatchBytes > MaxMessageSize:
		// Batches are packed up to it: larger ones gRPC refuses, each time, with the stream.
		return fmt.Errorf("transport: Config.MaxBatchBytes %d exceeds the largest message, %d bytes (MaxMessageSize)",
			c.MaxBatchBytes, MaxMessageSize)
	case c.SnapshotChunkSize > MaxMessageSize:
		return fmt.Errorf("transport: Config.SnapshotChunkSize %d exceeds the largest message, %d bytes (MaxMessageSize)",
			c.SnapshotChunkSize, MaxMessageSize)
	case c.SnapshotRate != 0 && c.SnapshotRate < LeastSnapshotRate(c.MaxSnapshotSends):
		return fmt.Errorf("transport: Config.SnapshotRate %d bytes/s is below the least for %d sends at once (MaxSnapshotSends), %d (MinSnapshotRate each); 0 for no bound",
			c.SnapshotRate, cmp.Or(c.MaxSnapshotSends, DefaultMaxSnapshotSends), LeastSnapshotRate(c.MaxSnapshotSends))
	}
	return nil
}

func (c *Config) withDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.QueueSize, DefaultQueueSize)
	if c.QueueBytes == 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	def(&c.MaxBatchMessages, DefaultMaxBatchMessages)
	def(&c.MaxBatchBytes, DefaultMaxBatchBytes)
	def(&c.SnapshotChunkSize, DefaultSnapshotChunkSize)
	def(&c.MaxSnapshotSends, DefaultMaxSnapshotSends)
	if c.BackoffInitial == 0 {
		c.BackoffInitial = DefaultBackoffInitial
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffInitial)
	}
	if c.SnapshotBackoffInitial == 0 {
		c.SnapshotBackoffInitial = DefaultSnapshotBackoffInitial
	}
	if c.SnapshotBackoffMax == 0 {
		c.SnapshotBackoffMax = max(DefaultSnapshotBackoffMax, c.SnapshotBackoffInitial)
	}
	if c.SnapshotStallTimeout == 0 {
		c.SnapshotStallTimeout = DefaultSnapshotStall
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ClusterID == nil {
		c.ClusterID = func() string { return "" }
	}
	if c.ProbeDial == nil {
		var d net.Dialer
		c.ProbeDial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	if c.DialOptions == nil {
		c.DialOptions = grpcopt.PeerDialOptions()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Errors. Incoming-side errors travel to the sender as gRPC statuses
// (FailedPrecondition / InvalidArgument) whose message is the error's text.
var (
	// ErrClusterMismatch: an incoming stream carries another cluster's ID
	// (returned by the Raft service handlers; wrapped by *ClusterMismatchError).
	ErrClusterMismatch = errors.New("transport: cluster ID mismatch")
	// ErrWrongNode: an incoming stream is addressed to another node ID, e.g.
	// a peer whose address now belongs to a re-created node (*WrongNodeError).
	ErrWrongNode = errors.New("transport: addressed to another node")
	// ErrBadRequest: a malformed batch or snapshot header.
	ErrBadRequest = errors.New("transport: malformed request")
	// ErrNotSender: under TLS, the caller's certificate does not name the host of the address
	// the node it sends as has (Config.Resolve): it may not speak for that node.
	ErrNotSender = errors.New("transport: the caller's certificate does not name the sender's host")
	// ErrUnknownSender: under TLS, the sender is a node of no known address (gossip has not
	// told this node of it yet), so its certificate cannot be checked; it retries.
	ErrUnknownSender = errors.New("transport: the sender is not a known member yet")
	// ErrNoHandler: traffic arrived before SetHandler.
	ErrNoHandler = errors.New("transport: no handler set")
	// ErrClosed: the transport was closed.
	ErrClosed = errors.New("transport: closed")
	// ErrStopping ends the incoming raft streams of a node that is stopping
	// (Transport.StopServing), with codes.Unavailable: their senders take it for
	// a peer going away on purpose, not for a fault.
	ErrStopping = errors.New("transport: the node is stopping")
	// ErrUnknownPeer: Config.Resolve had no address for the peer.
	ErrUnknownPeer = errors.New("transport: peer address unknown")
)

// ClusterMismatchError carries both cluster IDs. Is(ErrClusterMismatch).
type ClusterMismatchError struct {
	Local, Remote string // this node's ID, the sender's ID
	From          uint64 // the sender's node ID
}

func (e *ClusterMismatchError) Error() string {
	return fmt.Sprintf("transport: cluster ID mismatch: node %d of cluster %q sent to a node of cluster %q",
		e.From, e.Remote, e.Local)
}

// Is reports target == ErrClusterMismatch.
func (e *ClusterMismatchError) Is(target error) bool { return target == ErrClusterMismatch }

// WrongNodeError carries the addressed and the actual node ID. Is(ErrWrongNode).
type WrongNodeError struct {
	Self, To uint64
}

func (e *WrongNodeError) Error() string {
	return fmt.Sprintf("transport: addressed to node %d, but this is node %d", e.To, e.Self)
}

// Is reports target == ErrWrongNode.
func (e *WrongNodeError) Is(target error) bool { return target == ErrWrongNode }

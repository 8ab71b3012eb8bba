package node

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/dustin/go-humanize"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/replica/transport"
)

// Defaults applied by DefaultConfig and, for zero fields, by Validate.
const (
	DefaultListen      = "127.0.0.1:7400"
	DefaultHTTP        = "127.0.0.1:7480"
	DefaultGossip      = "127.0.0.1:7401"
	DefaultDataDir     = "./data"
	DefaultShards      = 32
	DefaultReplication = 3
	DefaultDeadAfter   = 60 * time.Second
	DefaultJoinTimeout = 60 * time.Second

	// DefaultStreamCache is the default Config.StreamCache: about 170 MB of stream metadata
	// with 40-byte stream names.
	DefaultStreamCache = 1 << 20

	// DefaultMaxSubscriptions is the default Config.MaxSubscriptions. An idle subscription
	// costs its server a goroutine and about 30 KiB (stack, stream state), and a heartbeat a
	// second: 10,000 hold about 300 MB and a fifth of a core.
	DefaultMaxSubscriptions = 10_000
	// DefaultMaxLongPolls is the default Config.MaxLongPolls. A waiting long poll costs its
	// server about what an idle subscription does, 30 KiB (2,000 took a node from 35 MB to
	// 99 MB resident), for up to a minute: a caught-up projection (package query) holds one
	// per shard.
	DefaultMaxLongPolls = 10_000
	// DefaultMaxReads is the default Config.MaxReads. A read holds a goroutine and a page of
	// up to about 1 MiB (more for one large event) while its client takes it: a client that
	// stops taking its pages holds them until it cancels.
	DefaultMaxReads = 4_096
	// DefaultMaxAppendPipelines is the default Config.MaxAppendPipelines. A Go client holds
	// one stream per node it appends to, for as long as it runs; an idle one costs its
	// server three goroutines and their buffers, about 17 KiB (2,000 took a node from 35 MB
	// to 69 MB resident), and one in use up to MaxPipelineInFlight appends.
	DefaultMaxAppendPipelines = 1_000
	// DefaultSlowSync is the default Config.SlowSync.
	DefaultSlowSync = 20 * time.Millisecond
	// DefaultTick, MinTick and MaxTick bound Config.Tick.
	DefaultTick = 50 * time.Millisecond
	MinTick     = 10 * time.Millisecond
	MaxTick     = 250 * time.Millisecond
	// DefaultMinFreeDisk is the default Config.MinFreeDisk.
	DefaultMinFreeDisk = 1 << 30 // 1 GiB
	// DefaultMaxAppendBytes is the default Config.MaxAppendBytes.
	DefaultMaxAppendBytes = 1 << 30 // 1 GiB

	// MaxShards bounds the shard count fixed at cluster creation.
	MaxShards = 4096
	// The values of Config.Pprof.
	PprofLoopback = "loopback"
	PprofOn       = "on"
	PprofOff      = "off"
	// MaxReplication bounds the replication factor.
	MaxReplication = 7
	// MaxWALCommitDelay bounds Config.WALCommitDelay.
	MaxWALCommitDelay = 100 * time.Millisecond
)

// Config configures one server process. Zero values mean the default, with two
// exceptions documented on Shards and Replication.
type Config struct {
	// DataDir holds the identity, the cluster settings, the lock and Pebble
	// (DataDir/pebble). Created if absent. Default ./data.
	DataDir string
	// Listen is the gRPC address (clients and peers), host:port; port 0 picks a
	// free port (see Node.Addr). Default 127.0.0.1:7400.
	Listen string
	// Advertise is the gRPC address peers and clients are told to use; empty
	// means the actual listen address (127.0.0.1 with its port when listening
	// on all interfaces). Its host also replaces an all-interfaces HTTP
	// address in what the node announces.
	Advertise string
	// GossipAdvertise is the gossip address peers are told to use (behind NAT,
	// a published container port); empty lets memberlist derive it from
	// Gossip (a private address of this host when Gossip listens on all
	// interfaces).
	GossipAdvertise string
	// HTTP is the metrics/health/pprof address; port 0 picks a free port.
	// Default 127.0.0.1:7480. Set DisableHTTP to run without it.
	HTTP        string
	DisableHTTP bool
	// ConsoleData lets the console on the HTTP port (/console/) show events: streams, a
	// shard's log, an event's data. Off, it shows the cluster's state only, as `shoal cluster
	// status` does: the HTTP port authenticates no one, and is often reachable from more
	// machines than the gRPC port. Refused with ServerTLS (which turns the console off), whose
	// clients must present certificates, and with DisableHTTP.
	ConsoleData bool
	// Pprof says who the Go profiler on the HTTP port (/debug/pprof/) answers: PprofLoopback
	// (the default, ""), requests from this machine only; PprofOn, every request; PprofOff,
	// none. The port authenticates no one, and a profile or trace costs the node CPU for as
	// long as the caller asks.
	Pprof string
	// Gossip is the memberlist bind address (TCP and UDP). Default
	// 127.0.0.1:7401.
	Gossip string
	// Join lists gossip addresses of existing members. Empty on the first node
	// of a new cluster.
	Join []string
	// Name is the node's human label, unique in the cluster. Default: the
	// host name, or the name stored in an existing data directory.
	Name string
	// Zone is the failure domain used by placement (e.g. "eu-west-1a").
	Zone string
	// Shards is the shard count at cluster creation (1..MaxShards). Zero means
	// DefaultShards when creating a cluster and "whatever the cluster has" when
	// joining or restarting; a non-zero value that differs from the stored or
	// learned cluster setting is refused. The CLI should pass 0 unless the
	// flag was given.
	Shards int
	// Replication is the replication factor at cluster creation
	// (1..MaxReplication); zero behaves like Shards.
	Replication int
	// DeadAfter is how long a member must be dead before placement replaces
	// its replicas. Default 60s.
	DeadAfter time.Duration
	// PlacementInterval is the period of the placement loop (jittered ±25%).
	// Default DefaultPlacementInterval (1s); negative disables placement.
	PlacementInterval time.Duration
	// RetentionInterval is how often each shard's leader applies the shard's retention
	// policies (jittered ±25%), at least MinRetentionInterval. Default
	// DefaultRetentionInterval (1m); negative disables applying them (they are still kept and
	// can be set).
	RetentionInterval time.Duration
	// RetentionMinAge keeps every event committed less than RetentionMinAge ago from
	// retention, the cluster's policies and 'shoal retain' alike, whatever the policy says:
	// from shard format 7 on a truncation forgets the IDs of the events it removes, and a
	// writer's retry of an append whose events are gone is answered as a new append. Default
	// DefaultRetentionMinAge (1m: past the client's 30 s retry budget); negative: none.
	RetentionMinAge time.Duration
	// JoinTimeout bounds each of a new node's two waits at start-up: for
	// one of its seeds to answer (retried with backoff, as seeds of a new
	// cluster often start at the same time) and then to learn the cluster's
	// settings from gossip. A node that already belongs to a cluster never
	// waits: it starts alone and keeps rejoining in the background. Default 60s.
	JoinTimeout time.Duration
	// RaftLogRetainEntries is the most applied raft entries each shard keeps
	// behind its applied index for a follower that is behind; a follower further
	// behind catches up by snapshot (replica.Config.LogRetainEntries). Zero means
	// replica.DefaultLogRetainEntries.
	RaftLogRetainEntries uint64
	// PeerDialer dials peers (raft transport and request forwarding); nil
	// means the default TCP dialer. Tests use it to cut links.
	PeerDialer func(ctx context.Context, addr string) (net.Conn, error)
	// GossipTransport, if set, wraps the gossip transport (UDP and TCP); nil means
	// memberlist's own. Tests use it to cut gossip links and not raft's.
	GossipTransport func(memberlist.Transport) memberlist.Transport
	// GossipKey, if set, encrypts gossip (16, 24 or 32 bytes, AES).
	GossipKey []byte
	// ServerTLS, if set, secures the gRPC listener (clients and peers), and
	// PeerTLS the connections this node dials to its peers (raft traffic,
	// snapshots and forwarded requests). Set both or neither: the peers of a
	// node that serves TLS serve TLS too. The node's certificates must name
	// its Advertise address (the host peers and clients dial). For mutual
	// TLS, which authenticates peers, ServerTLS requires client certificates
	// and PeerTLS presents one (internal/tlsfiles builds such a pair from
	// PEM files, as the CLI does). Gossip is secured by GossipKey instead,
	// and the HTTP port stays plaintext. ServerTLS must require and verify
	// client certificates (tls.RequireAndVerifyClientCert): peers are
	// authenticated by them.
	ServerTLS, PeerTLS *tls.Config
	// PeerCAs, with ServerTLS, restricts the peers' calls (the Raft service:
	// raft messages and snapshots; and Decommission) to callers whose
	// certificate verifies against it: the nodes' CA, when ServerTLS also
	// accepts clients' certificates of another CA. Nil: every caller
	// ServerTLS accepts may act as a peer.
	PeerCAs *x509.CertPool
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
	// StreamCache bounds the stream metadata (last version, state) the node's shards keep in
	// memory for appends, in streams, node-wide: each shard may cache StreamCache divided by
	// the cluster's shard count (at least minShardStreamCache), since a node may hold a
	// replica of every shard. An append to a stream not cached reads its metadata from
	// Pebble. Default DefaultStreamCache; negative is refused.
	StreamCache int
	// MaxSubscriptions bounds the subscriptions (ReadRequest.follow, ReadShardRequest.follow)
	// the node holds at once: those its replicas serve, and those it relays to a shard's
	// leader for its clients (one relayed to it by another node counts here too). One
	// beyond it is refused with RESOURCE_EXHAUSTED naming the limit, before it costs
	// anything; clients retry it after a backoff. Without a bound, one client could open
	// subscriptions until the node runs out of memory. Default DefaultMaxSubscriptions;
	// negative is refused.
	MaxSubscriptions int
	// MaxLongPolls bounds the long polls (ReadShardRequest.wait_ms without follow) the node
	// holds at once, served by its replicas or relayed to a shard's leader, as
	// MaxSubscriptions bounds subscriptions (the two are counted apart: a node full of
	// subscriptions still answers projections' long polls). One beyond it is refused with
	// RESOURCE_EXHAUSTED naming the limit, before it costs anything; clients retry it after a
	// backoff. Default DefaultMaxLongPolls; negative is refused.
	MaxLongPolls int
	// MaxReads bounds the reads the node holds at once that neither follow nor wait (Read
	// and ReadShard without follow or wait_ms, ListStreams), served by its replicas or
	// relayed, apart from subscriptions and long polls: each holds a page while its client
	// takes it. One beyond it is refused with RESOURCE_EXHAUSTED naming the limit, before it
	// reads anything; clients retry it after a backoff. Default DefaultMaxReads; negative is
	// refused.
	MaxReads int
	// MaxAppendPipelines bounds the AppendPipeline streams the node holds open at once. One
	// beyond it is refused with RESOURCE_EXHAUSTED naming the limit before it reads an item,
	// so nothing it carried is written; the Go client then appends to the node with unary
	// calls for a while. Default DefaultMaxAppendPipelines; negative is refused.
	MaxAppendPipelines int
	// MaxAppendBytes bounds the bytes of the appends (their requests' encoded size) the node
	// holds at once, unary or from append streams, while they wait for their shard's leader,
	// their proposal's commit or a forward's answer: the other limits count calls, and an
	// append stream alone may hold 4,096 appends of up to 16 MiB each. One beyond it is
	// refused with RESOURCE_EXHAUSTED naming the limit, before it is routed, so it writes
	// nothing; clients retry it after a backoff. One larger than the limit is taken when the
	// node holds no other. Default DefaultMaxAppendBytes.
	MaxAppendBytes uint64
	// MaxSyncDuration is how long a write or sync of Pebble's files may hang
	// before the node gives up on its disk and calls OnDiskStall. A node whose
	// disk hangs keeps its replicas and its place in gossip while serving
	// nothing. Hangs are checked every 2 s, so the call comes up to 2 s after.
	// Default DefaultMaxSyncDuration (20s), at least MinMaxSyncDuration;
	// negative: never.
	MaxSyncDuration time.Duration
	// Tick is the clock of failure detection (default DefaultTick, 50ms; MinTick to MaxTick):
	// raft heartbeats every 2 ticks and a shard elects another leader after 10 to 20 ticks
	// without one; gossip probes a member every 10 ticks and waits 5 for its answer. Raise it
	// where the zones are far apart, to about the round trip between the farthest: with the
	// default, a round trip much past 50 ms or lossy links make leaders step down and gossip
	// suspect live members. Give every node the same.
	Tick time.Duration
	// SlowSync: a node whose write-ahead log syncs take longer than this on average over 10 s,
	// and 4 times as long as the fastest other live member's, counts its disk as slow, as it
	// does while a write or sync hangs for 5 s: it hands its leaderships to voters on healthy
	// disks and is given none, until it kept within bounds for 30 s (diskspeed.go). Default
	// DefaultSlowSync; negative: only a hang counts.
	SlowSync time.Duration
	// WALCommitDelay, when positive, holds each WAL sync back until that long after the last
	// while the node is busy (its last synced write carried replica.CommitSiblings raft
	// entries or more), so that one fdatasync covers the writes of more callers, as
	// PostgreSQL's commit_delay does: less CPU per write where CPUs are short (several nodes
	// on one machine), more latency per write, and nothing acknowledged before its sync.
	// Default 0 (none); at most MaxWALCommitDelay. See docs/operations.md, "Starting a single node".
	WALCommitDelay time.Duration
	// MaxSnapshotBytes bounds the records of the raft snapshots this node receives at once,
	// written to DataDir/snapshots until Pebble ingests them (default
	// replica.DefaultMaxSnapshotBytes, 256 GiB). SnapshotMinFreeBytes is the free space a
	// receive leaves on that disk (default replica.DefaultSnapshotMinFreeBytes, 1 GiB). A
	// receive past either stops and removes its files; the leader sends the snapshot again
	// later. See replica.Config.
	MaxSnapshotBytes     uint64
	SnapshotMinFreeBytes uint64
	// MaxSnapshotSends bounds the raft snapshots this node sends at once, at most one per
	// destination (default transport.DefaultMaxSnapshotSends, 2); SnapshotRate bounds their
	// compressed bytes per second, all together (0: no bound; otherwise at least
	// transport.MinSnapshotRate per send). Copying whole shards (a node replaced, the
	// replication factor raised) otherwise takes what CPU, disk and network it can from the
	// writes. See docs/operations.md, "Losing a node".
	MaxSnapshotSends int
	SnapshotRate     uint64
	// MinFreeDisk is the free space the node keeps on its data directory's disk (default
	// DefaultMinFreeDisk, 1 GiB; the server's flag takes 1 MiB at least): below it the node says
	// so in gossip, and the leader of a shard a majority of whose voters say so refuses appends
	// (RESOURCE_EXHAUSTED, reason DISK_LOW), while reads, deletes and truncations go on, so that
	// the disks do not fill, which would end the nodes (the same data on every replica: all of
	// them at once). It passes once the disk has MinFreeDisk free again and a tenth more (at
	// least 64 MiB). The free space counted leaves out what Pebble's write-ahead log may still
	// take (up to 704 MB with the default memtables). Snapshots received leave all of that too
	// (SnapshotMinFreeBytes is raised to it). See diskroom.go.
	MinFreeDisk uint64
	// BackupDir is where Backup writes this node's backups, one directory each (default
	// DataDir/backups: on the data's disk, where the store's tables are hard-linked rather
	// than copied; copy a backup elsewhere to keep it from that disk's loss).
	BackupDir string
	// Restore confirms a start on a restored backup (a data directory holding backup.json,
	// which the start then removes); without it such a start is refused. Ignored for other
	// directories. Without NewCluster, Start then waits, the shards closed, until every voter
	// peer of the shards held as a voter shows the cluster did not go on after the backup, and
	// returns ErrRestoreUnsafe when one shows it did (restorehold.go).
	Restore bool
	// NewCluster starts this node as the only member of a new cluster (a new cluster ID),
	// every shard led here with the state this node applied: the recovery of a cluster whose
	// other members are lost, or from one node's backup (with Restore). Every shard must have
	// a replica in DataDir; the old cluster's other nodes must never start again with their
	// data. Not with Join: join new nodes to this one afterwards. Set it for one start only.
	NewCluster bool
	// OnDiskStall is called once, on its own goroutine, when a disk operation
	// has lasted MaxSyncDuration. Nil: log the stall and end the process with
	// status ExitDiskStall, so that the cluster treats the node as crashed.
	OnDiskStall func(DiskStall)
	// fs, if set, is the file system under Pebble (tests inject faults).
	fs vfs.FS
	// diskSlowAfter, if set, replaces diskSlowThreshold (tests).
	diskSlowAfter time.Duration
	// readViewHold, if set, replaces readViewHold (tests).
	readViewHold time.Duration
	// memTableSize, if set, replaces Pebble's memtable size (tests: a write stall sooner).
	memTableSize uint64
	// Registry receives every metric of the node (node, replica, transport,
	// Pebble, Go runtime, process) and is served on /metrics. Nil: a fresh
	// registry owned by the node. Close (and a failed Start) takes the node's
	// metrics off it again, so a node can be started again on the same registry.
	Registry *prometheus.Registry
}

// DefaultConfig returns the defaults of DESIGN.md §7. Its Shards and
// Replication are checked against an existing cluster's (see Config.Shards);
// a CLI that wants "whatever the cluster has" sets them to 0.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		DataDir:     DefaultDataDir,
		Listen:      DefaultListen,
		HTTP:        DefaultHTTP,
		Gossip:      DefaultGossip,
		Name:        host,
		Shards:      DefaultShards,
		Replication: DefaultReplication,
		DeadAfter:   DefaultDeadAfter,
		JoinTimeout: DefaultJoinTimeout,

		MaxSyncDuration: DefaultMaxSyncDuration,
		SlowSync:        DefaultSlowSync,
		Tick:            DefaultTick,
	}
}

// withDefaults returns c with zero fields set to their defaults (except Name,
// Shards and Replication, resolved against the data directory).
func (c Config) withDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.BackupDir == "" {
		c.BackupDir = filepath.Join(c.DataDir, "backups")
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.HTTP == "" && !c.DisableHTTP {
		c.HTTP = DefaultHTTP
	}
	if c.Gossip == "" {
		c.Gossip = DefaultGossip
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = DefaultDeadAfter
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = DefaultJoinTimeout
	}
	if c.MaxSyncDuration == 0 {
		c.MaxSyncDuration = DefaultMaxSyncDuration
	}
	if c.SlowSync == 0 {
		c.SlowSync = DefaultSlowSync
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	if c.StreamCache == 0 {
		c.StreamCache = DefaultStreamCache
	}
	if c.MaxSubscriptions == 0 {
		c.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if c.MaxLongPolls == 0 {
		c.MaxLongPolls = DefaultMaxLongPolls
	}
	if c.MaxReads == 0 {
		c.MaxReads = DefaultMaxReads
	}
	if c.MaxAppendPipelines == 0 {
		c.MaxAppendPipelines = DefaultMaxAppendPipelines
	}
	if c.MinFreeDisk == 0 {
		c.MinFreeDisk = DefaultMinFreeDisk
	}
	if c.MaxAppendBytes == 0 {
		c.MaxAppendBytes = DefaultMaxAppendBytes
	}
	if c.readViewHold == 0 {
		c.readViewHold = readViewHold
	}
	if c.diskSlowAfter == 0 {
		c.diskSlowAfter = diskSlowThreshold
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// createdShards is the shard count of a cluster this node creates: Shards, or DefaultShards.
func (c Config) createdShards() uint32 {
	if c.Shards != 0 {
		return uint32(c.Shards)
	}
	return DefaultShards
}

// distinctListeners reports two of the addresses this node listens on (Listen, HTTP, Gossip;
// gossip takes its port over TCP too) that would take one TCP port: the second listener would
// fail at start with a bare "address already in use". Port 0 picks a free port each time.
func (c Config) distinctListeners() error {
	type listener struct {
		field, addr, host string
		port              int
	}
	var ls []listener
	for _, l := range []listener{{field: "Listen", addr: c.Listen}, {field: "Gossip", addr: c.Gossip}, {field: "HTTP", addr: c.HTTP}} {
		if l.field == "HTTP" && c.DisableHTTP {
			continue
		}
		host, port, _ := net.SplitHostPort(l.addr) // checked by Validate before
		l.host = host
		l.port, _ = net.LookupPort("tcp", port)
		ls = append(ls, l)
	}
	anyHost := func(h string) bool { return h == "" || net.ParseIP(h).IsUnspecified() }
	for i, a := range ls {
		for _, b := range ls[i+1:] {
			if a.port == 0 || a.port != b.port || a.host != b.host && !anyHost(a.host) && !anyHost(b.host) {
				continue
			}
			return fmt.Errorf("node: config: %s %q and %s %q take the same TCP port: each needs a port of its own", a.field, a.addr, b.field, b.addr)
		}
	}
	return nil
}

// Validate reports the first invalid field of c (after defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	addr := func(field, v string) error {
		_, port, err := net.SplitHostPort(v)
		if err != nil {
			return fmt.Errorf("node: config: %s %q is not host:port: %w", field, v, err)
		}
		if _, err := net.LookupPort("tcp", port); err != nil {
			return fmt.Errorf("node: config: %s %q: the port must be 0..65535: %w", field, v, err)
		}
		return nil
	}
	if err := addr("Listen", c.Listen); err != nil {
		return err
	}
	// An advertised address is dialed by others: an all-interfaces host (0.0.0.0, ::, none)
	// would send them to their own machine.
	advertised := func(field, v string) error {
		if err := addr(field, v); err != nil {
			return err
		}
		host, port, _ := net.SplitHostPort(v)
		if host == "" || net.ParseIP(host).IsUnspecified() {
			return fmt.Errorf("node: config: %s %q is an all-interfaces address, which peers and clients cannot dial: "+
				"give this node's host name or IP address", field, v)
		}
		// Port 0 picks a free port to listen on; as an address to dial it reaches nothing.
		if p, err := net.LookupPort("tcp", port); err != nil || p == 0 {
			return fmt.Errorf("node: config: %s %q: the port must be 1..65535 (port 0, which picks a free port to listen on, "+
				"is no port peers and clients can dial)", field, v)
		}
		return nil
	}
	if c.Advertise != "" {
		if err := advertised("Advertise", c.Advertise); err != nil {
			return err
		}
	}
	if !c.DisableHTTP {
		if err := addr("HTTP", c.HTTP); err != nil {
			return err
		}
	}
	if err := addr("Gossip", c.Gossip); err != nil {
		return err
	}
	if c.GossipAdvertise != "" {
		if err := advertised("GossipAdvertise", c.GossipAdvertise); err != nil {
			return err
		}
	}
	if err := c.distinctListeners(); err != nil {
		return err
	}
	for _, j := range c.Join {
		if j == "" {
			return errors.New("node: config: Join has an empty address")
		}
		// A seed without a port is dialed at this node's gossip port (memberlist's rule);
		// one with a port must have a valid one, or the join would fail only once tried.
		// memberlist parses the port as a decimal number: no service name, not empty.
		if _, port, err := net.SplitHostPort(j); err == nil {
			if p, perr := strconv.ParseUint(port, 10, 16); perr != nil || p == 0 {
				return fmt.Errorf("node: config: Join %q: the port must be 1..65535", j)
			}
		}
	}
	if c.StreamCache < 0 {
		return fmt.Errorf("node: config: StreamCache %d is negative (streams cached node-wide; 0 for the default %d)",
			c.StreamCache, DefaultStreamCache)
	}
	if c.MaxSubscriptions < 0 {
		return fmt.Errorf("node: config: MaxSubscriptions %d is negative (subscriptions held at once; 0 for the default %d)",
			c.MaxSubscriptions, DefaultMaxSubscriptions)
	}
	if c.MaxLongPolls < 0 {
		return fmt.Errorf("node: config: MaxLongPolls %d is negative (long polls held at once; 0 for the default %d)",
			c.MaxLongPolls, DefaultMaxLongPolls)
	}
	if c.MaxSnapshotSends < 0 {
		return fmt.Errorf("node: config: MaxSnapshotSends %d is negative (snapshots sent at once; 0 for the default %d)",
			c.MaxSnapshotSends, transport.DefaultMaxSnapshotSends)
	}
	if least := transport.LeastSnapshotRate(c.MaxSnapshotSends); c.SnapshotRate != 0 && c.SnapshotRate < least {
		return fmt.Errorf("node: config: SnapshotRate (--snapshot-rate) %s/s is below the least for %d snapshots sent at once (--max-snapshot-sends): %s/s, %s/s each; 0 for no bound",
			humanize.IBytes(c.SnapshotRate), cmp.Or(c.MaxSnapshotSends, transport.DefaultMaxSnapshotSends),
			humanize.IBytes(least), humanize.IBytes(transport.MinSnapshotRate))
	}
	if c.MaxReads < 0 {
		return fmt.Errorf("node: config: MaxReads %d is negative (reads held at once; 0 for the default %d)",
			c.MaxReads, DefaultMaxReads)
	}
	if c.MaxAppendPipelines < 0 {
		return fmt.Errorf("node: config: MaxAppendPipelines %d is negative (append pipelines held at once; 0 for the default %d)",
			c.MaxAppendPipelines, DefaultMaxAppendPipelines)
	}
	if c.Shards < 0 || c.Shards > MaxShards {
		return fmt.Errorf("node: config: Shards %d out of range 1..%d", c.Shards, MaxShards)
	}
	if c.Replication < 0 || c.Replication > MaxReplication {
		return fmt.Errorf("node: config: Replication %d out of range 1..%d", c.Replication, MaxReplication)
	}
	if c.RetentionInterval > 0 && c.RetentionInterval < MinRetentionInterval {
		return fmt.Errorf("node: config: RetentionInterval %v is below %v (negative disables the retention loop)", c.RetentionInterval, MinRetentionInterval)
	}
	if c.DeadAfter < 0 {
		return fmt.Errorf("node: config: DeadAfter %v is negative", c.DeadAfter)
	}
	if c.Tick != 0 && (c.Tick < MinTick || c.Tick > MaxTick) {
		return fmt.Errorf("node: config: Tick %v out of range %v..%v", c.Tick, MinTick, MaxTick)
	}
	if c.WALCommitDelay < 0 || c.WALCommitDelay > MaxWALCommitDelay {
		return fmt.Errorf("node: config: WALCommitDelay %v out of range 0..%v", c.WALCommitDelay, MaxWALCommitDelay)
	}
	if c.JoinTimeout < 0 {
		return fmt.Errorf("node: config: JoinTimeout %v is negative", c.JoinTimeout)
	}
	if c.MaxSyncDuration > 0 && c.MaxSyncDuration < MinMaxSyncDuration {
		return fmt.Errorf("node: config: MaxSyncDuration %v is below the minimum of %v (negative disables it)", c.MaxSyncDuration, MinMaxSyncDuration)
	}
	if (c.ServerTLS == nil) != (c.PeerTLS == nil) {
		return errors.New("node: config: ServerTLS and PeerTLS go together: set both or neither " +
			"(the peers of a node that serves TLS serve TLS too)")
	}
	if c.ServerTLS != nil && c.ServerTLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return fmt.Errorf("node: config: ServerTLS.ClientAuth is %v, must be RequireAndVerifyClientCert "+
			"(peers are authenticated by their certificates)", c.ServerTLS.ClientAuth)
	}
	switch c.Pprof {
	case "", PprofLoopback, PprofOn, PprofOff:
	default:
		return fmt.Errorf("node: config: Pprof %q: want %q, %q or %q", c.Pprof, PprofLoopback, PprofOn, PprofOff)
	}
	if c.ConsoleData && c.DisableHTTP {
		return errors.New("node: config: ConsoleData needs the HTTP port, which is disabled (DisableHTTP; --http off)")
	}
	if c.ConsoleData && c.ServerTLS != nil {
		return errors.New("node: config: ConsoleData with ServerTLS: the console would show events on the HTTP port, " +
			"which authenticates no one, to callers the gRPC port refuses without a certificate")
	}
	if c.PeerCAs != nil && c.ServerTLS == nil {
		return errors.New("node: config: PeerCAs needs ServerTLS")
	}
	switch len(c.GossipKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("node: config: GossipKey must be 16, 24 or 32 bytes, got %d", len(c.GossipKey))
	}
	// Gossip metadata carries the name, the zone and the advertised address, and peers (the
	// node itself included, as it starts) refuse metadata that is not UTF-8.
	for _, f := range []struct{ field, v string }{{"Name", c.Name}, {"Zone", c.Zone}, {"Advertise", c.Advertise}} {
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("node: config: %s %q is not valid UTF-8 (it travels in gossip metadata, which must be)", f.field, f.v)
		}
	}
	if len(c.Name) > MaxNameLen {
		return fmt.Errorf("node: config: Name is %d bytes, longer than the limit of %d", len(c.Name), MaxNameLen)
	}
	if len(c.Zone) > MaxZoneLen {
		return fmt.Errorf("node: config: Zone is %d bytes, longer than the limit of %d", len(c.Zone), MaxZoneLen)
	}
	if err := c.metaFits(); err != nil {
		return err
	}
	// Zones compare byte for byte: "z1 " is another zone than "z1", and a node alone in a zone
	// gets a replica of every shard (zone diversity beats balance). A space inside a name
	// ("us east") is allowed, as earlier versions did. Names compare byte for byte too: 'shoal
	// node decommission n1' finds no node "n1 ", and a tab or a newline breaks the tables of
	// 'shoal cluster status' and the log lines.
	if err := checkLabel("Zone", c.Zone, "a zone name is compared byte for byte, so a stray one makes a zone of its own"); err != nil {
		return err
	}
	if err := checkLabel("Name", c.Name, "a node name is compared byte for byte ('shoal node decommission' finds the node by it)"); err != nil {
		return err
	}
	return nil
}

// checkLabel refuses a name (field Name or Zone) that begins or ends with a space, saying why
// that matters, or that holds a control character.
func checkLabel(field, v, why string) error {
	if strings.TrimSpace(v) != v {
		return fmt.Errorf("node: config: %s %q begins or ends with a space: %s", field, v, why)
	}
	if i := strings.IndexFunc(v, unicode.IsControl); i >= 0 {
		return fmt.Errorf("node: config: %s %q has a control character at byte %d", field, v, i)
	}
	return nil
}

// MaxNameLen and MaxZoneLen bound Config.Name and Config.Zone: both travel in every gossip
// message about the node, whose metadata memberlist limits to 512 bytes.
const (
	MaxNameLen = 128
	MaxZoneLen = 64
)

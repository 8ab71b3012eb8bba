package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/internal/loglimit"
	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/replica/transport"
	"github.com/shoaldb/shoal/shard"
)

// Errors returned by Start (besides ErrDataDirLocked and ErrDataDirMismatch).
var (
	// ErrJoinTimeout: a joining node reached no seed, or did not learn the
	// cluster's settings from any live member, within Config.JoinTimeout.
	ErrJoinTimeout = errors.New("node: timed out joining the cluster")
	// ErrJoinSelf: a new node's seeds (Config.Join) answered, and every one was this node
	// itself: no seed can tell it the cluster's settings.
	ErrJoinSelf = errors.New("node: --join names only this node")
	// ErrClosed is returned by hooks called after Close.
	ErrClosed = errors.New("node: closed")
)

// Node is one running server process. Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	log     *slog.Logger
	dir     *dataDir
	db      *pebble.DB
	tr      *transport.Transport
	host    *replica.Host
	ml      atomic.Pointer[membership.Membership] // set once gossip started
	reg     *prometheus.Registry                  // gathered on /metrics
	regs    *registrations                        // what the node registered on reg, taken off by Close
	metrics *metrics
	fs      vfs.FS // the data directory's file system
	// internalErrors limits the "internal error" lines of requests to one a second per shard:
	// a failing disk fails every request.
	internalErrors loglimit.Keyed[uint32]
	// shardMetrics are the state machines' (shoal_shard_*), shared by the shards.
	shardMetrics *shard.Metrics
	disk         *diskWatch
	peers        *peerPool
	leaders      *leaderCache

	grpcSrv  *grpc.Server
	grpcLis  net.Listener
	httpSrv  *http.Server
	httpLis  net.Listener
	addr     string // advertised gRPC address
	httpAddr string
	done     chan struct{} // closed by Close
	streams  *streamsServer
	limits   *limits   // the calls held against Config.MaxSubscriptions and the like
	calls    callCount // the calls in flight but peers' raft streams, which Close lets end (drain.go)
	// Clients' topology requests share their gathers of the members' views, and status
	// requests theirs (sharedGathers).
	gathers, statusGathers sharedGathers

	settings  atomic.Pointer[Settings] // nil until known
	started   atomic.Bool              // Start finished
	stopping  atomic.Bool              // HandOffLeaders began a planned stop
	members   atomic.Pointer[[]membership.Member]
	known     atomic.Pointer[[]knownMember] // other members seen, current first (members.json; rememberMembers)
	restore   restoreState                  // a start on a restored backup (restorehold.go)
	membersMu sync.Mutex                    // refreshMembers: a list read and stored in one step

	placer   atomic.Pointer[placer]   // the placement loop, nil when not running
	retainer atomic.Pointer[retainer] // the retention loop, nil when not running

	decomMu sync.Mutex // serializes Decommission and Recommission (flag file, then gossip)
	replMu  sync.Mutex // serializes changes of the replication factor (cluster.json, then settings and gossip)
	// setReplMu serializes SetReplication, whose gossip syncs run before it takes replMu.
	setReplMu sync.Mutex
	// backupMu is held by a backup's checkpoint (stageBackup), and Close takes it to set
	// backupClosed before Pebble closes, so that no checkpoint runs on a closed store.
	// backupOne serializes backups (Backup), for the whole of each.
	backupMu     sync.Mutex
	backupClosed bool
	backupOne    sync.Mutex
	peersMu      sync.Mutex // guards savedPeers and peers.json
	savedPeers   []string   // the live peers' gossip addresses last stored
	closeOnce    sync.Once
	gossipLoops  sync.WaitGroup // rejoinLoop and islandLoop, waited for by Close
	room         diskRoom       // the data directory's free space, and the members short of it (diskroom.go)
	speed        diskSpeed      // the write-ahead log's syncs, timed (diskspeed.go)
	closeErr     error

	mu struct {
		sync.Mutex
		shards map[uint32]*shard.Shard // state machines of the local groups
	}
}

// Start opens the data directory, starts gossip, raft, gRPC and HTTP, creates
// or joins the cluster, and returns once the node serves. ctx bounds the
// start-up (the wait for a cluster to join among it); the node's lifetime
// ends with Close.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	hostname, _ := os.Hostname()
	if hostname == "" {
		hostname = "shoal"
	}
	dir, err := openDataDir(cfg.DataDir, cfg.Name, hostname)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, dir: dir, done: make(chan struct{})}
	n.internalErrors.Every = time.Second
	n.mu.shards = map[uint32]*shard.Shard{}
	n.log = cfg.Logger.With("node", dir.id.Name, "node_id", dir.id.NodeID)
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	// Only names for status: a members.json that cannot be read is started over.
	if known, kerr := dir.knownMembers(); kerr != nil {
		n.log.Warn("cannot read the members last seen; starting over", "err", kerr)
	} else {
		n.known.Store(&known)
	}
	stored, haveSettings, err := dir.settings()
	if err != nil {
		return nil, err
	}
	if haveSettings {
		if err := n.acceptSettings(stored); err != nil {
			return nil, err
		}
		n.settings.Store(&stored)
	}
	restoring, err := dir.checkRestore(cfg.Restore)
	if err != nil {
		dir.dropCreatedLock() // a refusal leaves the backup as it found it
		return nil, err
	}
	if cfg.ServerTLS != nil && len(cfg.GossipKey) == 0 {
		// TLS keeps strangers off the gRPC port, but gossip without a key admits any member:
		// its metadata moves replicas (addresses, decommissioning) and the replication factor.
		n.log.Warn("gRPC uses TLS but gossip is not encrypted (no --gossip-key-file): anyone who reaches the gossip port "+
			"can join gossip and move replicas with forged member data; give every node the same gossip key",
			"gossip", cfg.Gossip)
	}
	if cfg.Restore && restoring == nil {
		// The flag left in a unit file would let a backup copied here later start unasked.
		n.log.Warn("--restore given, but the data directory holds no backup (no "+backupManifestFile+"): started as usual; "+
			"give the flag for the start on a backup only", "data", cfg.DataDir)
	}

	var popts *pebble.Options
	n.disk = newDiskWatch(n.log, cfg.MaxSyncDuration, cfg.OnDiskStall)
	fs := n.disk.wrap(cfg.fs, cfg.diskSlowAfter) // Pebble's files, snapshots being received, the directory's files
	n.fs = fs
	dir.files = fs
	stateFile, mustExist := dir.raftStateFile()
	// Watched from before the open: opening flushes what the WAL replays, and Pebble retries a
	// failing flush at once, for good (a full disk left the open spinning on a core, deaf to
	// SIGTERM).
	n.disk.watchFlushes(dir.pebblePath())
	var delay *replica.CommitDelay
	if cfg.WALCommitDelay > 0 {
		delay = replica.NewCommitDelay(cfg.WALCommitDelay, replica.CommitSiblings)
	}
	mode := pebbleCreate
	if mustExist {
		mode = pebbleMustExist
	}
	if n.db, popts, err = openPebble(dir.pebblePath(), n.log, fs, mode, n.disk, cfg.memTableSize, delay); err != nil {
		if errors.Is(err, pebble.ErrDBDoesNotExist) {
			err = dir.lostRaftState(stateFile, "an empty "+pebbleDir+" directory (a volume not mounted, or wiped?)")
		} else if errors.Is(err, os.ErrNotExist) {
			// The manifest names a file that is not there: one deleted by hand, or a damaged
			// manifest that made Pebble remove tables it still needed.
			err = fmt.Errorf("%w: %w", errMissingFile, err)
		}
		return nil, corruptStart(cfg.DataDir, err)
	}
	n.room.walReserve = walReserve(popts)
	snapDir, err := dir.resetSnapshots()
	if err != nil {
		return nil, err
	}
	if err := dir.sweepBackups(cfg.BackupDir, dir.id.NodeID); err != nil {
		n.log.Warn("backups this node left unfinished were not removed", "err", err)
	}
	n.reg = cfg.Registry
	if n.reg == nil {
		n.reg = prometheus.NewRegistry()
	}
	n.regs = &registrations{reg: n.reg}
	n.regs.registerShared(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.regs.MustRegister(newPebbleCollector(n.db), n.disk.slow, n.disk.stallSeconds)
	n.metrics = newMetrics(n.regs)
	n.limits = newLimits(&cfg, n.metrics)
	if n.shardMetrics, err = shard.NewMetrics(n.regs); err != nil {
		return nil, fmt.Errorf("node: registering metrics on Config.Registry: %w", err)
	}
	if cfg.NewCluster {
		if err := n.becomeNewCluster(); err != nil {
			return nil, err
		}
	}
	if restoring != nil && cfg.NewCluster {
		if err := dir.finishRestore(restoring, n.log); err != nil {
			return nil, err
		}
	} else if err := n.loadRestoreRecord(); err != nil {
		return nil, err
	}
	if restoring != nil && !cfg.NewCluster {
		if err := n.beginRestoreHold(); err != nil {
			return nil, err
		}
	}
	peerOpts := grpcopt.PeerDialOptions()
	if cfg.PeerTLS != nil {
		peerOpts = append(peerOpts, grpc.WithTransportCredentials(credentials.NewTLS(cfg.PeerTLS.Clone())))
	}
	if cfg.PeerDialer != nil {
		peerOpts = append(peerOpts, grpc.WithContextDialer(cfg.PeerDialer))
	}
	n.peers = newPeerPool(append(slices.Clone(peerOpts),
		grpc.WithInitialWindowSize(relayStreamWindow), grpc.WithInitialConnWindowSize(relayConnWindow)))
	n.leaders = newLeaderCache()

	if n.grpcLis, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("node: listening for gRPC on %s: %w", cfg.Listen, err)
	}
	n.addr = advertised(cfg.Advertise, n.grpcLis.Addr())
	if tcp, ok := n.grpcLis.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() && cfg.Advertise == "" {
		n.log.Warn("gRPC listens on all interfaces but no Advertise address is set; peers are told "+n.addr,
			"listen", cfg.Listen)
	}

	n.tr = transport.New(transport.Config{
		NodeID:      dir.id.NodeID,
		ClusterID:   n.clusterID,
		Resolve:     n.resolve,
		DialOptions: peerOpts,
		ProbeDial:   cfg.PeerDialer,
		Logger:      n.log,
		Registerer:  n.regs,

		MaxSnapshotSends: cfg.MaxSnapshotSends,
		SnapshotRate:     cfg.SnapshotRate,
	})
	n.host, err = replica.NewHost(replica.Config{
		NodeID:      dir.id.NodeID,
		DB:          n.db,
		FS:          fs,
		SnapshotDir: snapDir,
		// Snapshots are ingested into the last level when their span is clear.
		SnapshotTables:   popts.MakeWriterOptions(len(popts.Levels)-1, n.db.TableFormat()),
		Transport:        n.tr,
		Logger:           cfg.Logger.With("node", dir.id.Name), // the host adds node_id
		Registerer:       n.regs,
		LogRetainEntries: cfg.RaftLogRetainEntries,
		TickInterval:     cfg.Tick,
		CommitDelay:      delay,
		MaxSnapshotBytes: cfg.MaxSnapshotBytes,
		// A snapshot received leaves the disk room to take appends (diskroom.go).
		SnapshotMinFreeBytes: max(cfg.SnapshotMinFreeBytes, diskRoomResume(cfg.MinFreeDisk)+n.room.walReserve),
		OnStorageFailure:     storageFailure(n.log),
	})
	if err != nil {
		return nil, fmt.Errorf("node: starting raft host: %w", err)
	}
	// Registered once the host it reads is set: the embedder's registry (Config.Registry)
	// may be gathered at any time, also while Start runs.
	n.regs.MustRegister(newShardCollector(n, n.host))
	if err := n.regs.err(); err != nil {
		return nil, fmt.Errorf("node: registering metrics on Config.Registry: %w", err)
	}
	n.tr.SetHandler(raftReceiver{Host: n.host, n: n})
	n.host.SetGroupFactory(n.groupFactory)

	srvOpts := append(append(grpcopt.ServerOptions(), grpcopt.ServerWindows(cfg.Tick)...), grpc.ForceServerCodecV2(newServerCodec()),
		grpc.ChainUnaryInterceptor(refuseBadUTF8Unary, n.gateUnary), grpc.ChainStreamInterceptor(refuseBadUTF8Stream, n.gateStream))
	if cfg.ServerTLS != nil {
		srvOpts = append(srvOpts, grpc.Creds(credentials.NewTLS(cfg.ServerTLS.Clone())))
	}
	n.grpcSrv = grpc.NewServer(srvOpts...)
	n.streams = &streamsServer{n: n}
	shoalv1.RegisterStreamsServer(n.grpcSrv, n.streams)
	shoalv1.RegisterClusterServer(n.grpcSrv, &clusterServer{n: n})
	n.tr.Register(n.grpcSrv)
	go n.grpcSrv.Serve(n.grpcLis)

	// HTTP serves from here on: /healthz answers, /readyz explains what is
	// still missing while the node joins.
	if !cfg.DisableHTTP {
		if n.httpLis, err = net.Listen("tcp", cfg.HTTP); err != nil {
			return nil, fmt.Errorf("node: listening for HTTP on %s: %w", cfg.HTTP, err)
		}
		n.httpAddr = advertised("", n.httpLis.Addr())
		if tcp, ok := n.httpLis.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() && cfg.Advertise != "" {
			host, _, _ := net.SplitHostPort(cfg.Advertise)
			n.httpAddr = net.JoinHostPort(host, fmt.Sprint(tcp.Port))
		}
		n.httpSrv = &http.Server{Handler: n.httpHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		go n.httpSrv.Serve(n.httpLis)
	}

	if !haveSettings && len(cfg.Join) > 0 {
		// Groups without the cluster file: this node stopped while creating a cluster of
		// its own. Joining another would reopen those one-voter groups beside the
		// cluster's, each with a history of its own.
		if shards, err := n.dir.groups(); err != nil {
			return nil, err
		} else if len(shards) > 0 {
			return nil, conflictf("%s holds the shard groups of a cluster this node was creating when it stopped "+
				"(no cluster.json): start it without --join to finish creating that cluster, or move the directory away to join %v",
				cfg.DataDir, cfg.Join)
		}
	}
	if err := n.startGossip(ctx, haveSettings); err != nil {
		return nil, err
	}
	if !haveSettings {
		if err := n.establishCluster(ctx); err != nil {
			return nil, err
		}
	}
	if restoring != nil && !cfg.NewCluster {
		if err := n.holdForRestore(ctx, restoring); err != nil {
			return nil, err
		}
	}
	if err := n.reopenGroups(); err != nil {
		return nil, err
	}

	n.started.Store(true)
	n.startDiskRoom()
	n.startDiskSpeed()
	n.startPlacement()
	n.startRetention()
	s := n.settings.Load()
	n.log.Info("node started", "grpc", n.addr, "http", n.httpAddr, "cluster", s.ClusterID,
		"shards", s.Shards, "replication", s.Replication, "groups", len(n.host.Groups()))
	return n, nil
}

// advertised picks the address peers should dial: the configured one, or the
// listener's with an unspecified host replaced by loopback.
func advertised(adv string, a net.Addr) string {
	if adv != "" {
		return adv
	}
	tcp, ok := a.(*net.TCPAddr)
	if ok && tcp.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", fmt.Sprint(tcp.Port))
	}
	return a.String()
}

// establishCluster creates a new cluster (no --join) or learns the cluster's
// settings from gossip (--join), and persists them.
func (n *Node) establishCluster(ctx context.Context) error {
	var s Settings
	if len(n.cfg.Join) == 0 {
		s = Settings{ClusterID: newClusterID(), Shards: n.cfg.createdShards(), Replication: DefaultReplication}
		if n.cfg.Replication != 0 {
			s.Replication = uint32(n.cfg.Replication)
		}
		// Groups first, then the cluster file: a crash in between re-runs
		// the bootstrap, which finds the groups already there.
		self := []uint64{n.dir.id.NodeID}
		shards := make([]uint32, s.Shards)
		for i := range shards {
			shards[i] = uint32(i)
			if err := n.openGroup(uint32(i), self); err != nil {
				return err
			}
		}
		if err := n.dir.saveGroups(shards); err != nil {
			return err
		}
		n.log.Info("created cluster", "cluster", s.ClusterID, "shards", s.Shards, "replication", s.Replication)
	} else {
		var err error
		if s, err = n.waitForCluster(ctx); err != nil {
			return err
		}
		if err := n.acceptSettings(s); err != nil {
			return err
		}
		if err := n.confirmName(); err != nil {
			return err
		}
		n.log.Info("joined cluster", "cluster", s.ClusterID, "shards", s.Shards, "replication", s.Replication)
	}
	n.replMu.Lock() // followReplication, on gossip's changes, reads and writes them too
	defer n.replMu.Unlock()
	if err := n.dir.saveSettings(s); err != nil {
		return err
	}
	n.settings.Store(&s)
	return n.gossip().UpdateMeta(func(m *membership.Meta) {
		m.ClusterID, m.Shards, m.Replication, m.ReplicationEpoch = s.ClusterID, s.Shards, s.Replication, s.ReplicationEpoch
	})
}

// waitForCluster polls gossip until a live member reveals the cluster's
// settings, bounded by ctx and Config.JoinTimeout.
func (n *Node) waitForCluster(ctx context.Context) (Settings, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.JoinTimeout)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		// Every live member that announces settings must announce the same cluster: a node
		// of another cluster that reached this fresh one (its reconnect loop dialling a dead
		// member's address, now this node's) would otherwise be adopted as readily as the
		// seed, and this node join the wrong cluster for good.
		var found *Settings
		clusters := map[string]bool{}
		for _, m := range n.gossip().Members() {
			if m.Alive && m.NodeID != n.dir.id.NodeID && m.ClusterID != "" && m.Shards != 0 && gossipedReplicationValid(m) {
				clusters[m.ClusterID] = true
				s := Settings{ClusterID: m.ClusterID, Shards: m.Shards, Replication: m.Replication, ReplicationEpoch: m.ReplicationEpoch}
				if found == nil || newerReplication(s, *found) { // the latest factor among them
					found = &s
				}
			}
		}
		if len(clusters) > 1 {
			return Settings{}, fmt.Errorf("%w: live members of several clusters (%v) reached this new node; "+
				"start it again with --join naming only its cluster's nodes", membership.ErrClusterMismatch, slices.Sorted(maps.Keys(clusters)))
		}
		if found != nil {
			return *found, nil
		}
		select {
		case <-ctx.Done():
			return Settings{}, fmt.Errorf("%w: no live member of %v announced a cluster ID within %v (is the seed's node running and part of a cluster?): %w",
				ErrJoinTimeout, n.cfg.Join, n.cfg.JoinTimeout, ctx.Err())
		case <-t.C:
		}
	}
}

// confirmName syncs gossip once more with the live members that told this new node the
// cluster's settings, before it adopts them, and fails if one now holds this node's name for
// another node (membership.ErrNameTaken). A join checks the name against the state a seed sends,
// which the seed reads before it merges the joiner's: two new nodes under one name joining
// through a seed at the same moment could each get a state without the other and both pass,
// while the seed kept one of them and ignored the other (memberlist keeps one member per name),
// which ran on unseen by the cluster; or two joining through two seeds, each seed keeping
// its own. By now the seeds have merged both, and this node's syncs show the one they kept.
func (n *Node) confirmName() error {
	var addrs []string
	for _, m := range n.gossip().Members() {
		if m.Alive && m.NodeID != n.dir.id.NodeID && m.Addr != "" && m.ClusterID != "" && len(addrs) < confirmPeers {
			addrs = append(addrs, m.Addr)
		}
	}
	for _, a := range addrs { // one at a time: a join that reaches one member reports no other's refusal
		if _, err := n.gossip().Join([]string{a}); errors.Is(err, membership.ErrNameTaken) {
			return fmt.Errorf("node: starting gossip on %s: %w", n.cfg.Gossip, err)
		}
	}
	return nil
}

// confirmPeers bounds the members confirmName syncs with.
const confirmPeers = 3

// reopenGroups opens the groups recorded in the data directory that are not
// open yet (all of them on a restart).
func (n *Node) reopenGroups() error {
	shards, err := n.dir.groups()
	if err != nil {
		return err
	}
	for _, id := range shards {
		if _, ok := n.host.Group(id); ok {
			continue
		}
		if err := n.openGroup(id, nil); err != nil {
			return err
		}
	}
	return nil
}

// openGroup opens shard id's state machine and raft group.
func (n *Node) openGroup(id uint32, bootstrap []uint64) error {
	sm, err := n.openShard(id)
	if err != nil {
		return err
	}
	if _, err := n.host.OpenGroup(id, sm, bootstrap); err != nil && !errors.Is(err, replica.ErrGroupExists) {
		return fmt.Errorf("node: opening group of shard %d: %w", id, err)
	}
	return nil
}

func (n *Node) openShard(id uint32) (*shard.Shard, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if sm, ok := n.mu.shards[id]; ok {
		return sm, nil
	}
	sm, err := shard.Open(n.db, id, shard.Options{Logger: n.log, Metrics: n.shardMetrics,
		MaxCachedStreams: shardStreamCache(n.cfg.StreamCache, n.clusterShards()), ReclaimNow: &n.room.low})
	if err != nil {
		return nil, corruptStart(n.cfg.DataDir, fmt.Errorf("node: opening shard %d: %w", id, err))
	}
	n.mu.shards[id] = sm
	return sm, nil
}

// A shard is the replica's state machine; the host applies its commands in batches and stops
// the node on a storage failure inside Apply instead of answering it as a verdict.
var (
	_ replica.BatchStateMachine = (*shard.Shard)(nil)
	_ replica.ApplyFailer       = (*shard.Shard)(nil)
)

// groupFactory is the host's GroupFactory: a leader added this node to the
// group of shard id. It records the group so that a restart reopens it.
func (n *Node) groupFactory(id uint32) (replica.StateMachine, error) {
	s := n.settings.Load()
	if s == nil {
		return nil, fmt.Errorf("node: raft traffic for shard %d before the cluster settings are known", id)
	}
	if id >= s.Shards {
		return nil, fmt.Errorf("node: raft traffic for shard %d, but the cluster has %d shards", id, s.Shards)
	}
	if n.restore.hold.Load() != nil {
		return nil, fmt.Errorf("node: raft traffic for shard %d while the restore check holds the shards closed", id)
	}
	start := time.Now()
	sm, err := n.openShard(id)
	if err != nil {
		return nil, err
	}
	opened := time.Now()
	if err := n.recordGroup(id); err != nil {
		return nil, err
	}
	// Both steps hold the replica host's loop, and with it every group of this node.
	n.log.Info("replica added by leader", "shard", id, "open", opened.Sub(start).Round(time.Microsecond),
		"record", time.Since(opened).Round(time.Microsecond))
	return sm, nil
}

func (n *Node) recordGroup(id uint32) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	g, err := n.dir.groups()
	if err != nil {
		return err
	}
	if slices.Contains(g, id) {
		return nil
	}
	return n.dir.saveGroups(append(g, id))
}

// shardSM returns the local state machine of shard id, if this node holds a
// replica of it.
func (n *Node) shardSM(id uint32) (*shard.Shard, *replica.Group, bool) {
	g, ok := n.host.Group(id)
	if !ok {
		return nil, nil, false
	}
	n.mu.Lock()
	sm, ok := n.mu.shards[id]
	n.mu.Unlock()
	return sm, g, ok
}

// shardStreamCache is one shard's share of the node's stream cache (Config.StreamCache).
func shardStreamCache(streams int, shards uint32) int {
	return max(streams/int(max(shards, 1)), minShardStreamCache)
}

// minShardStreamCache is the least a shard caches, whatever Config.StreamCache.
const minShardStreamCache = 256

// clusterShards is the cluster's shard count: its settings', or, while a new cluster's groups
// are created (before its settings are stored), the count it is created with.
func (n *Node) clusterShards() uint32 {
	if s := n.settings.Load(); s != nil {
		return s.Shards
	}
	return n.cfg.createdShards()
}

// gossip returns the membership, nil before it started.
func (n *Node) gossip() *membership.Membership { return n.ml.Load() }

func (n *Node) clusterID() string {
	if s := n.settings.Load(); s != nil {
		return s.ClusterID
	}
	return ""
}

// resolve maps a node ID to its gRPC address, from gossip: an alive member's, where gossip
// holds the ID under two names (a node renamed, a stale entry), else a dead one's.
func (n *Node) resolve(id uint64) (string, bool) {
	if id == n.dir.id.NodeID {
		return n.addr, true
	}
	addr := ""
	for _, m := range n.memberList() {
		if m.NodeID == id && m.GRPCAddr != "" {
			if m.Alive {
				return m.GRPCAddr, true
			}
			if addr == "" {
				addr = m.GRPCAddr
			}
		}
	}
	return addr, addr != ""
}

// Addr returns the advertised gRPC address (the actual port when Listen asked
// for port 0).
func (n *Node) Addr() string { return n.addr }

// HTTPAddr returns the HTTP address, "" when disabled.
func (n *Node) HTTPAddr() string { return n.httpAddr }

// ID returns the node's permanent raft ID.
func (n *Node) ID() uint64 { return n.dir.id.NodeID }

// Name returns the node's name.
func (n *Node) Name() string { return n.dir.id.Name }

// Zone returns the node's zone.
func (n *Node) Zone() string { return n.cfg.Zone }

// DeadAfter returns Config.DeadAfter (placement replaces members dead longer).
func (n *Node) DeadAfter() time.Duration { return n.cfg.DeadAfter }

// Settings returns the cluster's settings (never zero once Start returned).
func (n *Node) Settings() Settings {
	if s := n.settings.Load(); s != nil {
		return *s
	}
	return Settings{}
}

// Members returns every member known to gossip, this node included, dead ones
// too (Alive=false, Changed = when it went dead), sorted by node ID. Members
// that announced another cluster ID are left out, and so are dead ones that
// never announced one (a node refused at join, or one that died joining):
// they are no member of this cluster, and gossip keeps them for good.
func (n *Node) Members() []membership.Member {
	if n.gossip() == nil {
		return nil
	}
	cid := n.clusterID()
	var out []membership.Member
	for _, m := range n.gossip().Members() {
		if m.NodeID != 0 && (m.ClusterID == cid || m.ClusterID == "" && m.Alive) {
			out = append(out, m)
		}
	}
	return out
}

// Host returns the raft host (for placement: Groups, Group, OpenGroup).
func (n *Node) Host() *replica.Host { return n.host }

// Groups returns the local raft groups.
func (n *Node) Groups() []*replica.Group { return n.host.Groups() }

// Logger returns the node's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// Done is closed when Close starts.
func (n *Node) Done() <-chan struct{} { return n.done }

// Close stops the node gracefully: it stops accepting requests, leaves
// gossip, stops raft, closes Pebble and releases the data directory. It is
// idempotent; later calls return the first call's result.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	close(n.done)
	// The placement loop's round ends at once, unless it waits on a raft loop stuck behind a
	// hung disk: the node then leaves gossip and stops serving first, and waits for the round
	// once the host is closed (its calls then end), before the shards and Pebble close.
	pctx, cancel := context.WithTimeout(context.Background(), time.Second)
	n.stopPlacement(pctx)
	n.stopRetention(pctx)
	cancel()
	waitBounded(&n.room.loop, time.Second) // a disk's free space read on a hung file system may never return
	var errs []error
	if n.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := n.httpSrv.Shutdown(ctx); err != nil {
			n.httpSrv.Close()
		}
		cancel()
	}
	if n.gossip() != nil {
		if err := n.gossip().Leave(time.Second); err != nil {
			n.log.Debug("leaving gossip", "err", err)
		}
		if err := n.gossip().Close(); err != nil {
			errs = append(errs, err)
		}
	}
	n.stopGRPC()
	// No request starts a gather now; those running end at once (done is closed).
	n.gathers.wait()
	n.statusGathers.wait()
	if n.peers != nil {
		n.peers.close()
	}
	// The transport before the host: closing the host waits for snapshots being written to
	// peers, and only the transport's closing aborts their streams (a peer that stopped
	// reading would hold Close for the stall timeout). A closed transport drops what the
	// host still sends.
	if n.tr != nil {
		if err := n.tr.Close(); err != nil && !errors.Is(err, transport.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if n.host != nil {
		if err := n.host.Close(); err != nil && !errors.Is(err, replica.ErrStopped) {
			errs = append(errs, err)
		}
	}
	n.stopPlacement(context.Background())
	n.stopRetention(context.Background())
	// A round ends at once now (gossip and the host are closed), but for a join under way,
	// which memberlist does not interrupt: a seed whose machine is gone takes seconds.
	waitBounded(&n.gossipLoops, gossipLoopsWait)
	n.mu.Lock()
	for _, sm := range n.mu.shards {
		sm.Close() // after the host: no apply runs; before Pebble: ends the ID scans
	}
	n.mu.Unlock()
	if n.regs != nil {
		// Before Pebble closes: a scrape of an embedder's registry must not reach a closed DB.
		n.regs.unregisterAll()
	}
	// A running backup first: its copy stops at the next chunk (done is closed), and nothing of
	// it may touch the data directory once it is unlocked.
	n.backupOne.Lock()
	n.backupMu.Lock()
	n.backupClosed = true
	n.backupMu.Unlock()
	n.backupOne.Unlock()
	if n.db != nil {
		if err := n.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("node: closing pebble: %w", err))
		}
	}
	if n.disk != nil {
		n.disk.close()
	}
	if err := n.dir.unlock(); err != nil {
		errs = append(errs, err)
	}
	n.log.Info("node closed")
	return errors.Join(errs...)
}

package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shoaldb/shoal/internal/clusterstatus"
	"github.com/shoaldb/shoal/internal/tlsfiles"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/replica/transport"
)

func (a *app) serverCmd() *cobra.Command {
	def := node.DefaultConfig()
	cfg := def
	var (
		join    []string
		keyFile string
		procs   int
		logs    logOptions
		// The server's own TLS files, from its flags only: the client commands' flags,
		// bound to a.tls, take $SHOAL_TLS_* as defaults.
		srvTLS tlsfiles.Files
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a shoal node",
		Long: `Run a shoal node. Without --join it creates a new cluster (or restarts the
one in --data); with --join it joins the cluster gossiping at those addresses.
SIGINT or SIGTERM stops it cleanly.`,
		Example: `  shoal server --data ./data
  shoal server --data ./n2 --listen 127.0.0.1:7410 --gossip 127.0.0.1:7411 --http 127.0.0.1:7481 --join 127.0.0.1:7401 --zone z2`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Shards and replication are checked against an existing
			// cluster: pass them only when given. node.Config takes 0 for
			// "not given", so a 0 given here is refused as out of range.
			if cmd.Flags().Changed("shards") && (cfg.Shards < 1 || cfg.Shards > node.MaxShards) {
				return usagef("--shards %d out of range 1..%d (leave it out for %d, or for the count of the cluster in --data)",
					cfg.Shards, node.MaxShards, node.DefaultShards)
			}
			if cmd.Flags().Changed("replication") && (cfg.Replication < 1 || cfg.Replication > node.MaxReplication) {
				return usagef("--replication %d out of range 1..%d (leave it out for %d, or for the factor of the cluster in --data)",
					cfg.Replication, node.MaxReplication, node.DefaultReplication)
			}
			// node.Config also takes a zero duration for "the default": a 0 given here
			// is refused rather than silently read as 60s or 20s.
			for _, name := range []string{"dead-after", "join-timeout", "max-sync-duration", "retention-interval", "retention-min-age", "slow-sync", "tick"} {
				fl := cmd.Flags().Lookup(name)
				if d, _ := cmd.Flags().GetDuration(name); fl.Changed && d == 0 {
					want := "a positive duration"
					switch name {
					case "max-sync-duration":
						want = fmt.Sprintf("at least %v, or a negative duration to never exit", node.MinMaxSyncDuration)
					case "retention-interval":
						want = "a positive duration, or a negative one to never apply the retention policies"
					case "retention-min-age":
						want = "a positive duration, or a negative one for no minimum age"
					case "tick":
						want = fmt.Sprintf("a duration from %v to %v", node.MinTick, node.MaxTick)
					case "slow-sync":
						want = "a positive duration, or a negative one for a disk to count as slow only while it hangs"
					}
					return usagef("--%s 0s: give %s (leave it out for the default, %s)", name, want, fl.DefValue)
				}
			}
			if cfg.StreamCache < 1 {
				return usagef("--stream-cache %d must be at least 1 (streams cached node-wide; default %d)", cfg.StreamCache, node.DefaultStreamCache)
			}
			if cfg.MaxSubscriptions < 1 {
				return usagef("--max-subscriptions %d must be at least 1 (subscriptions the node holds at once; default %d)",
					cfg.MaxSubscriptions, node.DefaultMaxSubscriptions)
			}
			if cfg.MaxLongPolls < 1 {
				return usagef("--max-long-polls %d must be at least 1 (long polls the node holds at once; default %d)",
					cfg.MaxLongPolls, node.DefaultMaxLongPolls)
			}
			if cfg.MaxReads < 1 {
				return usagef("--max-reads %d must be at least 1 (reads the node holds at once; default %d)",
					cfg.MaxReads, node.DefaultMaxReads)
			}
			if cfg.MaxAppendPipelines < 1 {
				return usagef("--max-append-pipelines %d must be at least 1 (append pipelines the node holds at once; default %d)",
					cfg.MaxAppendPipelines, node.DefaultMaxAppendPipelines)
			}
			cfg.Join = splitList(join)
			if err := refuseEmpty(cmd.Flags(), cfg.Join); err != nil {
				return err
			}
			if !cmd.Flags().Changed("shards") {
				cfg.Shards = 0
			}
			if !cmd.Flags().Changed("replication") {
				cfg.Replication = 0
			}
			if !cmd.Flags().Changed("node") {
				cfg.Name = "" // the stored name, or the host name for a new directory
			}
			if cfg.HTTP == "off" {
				cfg.HTTP, cfg.DisableHTTP = "", true
			}
			if keyFile != "" {
				key, err := readGossipKey(keyFile)
				if err != nil {
					return err
				}
				cfg.GossipKey = key
			}
			if !srvTLS.IsZero() && cfg.ConsoleData {
				return usagef("--console-data cannot go with TLS: the console would show events on the HTTP port, " +
					"which authenticates no one, to callers the gRPC port refuses without a certificate")
			}
			log, err := logs.logger(a.stderr)
			if err != nil {
				return err
			}
			if !srvTLS.IsZero() {
				srvTLS.Logger = log
				srvTLS.Host = dialedHost(cfg.Advertise, cfg.Listen)
				tc, err := srvTLS.Server()
				if err != nil {
					return usagef("%s", sentence(strings.TrimPrefix(err.Error(), "tls: ")))
				}
				cfg.ServerTLS, cfg.PeerTLS, cfg.PeerCAs = tc.Server, tc.Peer, tc.PeerCAs
			}
			if err := cfg.Validate(); err != nil {
				return usagef("%s", sentence(configFlags(trimPrefixes(err.Error()))))
			}
			n, err := serverProcs(procs)
			if err != nil {
				return err
			}
			log.Info("scheduler", "gomaxprocs", n)
			cfg.Logger = log
			return serve(cmd.Context(), log, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", def.DataDir, "data directory")
	f.StringVar(&cfg.BackupDir, "backup-dir", "", "where 'shoal node backup' writes this node's backups, one directory each (default DATA/backups); keep it on the data's file system, where the store's tables are hard-linked, and copy backups elsewhere from there")
	f.BoolVar(&cfg.NewCluster, "new-cluster", false, "start as the only member of a new cluster, every shard led here with the data this node applied: recovery when the rest of the cluster is lost (once; see docs/operations.md, \"Backups\")")
	f.BoolVar(&cfg.Restore, "restore", false, "confirm a start on a restored backup (--data a copy of one); its shards stay closed until each voter peer shows the cluster did not go on after the backup, and the start is refused if one did (docs/operations.md, \"Backups\")")
	f.StringVar(&cfg.Listen, "listen", def.Listen, "gRPC address for clients and peers (host:port)")
	f.StringVar(&cfg.Advertise, "advertise", "", "gRPC address clients and peers are told to use (host:port), when it is not --listen's (all interfaces, NAT, a published container port); its host also stands in for an all-interfaces --http")
	f.StringVar(&cfg.GossipAdvertise, "gossip-advertise", "", "gossip address peers are told to use (host:port), when it is not --gossip's")
	f.StringVar(&cfg.HTTP, "http", def.HTTP, "HTTP address for the console (/console/), /metrics, /healthz, /readyz and pprof (\"off\" disables it)")
	f.StringVar(&cfg.Pprof, "pprof", node.PprofLoopback, "who the Go profiler on the HTTP port (/debug/pprof/) answers: loopback (requests from this machine), on (any), off")
	f.BoolVar(&cfg.ConsoleData, "console-data", false, "let the console show events (streams, shard logs, event data), not only the cluster's state; the HTTP port authenticates no one, so not with --tls-*")
	f.IntVar(&cfg.Shards, "shards", def.Shards, fmt.Sprintf("shard count when creating a cluster, 1..%d, fixed afterwards", node.MaxShards))
	f.StringVar(&cfg.Name, "node", "", "node name, unique in the cluster (default: the name stored in --data, else the host name)")
	f.StringVar(&cfg.Zone, "zone", "", "failure domain (replicas are spread across zones)")
	f.StringVar(&cfg.Gossip, "gossip", def.Gossip, "gossip address, TCP and UDP (host:port)")
	f.StringSliceVar(&join, "join", nil, "gossip addresses of existing members, comma-separated (host:port; a host alone means this node's --gossip port)")
	f.DurationVar(&cfg.JoinTimeout, "join-timeout", def.JoinTimeout, "how long a new node keeps retrying its --join seeds and waits to learn the cluster's settings")
	f.IntVar(&cfg.Replication, "replication", def.Replication, fmt.Sprintf("replicas per shard when creating a cluster, 1..%d (a cluster with fewer nodes or zones runs under-replicated)", node.MaxReplication))
	f.DurationVar(&cfg.DeadAfter, "dead-after", def.DeadAfter, "how long a member may be dead before its replicas are replaced")
	f.DurationVar(&cfg.RetentionInterval, "retention-interval", node.DefaultRetentionInterval, "how often the leaders of this node's shards apply the cluster's retention policies ('shoal retention'); negative: never (the policies are kept)")
	f.DurationVar(&cfg.RetentionMinAge, "retention-min-age", node.DefaultRetentionMinAge, "retention (policies and 'shoal retain') never removes an event committed less than this long ago, so that writers' retries of an append find its events; negative: no minimum")
	f.IntVar(&cfg.StreamCache, "stream-cache", node.DefaultStreamCache, "streams whose metadata (last version, state) the node keeps in memory for appends, shared by the cluster's shards (about 130 bytes plus the name each; each shard keeps at least 256)")
	f.IntVar(&cfg.MaxSubscriptions, "max-subscriptions", node.DefaultMaxSubscriptions, "subscriptions (reads with --follow) the node holds at once, served or relayed to a shard's leader (about 30 KiB and a heartbeat a second each; one whose client stops reading holds up to three pages of events, of up to 256 KiB each or one larger event); more are refused with RESOURCE_EXHAUSTED, which clients retry")
	f.IntVar(&cfg.MaxReads, "max-reads", node.DefaultMaxReads, "reads that neither follow nor wait (stream and shard reads, stream lists) the node holds at once, served or relayed (each holds up to three pages while its client takes them: up to 256 KiB each, or one larger event); more are refused with RESOURCE_EXHAUSTED, which clients retry")
	f.IntVar(&cfg.MaxLongPolls, "max-long-polls", node.DefaultMaxLongPolls, "long polls (shard reads that wait for new events, as projections make) the node holds at once, served or relayed, apart from --max-subscriptions (about 30 KiB each, for up to a minute); more are refused with RESOURCE_EXHAUSTED, which clients retry")
	f.IntVar(&cfg.MaxAppendPipelines, "max-append-pipelines", node.DefaultMaxAppendPipelines, "append pipeline streams (a Go client keeps one per node) the node holds at once (about 17 KiB each when idle); more are refused with RESOURCE_EXHAUSTED before anything they carry is written, and the Go client appends with unary calls instead")
	f.DurationVar(&cfg.MaxSyncDuration, "max-sync-duration", def.MaxSyncDuration, "how long a write or sync of the data directory may hang before the server exits (status 74) so that the cluster replaces it; negative: never")
	f.DurationVar(&cfg.Tick, "tick", def.Tick, fmt.Sprintf("the clock of failure detection: raft heartbeats every 2 ticks and a shard elects another leader after 10 to 20 ticks without one; gossip probes each member every 10 ticks and waits 5 for its answer. Raise it where zones are far apart, to about the round trip between the farthest (%v to %v; give every node the same)", node.MinTick, node.MaxTick))
	f.DurationVar(&cfg.SlowSync, "slow-sync", def.SlowSync, "a node whose write-ahead log syncs take longer than this on average, and 4 times as long as the fastest other member's, counts its disk as slow (as it does while a write or sync hangs for 5 s): it hands its leaderships to voters on healthy disks and is given none until its syncs kept within bounds for 30 s; negative: only a hang counts")
	f.DurationVar(&cfg.WALCommitDelay, "wal-commit-delay", 0, fmt.Sprintf("while the node is busy, hold each WAL sync back until this long after the last, so that one fdatasync covers more writes (as PostgreSQL's commit_delay): less CPU per write where CPUs are short, more latency; at most %v, 0 = none", node.MaxWALCommitDelay))
	cfg.MaxAppendBytes = node.DefaultMaxAppendBytes
	f.Var(&sizeFlag{v: &cfg.MaxAppendBytes, min: 1 << 20}, "max-append-bytes", "the bytes of appends the node holds at once, unary or streamed, while they wait for their shards' leaders or commits (e.g. 4GiB, at least 1MiB); more are refused with RESOURCE_EXHAUSTED, which clients retry")
	cfg.MaxSnapshotBytes, cfg.SnapshotMinFreeBytes = replica.DefaultMaxSnapshotBytes, replica.DefaultSnapshotMinFreeBytes
	f.Var(&sizeFlag{v: &cfg.MaxSnapshotBytes, min: 1 << 20}, "max-snapshot-size", "the most the raft snapshots being received at once may write to --data's snapshots directory before Pebble takes them in (e.g. 64GiB, at least 1MiB); a receive past it stops, and the leader sends the snapshot again later")
	f.IntVar(&cfg.MaxSnapshotSends, "max-snapshot-sends", transport.DefaultMaxSnapshotSends, "raft snapshots (whole shards, for new or lagging replicas) the node sends at once, at most one per destination; more wait their turn")
	f.Var(&sizeFlag{v: &cfg.SnapshotRate}, "snapshot-rate", "the compressed bytes per second the node's snapshot sends may take, all together (e.g. 32MiB; 0: no bound), so that copying shards leaves CPU, disk and network to the writes; at least 512KiB per --max-snapshot-sends")
	cfg.MinFreeDisk = node.DefaultMinFreeDisk
	f.Var(&sizeFlag{v: &cfg.MinFreeDisk, min: 1 << 20}, "min-free-disk", "the free space the node keeps on --data's disk (e.g. 5GiB, at least 1MiB): below it a shard a majority of whose voters are so refuses appends (RESOURCE_EXHAUSTED, reason DISK_LOW) until space is freed and a tenth more, while reads, deletes and truncations go on, rather than fill the disks, which would stop the nodes; snapshots received leave as much")
	f.Var(&sizeFlag{v: &cfg.SnapshotMinFreeBytes, min: 1 << 20}, "snapshot-min-free", "the free space a snapshot being received leaves on --data's disk (e.g. 10GiB, at least 1MiB): past it the receive stops and removes its files, and the leader sends the snapshot again later")
	f.StringVar(&keyFile, "gossip-key-file", "", "file holding the gossip encryption key: 16, 24 or 32 bytes, base64 (e.g. openssl rand -base64 32) or raw")
	f.StringVar(&srvTLS.CA, "tls-ca", "", "PEM file of the nodes' CA: turns on mutual TLS for gRPC, with --tls-cert and --tls-key; peers need a certificate from it")
	f.StringVar(&srvTLS.ClientCA, "tls-client-ca", "", "PEM file of a separate CA for clients' certificates (default: clients' certificates come from --tls-ca, and any of them may act as a peer)")
	f.StringVar(&srvTLS.Cert, "tls-cert", "", "PEM certificate of this node, for serving and for dialing its peers; it must name the --advertise host")
	f.StringVar(&srvTLS.Key, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&logs.level, "log-level", "info", "the least severe log lines written: debug, info, warn or error (debug adds placement's refusals and the raft details)")
	f.StringVar(&logs.format, "log-format", "text", "log lines as text (key=value) or json (one object per line, for log shippers)")
	procsFlag(f, &procs)
	return cmd
}

// logOptions are the server's --log-level and --log-format.
type logOptions struct{ level, format string }

// logger returns the logger the flags ask for, writing to w, or a usage error naming the flag.
func (l logOptions) logger(w io.Writer) (*slog.Logger, error) {
	levels := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}
	level, ok := levels[l.level]
	if !ok {
		return nil, usagef("--log-level %q: want debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", l.format)
}

// refuseEmpty refuses a server flag given an empty value, which would otherwise mean its
// default or nothing: an unset variable in `--join "$SEEDS"` started a new cluster of one
// node, which acknowledged writes that the cluster it was meant to join never saw; an empty
// --http turned off /metrics and /readyz.
func refuseEmpty(f *pflag.FlagSet, join []string) error {
	if f.Changed("join") && len(join) == 0 {
		return usagef("--join is empty: give the gossip addresses of existing members (host:port, comma-separated), " +
			"or leave --join out to create a new cluster")
	}
	for _, name := range []string{"data", "listen", "gossip", "http"} {
		if fl := f.Lookup(name); fl != nil && f.Changed(name) && strings.TrimSpace(fl.Value.String()) == "" {
			hint := "give a value, or leave the flag out for its default"
			if name == "http" {
				hint = `give an address, or "off" to serve no HTTP`
			}
			return usagef("--%s is empty: %s", name, hint)
		}
	}
	return nil
}

// dialedHost is the host peers and clients dial a server at: --advertise's, else --listen's;
// "" for an all-interfaces --listen without --advertise (the node warns about that itself).
func dialedHost(advertise, listen string) string {
	addr := listen
	if advertise != "" {
		addr = advertise
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() || host == "" {
		return ""
	}
	return host
}

// procsFlag adds --procs, the server's GOMAXPROCS.
func procsFlag(f *pflag.FlagSet, procs *int) {
	f.IntVar(procs, "procs", 0, fmt.Sprintf("Go scheduler threads (GOMAXPROCS), at most %d; 0 = $GOMAXPROCS if set, else twice the CPUs available", maxProcs))
}

// serverProcs sets GOMAXPROCS for a server process and returns it (a usage error for a
// negative --procs): procs when > 0; otherwise,
// unless the GOMAXPROCS environment variable decides, twice the runtime's default (the CPUs
// available to the process). An fsync or a file read blocks its thread in the kernel, and with
// one thread per CPU that CPU idles until the scheduler takes the thread's place back; a
// server that syncs its WAL a thousand times a second loses a good part of its CPUs that way.
// On two cores, three in-process nodes with replication 3 went from 6,400–7,000 to
// 10,400–10,900 appends/s (BenchmarkClusterAppend, -cpu 2 against -cpu 4).
func serverProcs(procs int) (int, error) {
	switch {
	case procs < 0:
		return 0, usagef("--procs must be 0 (twice the CPUs) or more, got %d", procs)
	case procs > maxProcs:
		return 0, usagef("--procs must be at most %d, got %d (each may run an OS thread, and the Go runtime ends a process "+
			"that reaches 10,000 threads)", maxProcs, procs)
	case procs > 0:
		runtime.GOMAXPROCS(procs)
	case os.Getenv("GOMAXPROCS") == "":
		runtime.GOMAXPROCS(2 * runtime.GOMAXPROCS(0))
	}
	return runtime.GOMAXPROCS(0), nil
}

// maxProcs bounds --procs. The Go runtime sets no bound of its own: GOMAXPROCS(100000) ended the
// process at once with "fatal error: thread exhaustion" (its limit is 10,000 OS threads, and
// threads blocked in fsyncs come on top of those running Go code).
const maxProcs = 4096

// handOffTimeout bounds the leadership hand-off of a stopping server (Node.HandOffLeaders):
// transfers that have not ended by then are left to the followers' election.
const handOffTimeout = 5 * time.Second

// exitOnSecondSignal makes the next SIGINT or SIGTERM, during a clean stop that the first one
// began, end the process at once with 128 plus the signal's number, as the signal itself would,
// after say has told why.
func exitOnSecondSignal(say func(os.Signal)) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-ch
		say(sig)
		code := 1
		if n, ok := sig.(syscall.Signal); ok {
			code = 128 + int(n)
		}
		os.Exit(code)
	}()
}

// serve runs one node until ctx ends.
func serve(ctx context.Context, log *slog.Logger, cfg node.Config) error {
	n, err := node.Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil { // interrupted while starting: what it was doing then
			log.Info("stopped while starting", "err", err)
			return nil
		}
		return fmt.Errorf("cannot start the server: %w", err)
	}
	log.Info("serving", "node", n.Name(), "id", n.ID(), "grpc", n.Addr(), "http", n.HTTPAddr(), "data", cfg.DataDir)
	select {
	case <-ctx.Done():
		log.Info("shutting down", "node", n.Name())
		exitOnSecondSignal(func(sig os.Signal) {
			log.Warn("second signal: exiting at once, the stop unfinished (as after a crash, every acknowledged write is on disk)",
				"node", n.Name(), "signal", sig.String())
		})
		// A planned stop: hand the node's leaderships to other voters while it still answers,
		// so that its shards change leader at once instead of after an election.
		hctx, cancel := context.WithTimeout(context.Background(), handOffTimeout)
		start := time.Now()
		moved, kept := n.HandOffLeaders(hctx)
		cancel()
		if moved+kept > 0 {
			log.Info("leaderships handed off", "node", n.Name(), "moved", moved, "kept", kept,
				"took", time.Since(start).Round(time.Millisecond))
		}
	case <-n.Done():
	}
	if err := n.Close(); err != nil {
		return fmt.Errorf("stopping the server: %w", err)
	}
	log.Info("stopped", "node", n.Name())
	return nil
}

// readGossipKey reads a gossip key file: a base64 key (what 'openssl rand
// -base64 32' prints) or, when the content is not base64, the raw key; 16,
// 24 or 32 bytes either way.
func readGossipKey(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, usagef("cannot read --gossip-key-file %q: %v", name, unwrapPathError(err))
	}
	s := strings.TrimSpace(string(b))
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && validKeyLen(len(k)) {
		return k, nil
	}
	if validKeyLen(len(s)) {
		return []byte(s), nil
	}
	if validKeyLen(len(b)) {
		return b, nil
	}
	return nil, usagef("--gossip-key-file %q must hold a 16, 24 or 32-byte key, raw or base64 (e.g. from 'openssl rand -base64 32')", name)
}

func validKeyLen(n int) bool { return n == 16 || n == 24 || n == 32 }

func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// maxDevNodes keeps the dev cluster's ports apart: node i uses
// 7400+10i/7401+10i and HTTP 7480+i, which would reach 7480 at i = 8.
const maxDevNodes = 8

// devNode is the configuration of node i of `shoal dev`.
func devNode(dir string, i, nodes int, fresh bool) node.Config {
	cfg := node.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, fmt.Sprintf("node-%d", i))
	cfg.Name = fmt.Sprintf("node-%d", i)
	cfg.Zone = fmt.Sprintf("z%d", i+1)
	cfg.Listen = fmt.Sprintf("127.0.0.1:%d", 7400+10*i)
	cfg.Gossip = fmt.Sprintf("127.0.0.1:%d", 7401+10*i)
	cfg.HTTP = fmt.Sprintf("127.0.0.1:%d", 7480+i)
	cfg.ConsoleData = true
	cfg.Shards, cfg.Replication = 0, 0
	if i == 0 {
		if fresh {
			cfg.Replication = min(node.DefaultReplication, nodes)
		}
	} else {
		cfg.Join = []string{"127.0.0.1:7401"}
	}
	return cfg
}

// devFresh reports whether the dev cluster in dir is yet to be created: its node 0 holds no
// cluster (a start that failed before creating it, a port taken say, left files behind).
func devFresh(dir string) bool { return !node.HasCluster(filepath.Join(dir, "node-0")) }

// devLeftOut returns the dev nodes beyond the first nodes whose directories in dir hold
// replicas, which a smaller --nodes than the cluster's would leave down, and the --nodes
// that runs them all.
func devLeftOut(dir string, nodes int) (left []string, need int) {
	for i := nodes; i < maxDevNodes; i++ {
		d := filepath.Join(dir, fmt.Sprintf("node-%d", i))
		if node.HasCluster(d) && node.HoldsReplicas(d) {
			left, need = append(left, fmt.Sprintf("node-%d", i)), i+1
		}
	}
	return left, need
}

// devDecommissioning reports whether every one of the dev nodes left out was being
// decommissioned.
func devDecommissioning(dir string, left []string) bool {
	for _, name := range left {
		if !node.Decommissioning(filepath.Join(dir, name)) {
			return false
		}
	}
	return true
}

// devShrink says how to take the dev nodes left out of a cluster of replication repl (0:
// unknown) down to nodes, those nodes being decommissioned already or not.
func devShrink(left []string, nodes int, repl uint32, decommissioning bool) string {
	var steps []string
	if int(repl) > nodes {
		// A replica moves only to a node that can take it: with fewer nodes left than the
		// factor, a drain keeps its replicas for good.
		steps = append(steps, fmt.Sprintf("lower the replication factor to %d (shoal cluster set-replication %d; it is %d, more than the nodes left)", nodes, nodes, repl))
	}
	if !decommissioning {
		steps = append(steps, "decommission "+clusterstatus.List(left)+" (shoal node decommission NAME)")
	}
	// A drained node deletes its replicas a moment after cluster status shows it holding none:
	// stopped in between, it still holds them on disk.
	steps = append(steps, fmt.Sprintf("wait until 'cluster status' shows %s holding 0 replicas and a few seconds more "+
		"(it then deletes them from disk), then stop it and start with --nodes %d", clusterstatus.List(left), nodes))
	return "first " + strings.Join(steps, ", then ")
}

func (a *app) devCmd() *cobra.Command {
	var (
		nodes   int
		dir     string
		procs   int
		minFree = uint64(node.DefaultMinFreeDisk)
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local cluster in one process, for development",
		Long: `Run a local cluster of --nodes nodes in one process, in zones z1..zN, with data
in --data/node-I. Node I serves gRPC on 127.0.0.1:(7400+10I), gossip on
127.0.0.1:(7401+10I) and HTTP on 127.0.0.1:(7480+I). Node 0 creates the cluster;
the others join it. Ctrl-C stops every node.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if nodes < 1 {
				return usagef("--nodes must be at least 1, got %d", nodes)
			}
			if nodes > maxDevNodes {
				return usagef("--nodes must be at most %d (more would make the dev ports collide), got %d", maxDevNodes, nodes)
			}
			if _, err := serverProcs(procs); err != nil {
				return err
			}
			fresh := devFresh(dir)
			if left, need := devLeftOut(dir, nodes); !fresh && len(left) > 0 {
				return usagef("--data %s: %s of its dev cluster, beyond --nodes %d, still %s replicas: left down, their shards "+
					"run short of voters or without quorum. Run with --nodes %d; to shrink the cluster, %s",
					dir, strings.Join(left, ", "), nodes, clusterstatus.Agree(len(left), "holds", "hold"), need,
					devShrink(left, nodes, node.StoredReplication(filepath.Join(dir, "node-0")), devDecommissioning(dir, left)))
			}
			return a.runDev(cmd.Context(), dir, nodes, fresh, minFree)
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes, 1 to 8")
	cmd.Flags().StringVar(&dir, "data", "./data-dev", "directory holding every node's data directory")
	cmd.Flags().Var(&sizeFlag{v: &minFree, min: 1 << 20}, "min-free-disk", "the free space each node keeps on --data's disk (at least 1MiB): below it, appends are refused (see shoal server --help)")
	procsFlag(cmd.Flags(), &procs)
	return cmd
}

func (a *app) runDev(ctx context.Context, dir string, nodes int, fresh bool, minFree uint64) error {
	base := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var started []*node.Node
	defer func() {
		for i := len(started) - 1; i >= 0; i-- {
			if err := started[i].Close(); err != nil {
				base.Error("stopping node", "node", started[i].Name(), "err", err)
			}
		}
	}()
	for i := range nodes {
		cfg := devNode(dir, i, nodes, fresh)
		cfg.Logger = base // the node labels its lines with its name
		cfg.MinFreeDisk = minFree
		n, err := node.Start(ctx, cfg)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("cannot start %s (gRPC %s, gossip %s, HTTP %s): %w", cfg.Name, cfg.Listen, cfg.Gossip, cfg.HTTP, err)
		}
		started = append(started, n)
	}
	devBanner(a.stdout, dir, started, nodes, fresh, invokedAs(os.Args[0]))
	<-ctx.Done()
	exitOnSecondSignal(func(sig os.Signal) {
		fmt.Fprintf(a.stderr, "shoal dev: second signal (%s): exiting at once, the stop unfinished (as after a crash, every acknowledged write is on disk)\n", sig)
	})
	fmt.Fprintln(a.stdout, "stopping")
	return nil // the deferred loop closes the nodes
}

// devBanner prints where the dev cluster's nodes serve, which of them is being decommissioned
// since an earlier run (it would look merely idle), and what to try first, running the binary
// as shoal.
func devBanner(w io.Writer, dir string, started []*node.Node, nodes int, fresh bool, shoal string) {
	fmt.Fprintf(w, "shoal dev: %d node(s), data in %s; Ctrl-C stops them\n\n", nodes, dir)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tZONE\tGRPC\tGOSSIP\tHTTP")
	for i, n := range started {
		cfg := devNode(dir, i, nodes, fresh)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name(), cfg.Zone, n.Addr(), cfg.Gossip, n.HTTPAddr())
	}
	tw.Flush()
	for i, n := range started {
		if node.Decommissioning(devNode(dir, i, nodes, fresh).DataDir) {
			fmt.Fprintf(w, "\n%s is being decommissioned (since an earlier run): placement moves its replicas away and gives it "+
				"none; to give it its share again: %s node recommission %s --server %s\n", n.Name(), shoal, n.Name(), started[0].Addr())
		}
	}
	fmt.Fprintf(w, "\nconsole: http://%s/console/ (each node's HTTP address serves one)\n", started[0].HTTPAddr())
	fmt.Fprintf(w, "try: %[1]s append hello-1 --type Greeted --data '{\"hi\":1}' && %[1]s read hello-1 && %[1]s cluster status\n", shoal)
}

// configFlags names the flag for the node.Config field a validation error is about ("config:
// Replication 9 out of range 1..7" becomes "--replication 9 out of range 1..7").
func configFlags(msg string) string {
	rest, ok := strings.CutPrefix(msg, "config: ")
	if !ok {
		return msg
	}
	field, after, _ := strings.Cut(rest, " ")
	flags := map[string]string{
		"Listen": "--listen", "Advertise": "--advertise", "Join": "--join", "HTTP": "--http", "Gossip": "--gossip",
		"GossipAdvertise": "--gossip-advertise", "Shards": "--shards", "Replication": "--replication",
		"DeadAfter": "--dead-after", "JoinTimeout": "--join-timeout", "MaxSyncDuration": "--max-sync-duration", "RetentionInterval": "--retention-interval", "RetentionMinAge": "--retention-min-age",
		"GossipKey": "the key in --gossip-key-file", "Name": "--node", "Zone": "--zone", "MaxSubscriptions": "--max-subscriptions",
		"MaxLongPolls": "--max-long-polls", "MaxReads": "--max-reads", "MaxAppendPipelines": "--max-append-pipelines", "WALCommitDelay": "--wal-commit-delay",
		"ConsoleData": "--console-data", "Pprof": "--pprof",
	}
	flag, ok := flags[field]
	if !ok {
		return rest
	}
	// A second field, as in two addresses that take one port ("Listen "a" and HTTP "b" ...").
	for _, f := range []string{"Listen", "HTTP", "Gossip"} {
		after = strings.Replace(after, " and "+f+` "`, " and "+flags[f]+` "`, 1)
	}
	return flag + " " + after
}

// invokedAs returns how to run this binary again from where it was started: as it was
// invoked when that was a path (bin/shoal, from the README's tour), else "shoal", found on the
// PATH.
func invokedAs(arg0 string) string {
	if arg0 == "" || !strings.ContainsRune(arg0, filepath.Separator) {
		return "shoal"
	}
	return arg0
}

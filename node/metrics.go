package node

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/internal/buildinfo"
	"github.com/shoaldb/shoal/replica"
)

// metrics are the node's own metrics (the replica host, the transport and
// Pebble register theirs on the same registry).
type metrics struct {
	appends        *prometheus.CounterVec // by result
	deletes        *prometheus.CounterVec // by result
	truncates      *prometheus.CounterVec // by result
	retentionSets  *prometheus.CounterVec // SetRetention, by result
	backups        *prometheus.CounterVec // by result (ok, refused, error)
	reads          *prometheus.CounterVec // by kind (stream, shard, list) and result
	appendLatency  prometheus.Histogram
	eventsAppended prometheus.Counter
	forwarded      *prometheus.CounterVec   // by kind (write, read, decommission, recommission)
	forwardsMoved  prometheus.Counter       // forwarded calls abandoned by their watch
	pipelineBatch  *prometheus.HistogramVec // items per AppendPipeline message, by direction
	subscriptions  *prometheus.GaugeVec     // open subscriptions served here, by kind (stream, shard)
	subsEnded      *prometheus.CounterVec   // subscriptions ended, by reason
	subsEvents     prometheus.Counter       // events sent by subscriptions
	subsHeld       prometheus.Gauge         // subscriptions held against Config.MaxSubscriptions
	subsRefused    *prometheus.CounterVec   // subscriptions refused at Config.MaxSubscriptions, by kind
	// Long polls and AppendPipeline streams held against, and refused at, Config.MaxLongPolls
	// and Config.MaxAppendPipelines.
	longPollsHeld, pipelinesHeld       prometheus.Gauge
	readsHeld                          prometheus.Gauge       // reads held against Config.MaxReads
	readsRefused                       *prometheus.CounterVec // reads refused at Config.MaxReads, by kind
	longPollsRefused, pipelinesRefused prometheus.Counter
	appendBytesHeld                    prometheus.Gauge
	appendBytesRefused                 prometheus.Counter
	diskLow                            prometheus.Gauge // 1 while the data directory's disk is below Config.MinFreeDisk
	minFreeDisk                        prometheus.Gauge // Config.MinFreeDisk
	diskSlow                           prometheus.Gauge // 1 while the disk counts as slow (diskspeed.go)
	walSyncMean                        prometheus.Gauge // the mean WAL sync of the last diskSpeedWindow
	// Topology requests of clients and status requests, and the gathers of the members'
	// views they shared, by kind (topology, status).
	topologyRequests, topologyGathers *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_appends_total",
			Help: "Append requests (unary, or AppendPipeline items) answered to clients of this node, by result; one this node forwarded to the shard's leader is not counted again there.",
		}, []string{"result"}),
		deletes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_deletes_total",
			Help: "Delete requests answered to clients of this node, by result; one this node forwarded to the shard's leader is not counted again there.",
		}, []string{"result"}),
		truncates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_truncates_total",
			Help: "Truncate requests answered to clients of this node, by result; one this node forwarded to the shard's leader is not counted again there.",
		}, []string{"result"}),
		retentionSets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_retention_sets_total",
			Help: "SetRetention requests (one shard's policy set or removed) answered to clients of this node, by result; one this node forwarded to the shard's leader is not counted again there.",
		}, []string{"result"}),
		backups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_backups_total",
			Help: "Backups of this node's data directory (Backup), by result: ok, refused (a bad or taken name), error.",
		}, []string{"result"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_reads_total",
			Help: "Read requests answered to clients of this node, by kind (stream, shard, list: a page of a stream listing, retention: a shard's retention policies) and result; one this node forwarded to another node is not counted again there.",
		}, []string{"kind", "result"}),
		appendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_append_duration_seconds",
			Help:    "Latency of successful appends on the node the client called, from receipt to answer (forwarding included).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16), // 0.2ms .. 6.5s
		}),
		eventsAppended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_events_appended_total",
			Help: "Events written by appends that this node proposed as the shard's leader (a forwarded append counts on the leader only, a duplicate not at all): summed over the nodes, the events written. An append applied after its answer was given up (its proposal not committed in time, or its group stopped) is not counted.",
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_forwarded_requests_total", Help: "Requests forwarded to another node, by kind.",
		}, []string{"kind"}),
		forwardsMoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_forwards_moved_total",
			Help: "Forwarded calls abandoned and routed again because the shard's leader changed while they waited for the old one.",
		}),
		pipelineBatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_append_pipeline_batch_items",
			Help:    "Appends per AppendPipeline message: received (the client's batches) and sent (answers grouped by the server).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 .. 1024
		}, []string{"direction"}),
		subscriptions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_subscriptions",
			Help: "Subscriptions (reads with follow) served by this node's replicas now, by kind (stream, shard); relayed ones are not counted.",
		}, []string{"kind"}),
		subsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_subscriptions_ended_total",
			Help: "Subscriptions served here that ended, by reason: caller (cancelled or gone), replica_gone (moved off this node), not_current (the replica lagged its leader past the bound), shutdown, deleted (a tombstone), error.",
		}, []string{"reason"}),
		subsEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_subscription_events_total", Help: "Events (and deletes) sent to subscribers by this node.",
		}),
		subsHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_subscriptions_held",
			Help: "Subscriptions this node holds now, served here or relayed to a shard's leader: what --max-subscriptions bounds.",
		}),
		subsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_subscriptions_refused_total",
			Help: "Subscriptions refused (RESOURCE_EXHAUSTED) because this node held --max-subscriptions already, by kind (stream, shard).",
		}, []string{"kind"}),
		longPollsHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_long_polls_held",
			Help: "Long polls (shard reads with wait_ms) this node holds now, served here or relayed to a shard's leader: what --max-long-polls bounds.",
		}),
		longPollsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_long_polls_refused_total",
			Help: "Long polls refused (RESOURCE_EXHAUSTED) because this node held --max-long-polls already.",
		}),
		readsHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_reads_held",
			Help: "Reads without follow or wait_ms (stream, shard, list) this node holds now, served here or relayed: what --max-reads bounds.",
		}),
		readsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_reads_refused_total",
			Help: "Reads without follow or wait_ms refused (RESOURCE_EXHAUSTED) because this node held --max-reads already, by kind (stream, shard, list).",
		}, []string{"kind"}),
		pipelinesHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_append_pipelines_held",
			Help: "AppendPipeline streams open on this node now: what --max-append-pipelines bounds.",
		}),
		appendBytesHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_append_bytes_held",
			Help: "Bytes of the appends this node holds now (their requests' size), waiting for a leader, a commit or a forward's answer: what --max-append-bytes bounds.",
		}),
		diskLow: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_disk_low",
			Help: "1 while the data directory's disk has less free space than --min-free-disk (or has not yet a tenth more again): a shard a majority of whose voters say so refuses appends (result=\"disk_low\" in shoal_appends_total).",
		}),
		diskSlow: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_disk_counted_slow",
			Help: "1 while the node's disk counts as slow: its write-ahead log syncs took longer than --slow-sync and 4 times the fastest other member's on average over 10 s, or a write or sync has been pending for 5 s, within the last 30 s; its leaderships go to voters on healthy disks.",
		}),
		walSyncMean: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_wal_sync_mean_seconds",
			Help: "The mean duration of the write-ahead log's syncs over the last 10 s (0 when none completed), as the node gossips it to compare disks.",
		}),
		minFreeDisk: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_min_free_disk_bytes",
			Help: "The free space the node keeps on its data directory's disk (--min-free-disk).",
		}),
		appendBytesRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_append_bytes_refused_total",
			Help: "Appends refused (RESOURCE_EXHAUSTED) because this node held --max-append-bytes of appends already.",
		}),
		pipelinesRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_append_pipelines_refused_total",
			Help: "AppendPipeline streams refused (RESOURCE_EXHAUSTED) because this node held --max-append-pipelines already.",
		}),
		topologyRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_topology_requests_total",
			Help: "Requests for the cluster's topology answered by this node, by kind: topology (a client's; not a peer's request for this node's own view), status (cluster status, the console's overview).",
		}, []string{"kind"}),
		topologyGathers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_topology_gathers_total",
			Help: "Gathers of every alive member's view made for topology and status requests, by kind; the requests of a kind arriving together share one (one question to each member per gather).",
		}, []string{"kind"}),
	}
	// Every series a dashboard or alert may use exists from the start, at 0.
	for _, kind := range []string{"stream", "shard"} {
		m.subscriptions.WithLabelValues(kind)
		m.subsRefused.WithLabelValues(kind)
	}
	for _, kind := range []string{"stream", "shard", "list"} {
		m.readsRefused.WithLabelValues(kind)
	}
	for _, kind := range []string{"topology", "status"} {
		m.topologyRequests.WithLabelValues(kind)
		m.topologyGathers.WithLabelValues(kind)
	}
	for _, why := range []string{"caller", "replica_gone", "not_current", "shutdown", "deleted", "error"} {
		m.subsEnded.WithLabelValues(why)
	}
	// Every result from the start, at zero, so that a rate or an alert on a result the node
	// has not met yet (a failure, say) has a series to work on.
	for _, result := range []string{"ok", "refused", "error"} {
		m.backups.WithLabelValues(result)
	}
	for _, result := range resultLabels {
		m.appends.WithLabelValues(result)
		m.deletes.WithLabelValues(result)
		m.truncates.WithLabelValues(result)
		m.retentionSets.WithLabelValues(result)
		for _, kind := range []string{"stream", "shard", "list", "retention", "retention_cuts"} {
			m.reads.WithLabelValues(kind, result)
		}
	}
	if r != nil {
		r.MustRegister(m.appends, m.deletes, m.truncates, m.retentionSets, m.backups, m.reads, m.appendLatency, m.eventsAppended, m.forwarded, m.forwardsMoved, m.pipelineBatch,
			m.subscriptions, m.subsEnded, m.subsEvents, m.subsHeld, m.subsRefused,
			m.longPollsHeld, m.longPollsRefused, m.readsHeld, m.readsRefused, m.pipelinesHeld, m.pipelinesRefused, m.appendBytesHeld, m.appendBytesRefused, m.diskLow, m.minFreeDisk, m.diskSlow, m.walSyncMean,
			m.topologyRequests, m.topologyGathers)
	}
	return m
}

// scrapeStatusWait bounds how long a scrape waits for the raft loop to answer the local
// groups' status (voters, learners, applied index), which it asks for all at once. A loop that
// does not answer in time (stalled on its disk) leaves some series out of that scrape (see
// descUnanswered) rather than hang it.
const scrapeStatusWait = time.Second

// shardCollector exports the health of the local groups at scrape time. Its methods are safe
// for concurrent use.
type shardCollector struct {
	n    *Node
	host *replica.Host

	mu struct {
		sync.Mutex
		// asking holds the groups whose status a scrape asked for and the raft loop has not
		// answered yet. A later (or concurrent) scrape waits for the same answer instead of
		// asking again: a stalled loop holds one goroutine per group, not one per group and
		// scrape.
		asking map[*replica.Group]*statusAnswer
	}
}

func newShardCollector(n *Node, host *replica.Host) *shardCollector {
	c := &shardCollector{n: n, host: host}
	c.mu.asking = map[*replica.Group]*statusAnswer{}
	return c
}

var (
	descLeaderKnown = prometheus.NewDesc("shoal_shard_leader_known",
		"1 when this node's replica of the shard knows a leader.", []string{"shard"}, nil)
	descIsLeader = prometheus.NewDesc("shoal_shard_is_leader",
		"1 when this node leads the shard.", []string{"shard"}, nil)
	descVoters = prometheus.NewDesc("shoal_shard_voters",
		"Voters of the shard's raft group as this node sees them (left out while its raft loop does not answer: shoal_shard_status_unanswered).", []string{"shard"}, nil)
	descUnder = prometheus.NewDesc("shoal_shard_under_replicated",
		"1 when the shard has fewer voters than the replication factor, or (zones configured) voters in fewer zones than it (left out while its raft loop does not answer).", []string{"shard"}, nil)
	descDeadVoters = prometheus.NewDesc("shoal_shard_dead_voters",
		"Voters of the shard on nodes gossip holds dead (or does not know), as this node sees them: the shard runs on the others, one failure further from losing its quorum, until placement replaces them after --dead-after (left out while its raft loop does not answer).", []string{"shard"}, nil)
	descApplied = prometheus.NewDesc("shoal_shard_applied_index",
		"Last raft index applied by this node's replica.", []string{"shard"}, nil)
	descLeaderless = prometheus.NewDesc("shoal_shard_leaderless",
		"1 when this node's replica of the shard has known no leader for longer than an election can take (three raft election timeouts): the shard lost its quorum, or this replica is cut off from it (left out while its raft loop does not answer).", []string{"shard"}, nil)
	descFollowerLag = prometheus.NewDesc("shoal_shard_follower_lag_entries",
		"On the shard's leader: the most raft entries any other replica (voter or learner) it has heard from recently lacks of those committed. One that stays high is a replica that cannot keep up, or a learner that cannot catch up.", []string{"shard"}, nil)
	descCachedStreams = prometheus.NewDesc("shoal_stream_cache_entries",
		"Streams whose metadata this node's shards cache for appends (bounded by --stream-cache, shared evenly by the cluster's shards).", nil, nil)
	descLeaderlessShards = prometheus.NewDesc("shoal_leaderless_shards",
		"Shards of which this node's replica has known no leader for longer than an election can take (shoal_shard_leaderless summed). Such a shard is led by no node, so the placement gauges miss it; every replica of it counts it.", nil, nil)
	descNodeInfo = prometheus.NewDesc("shoal_node_info",
		"Always 1: which node this is (its name, ID as the peer labels of other nodes' transport metrics give it, and zone) and the version it runs (mixed during an upgrade).",
		[]string{"node", "node_id", "zone", "version"}, nil)
	descReady = prometheus.NewDesc("shoal_ready",
		"1 when the node answers /readyz 200 (it serves its shards), 0 when it does not (starting, stopping, a slow or stalled disk, every local shard without a leader): /readyz says why.", nil, nil)
	descDiskFree = prometheus.NewDesc("shoal_data_dir_free_bytes",
		"Bytes free to the node on the data directory's file system. Below --min-free-disk the shards the node holds a replica of refuse appends (shoal_disk_low); a disk that fills all the same ends the node (status 74).", nil, nil)
	descDiskSize = prometheus.NewDesc("shoal_data_dir_size_bytes",
		"Size of the data directory's file system.", nil, nil)
	descShards = prometheus.NewDesc("shoal_cluster_shards",
		"The cluster's number of shards (fixed when it was created): a shard for which no node reports shoal_shard_leaderless (voters only) has every voter on nodes that are down or not scraped.", nil, nil)
	descReplication = prometheus.NewDesc("shoal_replication_factor",
		"The cluster's replication factor as this node knows it (shoal cluster set-replication changes it; nodes that show different factors have not all heard of a change yet).", nil, nil)
	descUnanswered = prometheus.NewDesc("shoal_shard_status_unanswered",
		"Local shards whose raft status the raft loop did not answer within a second of the scrape (a loop stalled, as on a hung disk): their shoal_shard_voters, shoal_shard_under_replicated and shoal_shard_leaderless are left out of it.", nil, nil)
)

// leaderlessAfter returns how long a replica must know no leader before the metrics count its
// shard leaderless: three raft election timeouts (1.5 s at the default tick). A follower
// forgets its leader when its own timeout expires and it campaigns; an election whose vote
// splits runs again after one to two timeouts. So a normal election does not show, while a
// shard that lost its quorum shows within seconds (a leader cut off steps down after one
// timeout, by CheckQuorum; an idle group's follower gives up its leader on a quiesce lapse).
func leaderlessAfter(electionTimeout time.Duration) time.Duration { return 3 * electionTimeout }

func (c *shardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLeaderKnown
	ch <- descIsLeader
	ch <- descVoters
	ch <- descUnder
	ch <- descDeadVoters
	ch <- descApplied
	ch <- descLeaderless
	ch <- descFollowerLag
	ch <- descLeaderlessShards
	ch <- descCachedStreams
	ch <- descReplication
	ch <- descShards
	ch <- descNodeInfo
	ch <- descReady
	ch <- descDiskFree
	ch <- descDiskSize
	ch <- descUnanswered
}

func (c *shardCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	ch <- prometheus.MustNewConstMetric(descNodeInfo, prometheus.GaugeValue, 1,
		n.Name(), strconv.FormatUint(n.ID(), 10), n.Zone(), buildinfo.Version)
	ready := 0.0
	if n.notReady() == "" {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
	if n.fs != nil {
		if du, err := n.fs.GetDiskUsage(n.cfg.DataDir); err == nil { // not on an in-memory FS
			ch <- prometheus.MustNewConstMetric(descDiskFree, prometheus.GaugeValue, float64(du.AvailBytes))
			ch <- prometheus.MustNewConstMetric(descDiskSize, prometheus.GaugeValue, float64(du.TotalBytes))
		}
	}
	set := n.Settings()
	repl := int(set.Replication)
	if repl > 0 {
		ch <- prometheus.MustNewConstMetric(descReplication, prometheus.GaugeValue, float64(repl))
	}
	if set.Shards > 0 {
		ch <- prometheus.MustNewConstMetric(descShards, prometheus.GaugeValue, float64(set.Shards))
	}
	members := n.Members()
	zones := zonesOf(members)
	alive := make(map[uint64]bool, len(members))
	for _, m := range members {
		alive[m.NodeID] = m.Alive
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	after := leaderlessAfter(c.host.ElectionTimeout())
	groups := c.host.Groups()
	statuses := c.statuses(groups)
	leaderless, cached := 0, 0
	for _, g := range groups {
		l := fmt.Sprint(g.Shard())
		sm, _, smOK := n.shardSM(g.Shard())
		if smOK {
			cached += sm.CachedStreams()
		}
		st, ok := statuses[g]
		if !ok {
			// What the group's atomics tell, without its raft loop.
			ch <- prometheus.MustNewConstMetric(descLeaderKnown, prometheus.GaugeValue, b(g.Leader() != 0), l)
			ch <- prometheus.MustNewConstMetric(descIsLeader, prometheus.GaugeValue, b(g.IsLeader()), l)
			if smOK {
				ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(sm.Applied()), l)
			}
			continue
		}
		// A removed replica hears from no leader again, rightly: it is no longer part of the
		// shard (placement deletes it).
		d, ok := g.Leaderless()
		lost := ok && d > after
		// A learner never campaigns, so it keeps its last leader after the voters lost theirs:
		// it reports no leaderless series, or a min over the shard's replicas would hide the loss.
		// Nor does a removed replica, which no longer speaks for the shard (placement deletes it).
		if !slices.Contains(st.Learners, n.ID()) && !st.Removed {
			if lost {
				leaderless++
			}
			ch <- prometheus.MustNewConstMetric(descLeaderless, prometheus.GaugeValue, b(lost), l)
		}
		ch <- prometheus.MustNewConstMetric(descLeaderKnown, prometheus.GaugeValue, b(st.Leader != 0), l)
		ch <- prometheus.MustNewConstMetric(descIsLeader, prometheus.GaugeValue, b(st.Leader == n.ID()), l)
		ch <- prometheus.MustNewConstMetric(descVoters, prometheus.GaugeValue, float64(len(st.Voters)), l)
		ch <- prometheus.MustNewConstMetric(descUnder, prometheus.GaugeValue, b(underReplicated(st.Voters, repl, zones)), l)
		dead := 0
		for _, v := range st.Voters {
			if !alive[v] {
				dead++
			}
		}
		ch <- prometheus.MustNewConstMetric(descDeadVoters, prometheus.GaugeValue, float64(dead), l)
		ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(st.Applied), l)
		if st.Leader == n.ID() {
			ch <- prometheus.MustNewConstMetric(descFollowerLag, prometheus.GaugeValue, float64(followerLag(st)), l)
		}
	}
	ch <- prometheus.MustNewConstMetric(descLeaderlessShards, prometheus.GaugeValue, float64(leaderless))
	ch <- prometheus.MustNewConstMetric(descCachedStreams, prometheus.GaugeValue, float64(cached))
	ch <- prometheus.MustNewConstMetric(descUnanswered, prometheus.GaugeValue, float64(len(groups)-len(statuses)))
}

// followerLag is the most committed entries any replica other than the leader lacks, of
// those the leader has heard from recently: one it has not (a dead node's; any, for a moment,
// after an election, which resets every match to 0) is not behind but absent, which the dead
// and unheard voter gauges tell.
func followerLag(st replica.Status) uint64 {
	var lag uint64
	for id, p := range st.Progress {
		if id != st.ID && p.RecentActive && p.Match < st.Commit {
			lag = max(lag, st.Commit-p.Match)
		}
	}
	return lag
}

// statusAnswer is a group's status once done is closed, asked for at asked.
type statusAnswer struct {
	asked time.Time
	done  chan struct{}
	st    replica.Status
}

// statuses asks the raft loop for the status of every group of groups at once (the loop
// answers them in one round), sharing a question another scrape asked and is still waiting
// for, and returns those answered within scrapeStatusWait of their asking: a concurrent
// scrape waits for the same answers, a later one does not wait again for a loop that has not
// answered for that long.
func (c *shardCollector) statuses(groups []*replica.Group) map[*replica.Group]replica.Status {
	answers := make([]*statusAnswer, len(groups))
	c.mu.Lock()
	for i, g := range groups {
		a := c.mu.asking[g]
		if a == nil {
			a = &statusAnswer{asked: time.Now(), done: make(chan struct{})}
			c.mu.asking[g] = a
			go func() {
				a.st = g.Status()
				c.mu.Lock()
				delete(c.mu.asking, g)
				c.mu.Unlock()
				close(a.done)
			}()
		}
		answers[i] = a
	}
	c.mu.Unlock()
	out := make(map[*replica.Group]replica.Status, len(groups))
	t := time.NewTimer(0)
	defer t.Stop()
	for i, a := range answers {
		if wait := time.Until(a.asked.Add(scrapeStatusWait)); wait > 0 {
			t.Reset(wait)
			select {
			case <-a.done:
				out[groups[i]] = a.st
			case <-t.C:
			}
			continue
		}
		select { // asked too long ago: only an answer already in
		case <-a.done:
			out[groups[i]] = a.st
		default:
		}
	}
	return out
}

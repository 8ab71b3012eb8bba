package replica

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the Host's instruments, registered on Config.Registerer when it is non-nil.
type Metrics struct {
	Proposals         prometheus.Counter   // proposals accepted into a leader's log
	ProposalErrors    prometheus.Counter   // proposals answered with an error
	SyncLatency       prometheus.Histogram // seconds per synced raft batch commit (one fsync)
	EntriesPerSync    prometheus.Histogram // entries written by one synced batch
	ApplyLatency      prometheus.Histogram // seconds per apply batch (all groups of one iteration)
	LeaderChanges     prometheus.Counter   // observed leader changes, all groups
	SnapshotsSent     prometheus.Counter   // snapshot streams written by WriteSnapshot
	SnapshotsReceived prometheus.Counter   // snapshot streams installed by ReceiveSnapshot
	Groups            prometheus.Gauge     // open groups
	Leaders           prometheus.Gauge     // groups this node leads
	// CommitOnlyAppends counts a leader's empty MsgApps (they only carry a new commit index)
	// that were held back: "superseded" by a later MsgApp to the same follower, or "sent" on
	// the next tick (see Group.holdCommitOnly).
	CommitOnlyAppends *prometheus.CounterVec
	// LeaderDown counts groups whose election clock was advanced because the transport found
	// their leader's node down (Host.ReportPeerDown).
	LeaderDown prometheus.Counter
	// Quiesced counts the groups that are idle and not ticking (doc.go, "Quiescence").
	Quiesced prometheus.Gauge
	// QuiesceLapses counts quiesced followers that heard nothing from their leader for two
	// quiesce refreshes and took it for gone (Group.lapse).
	QuiesceLapses prometheus.Counter
	// StaleMessages counts messages of a leader that still counts this node as it was before
	// it deleted its replica, dropped by reason: "before_deletion", a message of an earlier
	// term than the deletion's, which creates no replica (Host.groupFor), and
	// "commit_past_log", a heartbeat whose commit index lies past the replica's log
	// (Group.heartbeatPastLog).
	StaleMessages *prometheus.CounterVec
	// InboundDropped counts peers' messages dropped on arrival because the host's inbound queue
	// held Config.MaxQueuedMsgs already (raft resends what matters; a rate that lasts means this
	// node's raft loop cannot keep up).
	InboundDropped prometheus.Counter

	commitOnlySuperseded, commitOnlySent prometheus.Counter // CommitOnlyAppends' two series
	// LogLost counts the leadership transfers a leader here started because a follower's log
	// ends before the match index the leader holds for it (loglost.go).
	LogLost prometheus.Counter

	staleBeforeDeletion, staleCommitPastLog prometheus.Counter // StaleMessages' two series
}

func newMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "shoal", "replica"
	m := &Metrics{
		Proposals: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "proposals_total", Help: "Proposals accepted into a leader's raft log."}),
		ProposalErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "proposal_errors_total", Help: "Proposals answered with an error."}),
		SyncLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "sync_seconds", Help: "Time from handing a synced raft batch to Pebble until it is durable (several batches can share one WAL fsync).",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16)}),
		EntriesPerSync: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "entries_per_sync", Help: "Raft entries in one synced raft batch (all ready groups of one loop iteration).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		ApplyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "apply_seconds", Help: "Latency of applying one iteration's committed entries.",
			Buckets: prometheus.ExponentialBuckets(20e-6, 2, 16)}),
		LeaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "leader_changes_total", Help: "Leader changes observed by this node, all groups."}),
		SnapshotsSent: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "snapshots_sent_total", Help: "Snapshot streams written."}),
		SnapshotsReceived: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "snapshots_received_total", Help: "Snapshot streams received and verified."}),
		Groups: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "groups", Help: "Open raft groups."}),
		Leaders: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "leader_groups", Help: "Groups this node leads."}),
		CommitOnlyAppends: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "commit_only_appends_total", Help: "Empty appends (a new commit index only) held back by a leader, by outcome: superseded by a later append to the same follower, or sent on the next tick."},
			[]string{"outcome"}),
		Quiesced: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "quiesced_groups", Help: "Groups that are idle and neither tick nor heartbeat until there is work for them."}),
		QuiesceLapses: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "quiesce_lapses_total", Help: "Quiesced followers that heard nothing from their leader for two and a half quiesce refreshes (2.5 s at the default tick) and called an election."}),
		LeaderDown: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "leader_down_total", Help: "Groups whose election clock was advanced because their leader's node was found down (its stream broke and it refused a connection)."}),
		StaleMessages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "stale_messages_dropped_total", Help: "Messages of a leader that counts this node's replica as it was before, dropped: before_deletion (an earlier term than the replica's deletion: no replica is created for it), commit_past_log (a heartbeat committing past the replica's log: the replica was deleted and created again, or the disk lost synced writes; answered so that the leader hands off its leadership)."},
			[]string{"reason"}),
		LogLost: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "log_lost_total", Help: "Leadership transfers started by a leader here because a follower's raft log ends before what it acknowledged (a disk that lost synced writes, or a replica created again): the next leader brings the follower up again."}),
		InboundDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "inbound_dropped_total", Help: "Peers' raft messages dropped on arrival because the inbound queue was full (the raft loop behind; raft resends)."}),
	}
	m.commitOnlySuperseded = m.CommitOnlyAppends.WithLabelValues("superseded")
	m.commitOnlySent = m.CommitOnlyAppends.WithLabelValues("sent")
	m.staleBeforeDeletion = m.StaleMessages.WithLabelValues("before_deletion")
	m.staleCommitPastLog = m.StaleMessages.WithLabelValues("commit_past_log")
	if reg != nil {
		reg.MustRegister(m.Proposals, m.ProposalErrors, m.SyncLatency, m.EntriesPerSync, m.ApplyLatency,
			m.LeaderChanges, m.SnapshotsSent, m.SnapshotsReceived, m.Groups, m.Leaders, m.CommitOnlyAppends,
			m.LeaderDown, m.Quiesced, m.QuiesceLapses, m.StaleMessages, m.InboundDropped, m.LogLost)
	}
	return m
}

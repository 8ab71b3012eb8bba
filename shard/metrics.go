package shard

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the shard package's Prometheus collectors. One Metrics is
// shared by all shards of a node (series carry a "shard" label); pass it in
// Options.Metrics. A nil *Metrics records nothing.
type Metrics struct {
	applied     *prometheus.CounterVec // shard, result
	events      *prometheus.CounterVec // shard
	idLookups   *prometheus.CounterVec // shard, outcome
	forgotten   *prometheus.CounterVec // shard
	streamCache *prometheus.CounterVec // shard, outcome
}

// NewMetrics creates the collectors and registers them on reg (nil: do not
// register). It returns an error if registration fails.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "shard", Name: "commands_applied_total",
			Help: "Commands applied, by verdict (append, duplicate, delete, truncate, wrong_expected_version, id_conflict, not_found, deleted, invalid, format, retention, needs_format, policy_changed).",
		}, []string{"shard", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "shard", Name: "events_appended_total",
			Help: "Events written by appends, by this replica: every replica of a shard counts each event it applies (summed over the nodes, replication times the events; shoal_events_appended_total counts each once).",
		}, []string{"shard"}),
		idLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "shard", Name: "event_id_lookups_total",
			Help: "Event-ID idempotency checks that needed a Pebble read, by outcome: found, false_positive (the filter said maybe), unfiltered (absent; looked up while the filter was being built), gone (an entry a large truncation left, whose event is no longer stored: counted as absent).",
		}, []string{"shard", "outcome"}),
		forgotten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "shard", Name: "event_ids_forgotten_total",
			Help: "Event-ID index entries that truncations deleted with their events (shard format 7), by this replica.",
		}, []string{"shard"}),
		streamCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "shard", Name: "stream_cache_lookups_total",
			Help: "Stream-metadata lookups during apply, by outcome: hit (cached), miss (read from Pebble), new (proved new by the stream filter, no read).",
		}, []string{"shard", "outcome"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.applied, m.events, m.idLookups, m.forgotten, m.streamCache} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// shardMetrics are one shard's curried counters (nil-safe via noop values).
type shardMetrics struct {
	applied              map[string]prometheus.Counter
	events               prometheus.Counter
	idFound, idFalsePos  prometheus.Counter
	idUnfiltered, idGone prometheus.Counter
	idsForgotten         prometheus.Counter
	cacheHit, cacheMiss  prometheus.Counter
	cacheNew             prometheus.Counter
}

var verdicts = []string{"append", "duplicate", "delete", "truncate", "wrong_expected_version", "id_conflict", "not_found", "deleted", "invalid", "format", "retention", "needs_format", "policy_changed"}

func (m *Metrics) forShard(id uint32) *shardMetrics {
	if m == nil {
		return nil
	}
	l := strconv.FormatUint(uint64(id), 10)
	sm := &shardMetrics{
		applied:      make(map[string]prometheus.Counter, len(verdicts)),
		events:       m.events.WithLabelValues(l),
		idFound:      m.idLookups.WithLabelValues(l, "found"),
		idFalsePos:   m.idLookups.WithLabelValues(l, "false_positive"),
		idUnfiltered: m.idLookups.WithLabelValues(l, "unfiltered"),
		idGone:       m.idLookups.WithLabelValues(l, "gone"),
		idsForgotten: m.forgotten.WithLabelValues(l),
		cacheHit:     m.streamCache.WithLabelValues(l, "hit"),
		cacheMiss:    m.streamCache.WithLabelValues(l, "miss"),
		cacheNew:     m.streamCache.WithLabelValues(l, "new"),
	}
	for _, v := range verdicts {
		sm.applied[v] = m.applied.WithLabelValues(l, v)
	}
	return sm
}

func (sm *shardMetrics) observe(res any) {
	if sm == nil {
		return
	}
	var v string
	switch r := res.(type) {
	case *AppendResult:
		v = "append"
		if r.Duplicate {
			v = "duplicate"
		} else {
			sm.events.Add(float64(r.LastVersion - r.FirstVersion + 1))
		}
	case *DeleteResult:
		v = "delete"
	case *TruncateResult:
		v = "truncate"
	case *FormatResult:
		v = "format"
	case *RetentionResult:
		v = "retention"
	case *WrongExpectedVersionError:
		v = "wrong_expected_version"
	case *IDConflictError:
		v = "id_conflict"
	case *InvalidError:
		v = "invalid"
	case error:
		switch r {
		case ErrStreamNotFound:
			v = "not_found"
		case ErrStreamDeleted:
			v = "deleted"
		default:
			switch {
			case errors.Is(r, ErrNeedsFormat):
				v = "needs_format" // a command the shard's format does not have yet (a truncate below Format4)
			case errors.Is(r, ErrPolicyChanged):
				v = "policy_changed" // a retention policy's truncation after the policy changed
			default:
				return
			}
		}
	}
	if c := sm.applied[v]; c != nil {
		c.Inc()
	}
}

func (sm *shardMetrics) inc(c func(*shardMetrics) prometheus.Counter) {
	if sm != nil {
		c(sm).Inc()
	}
}

package client

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// Retry defaults (see RetryPolicy).
const (
	DefaultMaxElapsed      = 30 * time.Second
	DefaultInitialInterval = 50 * time.Millisecond
	DefaultMaxInterval     = 2 * time.Second
)

// Breaker defaults (see BreakerSettings).
const (
	DefaultBreakerFailures    = 5
	DefaultBreakerOpenTimeout = 2 * time.Second
)

// DefaultTopologyRefresh is how often the cached topology is refreshed in
// the background.
const DefaultTopologyRefresh = 10 * time.Second

// DefaultPageSize is the number of events ReadPage returns when no Count
// option is given.
const DefaultPageSize = 500

// RetryPolicy bounds the retries of one call. Zero fields mean the default.
type RetryPolicy struct {
	// MaxElapsed is the total time a call may spend retrying, measured from
	// its first attempt (and restarted whenever a read makes progress); the
	// last attempt starts as it runs out.
	// Default 30s. Negative disables retries: one attempt only, save that a
	// not-leader answer naming the leader is still followed there (up to three
	// times; such an answer says nothing was applied).
	MaxElapsed time.Duration
	// InitialInterval is the ceiling of the first backoff; each retry
	// doubles the ceiling up to MaxInterval, and the actual wait is drawn
	// uniformly from [0, ceiling] ("full jitter"). Default 50ms.
	InitialInterval time.Duration
	// MaxInterval caps the backoff ceiling. Default 2s.
	MaxInterval time.Duration
	// AttemptTimeout bounds each attempt of a unary call (Append, Delete,
	// cluster calls); an attempt that times out is retried. 0 = no
	// per-attempt timeout (only the caller's context bounds the call).
	AttemptTimeout time.Duration
}

// DefaultRetryPolicy returns the policy used when WithRetry is not given.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxElapsed: DefaultMaxElapsed, InitialInterval: DefaultInitialInterval, MaxInterval: DefaultMaxInterval}
}

func (p *RetryPolicy) ensureDefaults() {
	if p.MaxElapsed == 0 {
		p.MaxElapsed = DefaultMaxElapsed
	}
	if p.InitialInterval == 0 {
		p.InitialInterval = DefaultInitialInterval
	}
	if p.MaxInterval == 0 {
		p.MaxInterval = max(DefaultMaxInterval, p.InitialInterval)
	}
}

// Validate reports a policy that cannot work. Zero fields are valid (they
// mean the default).
func (p RetryPolicy) Validate() error {
	switch {
	case p.InitialInterval < 0:
		return &InvalidArgumentError{Field: "RetryPolicy.InitialInterval", Limit: ">= 0", Reason: "the interval is negative"}
	case p.MaxInterval < 0:
		return &InvalidArgumentError{Field: "RetryPolicy.MaxInterval", Limit: ">= 0", Reason: "the interval is negative"}
	case p.MaxInterval > 0 && p.InitialInterval > p.MaxInterval:
		return &InvalidArgumentError{Field: "RetryPolicy.InitialInterval", Limit: "<= MaxInterval", Reason: "the initial interval exceeds the maximum interval"}
	case p.AttemptTimeout < 0:
		return &InvalidArgumentError{Field: "RetryPolicy.AttemptTimeout", Limit: ">= 0", Reason: "the timeout is negative"}
	}
	return nil
}

// BreakerSettings configure the circuit breaker the client keeps per node
// address. Only transport failures count against a node: Unavailable
// (except not-leader answers) and timed-out attempts. Application verdicts
// such as a wrong expected version count as successes. Zero fields mean the
// default.
type BreakerSettings struct {
	// Failures is the number of consecutive transport failures that open a
	// node's breaker. Default 5.
	Failures uint32
	// OpenTimeout is how long a breaker stays open before it lets one probe
	// call through (half-open). Default 2s.
	OpenTimeout time.Duration
	// Disabled turns breaking off: every node is always tried.
	Disabled bool
}

// DefaultBreakerSettings returns the settings used when WithBreaker is not
// given.
func DefaultBreakerSettings() BreakerSettings {
	return BreakerSettings{Failures: DefaultBreakerFailures, OpenTimeout: DefaultBreakerOpenTimeout}
}

func (s *BreakerSettings) ensureDefaults() {
	if s.Failures == 0 {
		s.Failures = DefaultBreakerFailures
	}
	if s.OpenTimeout == 0 {
		s.OpenTimeout = DefaultBreakerOpenTimeout
	}
}

// Validate reports settings that cannot work.
func (s BreakerSettings) Validate() error {
	if s.OpenTimeout < 0 {
		return &InvalidArgumentError{Field: "BreakerSettings.OpenTimeout", Limit: ">= 0", Reason: "the timeout is negative"}
	}
	return nil
}

type options struct {
	retry           RetryPolicy
	breaker         BreakerSettings
	dialOptions     []grpc.DialOption
	logger          *slog.Logger
	staleReads      bool
	zone            string
	topologyRefresh time.Duration
}

// Option configures Dial.
type Option func(*options)

// WithRetry sets the retry policy of every call.
func WithRetry(p RetryPolicy) Option { return func(o *options) { o.retry = p } }

// WithBreaker sets the per-node circuit breaker settings.
func WithBreaker(s BreakerSettings) Option { return func(o *options) { o.breaker = s } }

// WithDialOptions adds gRPC dial options, applied after the client's own
// (insecure transport credentials), so they can override them.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithTLS makes the client dial every node over TLS with a clone of cfg:
// cfg.RootCAs verifies the servers (nil: the system's roots), and a client
// certificate (cfg.Certificates or cfg.GetClientCertificate) answers servers
// that require one, as shoal servers started with --tls-ca do. The servers'
// certificates must name the addresses the client dials: the seeds, and the
// advertised addresses of the nodes the topology lists. Options given later
// with WithDialOptions override it.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) {
		o.dialOptions = append(o.dialOptions, grpc.WithTransportCredentials(credentials.NewTLS(cfg.Clone())))
	}
}

// WithLogger sets the logger for routing changes, retries and breaker
// transitions (Debug and Info levels). Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithStaleReads makes every read accept possibly stale data served by any
// replica of the shard, as if each read had the Stale option. Default false:
// reads go to the shard's leader and are linearizable.
func WithStaleReads(stale bool) Option { return func(o *options) { o.staleReads = stale } }

// WithZone names the zone the client runs in, as the servers name theirs (--zone). Reads that
// any replica may serve (Stale, MaxStaleness, WithStaleReads) then go first to a voter of the
// shard in that zone, one chosen at random when there are several, and to the shard's other
// voters after it: a read stays in its zone while the zone holds a replica. Other calls are not
// affected: linearizable reads and writes go to the shard's leader wherever it is. Default "":
// every voter alike.
func WithZone(zone string) Option { return func(o *options) { o.zone = zone } }

// WithTopologyRefresh sets how often the cached topology is refreshed in the
// background. Default 10s. The client also refreshes after not-leader and
// unavailable errors.
func WithTopologyRefresh(d time.Duration) Option { return func(o *options) { o.topologyRefresh = d } }

func buildOptions(opts []Option) (options, error) {
	o := options{retry: DefaultRetryPolicy(), breaker: DefaultBreakerSettings()}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.retry.Validate(); err != nil {
		return o, err
	}
	if err := o.breaker.Validate(); err != nil {
		return o, err
	}
	if o.topologyRefresh < 0 {
		return o, &InvalidArgumentError{Field: "WithTopologyRefresh", Limit: ">= 0", Reason: fmt.Sprintf("the interval %s is negative", o.topologyRefresh)}
	}
	o.retry.ensureDefaults()
	o.breaker.ensureDefaults()
	if o.topologyRefresh == 0 {
		o.topologyRefresh = DefaultTopologyRefresh
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

type readOptions struct {
	from      uint64
	fromGiven bool // FromVersion was given
	fromEnd   bool
	backward  bool
	count     uint64
	countSet  bool // Count was given (ReadPage refuses Count(0))
	stale     bool
	bounded   bool            // MaxStaleness was given
	maxStale  time.Duration   // its bound
	deletes   bool            // IncludeDeletes was given
	follow    bool            // Follow was given
	whole     bool            // WholeHistory was given
	wait      time.Duration   // Wait's long poll
	prefix    string          // StreamPrefix
	types     []string        // EventTypes
	resume    *atomic.Uint64  // ResumeAt
	resumeAll []atomic.Uint64 // ResumeAllAt
	// unhandled, when set (ReadAll's shard reads), tells after a loop body that returned
	// false whether the entry was never handed to the caller's loop body: ResumeAt then stays
	// before it.
	unhandled func() bool
}

// ReadOption configures Read and ReadPage (FromVersion, FromEnd, Backward, Count,
// Linearizable, Stale, MaxStaleness, Follow, WholeHistory), ReadShard (Linearizable, Stale,
// MaxStaleness, IncludeDeletes, Follow, Wait, FromEnd, StreamPrefix, EventTypes,
// ResumeAt) and ReadAll (ReadShard's, with ResumeAllAt instead of ResumeAt).
type ReadOption func(*readOptions)

// FromVersion starts the read at version n (default 0 forwards, the end
// with FromEnd or Backward).
func FromVersion(n uint64) ReadOption {
	return func(o *readOptions) { o.from, o.fromEnd, o.fromGiven = n, false, true }
}

// FromEnd starts the read at the stream's last event; use with Backward. With
// Follow it starts after the last event: the subscription yields only events
// appended from then on. For ReadShard it starts at the log's current end
// (ignoring from), which is useful with Follow or Wait; servers from before
// it read from position 0 instead.
func FromEnd() ReadOption { return func(o *readOptions) { o.fromEnd = true } }

// Backward reads towards version 0: from the stream's last event, or from
// FromVersion when that is given.
func Backward() ReadOption { return func(o *readOptions) { o.backward = true } }

// streamStart settles where a stream read starts: a backward read with no
// FromVersion starts at the end. (Clients before this read from version 0
// then, the stream's first event only.)
func (o *readOptions) streamStart() {
	if o.backward && !o.fromGiven {
		o.fromEnd = true
	}
}

// Count limits the read to n events (0 = all, for Read; ReadPage takes 1 or
// more, DefaultPageSize when Count is not given, and refuses Count(0) with an
// *InvalidArgumentError rather than read a whole stream into memory).
func Count(n uint64) ReadOption { return func(o *readOptions) { o.count, o.countSet = n, true } }

// Linearizable makes the read linearizable (served by the shard's leader after
// it confirmed its leadership) whatever WithStaleReads says, for a caller that
// decides on what it reads (a saga coordinator, a command handler).
func Linearizable() ReadOption {
	return func(o *readOptions) { o.stale, o.bounded, o.maxStale = false, false, 0 }
}

// IncludeDeletes makes ReadShard return the deletes of the shard's streams, at
// their positions in the shard log, as RecordedEvents with Deletion set (a
// projection that must forget deleted streams wants them). Without it they
// are skipped. Deletes take positions from the shard's format 2 on (ShardInfo's
// Format in the topology); deletes made before, or read from servers that
// predate format 2, are not returned. Read and ReadPage ignore it.
func IncludeDeletes() ReadOption { return func(o *readOptions) { o.deletes = true } }

// Follow makes Read or ReadShard a subscription: after the current end it
// does not stop but yields each new event as soon as the replica serving it
// applied it (it is then committed on a quorum), until ctx ends or the caller
// breaks out. The sequence is gap-free and in order, like a read: when its
// server goes away (a crash, a hang, the replica moved, a shutdown) it
// subscribes again on another replica after the last event it yielded, so no
// event is yielded twice or skipped. Only when no replica of the shard serves
// it for the retry policy's MaxElapsed does it end with ErrUnavailable, and
// the caller can resume with FromVersion (or ReadShard's from) after its last
// event. Not with Backward or Count; with FromEnd it yields only new events.
// A linearizable subscription (the default) starts on the leader; Stale and
// MaxStaleness let any replica serve it (see docs/guarantees.md,
// "Subscriptions"). Servers of versions before subscriptions end the read at
// the current end; the client then polls them, from 50 ms to 1 s apart.
func Follow() ReadOption { return func(o *readOptions) { o.follow = true } }

// WholeHistory makes Read (and ReadPage) fail with ErrHistoryTruncated when a
// truncation removed events of the stream's current history at or after the
// version it starts from, rather than start at the first event left: for a
// caller that folds the history into a state (snapshot.Load uses it), which a
// missing event would make wrong. Versions a soft delete hid are not the
// current history: a read from below them starts after them, as without the
// option. A subscription (Follow) fails too when a truncation passes the
// version it goes on from while it lags. Forwards only, not with FromEnd.
// Truncations made before the shard reached format 5, and reads served by
// versions without the option, are not told (the read starts at the first
// event left, as without it).
func WholeHistory() ReadOption { return func(o *readOptions) { o.whole = true } }

// Wait makes a ReadShard that finds nothing new wait up to d (at most
// MaxWait) on its server for the shard's next entry before it returns: a long
// poll. It returns as soon as entries it would return arrive (entries its
// filters or the lack of IncludeDeletes skip do not end the wait, but
// ResumeAt passes them), and returns nothing when none did within d.
// ReadShard only (Read and ReadPage refuse it); not with Follow.
func Wait(d time.Duration) ReadOption { return func(o *readOptions) { o.wait = d } }

// StreamPrefix makes ReadShard return only the entries of streams whose names
// start with prefix (deletes included, with IncludeDeletes). The server skips
// the others, so they do not cross the network; the client filters too, for
// servers from before filters. At most 512 bytes. Read and ReadPage refuse it.
func StreamPrefix(prefix string) ReadOption { return func(o *readOptions) { o.prefix = prefix } }

// EventTypes makes ReadShard return only events of these types (deletes are
// filtered by StreamPrefix only). At most 100 types of 1..256 bytes. Read and
// ReadPage refuse it.
func EventTypes(types ...string) ReadOption {
	return func(o *readOptions) { o.types = slices.Clone(types) }
}

// ResumeAt makes ReadShard keep p at the position to resume at: past every
// entry whose loop body has returned (a body that breaks out because it could
// not handle its entry must not store the checkpoint after it, or must store
// that entry's position), and past the entries the read skipped
// (deletes without IncludeDeletes, entries StreamPrefix or EventTypes filtered
// out), which pages and a subscription's heartbeats report; so a checkpoint
// moves on while nothing matches. Any goroutine may read it, for example one
// that stores a subscription's checkpoint now and then: it never passes an
// entry not yet handled. ReadShard sets it to from at the start, except with
// FromEnd, where it keeps its value until the first page says where the end
// was. After that it only moves forwards.
func ResumeAt(p *atomic.Uint64) ReadOption { return func(o *readOptions) { o.resume = p } }

// ResumeAllAt is ResumeAt for ReadAll: ps[shard] is kept at the position to
// resume that shard at. It must hold one position per shard.
func ResumeAllAt(ps []atomic.Uint64) ReadOption { return func(o *readOptions) { o.resumeAll = ps } }

// advance moves the ResumeAt position forwards to p.
func (o *readOptions) advance(p uint64) {
	if o.resume != nil && p > o.resume.Load() {
		o.resume.Store(p)
	}
}

// checkFilters refuses filters past their limits.
func (o *readOptions) checkFilters() error {
	if len(o.prefix) > 512 {
		return &InvalidArgumentError{Field: "StreamPrefix", Limit: "at most 512 bytes", Reason: fmt.Sprintf("%d bytes given", len(o.prefix))}
	}
	if !utf8.ValidString(o.prefix) {
		return notUTF8("StreamPrefix", "the prefix")
	}
	if len(o.types) > 100 {
		return &InvalidArgumentError{Field: "EventTypes", Limit: "at most 100 types", Reason: fmt.Sprintf("%d given", len(o.types))}
	}
	for i, t := range o.types {
		if len(t) == 0 || len(t) > 256 {
			return &InvalidArgumentError{Field: "EventTypes", Limit: "1..256 bytes each", Reason: fmt.Sprintf("type %d is %d bytes", i, len(t))}
		}
		if !utf8.ValidString(t) {
			return notUTF8("EventTypes", fmt.Sprintf("type %d", i))
		}
	}
	return nil
}

// wanted reports whether ev passes the filters.
func (o *readOptions) wanted(ev *shoalv1.RecordedEvent) bool {
	if !strings.HasPrefix(ev.GetStream(), o.prefix) {
		return false
	}
	return ev.GetDeletion() != shoalv1.Deletion_DELETION_NONE || len(o.types) == 0 || slices.Contains(o.types, ev.GetType())
}

// MaxWait is the longest Wait.
const MaxWait = time.Minute

// waitMS returns the request's wait_ms.
func (o *readOptions) waitMS() (uint32, error) {
	switch {
	case o.wait == 0:
		return 0, nil
	case o.wait < 0 || o.wait > MaxWait:
		return 0, &InvalidArgumentError{Field: "Wait", Limit: fmt.Sprintf("0..%v", MaxWait),
			Reason: fmt.Sprintf("%v is out of range", o.wait)}
	case o.follow:
		return 0, &InvalidArgumentError{Field: "Wait", Limit: "not with Follow", Reason: "a subscription already waits"}
	}
	return uint32((o.wait + time.Millisecond - 1) / time.Millisecond), nil
}

// checkStreamRead refuses a Follow or a WholeHistory that does not go with Read's other
// options, and ReadShard's own options (IncludeDeletes aside, documented as ignored).
func (o *readOptions) checkStreamRead() error {
	if o.follow && (o.backward || o.count != 0) {
		return &InvalidArgumentError{Field: "Follow", Limit: "forwards, without Count",
			Reason: "a subscription reads forwards until cancelled"}
	}
	if o.whole && (o.backward || o.fromEnd) {
		return &InvalidArgumentError{Field: "WholeHistory", Limit: "forwards, without FromEnd",
			Reason: "it asks for the history from a version on"}
	}
	// ReadShard's filters and positions: taken silently, a filter would look applied.
	for _, f := range []struct {
		field string
		given bool
	}{
		{"EventTypes", len(o.types) > 0},
		{"StreamPrefix", o.prefix != ""},
		{"Wait", o.wait != 0},
		{"ResumeAt", o.resume != nil},
		{"ResumeAllAt", o.resumeAll != nil},
	} {
		if f.given {
			return &InvalidArgumentError{Field: f.field, Limit: "ReadShard and ReadAll only",
				Reason: "Read and ReadPage return every event of their stream: filter them as you range over them"}
		}
	}
	return nil
}

// Stale lets any replica of the shard serve the read; it may lag the leader.
// Without MaxStaleness there is no bound: a replica cut off from its group
// (a partition, a shard that lost its quorum) still serves what it holds.
func Stale() ReadOption { return func(o *readOptions) { o.stale = true } }

// MaxStaleness is Stale with a bound: a follower serves the read only if it
// was current with its shard's leader within d, having applied everything the
// leader had committed as of a message it received from it then (so its data
// misses at most what was acknowledged in the last d); otherwise the leader
// serves it, and when no leader answers the read fails ErrUnavailable. See
// docs/guarantees.md for the one gap (a leader cut off without knowing it yet). d is rounded up to a millisecond; it must be positive and at
// most MaxStalenessLimit.
func MaxStaleness(d time.Duration) ReadOption {
	return func(o *readOptions) { o.stale, o.bounded, o.maxStale = true, true, d }
}

// MaxStalenessLimit is the largest bound MaxStaleness takes.
const MaxStalenessLimit = time.Duration(math.MaxUint32) * time.Millisecond

// maxStalenessMS returns the request's max_staleness_ms.
func (o *readOptions) maxStalenessMS() (uint32, error) {
	switch {
	case !o.bounded:
		return 0, nil
	case o.maxStale <= 0 || o.maxStale > MaxStalenessLimit:
		return 0, &InvalidArgumentError{Field: "MaxStaleness", Limit: fmt.Sprintf("1ns..%v", MaxStalenessLimit),
			Reason: fmt.Sprintf("%v is out of range", o.maxStale)}
	}
	return uint32((o.maxStale + time.Millisecond - 1) / time.Millisecond), nil
}

type deleteOptions struct {
	tombstone bool
	result    *DeleteResult
}

// DeleteOption configures Delete.
type DeleteOption func(*deleteOptions)

// Tombstone deletes the stream permanently: its name can never be used
// again. Without it a delete is soft: reads report ErrStreamNotFound and a
// later append (with Any or NoStream) recreates the stream.
func Tombstone() DeleteOption { return func(o *deleteOptions) { o.tombstone = true } }

// DeleteResultTo stores an acknowledged delete's result in *r, e.g. for
// query.Projection.WaitForDelete (read-your-delete in a read model).
func DeleteResultTo(r *DeleteResult) DeleteOption { return func(o *deleteOptions) { o.result = r } }

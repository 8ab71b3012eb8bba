package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// DefaultRetentionInterval is how often each shard's leader applies the shard's retention
// policies (Config.RetentionInterval).
const DefaultRetentionInterval = time.Minute

const (
	// retentionPage is how many streams a pass works out at a time, from one view of the DB.
	retentionPage = 256
	// retentionShardsAtOnce is how many shards' passes a node runs at once: each truncation is
	// a raft round trip, and one shard at a time a node leading many would take a round trip
	// per stream of them all.
	retentionShardsAtOnce = 4
	// retentionTruncateTimeout bounds one truncation's proposal; one that does not commit in
	// time ends the shard's pass, and the next round goes on.
	retentionTruncateTimeout = 10 * time.Second
)

// SetRetention sets or removes a retention policy of one shard, on its leader or forwarded there.
func (s *streamsServer) SetRetention(ctx context.Context, req *shoalv1.SetRetentionRequest) (*shoalv1.SetRetentionResponse, error) {
	resp, err := s.n.setRetention(ctx, req)
	if incomingHops(ctx) == 0 {
		s.n.metrics.retentionSets.WithLabelValues(resultLabel(err)).Inc()
	}
	return resp, err
}

func (n *Node) setRetention(ctx context.Context, req *shoalv1.SetRetentionRequest) (*shoalv1.SetRetentionResponse, error) {
	if _, err := n.checkShardRead(req.Shard, false, 0); err != nil {
		return nil, n.toStatus(err, "", req.Shard)
	}
	cmd := &shard.SetRetentionCommand{Remove: req.Remove}
	if p := req.Policy; p != nil {
		cmd.Policy = fromProtoPolicy(p)
	}
	if err := shard.ValidateRetention(cmd); err != nil {
		return nil, n.toStatus(err, "", req.Shard)
	}
	// Setting a policy is safe to repeat: a repeat writes the same policy (with a later time),
	// and a repeated removal removes nothing.
	res, retried, err := n.write(ctx, req.Shard, true, func(g *replica.Group, pctx context.Context) (any, error) {
		if err := n.needFormat(pctx, g, req.Shard, shard.Format6, "a retention policy"); err != nil {
			return err, nil
		}
		cmd.Policy.Set = time.Now().UnixNano()
		return g.Propose(pctx, shard.EncodeSetRetention(cmd))
	}, func(conn *grpc.ClientConn, fctx context.Context) (any, error) {
		return shoalv1.NewStreamsClient(conn).SetRetention(fctx, req)
	})
	if e, ok := res.(error); ok && err == nil {
		res, err = nil, e
	}
	if err = appendOutcome(req.Shard, retried, err); err != nil {
		return nil, n.toStatus(err, "", req.Shard)
	}
	switch r := res.(type) {
	case *shoalv1.SetRetentionResponse:
		return r, nil
	case *shard.RetentionResult:
		return &shoalv1.SetRetentionResponse{Shard: req.Shard, Policies: uint32(r.Policies)}, nil
	}
	return nil, status.Errorf(codes.Internal, "set retention: unexpected result %T", res)
}

// Retention reads one shard's retention policies on its leader, after a read index, so that a
// policy just set is there.
func (s *streamsServer) Retention(ctx context.Context, req *shoalv1.RetentionRequest) (*shoalv1.RetentionResponse, error) {
	n := s.n
	if _, err := n.checkShardRead(req.Shard, false, 0); err != nil {
		return nil, n.toStatus(err, "", req.Shard)
	}
	res, _, err := n.write(ctx, req.Shard, true, func(g *replica.Group, pctx context.Context) (any, error) {
		if _, err := readBarrier(pctx, g); err != nil {
			return nil, err
		}
		sm, _, ok := n.shardSM(req.Shard)
		if !ok {
			return nil, &NoLeaderError{Shard: req.Shard, Cause: errors.New("its replica here closed")}
		}
		ps, err := sm.RetentionPolicies()
		if err != nil {
			return nil, err
		}
		resp := &shoalv1.RetentionResponse{Shard: req.Shard, Format: sm.Format()}
		for _, p := range ps {
			resp.Policies = append(resp.Policies, toProtoPolicy(p))
		}
		return resp, nil
	}, func(conn *grpc.ClientConn, fctx context.Context) (any, error) {
		return shoalv1.NewStreamsClient(conn).Retention(fctx, req)
	})
	if err != nil {
		return nil, n.toStatus(err, "", req.Shard)
	}
	if r, ok := res.(*shoalv1.RetentionResponse); ok {
		return r, nil
	}
	return nil, status.Errorf(codes.Internal, "retention: unexpected result %T", res)
}

// needFormat returns shard.NeedsFormat's verdict for what when the local replica of shard id,
// which g leads, is below format want. A leader just elected may not have applied a raise its
// log holds: it catches up with what is committed before it refuses (a rare path, only below
// the format).
func (n *Node) needFormat(ctx context.Context, g *replica.Group, id uint32, want uint64, what string) error {
	var have uint64 // 0: no local replica
	if sm, _, ok := n.shardSM(id); ok {
		if have = sm.Format(); have < want {
			_, _ = readBarrier(ctx, g)
			have = sm.Format()
		}
	}
	if have < want {
		return shard.NeedsFormat(what, want, id, have)
	}
	return nil
}

func fromProtoPolicy(p *shoalv1.RetentionPolicy) shard.RetentionPolicy {
	age := time.Duration(min(p.MaxAgeMs, uint64(time.Duration(1<<63-1)/time.Millisecond))) * time.Millisecond
	return shard.RetentionPolicy{Prefix: p.Prefix, KeepLast: p.KeepLast, MaxAge: age, Deleted: p.Deleted}
}

func toProtoPolicy(p shard.RetentionPolicy) *shoalv1.RetentionPolicy {
	return &shoalv1.RetentionPolicy{Prefix: p.Prefix, KeepLast: p.KeepLast, MaxAgeMs: uint64(p.MaxAge / time.Millisecond),
		Deleted: p.Deleted, SetUnixNano: p.Set}
}

// retainer is the retention loop: every interval (jittered), each shard this node leads
// truncates the streams its retention policies cover as they say.
type retainer struct {
	n        *Node
	log      *slog.Logger
	interval time.Duration
	m        *retentionMetrics
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

type retentionMetrics struct {
	truncations *prometheus.CounterVec // by result
	events      prometheus.Counter
	rounds      prometheus.Histogram
}

func newRetentionMetrics(r prometheus.Registerer) *retentionMetrics {
	m := &retentionMetrics{
		truncations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_retention_truncations_total",
			Help: "Truncations this node's shards proposed as leaders to apply their retention policies, by result (ok, error: retried on a later round).",
		}, []string{"result"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_retention_events_removed_total",
			Help: "Events the retention policies' truncations removed (as the policies' pass counted them), readable and hidden.",
		}),
		rounds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_retention_round_duration_seconds",
			Help:    "How long a round of the retention loop took over the shards this node leads that have policies.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1ms .. 262s
		}),
	}
	r.MustRegister(m.truncations, m.events, m.rounds)
	return m
}

// startRetention starts the retention loop; stopRetention (from Close) ends it. A negative
// Config.RetentionInterval disables the loop.
func (n *Node) startRetention() {
	interval := n.cfg.RetentionInterval
	if interval < 0 {
		n.log.Info("retention disabled: policies are kept but not applied")
		return
	}
	if interval == 0 {
		interval = DefaultRetentionInterval
	}
	r := &retainer{n: n, log: n.log.With("component", "retention"), interval: interval, m: newRetentionMetrics(n.regs)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	n.retainer.Store(r)
	r.wg.Go(r.loop)
}

// stopRetention stops the loop and waits for its round, or for ctx (as stopPlacement does).
func (n *Node) stopRetention(ctx context.Context) {
	r := n.retainer.Load()
	if r == nil {
		return
	}
	r.cancel()
	if waitOrDone(ctx, &r.wg) {
		n.retainer.CompareAndSwap(r, nil)
	}
}

func (r *retainer) loop() {
	t := time.NewTimer(r.jittered())
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.n.done:
			return
		case <-t.C:
		}
		r.round()
		t.Reset(r.jittered())
	}
}

// jittered returns the interval ±25%.
func (r *retainer) jittered() time.Duration {
	return time.Duration(float64(r.interval) * (0.75 + 0.5*rand.Float64()))
}

// round applies the policies of every shard this node leads, a few shards at a time.
func (r *retainer) round() {
	start := time.Now()
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, retentionShardsAtOnce)
		worked bool
	)
	for _, g := range r.n.host.Groups() {
		if r.ctx.Err() != nil {
			break
		}
		if !g.IsLeader() {
			continue
		}
		sm, _, ok := r.n.shardSM(g.Shard())
		if !ok || sm.Format() < shard.Format6 {
			continue
		}
		ps, err := sm.RetentionPolicies()
		if err != nil {
			r.log.Warn("reading the shard's retention policies", "shard", g.Shard(), "err", err)
			continue
		}
		if len(ps) == 0 {
			continue
		}
		worked = true
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r.applyShard(g, sm, ps)
		})
	}
	wg.Wait()
	if worked {
		r.m.rounds.Observe(time.Since(start).Seconds())
	}
}

// applyShard truncates the streams of shard sm, which g leads, as its policies ps say, as of
// now. It stops at the first truncation that fails (the next round goes on from the start), or
// once g no longer leads.
func (r *retainer) applyShard(g *replica.Group, sm *shard.Shard, ps []shard.RetentionPolicy) {
	now := time.Now().UnixNano()
	var streams, events uint64
	defer func() {
		if streams > 0 {
			r.log.Info("retention: truncated streams", "shard", g.Shard(), "streams", streams, "events", events)
		}
	}()
	for _, p := range ps {
		for after := ""; ; {
			cuts, last, err := sm.RetentionCuts(p, ps, now, after, retentionPage)
			if err != nil {
				r.log.Warn("working out the retention policy's truncations", "shard", g.Shard(), "policy", p.String(), "err", err)
				return
			}
			for _, c := range cuts {
				if r.ctx.Err() != nil || !g.IsLeader() {
					return
				}
				if err := r.truncate(g, c); err != nil {
					r.m.truncations.WithLabelValues("error").Inc()
					lvl := slog.LevelWarn
					if errors.Is(err, replica.ErrNotLeader) || r.ctx.Err() != nil {
						lvl = slog.LevelDebug
					}
					r.log.Log(r.ctx, lvl, "retention: truncating a stream failed; the next round goes on",
						"shard", g.Shard(), "stream", c.Stream, "before", c.Before, "policy", p.String(), "err", err)
					return
				}
				r.m.truncations.WithLabelValues("ok").Inc()
				r.m.events.Add(float64(c.Events()))
				streams, events = streams+1, events+c.Events()
			}
			if last == "" {
				break
			}
			after = last
		}
	}
}

// truncate proposes cut c with expected version Any: the cut was worked out from committed
// state, and appends since only add later versions.
func (r *retainer) truncate(g *replica.Group, c shard.RetentionCut) error {
	ctx, cancel := context.WithTimeout(r.ctx, retentionTruncateTimeout)
	defer cancel()
	res, err := g.Propose(ctx, shard.EncodeTruncate(&shard.TruncateCommand{Stream: c.Stream, Before: c.Before}))
	if err != nil {
		return err
	}
	if e, ok := res.(error); ok {
		return fmt.Errorf("refused: %w", e)
	}
	return nil
}

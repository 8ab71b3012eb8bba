package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
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

// DefaultRetentionMinAge is Config.RetentionMinAge's default: past the client's default retry
// budget (30 s), so that its retries of an append find the append's events.
const DefaultRetentionMinAge = time.Minute

// retentionMinAge is the minimum age of the events retention removes (Config.RetentionMinAge).
func (n *Node) retentionMinAge() time.Duration {
	switch age := n.cfg.RetentionMinAge; {
	case age < 0:
		return 0
	case age == 0:
		return DefaultRetentionMinAge
	default:
		return age
	}
}

// MinRetentionInterval is the shortest Config.RetentionInterval: each round lists every stream
// the policies cover.
const MinRetentionInterval = 100 * time.Millisecond

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
	resp, err := s.n.retention(ctx, req)
	if incomingHops(ctx) == 0 {
		s.n.metrics.reads.WithLabelValues("retention", resultLabel(err)).Inc()
	}
	return resp, err
}

// retention reads the policies through the write path, which routes to the leader and forwards
// unary calls; the read index makes the read linearizable.
func (n *Node) retention(ctx context.Context, req *shoalv1.RetentionRequest) (*shoalv1.RetentionResponse, error) {
	if _, err := n.checkShardRead(req.Shard, false, 0); err != nil {
		return nil, n.toStatus(err, "", req.Shard)
	}
	res, _, err := n.write(ctx, req.Shard, true, func(g *replica.Group, pctx context.Context) (any, error) {
		sm, err := n.leaderRead(pctx, g, req.Shard)
		if err != nil {
			return nil, err
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

// MaxRetentionCutsCount bounds RetentionCutsRequest.count: how many streams one page looks at
// (each may read up to 100,000 event headers under a max-age).
const MaxRetentionCutsCount = 1024

// retentionCutsBudget bounds the time a RetentionCuts call spends working out cuts, well within
// a proposal's time (the call runs on the write path): past it, the call answers with the
// streams worked out so far, and the next page goes on from the last of them.
const retentionCutsBudget = 2 * time.Second

// RetentionCuts works out, on the shard's leader after a read index, the truncations the
// policy in the request asks of a page of the shard's streams; it changes nothing.
func (s *streamsServer) RetentionCuts(ctx context.Context, req *shoalv1.RetentionCutsRequest) (*shoalv1.RetentionCutsResponse, error) {
	resp, err := s.n.retentionCuts(ctx, req)
	if incomingHops(ctx) == 0 {
		s.n.metrics.reads.WithLabelValues("retention_cuts", resultLabel(err)).Inc()
	}
	return resp, err
}

func (n *Node) retentionCuts(ctx context.Context, req *shoalv1.RetentionCutsRequest) (*shoalv1.RetentionCutsResponse, error) {
	if _, err := n.checkShardRead(req.Shard, false, 0); err != nil {
		return nil, n.toStatus(err, "", req.Shard)
	}
	count := req.Count
	switch {
	case count == 0:
		count = retentionPage
	case count > MaxRetentionCutsCount:
		return nil, n.toStatus(&shard.InvalidError{Field: "count", Limit: fmt.Sprintf("at most %d", MaxRetentionCutsCount),
			Reason: fmt.Sprintf("%d given", count)}, "", req.Shard)
	}
	cmd := &shard.SetRetentionCommand{}
	if req.Policy != nil {
		cmd.Policy = fromProtoPolicy(req.Policy)
	}
	if err := shard.ValidateRetention(cmd); err != nil {
		return nil, n.toStatus(err, "", req.Shard)
	}
	if err := shard.CheckListBounds(cmd.Policy.Prefix, req.After); err != nil {
		return nil, n.toStatus(err, "", req.Shard)
	}
	res, _, err := n.write(ctx, req.Shard, true, func(g *replica.Group, pctx context.Context) (any, error) {
		sm, err := n.leaderRead(pctx, g, req.Shard)
		if err != nil {
			return nil, err
		}
		p := cmd.Policy
		stop := func() bool { return pctx.Err() != nil || !g.IsLeader() }
		start := time.Now()
		enough := func() bool { return time.Since(start) > retentionCutsBudget }
		cuts, last, err := sm.RetentionCuts(p, []shard.RetentionPolicy{p}, shard.CutOptions{Now: start.UnixNano(),
			MinAge: n.retentionMinAge(), After: req.After, Count: uint64(count), Stop: stop, Enough: enough})
		if errors.Is(err, shard.ErrScanStopped) {
			if err = pctx.Err(); err == nil {
				err = &NoLeaderError{Shard: req.Shard, Cause: errors.New("this node stopped leading the shard")}
			}
		}
		if err != nil {
			return nil, err
		}
		resp := &shoalv1.RetentionCutsResponse{Shard: req.Shard, Last: last, Cuts: make([]*shoalv1.RetentionCut, len(cuts))}
		for i, c := range cuts {
			resp.Cuts[i] = &shoalv1.RetentionCut{Stream: c.Stream, State: shoalv1.StreamState(c.State), From: c.From,
				Before: c.Before, Hidden: c.Hidden}
		}
		return resp, nil
	}, func(conn *grpc.ClientConn, fctx context.Context) (any, error) {
		return shoalv1.NewStreamsClient(conn).RetentionCuts(fctx, req)
	})
	if err != nil {
		return nil, n.toStatus(err, "", req.Shard)
	}
	if r, ok := res.(*shoalv1.RetentionCutsResponse); ok {
		return r, nil
	}
	return nil, status.Errorf(codes.Internal, "retention cuts: unexpected result %T", res)
}

// leaderRead catches shard id's replica here, whose group g this node leads, up with what the
// shard committed (a read index), and returns it.
func (n *Node) leaderRead(ctx context.Context, g *replica.Group, id uint32) (*shard.Shard, error) {
	if timedOut, err := n.readBarrier(ctx, g); timedOut {
		return nil, &NoLeaderError{Shard: id, Cause: fmt.Errorf("read index not confirmed within %v", n.noLeaderWait())}
	} else if err != nil {
		return nil, err
	}
	sm, _, ok := n.shardSM(id)
	if !ok {
		return nil, &NoLeaderError{Shard: id, Cause: errors.New("its replica here closed")}
	}
	return sm, nil
}

// needFormat returns shard.NeedsFormat's verdict for what when the local replica of shard id,
// which g leads, is below format want. A leader just elected may not have applied a raise its
// log holds: it catches up with what is committed before it refuses (a rare path, only below
// the format).
func (n *Node) needFormat(ctx context.Context, g *replica.Group, id uint32, want uint64, what string) error {
	var have uint64 // 0: no local replica
	if sm, _, ok := n.shardSM(id); ok {
		if have = sm.Format(); have < want {
			_, _ = n.readBarrier(ctx, g)
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
			Help: "Truncations this node's shards proposed as leaders to apply their retention policies, by result: ok; refused by the shard (the policy changed since, say); error, a truncation, a policy read or a scan that failed (the shard's round stopped there; the next goes on). Failures for want of a leader, which end the round as quietly, are not counted.",
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
	for _, result := range []string{"ok", "refused", "error"} {
		m.truncations.WithLabelValues(result)
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

// round applies the policies of every shard this node leads, a few shards at a time, and logs
// what it removed in one line.
func (r *retainer) round() {
	start := time.Now()
	var (
		wg              sync.WaitGroup
		sem             = make(chan struct{}, retentionShardsAtOnce)
		mu              sync.Mutex // streams, events
		streams, events uint64
		worked          bool
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
		if ps, err := sm.RetentionPolicies(); err != nil || len(ps) == 0 {
			if err != nil {
				r.m.truncations.WithLabelValues("error").Inc()
				r.log.Warn("reading the shard's retention policies", "shard", g.Shard(), "err", err)
			}
			continue
		}
		worked = true
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s, e := r.applyShard(g, sm)
			mu.Lock()
			streams, events = streams+s, events+e
			mu.Unlock()
		})
	}
	wg.Wait()
	if worked {
		r.m.rounds.Observe(time.Since(start).Seconds())
	}
	if streams > 0 {
		r.log.Info("retention: truncated streams", "streams", streams, "events", events, "took", time.Since(start).Round(time.Millisecond))
	}
}

// applyShard truncates the streams of shard sm, which g leads, as its policies say, and returns
// how many streams and events it removed. It first catches up with what the shard committed (a
// leader just elected may not have applied a policy's removal), and ends once g no longer
// leads, the loop stops, the policies change (the next round applies the new ones), or a
// truncation fails for want of a leader or an answer (the next round goes on). Each truncation
// names its policy, so that one proposed just before a change of the policy removes nothing
// (shard.ErrPolicyChanged).
func (r *retainer) applyShard(g *replica.Group, sm *shard.Shard) (streams, events uint64) {
	stop := func() bool { return r.ctx.Err() != nil || !g.IsLeader() }
	ctx, cancel := context.WithTimeout(r.ctx, retentionTruncateTimeout)
	_, err := r.n.readBarrier(ctx, g)
	cancel()
	if err != nil {
		r.log.Debug("retention: the shard's read index", "shard", g.Shard(), "err", err)
		return 0, 0
	}
	ps, err := sm.RetentionPolicies()
	if err != nil {
		r.m.truncations.WithLabelValues("error").Inc()
		r.log.Warn("reading the shard's retention policies", "shard", g.Shard(), "err", err)
		return 0, 0
	}
	now := time.Now().UnixNano()
	for _, p := range ps {
		for after := ""; ; {
			if stop() || !r.samePolicies(sm, ps) {
				return streams, events
			}
			cuts, last, err := sm.RetentionCuts(p, ps, shard.CutOptions{Now: now, MinAge: r.n.retentionMinAge(), After: after,
				Count: retentionPage, Stop: stop})
			if err != nil {
				if !errors.Is(err, shard.ErrScanStopped) {
					r.m.truncations.WithLabelValues("error").Inc()
					r.log.Warn("working out a retention policy's truncations", "shard", g.Shard(), "policy", p.String(), "err", err)
				}
				return streams, events
			}
			for _, c := range cuts {
				if stop() || !r.samePolicies(sm, ps) {
					return streams, events
				}
				verdict, err := r.truncate(g, c)
				switch {
				case err != nil:
					if !routineRefusal(err) && !errors.Is(err, replica.ErrProposalDropped) && !errors.Is(err, replica.ErrGroupRemoved) {
						r.m.truncations.WithLabelValues("error").Inc()
						r.log.Warn("retention: a truncation failed; the next round goes on", "shard", g.Shard(),
							"stream", c.Stream, "before", c.Before, "policy", p.String(), "err", err)
					}
					return streams, events
				case verdict != nil:
					// Refused (the policy changed since, say): this stream only.
					r.m.truncations.WithLabelValues("refused").Inc()
					r.log.Debug("retention: a truncation was refused", "shard", g.Shard(), "stream", c.Stream,
						"policy", p.String(), "verdict", verdict)
				default:
					r.m.truncations.WithLabelValues("ok").Inc()
					r.m.events.Add(float64(c.Events()))
					streams, events = streams+1, events+c.Events()
				}
			}
			if last == "" {
				break
			}
			after = last
		}
	}
	return streams, events
}

// samePolicies reports whether shard sm's policies are still ps.
func (r *retainer) samePolicies(sm *shard.Shard, ps []shard.RetentionPolicy) bool {
	cur, err := sm.RetentionPolicies()
	return err == nil && slices.Equal(cur, ps)
}

// truncate proposes cut c with expected version Any, naming its policy (in steps, as
// proposeTruncate does): the cut was worked out from committed state, and appends since only
// add later versions. It returns the shard's verdict when it refused the truncation, or an
// error when it was not applied.
func (r *retainer) truncate(g *replica.Group, c shard.RetentionCut) (verdict, err error) {
	ctx, cancel := context.WithTimeout(r.ctx, retentionTruncateTimeout)
	defer cancel()
	policy := c.Policy
	res, err := r.n.proposeTruncate(ctx, g, g.Shard(), &shard.TruncateCommand{Stream: c.Stream, Before: c.Before, Policy: &policy})
	if err != nil {
		return nil, err
	}
	if e, ok := res.(error); ok {
		return e, nil
	}
	return nil, nil
}

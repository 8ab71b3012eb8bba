package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
)

// probeTimeout bounds each connection attempt that tells a down peer from a broken stream, and
// probeDelays are the waits before the attempts (see probeDown).
const probeTimeout = time.Second

var probeDelays = []time.Duration{0, 20 * time.Millisecond, 80 * time.Millisecond, 200 * time.Millisecond}

// stableAfter is how long a stream must have lived before a successful send
// resets the back-off: gRPC buffers the first sends of a stream that the
// peer is about to refuse (cluster mismatch), which must not count.
const stableAfter = time.Second

// closeGrace bounds the wait for a peer's answer when an idle stream is ended cleanly
// (closeIdle); a peer that does not answer in time has the stream canceled.
const closeGrace = 5 * time.Second

// peer owns the outbound side towards one node: two bounded queues filled by
// Send and one goroutine (run) that drains them into RaftBatches on a single
// long-lived Raft.Send stream. All fields below urgent are owned by run.
//
// queue holds the append messages (MsgApp), which carry a shard's entries and
// may be megabytes each; urgent holds everything else (heartbeats, votes,
// answers), packed ahead of queue, so that a follower catching up on one
// shard does not hold back every shard's heartbeats for as long as its
// entries take to send, and elect new leaders (see Send).
//
// Send puts messages on the queues only while holding Transport.mu, and run
// leaves (retire) only under the same lock with both empty, so a message
// queued is always taken by a running goroutine: it is sent, or dropped and
// reported.
// outMsg is a message queued for a peer, with the time it was queued: the batch that carries it
// says how long it waited (RaftBatch.waited_us).
type outMsg struct {
	replica.ShardMessage
	queued time.Time
	bytes  int64 // of the entries of an append (queue), counted in peer.queuedBytes
}

// entryBytes is what an append's entries count against Config.QueueBytes.
func entryBytes(m *pb.Message) int64 {
	var n int64
	for i := range m.Entries {
		n += int64(len(m.Entries[i].Data)) + entryOverhead
	}
	return n
}

// entryOverhead stands for an entry's index, term and type, and their framing.
const entryOverhead = 24

type peer struct {
	t      *Transport
	id     uint64
	label  string
	queue  chan outMsg
	urgent chan outMsg
	// queuedBytes: the entry bytes of the appends in queue (Config.QueueBytes bounds it).
	// Added by Send before queueing, taken off by whoever takes an append from queue (took).
	queuedBytes atomic.Int64

	// Counters resolved once (label lookups are not free on the hot path).
	sent, batches, bytes, dialErrs, streamErrs, peersDown prometheus.Counter
	dropped                                               struct{ queueFull, unreachable, tooLarge prometheus.Counter }

	addr    string
	conn    *grpc.ClientConn
	stream  shoalv1.Raft_SendClient
	cancel  context.CancelFunc // of stream
	end     *streamEnd         // of stream
	opened  time.Time          // when stream was opened
	carry   *outMsg
	bo      backoff.ExponentialBackOff
	healthy bool        // last send succeeded (logging transitions only)
	refusal string      // last refusal logged at error level
	idle    *time.Timer // fires after IdleTimeout without traffic; nil when disabled
	quiet   bool        // idle fired since the last message (the connection is closed)

	pending []*pb.Message // reused by pack
	sizes   []int

	probing   atomic.Bool            // a probe (probeDown) is running
	reprobe   atomic.Bool            // the stream broke (again): the probe (re)runs
	probeAddr atomic.Pointer[string] // the address the probe asks: the peer's at its last break
}

func newPeer(t *Transport, id uint64) *peer {
	l := strconv.FormatUint(id, 10)
	m := t.metrics
	p := &peer{
		t: t, id: id, label: l,
		queue:      make(chan outMsg, t.cfg.QueueSize),
		urgent:     make(chan outMsg, t.cfg.QueueSize),
		sent:       m.MessagesSent.WithLabelValues(l),
		batches:    m.BatchesSent.WithLabelValues(l),
		bytes:      m.BytesSent.WithLabelValues(l),
		dialErrs:   m.DialErrors.WithLabelValues(l),
		streamErrs: m.StreamErrors.WithLabelValues(l),
		peersDown:  m.PeerDown.WithLabelValues(l),
		bo: backoff.ExponentialBackOff{
			InitialInterval:     t.cfg.BackoffInitial,
			RandomizationFactor: 0.5,
			Multiplier:          2,
			MaxInterval:         t.cfg.BackoffMax,
		},
		healthy: true,
	}
	p.dropped.queueFull = m.MessagesDropped.WithLabelValues(l, dropQueueFull)
	p.dropped.unreachable = m.MessagesDropped.WithLabelValues(l, dropUnreachable)
	p.dropped.tooLarge = m.MessagesDropped.WithLabelValues(l, dropTooLarge)
	p.bo.Reset()
	return p
}

func (p *peer) run() {
	defer p.closeConn()
	var idle <-chan time.Time
	if d := p.t.cfg.IdleTimeout; d > 0 {
		p.idle = time.NewTimer(d)
		defer p.idle.Stop()
		idle = p.idle.C
	}
	stop := p.t.ctx.Done()
	for {
		var m outMsg
		if p.carry != nil {
			m, p.carry = *p.carry, nil
		} else {
			select {
			case <-stop:
				return
			case m = <-p.urgent:
			case m = <-p.queue:
				p.took(m)
			case <-p.endC():
				p.failStream(p.end.err, nil)
				if !p.wait() {
					return
				}
				continue
			case <-idle:
				if p.idleTick() {
					return
				}
				continue
			}
		}
		p.touch()
		if p.stream == nil {
			if err := p.connect(); err != nil {
				if p.t.ctx.Err() != nil {
					return
				}
				p.dialErrs.Inc()
				p.logFailure(slog.LevelWarn, "transport: cannot reach peer", "err", err)
				p.drop(m.Shard)
				p.drain()
				if !p.wait() {
					return
				}
				continue
			}
		}
		batch := p.pack(m)
		if batch == nil {
			continue // only oversized messages
		}
		if err := p.stream.Send(batch); err != nil {
			if p.t.ctx.Err() != nil {
				return
			}
			p.failStream(err, batch)
			if !p.wait() {
				return
			}
			continue
		}
		n := len(batch.Messages)
		p.sent.Add(float64(n))
		p.batches.Inc()
		p.bytes.Add(float64(batchBytes(batch)))
		if time.Since(p.opened) < stableAfter {
			continue // a refusing peer accepts the first sends, then ends the stream
		}
		p.bo.Reset()
		if !p.healthy {
			p.healthy, p.refusal = true, ""
			p.t.log.Info("transport: peer reachable", "peer", p.id, "addr", p.addr)
		}
	}
}

// touch restarts the idle clock: the peer has traffic.
func (p *peer) touch() {
	if p.idle != nil {
		p.idle.Reset(p.t.cfg.IdleTimeout)
	}
	p.quiet = false
}

// idleTick handles one IdleTimeout without traffic. The first closes the stream and
// connection; the second removes the peer (Transport.retire), unless a message was queued
// meanwhile or a probe still runs (then the next tick tries again). It reports whether the
// peer was removed, and run must return.
func (p *peer) idleTick() bool {
	if p.quiet && p.t.retire(p) {
		p.t.log.Debug("transport: removed idle peer", "peer", p.id)
		return true
	}
	if p.conn != nil {
		p.t.log.Debug("transport: closing idle peer connection", "peer", p.id)
		p.closeIdle()
	}
	p.quiet = true
	p.idle.Reset(p.t.cfg.IdleTimeout)
	return false
}

// closeIdle ends the stream cleanly, so that the batches sent on it are not lost: CloseSend,
// then the peer's answer, which comes once it has handled every batch (closeGrace at most;
// then the stream is canceled). Then it closes the connection.
func (p *peer) closeIdle() {
	if p.stream != nil && p.stream.CloseSend() == nil {
		grace := time.NewTimer(closeGrace)
		defer grace.Stop()
		select {
		case <-p.end.done:
		case <-grace.C:
			p.t.log.Debug("transport: idle peer did not answer the end of its stream", "peer", p.id)
		case <-p.t.ctx.Done():
		}
	}
	p.closeConn()
}

// connect resolves the peer's address, (re)creates the connection if the
// address changed, and opens a Raft.Send stream plus its watcher.
func (p *peer) connect() error {
	addr, ok := p.t.cfg.Resolve(p.id)
	if !ok || addr == "" {
		return ErrUnknownPeer
	}
	if p.conn != nil && addr != p.addr {
		p.closeConn()
	}
	if p.conn == nil {
		conn, err := grpc.NewClient(addr, p.t.cfg.DialOptions...)
		if err != nil {
			return err
		}
		p.conn, p.addr = conn, addr
	}
	ctx, cancel := context.WithCancel(p.t.ctx)
	stream, err := shoalv1.NewRaftClient(p.conn).Send(ctx)
	if err != nil {
		cancel()
		return err
	}
	p.stream, p.cancel, p.opened = stream, cancel, time.Now()
	end := &streamEnd{done: make(chan struct{})}
	p.end = end
	p.t.wg.Add(1)
	go func() {
		defer p.t.wg.Done()
		// The server answers only when the stream ends: an error (cluster
		// mismatch, shutdown, connection loss) or our cancel.
		err := stream.RecvMsg(new(shoalv1.RaftAck))
		if err == nil {
			err = io.EOF
		}
		end.err = err
		close(end.done)
	}()
	return nil
}

// pack builds one RaftBatch from first plus whatever else is queued, urgent
// first, within the message and byte limits. A message that does not fit is
// carried over to the next batch. Returns nil when every candidate was
// oversized.
func (p *peer) pack(first outMsg) *shoalv1.RaftBatch {
	cfg := &p.t.cfg
	b := &shoalv1.RaftBatch{From: cfg.NodeID, To: p.id, ClusterId: cfg.ClusterID()}
	p.pending, p.sizes = p.pending[:0], p.sizes[:0]
	total := 0
	now := time.Now()
	add := func(m outMsg) bool {
		sz := proto.Size(m.Msg)
		if sz > MaxMessageSize {
			p.dropped.tooLarge.Inc()
			p.t.log.Warn("transport: dropping oversized raft message", "peer", p.id, "shard", m.Shard,
				"type", m.Msg.GetType().String(), "bytes", sz, "limit", MaxMessageSize)
			p.t.unreach.add(m.Shard, p.id)
			return true
		}
		if len(p.pending) > 0 && (total+sz > cfg.MaxBatchBytes || len(p.pending) >= cfg.MaxBatchMessages) {
			p.carry = &m
			return false
		}
		total += sz
		p.pending = append(p.pending, m.Msg)
		p.sizes = append(p.sizes, sz)
		b.Shards = append(b.Shards, m.Shard)
		b.WaitedUs = append(b.WaitedUs, uint32(min(now.Sub(m.queued).Microseconds(), math.MaxUint32)))
		return true
	}
	if add(first) {
	loop:
		for len(p.pending) < cfg.MaxBatchMessages {
			var m outMsg
			select {
			case m = <-p.urgent:
			default:
				select {
				case m = <-p.urgent:
				case m = <-p.queue:
					p.took(m)
				default:
					break loop
				}
			}
			if !add(m) {
				break loop
			}
		}
	}
	if len(p.pending) == 0 {
		return nil
	}
	// One slab for all messages: gRPC may read a message after SendMsg
	// returns, so the slab is never reused.
	slab := make([]byte, 0, total)
	b.Messages = make([][]byte, len(p.pending))
	opts := proto.MarshalOptions{UseCachedSize: true}
	for i, m := range p.pending {
		start := len(slab)
		var err error
		slab, err = opts.MarshalAppend(slab, m)
		if err != nil || len(slab)-start != p.sizes[i] {
			// Cannot happen for a well-formed message; a message mutated
			// after Send would land here. Re-marshal standalone.
			one, _ := proto.Marshal(m)
			slab = slab[:start]
			b.Messages[i] = one
			continue
		}
		b.Messages[i] = slab[start:len(slab):len(slab)]
	}
	clear(p.pending) // do not pin messages until the next batch
	return b
}

func batchBytes(b *shoalv1.RaftBatch) int {
	n := 0
	for _, m := range b.Messages {
		n += len(m)
	}
	return n
}

// failStream tears down a broken stream, reports the in-flight batch and the
// queue unreachable, and logs the cause (taken from the server's status when
// the send failed with a bare io.EOF).
func (p *peer) failStream(err error, batch *shoalv1.RaftBatch) {
	if errors.Is(err, io.EOF) && p.end != nil {
		<-p.end.done // the watcher has the real status
		err = p.end.err
	}
	p.streamErrs.Inc()
	p.closeStream()
	if batch != nil {
		for _, s := range batch.Shards {
			p.drop(s)
		}
	}
	p.drain()
	if s, ok := status.FromError(err); ok && s.Code() == codes.FailedPrecondition {
		// Misconfiguration (cluster ID, re-created node): loud once per cause.
		lvl := slog.LevelError
		if s.Message() == p.refusal {
			lvl = slog.LevelDebug
		}
		p.refusal = s.Message()
		p.t.log.Log(context.Background(), lvl, "transport: peer refused raft stream",
			"peer", p.id, "addr", p.addr, "err", s.Message())
		p.healthy = false
		return
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unavailable && s.Message() == ErrStopping.Error() {
		// The peer is stopping (a restart, a shutdown): no fault to warn of.
		p.logFailure(slog.LevelInfo, "transport: peer is stopping; its raft stream ended")
	} else {
		p.logFailure(slog.LevelWarn, "transport: raft stream to peer failed", "err", err)
	}
	p.probeDown()
}

// probeDown tries, in the background, plain connections to the peer whose stream just broke.
// When one is refused (or every one times out: see probe), the node is most likely down, and
// the handler is told at once: the peer's raft groups need not wait out a whole election
// timeout to learn that their leader is gone. A killed process resets its connections before its listener is closed, so
// one accepted connection proves little: the peer counts as up only when every attempt of
// probeDelays is accepted, and is then left to raft's own timeouts. A connection reset while
// it is being opened (the listener of a process being killed took it, then went) is no answer
// either way: the probe goes on to its next attempt. A dial that fails for a local reason (no
// file descriptors, no route) proves nothing and ends the probe. A stream that breaks while a
// probe runs has the probe run again.
func (p *peer) probeDown() {
	addr := p.addr
	if addr == "" || p.t.ctx.Err() != nil {
		return
	}
	p.probeAddr.Store(&addr)
	p.reprobe.Store(true)
	p.startProbe()
}

// startProbe runs the probe goroutine unless one runs already (which then goes round again).
// Called by the peer's goroutine and by a probe goroutine that is ending (so p.t.wg is held).
func (p *peer) startProbe() {
	if !p.probing.CompareAndSwap(false, true) {
		return
	}
	p.t.wg.Add(1)
	go func() {
		defer p.t.wg.Done()
		for p.reprobe.Swap(false) {
			// The address of the latest break: a peer that moved is asked where it went.
			if p.probe(*p.probeAddr.Load()) {
				p.peersDown.Inc()
				if h := p.t.handlerOrNil(); h != nil {
					h.ReportPeerDown(p.id)
				}
				p.reprobe.Store(false)
				break
			}
		}
		p.probing.Store(false)
		if p.reprobe.Load() && p.t.ctx.Err() == nil {
			p.startProbe() // a break raced with the end of this probe
		}
	}()
}

// probe reports whether addr refused one of the attempts of probeDelays, or let every one of
// them time out. One timeout is not enough: a lost connection request (SYN) is sent again only
// after a second, probeTimeout, and the blip of packet loss that broke the stream often drops
// the first attempt's too; a live leader reported down on it would be deposed in every group.
func (p *peer) probe(addr string) bool {
	timeouts := 0
	for _, d := range probeDelays {
		select {
		case <-p.t.ctx.Done():
			return false
		case <-time.After(d):
		}
		ctx, cancel := context.WithTimeout(p.t.ctx, probeTimeout)
		c, err := p.t.cfg.ProbeDial(ctx, addr)
		cancel()
		switch {
		case err == nil:
			_ = c.Close()
			continue
		case p.t.ctx.Err() != nil:
			return false
		case errors.Is(err, syscall.ECONNRESET):
			p.t.log.Debug("transport: probing a peer: connection reset", "peer", p.id, "addr", addr, "err", err)
			continue
		case errors.Is(err, syscall.ECONNREFUSED):
			p.t.log.Info("transport: peer is down (its stream broke and it refuses connections)",
				"peer", p.id, "addr", addr, "err", err)
			return true
		case isTimeout(err):
			if timeouts++; timeouts < len(probeDelays) {
				p.t.log.Debug("transport: probing a peer: attempt timed out", "peer", p.id, "addr", addr, "err", err)
				continue
			}
			p.t.log.Info("transport: peer is down (its stream broke and no attempt to connect was answered)",
				"peer", p.id, "addr", addr, "err", err)
			return true
		default:
			p.t.log.Debug("transport: probing a peer failed for another reason", "peer", p.id, "addr", addr, "err", err)
			return false
		}
	}
	return false
}

// isTimeout reports whether a dial error is a timeout: no answer at the address, yet.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// logFailure logs a failure to reach the peer at level while it counted as healthy, and at
// Debug while it fails on, and marks it unhealthy until a send gets through.
func (p *peer) logFailure(level slog.Level, msg string, attrs ...any) {
	if !p.healthy {
		level = slog.LevelDebug
	}
	p.healthy = false
	p.t.log.Log(context.Background(), level, msg, append([]any{"peer", p.id, "addr", p.addr}, attrs...)...)
}

// offer queues m, an append in queue and anything else in urgent, and reports whether there
// was room: past QueueBytes an append waits for raft to send it again, unless the queue holds
// none (the one append goes, however large). Transport.mu held (Send).
func (p *peer) offer(m outMsg) bool {
	q := p.urgent
	if m.Msg.GetType() == pb.MsgApp {
		q, m.bytes = p.queue, entryBytes(m.Msg)
		if queued := p.queuedBytes.Add(m.bytes); queued > p.t.cfg.QueueBytes && queued > m.bytes {
			p.took(m)
			return false
		}
	}
	select {
	case q <- m:
		return true
	default:
		p.took(m)
		return false
	}
}

// took takes m, an append taken from queue (or refused it), off the queued bytes.
func (p *peer) took(m outMsg) { p.queuedBytes.Add(-m.bytes) }

// drop counts one undeliverable message and reports its shard unreachable.
func (p *peer) drop(shard uint32) {
	p.dropped.unreachable.Inc()
	p.t.unreach.add(shard, p.id)
}

// drain drops everything queued (and the carried message).
func (p *peer) drain() {
	if p.carry != nil {
		p.drop(p.carry.Shard)
		p.carry = nil
	}
	for {
		select {
		case m := <-p.urgent:
			p.drop(m.Shard)
		case m := <-p.queue:
			p.took(m)
			p.drop(m.Shard)
		default:
			return
		}
	}
}

// wait sleeps the next backoff interval, dropping (and reporting) messages
// that arrive meanwhile: raft retries on its own schedule, and reports make
// it probe instead of pipelining into a dead peer. False when closed.
func (p *peer) wait() bool {
	timer := time.NewTimer(p.bo.NextBackOff())
	defer timer.Stop()
	for {
		select {
		case <-p.t.ctx.Done():
			return false
		case <-timer.C:
			return true
		case m := <-p.urgent:
			p.touch()
			p.drop(m.Shard)
		case m := <-p.queue:
			p.took(m)
			p.touch()
			p.drop(m.Shard)
		}
	}
}

func (p *peer) closeStream() {
	if p.stream == nil {
		return
	}
	p.cancel()
	p.stream, p.cancel, p.end = nil, nil, nil
}

// streamEnd is closed by a stream's watcher goroutine when the stream ends.
type streamEnd struct {
	done chan struct{}
	err  error // why it ended; read after <-done
}

// endC is the current stream's end channel, nil (blocks) without a stream.
func (p *peer) endC() <-chan struct{} {
	if p.end == nil {
		return nil
	}
	return p.end.done
}

func (p *peer) closeConn() {
	p.closeStream()
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn = nil
	}
}

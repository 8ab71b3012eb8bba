package transport

import (
	"context"
	"golang.org/x/time/rate"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/loglimit"
	"github.com/shoaldb/shoal/replica"
)

// Handler is the receiving and reporting side of the transport; *replica.Host
// satisfies it. The transport never calls it from within Send or SendSnapshot,
// so its methods may block on the caller's event loop.
type Handler interface {
	// HandleMessages receives one batch of incoming messages (in the order
	// the peer sent them). Called from the peer's stream goroutine; while it
	// runs, that peer's stream is not read (back-pressure). It may keep msgs.
	HandleMessages(msgs []replica.ShardMessage)
	// WriteSnapshot writes the state of shard at snap to w (compressed and
	// chunked by the transport). An error aborts the stream.
	WriteSnapshot(shard uint32, snap *pb.Snapshot, w io.Writer) error
	// SnapshotSize estimates the bytes shard's state takes on disk (0 when
	// unknown); it goes ahead of the snapshot's data as its size hint.
	SnapshotSize(shard uint32) uint64
	// SnapshotFits refuses an incoming snapshot m of about size bytes (the
	// sender's hint, 0 when unknown) that this node has no room for, before
	// its data flows; the error is returned to the sender. Else it holds that
	// room for the receive of m until release is called, once ReceiveSnapshot
	// of m returned (or was not called).
	SnapshotFits(m replica.ShardMessage, size uint64) (release func(), err error)
	// ReceiveSnapshot installs an incoming snapshot whose data is read from
	// r, then steps m (a MsgSnap). Its error is returned to the sender.
	ReceiveSnapshot(m replica.ShardMessage, r io.Reader) error
	// ReportUnreachable reports that a message of shard to node to was lost.
	ReportUnreachable(shard uint32, to uint64)
	// ReportSnapshot reports the outcome of sending m, the MsgSnap of a
	// SendSnapshot. The report names the snapshot, not just the shard and
	// the peer: a send can take long, and the sender's raft may have moved
	// on to another snapshot for that peer by the time it ends.
	ReportSnapshot(m replica.ShardMessage, ok bool)
	// ReportPeerDown reports that the stream to node to broke and its address then refused
	// a connection: the node is most likely down (a crashed or killed process).
	ReportPeerDown(to uint64)
}

// Transport implements replica.Transport over the gRPC Raft service. Its
// methods are safe for concurrent use.
type Transport struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	handler atomic.Pointer[handlerBox]
	// snapRate bounds the snapshot bytes sent, all streams together (Config.SnapshotRate); nil:
	// no bound.
	snapRate *rate.Limiter

	ctx    context.Context // canceled by Close; parent of every outgoing stream
	cancel context.CancelFunc
	// serving is canceled by StopServing (or Close): the incoming raft streams end then.
	serving     context.Context
	stopServing context.CancelFunc
	wg          sync.WaitGroup // peer, watcher, reporter and snapshot goroutines
	snaps       chan struct{}  // semaphore of concurrent snapshot sends

	unreach  reporter
	refusals *loglimit.Keyed[refusalKey] // incoming streams refused, logged at Warn once a minute per sender

	// mu is held by Send while it queues messages, by a peer leaving the map
	// (retire) and by SendSnapshot and the snapshot senders. Lock order: mu,
	// then reporter.mu. The Handler is never called with mu held.
	mu struct {
		sync.Mutex
		closed bool
		peers  map[uint64]*peer
		// snaps has an entry for every destination whose snapshot sender
		// runs: the snapshots waiting behind the one being sent, in call
		// order, at most one per shard.
		snaps map[uint64][]replica.ShardMessage
		// slotWait: the shard whose snapshot each destination's sender holds while it waits
		// for one of the MaxSnapshotSends slots.
		slotWait map[uint64]uint32
		// snapRetry: the destinations whose last snapshot failed, and when the next may go.
		snapRetry map[uint64]*snapRetry
	}
	closeOnce sync.Once
}

var (
	_ replica.Transport = (*Transport)(nil)
	_ Handler           = (*replica.Host)(nil)
)

type handlerBox struct{ h Handler }

// New returns a Transport. It panics if cfg.Validate fails (a programming
// error). Call SetHandler before traffic flows and Register on the node's
// gRPC server.
func New(cfg Config) *Transport {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg.withDefaults()
	t := &Transport{
		cfg:      cfg,
		log:      cfg.Logger,
		metrics:  newMetrics(cfg.Registerer),
		snaps:    make(chan struct{}, cfg.MaxSnapshotSends),
		refusals: newRefusalLimits(),
	}
	if cfg.SnapshotRate != 0 {
		// A chunk at a time: the burst is one chunk, or a second's worth when that is more.
		t.snapRate = rate.NewLimiter(rate.Limit(cfg.SnapshotRate), max(cfg.SnapshotChunkSize, int(min(cfg.SnapshotRate, 1<<30))))
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.serving, t.stopServing = context.WithCancel(context.Background())
	t.mu.peers = make(map[uint64]*peer)
	t.mu.snaps = make(map[uint64][]replica.ShardMessage)
	t.mu.slotWait = make(map[uint64]uint32)
	t.mu.snapRetry = make(map[uint64]*snapRetry)
	if cfg.Registerer != nil {
		// After mu's fields are set: a scrape may run at once.
		cfg.Registerer.MustRegister(queueCollector{t})
	}
	t.unreach.init()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.unreach.run(t.ctx, t.handlerOrNil)
	}()
	return t
}

// Metrics returns the transport's metrics (registered or not).
func (t *Transport) Metrics() *Metrics { return t.metrics }

// SetHandler sets the receiver of incoming traffic and outcome reports. Set
// it before traffic flows; until then incoming streams are refused and
// reports are discarded.
func (t *Transport) SetHandler(h Handler) { t.handler.Store(&handlerBox{h}) }

func (t *Transport) handlerOrNil() Handler {
	if b := t.handler.Load(); b != nil {
		return b.h
	}
	return nil
}

// Register registers the Raft service on s (a *grpc.Server).
func (t *Transport) Register(s grpc.ServiceRegistrar) {
	shoalv1.RegisterRaftServer(s, &server{t: t})
}

// Send queues msgs on their target peers' streams. It never blocks: a
// message whose peer queue is full is dropped, counted, and reported
// unreachable (asynchronously). Messages to node 0 or to this node are
// dropped; a MsgSnap is handed to SendSnapshot. Send takes ownership of the
// messages: the caller must not modify them afterwards.
//
// Append messages (MsgApp) keep their order, per peer; every other message is
// sent ahead of the appends queued before it (raft takes messages in any
// order, as a network may deliver them; appends kept in order spare it the
// rejections and probes of entries arriving out of order).
func (t *Transport) Send(msgs []replica.ShardMessage) {
	var snaps []int // indexes of MsgSnaps, handed on once mu is released
	now := time.Now()
	t.mu.Lock()
	var last *peer
	for i := range msgs {
		to := msgs[i].Msg.GetTo()
		if msgs[i].Msg.GetType() == pb.MsgSnap {
			snaps = append(snaps, i)
			continue
		}
		p := last
		if p == nil || p.id != to {
			var reason string
			p, reason = t.peerLocked(to)
			if p == nil {
				t.metrics.MessagesDropped.WithLabelValues(strconv.FormatUint(to, 10), reason).Inc()
				continue
			}
			last = p
		}
		if !p.offer(outMsg{ShardMessage: msgs[i], queued: now}) {
			p.dropped.queueFull.Inc()
			t.unreach.add(msgs[i].Shard, to)
		}
	}
	t.mu.Unlock()
	for _, i := range snaps {
		t.SendSnapshot(msgs[i])
	}
}

// peerLocked returns the peer for id, starting its goroutine on first use
// (or first use since it was retired); nil and the drop reason when the
// transport is closed or id is 0 or this node. mu must be held.
func (t *Transport) peerLocked(id uint64) (*peer, string) {
	if id == 0 || id == t.cfg.NodeID {
		return nil, dropInvalid
	}
	if t.mu.closed {
		return nil, dropClosed
	}
	p, ok := t.mu.peers[id]
	if !ok {
		p = newPeer(t, id)
		t.mu.peers[id] = p
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			p.run()
		}()
	}
	return p, ""
}

// retire removes p from the peer map and deletes its metric series, unless
// a message is queued for it or its probe runs (or is about to run again).
// Called by p's goroutine once idle without a connection; the goroutine ends
// when retire returns true. Send queues only under mu, so nothing reaches
// p's queue afterwards, and the next Send to p.id starts a new peer. The
// series are deleted under mu too, so they are never the new peer's.
func (t *Transport) retire(p *peer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(p.queue) > 0 || len(p.urgent) > 0 || p.probing.Load() || p.reprobe.Load() || t.mu.peers[p.id] != p {
		return false
	}
	delete(t.mu.peers, p.id)
	t.metrics.deletePeer(p.label)
	return true
}

// StopServing ends every incoming raft stream, and refuses those opened from then on, with
// ErrStopping: a node calls it as it stops, before it stops its gRPC server (whose graceful
// stop would otherwise wait for these streams, which never end by themselves), so that its
// peers learn it is going away on purpose. Outgoing streams go on until Close. Idempotent.
func (t *Transport) StopServing() { t.stopServing() }

// Close stops the peer goroutines and outgoing snapshot streams, closes the
// connections, and waits for all of it. Messages still queued and snapshots
// still waiting are dropped without reports. Incoming streams end as with
// StopServing. Close is idempotent and always returns nil.
func (t *Transport) Close() error {
	t.stopServing()
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.mu.closed = true
		t.mu.Unlock()
		t.cancel()
		t.wg.Wait()
	})
	return nil
}

// reporter delivers ReportUnreachable calls from its own goroutine, so Send
// never calls into the Handler. Pending reports are deduplicated by
// (shard, peer), which also bounds the memory.
type reporter struct {
	mu      sync.Mutex
	pending map[shardPeer]struct{}
	wake    chan struct{}
}

type shardPeer struct {
	shard uint32
	to    uint64
}

func (r *reporter) init() {
	r.pending = make(map[shardPeer]struct{})
	r.wake = make(chan struct{}, 1)
}

func (r *reporter) add(shard uint32, to uint64) {
	r.mu.Lock()
	r.pending[shardPeer{shard, to}] = struct{}{}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reporter) run(ctx context.Context, handler func() Handler) {
	next := make(map[shardPeer]struct{})
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		r.mu.Lock()
		batch := r.pending
		r.pending = next
		r.mu.Unlock()
		if h := handler(); h != nil {
			for sp := range batch {
				h.ReportUnreachable(sp.shard, sp.to)
			}
		}
		clear(batch)
		next = batch
	}
}

package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/klauspost/compress/zstd"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/replica"
)

// snapshotMaxWindow bounds the zstd window a receiver accepts (memory guard).
const snapshotMaxWindow = 64 << 20

// errReceiverDone ends the pipe once ReceiveSnapshot has returned.
var errReceiverDone = errors.New("transport: snapshot receiver finished")

// SendSnapshot streams the snapshot of m (a MsgSnap) to m.Msg.To on a
// dedicated connection, asynchronously: it returns at once and the outcome
// reaches Handler.ReportSnapshot with m. One snapshot at a time goes to each
// destination, and at most Config.MaxSnapshotSends at once in all; the others
// wait (see Config.MaxSnapshotSends). A call for a shard whose snapshot to
// the same destination is still waiting replaces that one: the newer is sent
// and reported, the one it replaced is neither. It was never sent, and its
// sender's raft no longer waits for it (a leader sends a follower a new
// snapshot only once it stopped waiting for the previous one), so its report
// would be stale; nor is the newer reported for it, as a second report could
// end a later send of the same snapshot, one raft began in between. After
// Close, nothing is sent or reported.
func (t *Transport) SendSnapshot(m replica.ShardMessage) {
	to := m.Msg.GetTo()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.closed {
		return
	}
	waiting, busy := t.mu.snaps[to]
	if !busy {
		t.mu.snaps[to] = nil
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.sendSnapshots(to, m)
		}()
		return
	}
	if i := waitingIndex(waiting, m.Shard); i >= 0 {
		waiting[i] = m
		return
	}
	t.mu.snaps[to] = append(waiting, m)
}

// SnapshotWaiting reports whether a snapshot of shard for node to waits its turn: behind
// another snapshot to that node, or for one of the MaxSnapshotSends slots. It has not begun
// to stream, so however long it waits says nothing about the node taking it.
func (t *Transport) SnapshotWaiting(shard uint32, to uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.mu.slotWait[to]; ok && s == shard {
		return true
	}
	return waitingIndex(t.mu.snaps[to], shard) >= 0
}

// waitingIndex is the index of shard's snapshot among waiting (one at most), or -1.
func waitingIndex(waiting []replica.ShardMessage, shard uint32) int {
	return slices.IndexFunc(waiting, func(w replica.ShardMessage) bool { return w.Shard == shard })
}

// sendSnapshots is the snapshot sender of destination to: it sends m,
// then the snapshots waiting in t.mu.snaps[to], one at a time, and ends
// (removing the entry) when none is left. Each send waits for one of the
// MaxSnapshotSends slots; as a sender holds at most one and waits for its
// next in line with the others (a channel's waiters are served in order),
// destinations take the slots in turn.
func (t *Transport) sendSnapshots(to uint64, m replica.ShardMessage) {
	for {
		t.sendSnapshotJob(m)
		t.mu.Lock()
		waiting := t.mu.snaps[to]
		if len(waiting) == 0 || t.mu.closed {
			delete(t.mu.snaps, to)
			t.mu.Unlock()
			return
		}
		m, waiting[0] = waiting[0], replica.ShardMessage{}
		t.mu.snaps[to] = waiting[1:]
		t.mu.Unlock()
	}
}

// snapRetry is the backoff of a destination whose last snapshot failed.
type snapRetry struct {
	bo backoff.ExponentialBackOff
	at time.Time // when the next snapshot may go
}

// retryWait waits until a snapshot may go to node to (at once, unless its last one failed).
// False when closing.
func (t *Transport) retryWait(to uint64) bool {
	t.mu.Lock()
	var d time.Duration
	if r := t.mu.snapRetry[to]; r != nil {
		d = time.Until(r.at)
	}
	t.mu.Unlock()
	if d <= 0 {
		return t.ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-t.ctx.Done():
		return false
	}
}

// snapshotOutcome records how a snapshot to node to ended for retryWait, and returns the wait
// before the next one (0 after a success).
func (t *Transport) snapshotOutcome(to uint64, ok bool) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ok {
		delete(t.mu.snapRetry, to)
		return 0
	}
	now := time.Now()
	// An entry long expired goes: a destination raft stopped sending to (a node removed or
	// replaced), or one whose last failure was long ago, which then starts over.
	for id, o := range t.mu.snapRetry {
		if now.Sub(o.at) > 2*t.cfg.SnapshotBackoffMax {
			delete(t.mu.snapRetry, id)
		}
	}
	r := t.mu.snapRetry[to]
	if r == nil {
		r = &snapRetry{bo: backoff.ExponentialBackOff{
			InitialInterval:     t.cfg.SnapshotBackoffInitial,
			RandomizationFactor: 0.5,
			Multiplier:          2,
			MaxInterval:         t.cfg.SnapshotBackoffMax,
		}}
		r.bo.Reset()
		t.mu.snapRetry[to] = r
	}
	// The library caps the interval before its jitter; the wait is capped after.
	d := min(r.bo.NextBackOff(), t.cfg.SnapshotBackoffMax)
	r.at = now.Add(d)
	return d
}

// sendSnapshotJob sends one snapshot once its destination's backoff allows, then reports its
// outcome (nothing when closing: nobody is listening).
func (t *Transport) sendSnapshotJob(m replica.ShardMessage) {
	to := m.Msg.GetTo()
	if !t.retryWait(to) || !t.takeSlot(to, m.Shard) {
		return
	}
	defer func() { <-t.snaps }()
	// A newer snapshot of the shard that came while this one waited out the backoff or for
	// its slot replaces it, as it would have in the queue: raft waits only for the newer (a
	// leadership since lost and regained, raft out of its snapshot state and back), and the
	// older, streamed in full first, would delay it by a whole transfer, or be refused as
	// stale, lengthening the backoff.
	t.mu.Lock()
	if i := waitingIndex(t.mu.snaps[to], m.Shard); i >= 0 {
		m = t.mu.snaps[to][i]
		t.mu.snaps[to] = slices.Delete(t.mu.snaps[to], i, i+1)
	}
	t.mu.Unlock()
	shard := m.Shard
	start := time.Now()
	err := t.sendSnapshot(m)
	if t.ctx.Err() != nil {
		return
	}
	ok := err == nil
	t.metrics.SnapshotsSent.WithLabelValues(result(ok)).Inc()
	t.metrics.SnapshotSeconds.WithLabelValues("sent", result(ok)).Observe(time.Since(start).Seconds())
	// A snapshot refused as stale (its leadership ended) says nothing about the destination
	// taking snapshots: it neither starts nor lengthens nor ends the backoff, which would
	// otherwise hold back this node's snapshots of the shards it still leads.
	// (A failure on this side backs off too, though the destination had no part in it:
	// raft would ask again at every heartbeat, each time a connection and a header.)
	var wait time.Duration
	if ok || status.Code(err) != codes.Aborted {
		wait = t.snapshotOutcome(to, ok)
	}
	if ok {
		t.log.Info("transport: snapshot sent", "shard", shard, "to", to,
			"index", m.Msg.GetSnapshot().GetMetadata().GetIndex())
	} else {
		t.log.Warn("transport: snapshot send failed", "shard", shard, "to", to, "err", err,
			"next_after", wait.Round(time.Millisecond))
	}
	if h := t.handlerOrNil(); h != nil {
		h.ReportSnapshot(m, ok)
	}
}

// takeSlot waits for one of the MaxSnapshotSends slots for a snapshot of shard to node to; false
// when closing. The caller gives the slot back.
func (t *Transport) takeSlot(to uint64, shard uint32) bool {
	t.mu.Lock()
	t.mu.slotWait[to] = shard
	t.mu.Unlock()
	slot := false
	select {
	case t.snaps <- struct{}{}:
		slot = true
	case <-t.ctx.Done():
	}
	t.mu.Lock()
	delete(t.mu.slotWait, to)
	t.mu.Unlock()
	return slot
}

// snapshotMinRate is the slowest a snapshot send may go on average, in bytes of the shard's
// estimated size a second (sendSnapshot): 2 Mbit/s.
const snapshotMinRate = 256 << 10

// sendSnapshot streams m, holding a slot (takeSlot).
func (t *Transport) sendSnapshot(m replica.ShardMessage) (retErr error) {
	to := m.Msg.GetTo()
	h := t.handlerOrNil()
	if h == nil {
		return ErrNoHandler
	}
	if m.Msg.GetType() != pb.MsgSnap || m.Msg.GetSnapshot() == nil {
		return fmt.Errorf("%w: SendSnapshot of a %v message", ErrBadRequest, m.Msg.GetType())
	}
	addr, ok := t.cfg.Resolve(to)
	if !ok || addr == "" {
		return ErrUnknownPeer
	}
	header, err := proto.Marshal(m.Msg)
	if err != nil {
		return err
	}
	// A dedicated connection keeps megabytes of snapshot data from queueing
	// in front of the heartbeats on the peer's raft stream. It keeps the
	// clients' keepalive timeout rather than the peers' short one: a receiver
	// that stops reading for a few seconds (a pause, a slow ingest) must not
	// cost a restart of the whole snapshot.
	opts := append(slices.Clip(t.cfg.DialOptions), grpcopt.KeepaliveOption(grpcopt.KeepaliveTimeout))
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(t.ctx)
	defer cancel()
	sizeHint := h.SnapshotSize(m.Shard)
	var limit time.Duration // the whole send's, when stalls are bounded
	if d := t.cfg.SnapshotStallTimeout; d > 0 {
		// A receiver that takes a chunk just often enough never stalls, and the send would
		// hold its slot, and its read of the shard (which keeps every table of the store it
		// began with on disk), for as long as it crawls: the whole send is bounded too, at
		// snapshotMinRate for the shard's estimated size, plus the final answer's 10×d.
		limit = 10*d + time.Duration(float64(sizeHint)/snapshotMinRate*float64(time.Second))
		var cancelLimit context.CancelFunc
		ctx, cancelLimit = context.WithTimeout(ctx, limit)
		defer cancelLimit()
	}
	stream, err := shoalv1.NewRaftClient(conn).Snapshot(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && retErr != nil {
			retErr = fmt.Errorf("transport: snapshot of shard %d to node %d not sent within %v (%d bytes estimated, at the slowest "+
				"rate allowed, %d bytes/s, and ten stall timeouts): %w", m.Shard, to, limit, sizeHint, int(snapshotMinRate), retErr)
		}
	}()
	cw := &chunkWriter{stream: stream, size: t.cfg.SnapshotChunkSize}
	if t.snapRate != nil {
		cw.pace = func(n int) error { return t.snapRate.WaitN(ctx, n) }
	}
	finalWait := func() {}
	if d := t.cfg.SnapshotStallTimeout; d > 0 {
		// Abort a stream on which no chunk went out for d (a wedged receiver
		// would otherwise hold a send slot forever). Installing after the
		// last chunk may take longer: the final answer gets 10×d.
		stall := time.AfterFunc(d, cancel)
		defer stall.Stop()
		cw.progress = func() { stall.Reset(d) }
		finalWait = func() { stall.Reset(10 * d) }
	}
	// The header goes alone so the receiver can refuse before data flows.
	if err := stream.Send(&shoalv1.SnapshotChunk{
		From: t.cfg.NodeID, To: to, ClusterId: t.cfg.ClusterID(), Shard: m.Shard, Message: header,
		SizeHint: sizeHint,
	}); err != nil {
		return closeAndRecv(stream, err)
	}
	zw, err := zstd.NewWriter(cw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return err
	}
	err = h.WriteSnapshot(m.Shard, m.Msg.GetSnapshot(), zw)
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = cw.flush()
	}
	t.metrics.SnapshotBytes.WithLabelValues("sent").Add(float64(cw.sent))
	if err != nil {
		if cw.err != nil {
			return closeAndRecv(stream, cw.err) // the receiver's verdict
		}
		cancel() // the receiver must see an abort, not a clean end
		_ = zw.Close()
		return fmt.Errorf("transport: write snapshot: %w", err)
	}
	finalWait()
	_, err = stream.CloseAndRecv()
	return err
}

// closeAndRecv turns a failed Send (a bare io.EOF when the server ended the
// stream) into the server's status.
func closeAndRecv(stream shoalv1.Raft_SnapshotClient, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// chunkWriter cuts the compressed stream into SnapshotChunks of size bytes.
// Not safe for concurrent use.
type chunkWriter struct {
	stream   shoalv1.Raft_SnapshotClient
	size     int
	buf      []byte
	sent     int
	err      error  // sticky stream error
	progress func() // called after each chunk sent; may be nil
	// pace waits until n more bytes may be sent (Config.SnapshotRate); may be nil.
	pace func(n int) error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := len(p)
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = make([]byte, 0, w.size) // fresh: gRPC may still read the last one
		}
		k := min(len(p), w.size-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == w.size {
			if err := w.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	if w.pace != nil {
		if err := w.pace(len(w.buf)); err != nil {
			w.err = err
			return err
		}
	}
	if err := w.stream.Send(&shoalv1.SnapshotChunk{Data: w.buf}); err != nil {
		w.err = err
		return err
	}
	w.sent += len(w.buf)
	w.buf = nil
	if w.progress != nil {
		w.progress()
	}
	return nil
}

// Snapshot receives one snapshot stream: header chunk, then zstd data, which
// is decompressed through a pipe into Handler.ReceiveSnapshot. The handler's
// error is returned to the sender.
func (s *server) Snapshot(stream shoalv1.Raft_SnapshotServer) (err error) {
	t := s.t
	var first *shoalv1.SnapshotChunk // the header, once received
	start := time.Now()
	defer func() {
		t.metrics.SnapshotsRecv.WithLabelValues(result(err == nil)).Inc()
		t.metrics.SnapshotSeconds.WithLabelValues("received", result(err == nil)).Observe(time.Since(start).Seconds())
		switch {
		case err != nil && first == nil: // before its header: no shard or sender known
			t.log.Warn("transport: snapshot receive failed", "err", err)
		case err != nil:
			t.log.Warn("transport: snapshot receive failed", "shard", first.GetShard(), "from", first.GetFrom(), "err", err)
		}
	}()
	h := t.handlerOrNil()
	if h == nil {
		return toStatus(ErrNoHandler)
	}
	first, err = stream.Recv()
	if err != nil {
		if err == io.EOF {
			return toStatus(fmt.Errorf("%w: empty snapshot stream", ErrBadRequest))
		}
		return err
	}
	if err := t.checkHeader(first.From, first.To, first.ClusterId); err != nil {
		return toStatus(err)
	}
	if err := t.checkSender(stream.Context(), first.From); err != nil {
		logRefusal(t.log, t.refusals, "transport: refusing snapshot", first.From, err)
		return toStatus(err)
	}
	m := new(pb.Message)
	if err := proto.Unmarshal(first.Message, m); err != nil {
		return toStatus(fmt.Errorf("%w: snapshot header: %v", ErrBadRequest, err))
	}
	if m.GetType() != pb.MsgSnap || m.GetSnapshot() == nil {
		return toStatus(fmt.Errorf("%w: snapshot header is a %v message", ErrBadRequest, m.GetType()))
	}
	if m.GetTo() != t.cfg.NodeID {
		return toStatus(&WrongNodeError{Self: t.cfg.NodeID, To: m.GetTo()})
	}
	// The stream's sender passed checkHeader; a MsgSnap naming another sender would be
	// stepped as that member's (as in Send's batches).
	if m.GetFrom() != first.From {
		return toStatus(fmt.Errorf("%w: snapshot message is from node %d, on a stream of node %d", ErrBadRequest, m.GetFrom(), first.From))
	}

	release, err := h.SnapshotFits(shardMessage(first.Shard, m), first.GetSizeHint())
	if err != nil {
		return toStatus(fmt.Errorf("transport: receive snapshot of shard %d: %w", first.Shard, err))
	}
	defer release() // after the receive below: every path waits for it (done)

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		zr, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(snapshotMaxWindow))
		if err == nil {
			err = h.ReceiveSnapshot(shardMessage(first.Shard, m), zr)
			zr.Close()
		}
		pr.CloseWithError(errReceiverDone)
		done <- err
	}()

	received := 0
	write := func(p []byte) bool {
		received += len(p)
		if len(p) == 0 {
			return true
		}
		_, err := pw.Write(p)
		return err == nil
	}
	var recvErr error
	for more := write(first.Data); more; {
		c, err := stream.Recv()
		if err != nil {
			if err != io.EOF {
				recvErr = err
			}
			break
		}
		more = write(c.Data)
	}
	if recvErr != nil {
		pw.CloseWithError(recvErr)
	} else {
		pw.Close()
	}
	herr := <-done
	t.metrics.SnapshotBytes.WithLabelValues("received").Add(float64(received))
	switch {
	case herr != nil:
		if recvErr != nil {
			return recvErr // the sender aborted; the handler saw that
		}
		return toStatus(fmt.Errorf("transport: receive snapshot of shard %d: %w", first.Shard, herr))
	case recvErr != nil:
		return recvErr
	}
	// The handler may have finished before the end of the stream: drain.
	for {
		if _, err := stream.Recv(); err != nil {
			if err != io.EOF {
				return err
			}
			return stream.SendAndClose(&shoalv1.RaftAck{})
		}
	}
}

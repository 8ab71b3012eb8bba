package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/loglimit"
	"github.com/shoaldb/shoal/replica"
)

// server is the receiving side: the shoalv1.RaftServer registered by
// Transport.Register.
type server struct {
	shoalv1.UnimplementedRaftServer
	t *Transport
}

// checkSender refuses a caller that sends as node from over TLS with a certificate that does not
// name the host of from's address (Config.Resolve), as each node's certificate names its own
// (the host peers dial it at, which they verify): any holder of a certificate from the nodes'
// CA, an operator's say, could otherwise cast votes and acknowledge entries as any member. Over
// TLS, a sender with no known address (gossip has not told this node of it yet) is refused too
// (ErrUnknownSender, which the sender retries): any such certificate could otherwise speak raft
// as a made-up member, whose higher terms depose leaders and whose appends and snapshots a
// follower takes. A caller without TLS passes.
func (t *Transport) checkSender(ctx context.Context, from uint64) error {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil
	}
	addr, ok := t.cfg.Resolve(from)
	if !ok {
		return fmt.Errorf("%w: node %d", ErrUnknownSender, from)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	if err := info.State.PeerCertificates[0].VerifyHostname(host); err != nil {
		return fmt.Errorf("%w: node %d is at %s: %v", ErrNotSender, from, addr, err)
	}
	return nil
}

// Refused incoming streams are retried by their senders every second or so for as long as the
// cause lasts (a sender gossip does not know yet, say): logRefusal logs one line at Warn per
// sender and message every refusalLogEvery, with the count held back, and the others at Debug.

type refusalKey struct {
	from uint64
	msg  string
}

// refusalLogEvery is how often one sender's refusal of one kind is logged at Warn.
const refusalLogEvery = time.Minute

// maxRefusalKeys bounds the senders remembered: made-up sender IDs must not grow it for good.
const maxRefusalKeys = 1024

func newRefusalLimits() *loglimit.Keyed[refusalKey] {
	return &loglimit.Keyed[refusalKey]{Every: refusalLogEvery, Max: maxRefusalKeys}
}

// logRefusal logs msg, the refusal of a stream from sender from for err, through lim.
func logRefusal(log *slog.Logger, lim *loglimit.Keyed[refusalKey], msg string, from uint64, err error) {
	level := slog.LevelDebug
	held, ok := lim.Allow(refusalKey{from, msg})
	if ok {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, msg, "from", from, "err", err, "held_back", held)
}

// checkHeader validates the addressing of an incoming stream.
func (t *Transport) checkHeader(from, to uint64, clusterID string) error {
	if local := t.cfg.ClusterID(); local != "" && clusterID != "" && local != clusterID {
		return &ClusterMismatchError{Local: local, Remote: clusterID, From: from}
	}
	if to != t.cfg.NodeID {
		return &WrongNodeError{Self: t.cfg.NodeID, To: to}
	}
	if from == 0 {
		return fmt.Errorf("%w: sender node ID is 0", ErrBadRequest)
	}
	return nil
}

// Send receives one peer's long-lived batch stream and hands each batch to
// the Handler, in order, until the peer ends it or this node stops serving
// (StopServing), which ends it with ErrStopping.
func (s *server) Send(stream shoalv1.Raft_SendServer) error {
	if s.t.serving.Err() != nil {
		return toStatus(ErrStopping)
	}
	received := make(chan error, 1)
	go func() { received <- s.receive(stream) }()
	select {
	case err := <-received:
		if err == io.EOF {
			// Answered here, not by receive: once Send has returned (serving ended), the
			// stream may not be sent on.
			return stream.SendAndClose(&shoalv1.RaftAck{})
		}
		return err
	case <-s.t.serving.Done():
		// Returning ends the stream: the receiving goroutine's Recv fails and it ends too,
		// having handed on the batches received before.
		return toStatus(ErrStopping)
	}
}

// receive is Send's loop: it reads batches until the stream ends (io.EOF) or fails. It only
// receives: Send answers.
func (s *server) receive(stream shoalv1.Raft_SendServer) error {
	t := s.t
	h := t.handlerOrNil()
	if h == nil {
		return toStatus(ErrNoHandler)
	}
	var from uint64
	var label string // of from
	for {
		b, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := t.checkHeader(b.From, b.To, b.ClusterId); err != nil {
			logRefusal(t.log, t.refusals, "transport: refusing raft stream", b.From, err)
			return toStatus(err)
		}
		if len(b.Shards) != len(b.Messages) {
			return toStatus(fmt.Errorf("%w: %d shards for %d messages", ErrBadRequest, len(b.Shards), len(b.Messages)))
		}
		if label == "" || b.From != from {
			if err := t.checkSender(stream.Context(), b.From); err != nil {
				logRefusal(t.log, t.refusals, "transport: refusing raft stream", b.From, err)
				return toStatus(err)
			}
			from, label = b.From, strconv.FormatUint(b.From, 10)
		}
		msgs := make([]replica.ShardMessage, len(b.Messages))
		n := 0
		for i, raw := range b.Messages {
			m := new(pb.Message)
			if err := proto.Unmarshal(raw, m); err != nil {
				return toStatus(fmt.Errorf("%w: message %d: %v", ErrBadRequest, i, err))
			}
			if m.GetTo() != t.cfg.NodeID {
				return toStatus(&WrongNodeError{Self: t.cfg.NodeID, To: m.GetTo()})
			}
			// The batch's sender passed the header checks; a message of it naming another
			// sender would be stepped as that member's (a vote, an acknowledgement).
			if m.GetFrom() != b.From {
				return toStatus(fmt.Errorf("%w: message %d is from node %d, in a batch of node %d", ErrBadRequest, i, m.GetFrom(), b.From))
			}
			msgs[i] = shardMessage(b.Shards[i], m)
			if len(b.WaitedUs) == len(b.Messages) {
				msgs[i].Waited = time.Duration(b.WaitedUs[i]) * time.Microsecond
			}
			n += len(raw)
		}
		// Looked up per batch, not per stream: the series are deleted when
		// the outbound peer of the same node is retired.
		t.metrics.MessagesReceived.WithLabelValues(label).Add(float64(len(msgs)))
		t.metrics.BytesReceived.WithLabelValues(label).Add(float64(n))
		h.HandleMessages(msgs)
	}
}

// toStatus converts a transport error to a gRPC status at the boundary.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, ErrClusterMismatch), errors.Is(err, ErrWrongNode):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrBadRequest):
		code = codes.InvalidArgument
	case errors.Is(err, ErrNotSender):
		code = codes.PermissionDenied
	case errors.Is(err, replica.ErrStaleSnapshot):
		// The sender's leadership ended: no fault of this node (sendSnapshotJob).
		code = codes.Aborted
	case errors.Is(err, ErrNoHandler), errors.Is(err, ErrClosed), errors.Is(err, ErrUnknownSender), errors.Is(err, ErrStopping):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

// shardMessage builds a replica.ShardMessage; the one place that knows how
// the message is held.
func shardMessage(shard uint32, m *pb.Message) replica.ShardMessage {
	return replica.ShardMessage{Shard: shard, Msg: m}
}

// Package grpcopt holds the gRPC dial and server options shared by every shoal
// connection: peer-to-peer raft traffic (replica/transport), node-to-node
// forwarding and the Go client.
//
// The options do three things:
//
//  1. Fast reconnect. A peer that restarts is typically back within a second;
//     gRPC's default connect backoff (1 s base, 120 s max, 20 s minimum
//     connect timeout) would leave a shard without a quorum far longer than
//     that. Reconnects start after ConnectBaseDelay and never wait more than
//     ConnectMaxDelay.
//  2. Keepalive. Clients ping an idle connection every KeepaliveTime and drop
//     it when no answer arrives within KeepaliveTimeout, so a peer that
//     vanished without a FIN (power loss, partition) is noticed in ~15 s
//     instead of the kernel's TCP timeout. The server's enforcement policy
//     permits exactly that ping rate; a server without it would answer the
//     pings with GOAWAY "too_many_pings".
//     Connections between nodes (PeerDialOptions) give up on unacknowledged
//     data sooner (PeerKeepaliveTimeout) and redial more often
//     (PeerConnectMaxDelay), so that raft traffic and forwarded requests
//     resume within about a second of a partition healing.
//  3. Message sizes. An append may carry MaxAppendSize (16 MiB) of events, and
//     a raft message carrying it adds framing; MaxMessageSize (32 MiB) covers
//     both with room to spare, in both directions.
//  4. Fixed receive windows on the server (ServerStreamWindow,
//     ServerConnWindow; larger for nodes far apart, ServerWindows). gRPC's
//     own sizing grows a connection's flow-control windows from 64 KiB with
//     what it measures of the link, by sending a ping after every data frame
//     that arrives while none is outstanding: on the short round trips between
//     nodes and clients that means a ping and its answer for nearly every raft
//     batch and append message, and window updates every 16 KiB. Fixed windows
//     stop both.
//
// Usage:
//
//	conn, err := grpc.NewClient(addr, grpcopt.DialOptions()...)
//	srv := grpc.NewServer(grpcopt.ServerOptions()...)
//
// Options appended after these win, so a caller may add, for example,
// grpc.WithTransportCredentials(credentials.NewTLS(cfg)) to replace the
// plaintext default.
package grpcopt

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

const (
	// MaxMessageSize is the largest gRPC message sent or received, in bytes:
	// a 16 MiB append plus raft and protobuf framing.
	MaxMessageSize = 32 << 20

	// KeepaliveTime is how long a client connection may be idle before the
	// client pings the server.
	KeepaliveTime = 10 * time.Second
	// KeepaliveTimeout is how long the client (and server) waits for a ping
	// ack before closing the connection.
	KeepaliveTimeout = 5 * time.Second
	// KeepaliveMinTime is the shortest ping interval the server tolerates;
	// it must stay below KeepaliveTime.
	KeepaliveMinTime = 5 * time.Second
	// ServerKeepaliveTime is how long a server connection may be idle before
	// the server pings the client (detects clients that vanished).
	ServerKeepaliveTime = 30 * time.Second

	// ServerStreamWindow is the data a sender may have in flight on one call to
	// a shoal server before the server reads it (ServerOptions; ServerWindows
	// for nodes far apart): what a raft stream between two nodes carries per
	// round trip, and what an append stream the node has stopped reading may
	// hold in gRPC's buffers on the node. gRPC's own sizing lets a call grow to
	// MaxServerStreamWindow.
	ServerStreamWindow = 4 << 20
	// MaxServerStreamWindow bounds ServerWindows' call window.
	MaxServerStreamWindow = 16 << 20
	// ServerWindowRate is what ServerWindows lets one call carry per second,
	// whatever the round trip.
	ServerWindowRate = 80 << 20
	// ServerConnWindow is the data a sender may have in flight on all the
	// calls of one connection together: four calls' windows. It does not
	// bound what the server holds: gRPC opens it again as data arrives, read
	// or not; each call's window does.
	ServerConnWindow = 4 * ServerStreamWindow

	// ConnectBaseDelay is the first reconnect delay after a failed connect.
	ConnectBaseDelay = 100 * time.Millisecond
	// ConnectMaxDelay bounds the reconnect delay.
	ConnectMaxDelay = 3 * time.Second
	// MinConnectTimeout is the minimum time one connection attempt may take.
	MinConnectTimeout = time.Second

	// PeerKeepaliveTimeout replaces KeepaliveTimeout on connections between
	// nodes. gRPC also makes it the socket's TCP_USER_TIMEOUT: data the peer
	// has not acknowledged for that long (a partition, a peer's host gone)
	// drops the connection. Without it, a connection that sent during a
	// partition can sit in TCP's retransmission backoff for seconds after
	// the network heals, its raft messages and forwarded requests stuck
	// behind the unacknowledged ones; the redial that replaces it works as
	// soon as the network does. (gRPC does not ping more often than every
	// 10 s, whatever KeepaliveTime says: the socket timeout is what notices
	// a partition first.)
	PeerKeepaliveTimeout = 2 * time.Second
	// PeerConnectMaxDelay replaces ConnectMaxDelay on connections between
	// nodes: a peer unreachable for a while is dialled at least every second,
	// so its link is back within about a second of the network.
	PeerConnectMaxDelay = time.Second
)

// DialOptions returns the client-side options: plaintext transport
// credentials, fast reconnect, keepalive pings and MaxMessageSize in both
// directions. The slice is fresh on every call; callers may append to it.
func DialOptions() []grpc.DialOption { return dialOptions(ConnectMaxDelay, KeepaliveTimeout) }

// PeerDialOptions are DialOptions for connections from one node to another
// (the raft transport, forwarded requests, topology gathering): the same,
// with PeerKeepaliveTimeout and PeerConnectMaxDelay.
func PeerDialOptions() []grpc.DialOption {
	return dialOptions(PeerConnectMaxDelay, PeerKeepaliveTimeout)
}

// KeepaliveOption is the keepalive of DialOptions with the given timeout (gRPC
// also makes it the socket's TCP_USER_TIMEOUT), for a connection that needs
// another than its options give it.
func KeepaliveOption(timeout time.Duration) grpc.DialOption {
	return grpc.WithKeepaliveParams(keepalive.ClientParameters{
		Time:                KeepaliveTime,
		Timeout:             timeout,
		PermitWithoutStream: true,
	})
}

func dialOptions(maxDelay, keepaliveTimeout time.Duration) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  ConnectBaseDelay,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   maxDelay,
			},
			MinConnectTimeout: MinConnectTimeout,
		}),
		KeepaliveOption(keepaliveTimeout),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageSize),
			grpc.MaxCallSendMsgSize(MaxMessageSize),
		),
	}
}

// ServerOptions returns the server-side options: MaxMessageSize in both
// directions, the fixed receive windows, a keepalive enforcement policy that
// admits the pings DialOptions makes (also on connections without active
// streams), and server-initiated pings on idle connections. The slice is fresh
// on every call; callers may append to it.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.InitialWindowSize(ServerStreamWindow),
		grpc.InitialConnWindowSize(ServerConnWindow),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    ServerKeepaliveTime,
			Timeout: KeepaliveTimeout,
		}),
	}
}

// ServerWindows returns the fixed receive windows of a server whose nodes are about roundTrip
// apart, to append to ServerOptions (the later options win): a call's window lets it carry
// ServerWindowRate over that round trip, at least ServerStreamWindow and at most
// MaxServerStreamWindow, and a connection's is four calls'. A node passes its tick, which the
// operator sets to about the round trip between the farthest zones.
func ServerWindows(roundTrip time.Duration) []grpc.ServerOption {
	w := int64(ServerWindowRate) * int64(roundTrip) / int64(time.Second)
	w = min(max(w, ServerStreamWindow), MaxServerStreamWindow)
	return []grpc.ServerOption{grpc.InitialWindowSize(int32(w)), grpc.InitialConnWindowSize(int32(4 * w))}
}

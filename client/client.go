package client

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// Client talks to a shoal cluster. It is safe for concurrent use; create one
// per process and share it.
type Client struct {
	opts  options
	seeds []string
	log   *slog.Logger

	topo         atomic.Pointer[topology]      // nil until the first fetch
	clusterID    atomic.Pointer[string]        // the first topology's cluster ID, sent with every call
	topoNext     atomic.Pointer[chan struct{}] // closed when the next topology is installed
	refreshMu    sync.Mutex                    // serialises topology fetches
	installMu    sync.Mutex                    // serialises installs (Client.install)
	refreshCh    chan struct{}                 // asks the background loop for a refresh; buffered(1)
	refreshAvoid atomic.Pointer[string]        // the next background refresh asks this node last
	done         chan struct{}                 // closed by Close
	bg           sync.WaitGroup                // the background refresh loop
	rr           atomic.Uint64                 // round-robin start for any-node calls

	mu struct {
		sync.Mutex
		closed bool
		nodes  map[string]*node      // by gRPC address; created lazily
		hints  map[uint32]leaderHint // shard -> leader address learnt from NotLeader
		// suspects: shard -> the leader a watched attempt waits on in vain, for the next
		// topology request (leaderWatch.poll, refreshTopology).
		suspects map[uint32]string
		// retired: nodes dropped from nodes (forget) that a use still held then; Close closes
		// them too, for calls in flight on them to end with ErrClosed.
		retired []*node
	}

	stats struct {
		attempts, retries, redirects, trips, refreshes, leaderMoves atomic.Uint64
	}
}

// node is one server address: a gRPC connection and its circuit breaker.
type node struct {
	addr    string
	conn    *grpc.ClientConn
	streams shoalv1.StreamsClient
	cluster shoalv1.ClusterClient
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	appends *appendPipe // the node's AppendPipeline stream (pipeline.go)

	faults struct {
		sync.Mutex
		counted time.Time // when the breaker last recorded a fault (admit)
	}
	// uses counts the attempts and topology fetches under way on the node (hold); gone says
	// that the client dropped it from its table (forget): the last use to end closes it.
	uses struct {
		sync.Mutex
		n    int
		gone bool
	}
	closeOnce sync.Once
	closeErr  error
	shut      atomic.Bool // closed
}

// hold notes a use of n, which let ends; false if n was dropped from the client's table
// meanwhile (its connection closed or about to be): the caller looks up the address again.
func (n *node) hold() bool {
	n.uses.Lock()
	defer n.uses.Unlock()
	if n.uses.gone {
		return false
	}
	n.uses.n++
	return true
}

// let ends a use of n; the last use of a node dropped from the table closes it.
func (n *node) let() {
	n.uses.Lock()
	n.uses.n--
	last := n.uses.gone && n.uses.n == 0
	n.uses.Unlock()
	if last {
		n.close()
	}
}

// retire marks n dropped from the client's table, and closes it unless a use holds it.
func (n *node) retire() {
	n.uses.Lock()
	n.uses.gone = true
	idle := n.uses.n == 0
	n.uses.Unlock()
	if idle {
		n.close()
	}
}

// close closes n's pipeline and connection; it is idempotent (Close and the last let of a
// retired node may both come to it).
func (n *node) close() error {
	n.closeOnce.Do(func() {
		n.shut.Store(true)
		n.appends.close(ErrClosed)
		n.closeErr = n.conn.Close()
	})
	return n.closeErr
}

// admit asks the node's breaker to let an attempt through, and returns the function that
// records its outcome. One event (a connection drop, a restart) fails every attempt in flight
// on the node at once; the breaker counts it once: a fault of an attempt that started before
// the last fault the breaker recorded is excluded, as a caller's cancellation is, so that
// only faults in a row of attempts each sent after the one before failed open the breaker.
func (n *node) admit() (finish func(error), err error) {
	f, err := n.breaker.Allow()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	return func(outcome error) {
		if outcome == errNodeFault {
			n.faults.Lock()
			if start.Before(n.faults.counted) {
				outcome = errExcluded
			} else {
				n.faults.counted = time.Now()
			}
			n.faults.Unlock()
		}
		f(outcome)
	}, nil
}

// Stats are counters since Dial.
type Stats struct {
	Attempts          uint64 // RPC attempts, first tries included
	Retries           uint64 // attempts after the first of a call
	Redirects         uint64 // not-leader answers followed to the named leader
	BreakerTrips      uint64 // times a node's breaker opened
	TopologyRefreshes uint64 // successful topology fetches
	// LeaderMoves counts attempts abandoned because the topology named a new
	// leader for their shard while they waited (but for a stale read), or
	// named the node they went to dead (a hung node; see watchLeader).
	LeaderMoves uint64
	// OpenBreakers is how many nodes' breakers are open (or half-open, letting one probe
	// through) now: the nodes the client is not sending calls to.
	OpenBreakers int
}

// Dial connects to the cluster that serves at addrs (gRPC "host:port"
// addresses; one is enough, more help when some are down). It returns once
// it has fetched the cluster topology from one of them, retrying within ctx
// and the retry policy; connections to other nodes are opened when first
// used. Close the client when done. New makes a client without waiting for
// the cluster.
func Dial(ctx context.Context, addrs []string, opts ...Option) (*Client, error) {
	c, err := newClient(addrs, opts)
	if err != nil {
		return nil, err
	}
	if err := c.run(ctx, target{kind: anyNode}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		_, err := c.fetchTopology(ctx, n)
		return false, err
	}); err != nil {
		c.Close()
		return nil, err
	}
	c.startRefresh()
	return c, nil
}

// New returns a client of the cluster that serves at addrs, as Dial does, but
// without contacting it: it checks the addresses and options only, and fetches
// the topology in the background and, failing that, in the first call, which
// waits for the cluster within its context and the retry policy like any
// retry. A service that starts before its cluster (or while it restarts)
// makes its client with New; Dial suits a tool that should fail at once when
// no node answers. Errors a call would meet anyway (a node of another cluster
// at the address, a TLS handshake refused) come from the calls.
func New(addrs []string, opts ...Option) (*Client, error) {
	c, err := newClient(addrs, opts)
	if err != nil {
		return nil, err
	}
	c.startRefresh()
	c.requestRefresh()
	return c, nil
}

// newClient checks addrs and opts and builds the client, which has fetched nothing.
func newClient(addrs []string, opts []Option) (*Client, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	seeds := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if err := checkSeed(a); err != nil {
			return nil, err
		}
		if a != "" && !slices.Contains(seeds, a) {
			seeds = append(seeds, a)
		}
	}
	if len(seeds) == 0 {
		return nil, &InvalidArgumentError{Field: "addrs", Limit: "at least one address", Reason: "no seed address was given"}
	}
	c := &Client{
		opts:      o,
		seeds:     seeds,
		log:       o.logger,
		refreshCh: make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	c.mu.nodes = make(map[string]*node)
	c.mu.hints = make(map[uint32]leaderHint)
	return c, nil
}

// startRefresh starts the background topology refresh, which Close stops.
func (c *Client) startRefresh() {
	c.bg.Add(1)
	go c.refreshLoop()
}

// checkSeed refuses a seed address that cannot name a node's gRPC endpoint: a URL of HTTP, or
// host without a port (gRPC's resolver would dial port 443). A gRPC target with a scheme
// (dns:///host:port, unix:///path, passthrough:///...) passes as it is.
func checkSeed(a string) error {
	if a == "" {
		return nil
	}
	if scheme, rest, ok := strings.Cut(a, "://"); ok {
		switch strings.ToLower(scheme) {
		case "http", "https":
			return &InvalidArgumentError{Field: "addrs", Limit: "host:port",
				Reason: fmt.Sprintf("%q is a URL; give a node's gRPC address as host:port, without http:// or https://", a)}
		case "dns":
			a = rest[strings.LastIndex(rest, "/")+1:] // dns://[authority]/host:port
		default:
			return nil
		}
	}
	if strings.HasPrefix(a, "unix:") {
		return nil
	}
	if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
		reason := fmt.Sprintf("%q has no port; give a node's gRPC address as host:port", a)
		if strings.Count(a, ":") > 1 && !strings.HasPrefix(a, "[") {
			reason = fmt.Sprintf("%q is not host:port: an IPv6 address goes in brackets, as [::1]:7400", a)
		}
		return &InvalidArgumentError{Field: "addrs", Limit: "host:port", Reason: reason}
	}
	return nil
}

// Close stops background work and closes every connection. Calls in flight
// fail with ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return nil
	}
	c.mu.closed = true
	nodes := slices.Collect(maps.Values(c.mu.nodes))
	nodes = append(nodes, c.mu.retired...)
	c.mu.nodes, c.mu.retired = nil, nil
	c.mu.Unlock()
	close(c.done)
	c.bg.Wait()
	var first error
	for _, n := range nodes {
		if err := n.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Attempts:          c.stats.attempts.Load(),
		Retries:           c.stats.retries.Load(),
		Redirects:         c.stats.redirects.Load(),
		BreakerTrips:      c.stats.trips.Load(),
		TopologyRefreshes: c.stats.refreshes.Load(),
		LeaderMoves:       c.stats.leaderMoves.Load(),
		OpenBreakers:      c.openBreakers(),
	}
}

// openBreakers counts the nodes whose breaker is not closed.
func (c *Client) openBreakers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	open := 0
	for _, n := range c.mu.nodes {
		if n.breaker.State() != gobreaker.StateClosed {
			open++
		}
	}
	return open
}

func (c *Client) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// node returns the pooled node for addr, creating its connection (lazily
// connecting: grpc.NewClient does no I/O) and breaker on first use.
func (c *Client) node(addr string) (*node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return nil, ErrClosed
	}
	if n, ok := c.mu.nodes[addr]; ok {
		return n, nil
	}
	dopts := append(defaultDialOptions(), grpc.WithChainUnaryInterceptor(c.nameClusterUnary),
		grpc.WithChainStreamInterceptor(c.nameClusterStream))
	dopts = append(dopts, c.opts.dialOptions...)
	conn, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, err
	}
	n := &node{
		addr:    addr,
		conn:    conn,
		streams: shoalv1.NewStreamsClient(conn),
		cluster: shoalv1.NewClusterClient(conn),
		breaker: gobreaker.NewTwoStepCircuitBreaker[struct{}](c.breakerSettings(addr)),
	}
	n.appends = &appendPipe{streams: n.streams}
	c.mu.nodes[addr] = n
	return n, nil
}

// forget drops from the node table the addresses that t does not name (nodes that left the
// cluster: a long-lived client of a cluster whose nodes come and go at new addresses would
// keep a connection and a breaker for each), except the seeds and the shards' hinted leaders.
// A node dropped closes once no attempt holds it; asked for again, it is dialled again.
func (c *Client) forget(t *topology) {
	keep := map[string]bool{}
	for _, n := range t.resp.GetNodes() {
		keep[n.GetGrpcAddr()] = true
	}
	for _, l := range t.leader { // a leader install kept from the client's view, which t may not name
		keep[l] = true
	}
	for _, s := range c.seeds {
		keep[s] = true
	}
	c.mu.Lock()
	for _, h := range c.mu.hints {
		keep[h.addr] = true
	}
	var gone []*node
	for addr, n := range c.mu.nodes {
		if !keep[addr] {
			delete(c.mu.nodes, addr)
			gone = append(gone, n)
		}
	}
	c.mu.retired = slices.DeleteFunc(c.mu.retired, func(n *node) bool { return n.shut.Load() })
	c.mu.retired = append(c.mu.retired, gone...)
	c.mu.Unlock()
	for _, n := range gone {
		n.retire()
	}
}

func (c *Client) breakerSettings(addr string) gobreaker.Settings {
	bs := c.opts.breaker
	return gobreaker.Settings{
		Name:        addr,
		MaxRequests: 1,
		Timeout:     bs.OpenTimeout,
		ReadyToTrip: func(cnt gobreaker.Counts) bool {
			return !bs.Disabled && cnt.ConsecutiveFailures >= bs.Failures
		},
		IsSuccessful: func(err error) bool { return err != errNodeFault },
		IsExcluded:   func(err error) bool { return err == errExcluded },
		OnStateChange: func(name string, from, to gobreaker.State) {
			switch {
			case to == gobreaker.StateOpen:
				c.stats.trips.Add(1)
				if from == gobreaker.StateClosed { // not each failed probe of a node still down
					c.log.Info("client: node circuit breaker opened", "node", name)
				} else {
					c.log.Debug("client: node circuit breaker opened again", "node", name, "from", from.String())
				}
			case to == gobreaker.StateClosed:
				c.log.Info("client: node circuit breaker closed", "node", name)
			default:
				c.log.Debug("client: node circuit breaker changed", "node", name, "from", from.String(), "to", to.String())
			}
		},
	}
}

// Connection defaults. A restarted node is reached again within about
// reconnectBase rather than gRPC's default one-second backoff, a silent peer
// is noticed by keepalive pings, and one message may carry the largest
// append (16 MiB) with framing.
const (
	reconnectBase     = 100 * time.Millisecond
	reconnectMax      = 3 * time.Second
	minConnectTimeout = time.Second
	keepaliveTime     = 10 * time.Second
	keepaliveTimeout  = 5 * time.Second
	maxMessageSize    = 32 << 20
)

// defaultDialOptions come before the caller's WithDialOptions, which can
// override any of them (credentials for TLS, say).
func defaultDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  reconnectBase,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   reconnectMax,
			},
			MinConnectTimeout: minConnectTimeout,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize), grpc.MaxCallSendMsgSize(maxMessageSize)),
	}
}

// nameCluster adds the dialled cluster's ID to ctx's outgoing metadata
// (shoalv1.ClusterIDHeader), once the client knows it: a node of another cluster refuses the
// call instead of serving it.
func (c *Client) nameCluster(ctx context.Context) context.Context {
	if id := c.dialledCluster(); id != "" {
		return metadata.AppendToOutgoingContext(ctx, shoalv1.ClusterIDHeader, id)
	}
	return ctx
}

func (c *Client) nameClusterUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(c.nameCluster(ctx), method, req, reply, cc, opts...)
}

func (c *Client) nameClusterStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(c.nameCluster(ctx), desc, cc, method, opts...)
}

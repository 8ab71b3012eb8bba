package membership

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoaldb/shoal/internal/loglimit"
)

var (
	// ErrClusterMismatch is wrapped (via *ClusterMismatchError) by Start and
	// Join when the seeds belong to another cluster, and by the delegates that
	// refuse such peers.
	ErrClusterMismatch = errors.New("membership: cluster ID mismatch")
	// ErrMetaTooLong is matched by *MetaTooLongError (EncodeMeta, Start, UpdateMeta).
	ErrMetaTooLong = errors.New("membership: meta too long")
	// ErrInvalidConfig is wrapped by Config.Validate and Start.
	ErrInvalidConfig = errors.New("membership: invalid config")
	// ErrInvalidMeta is returned by UpdateMeta for changes it refuses.
	ErrInvalidMeta = errors.New("membership: invalid meta update")
	// ErrClosed is returned by Join and UpdateMeta after Close.
	ErrClosed = errors.New("membership: closed")
	// ErrNameTaken is wrapped by Join when a live member of the cluster joined
	// already has this node's name (with another node ID).
	ErrNameTaken = errors.New("membership: node name taken")
	// ErrIdentityInUse is wrapped by Join when a live member of the cluster has this node's
	// name and node ID at another gossip address: another process runs this node (a copy of
	// its data directory), or this node's previous process has not been declared dead yet.
	ErrIdentityInUse = errors.New("membership: node identity in use")
	// ErrNotGossip is wrapped by Join when every seed answered, and none with gossip: the
	// addresses are most likely the nodes' gRPC or HTTP ones.
	ErrNotGossip = errors.New("membership: the seeds do not answer with gossip")
	// ErrGossipKey is wrapped by Join when every seed answered with gossip encrypted under
	// another key than this node's, or encrypted where this node's is not, or the reverse.
	ErrGossipKey = errors.New("membership: the seeds' gossip encryption does not match this node's")
)

// NameTakenError names the live member that holds this node's name. Is(ErrNameTaken).
type NameTakenError struct {
	Name   string
	Addr   string // its gossip address
	NodeID uint64
}

func (e *NameTakenError) Error() string {
	return fmt.Sprintf("membership: node name %q is taken by a live member at %s (node ID %d); "+
		"give this node another name, or, if that is this node's previous data directory, wait until the cluster declares it dead",
		e.Name, e.Addr, e.NodeID)
}

// Is reports whether target is ErrNameTaken.
func (e *NameTakenError) Is(target error) bool { return target == ErrNameTaken }

// listensOn reports whether gossip address addr reaches this process: memberlist listens on
// it (its port, and its IP or every interface holding that IP). A node that restarts with
// another advertised address while it listens on all interfaces still answers the probes of
// its old one, so its old entry never dies: that entry is this process, not another one.
func (m *Membership) listensOn(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	if err != nil || ip == nil || port != strconv.Itoa(m.bindPort) {
		return false
	}
	if !m.bindIP.IsUnspecified() {
		return ip.Equal(m.bindIP)
	}
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// IdentityInUseError names the address where a live member has this node's name and node
// ID. Is(ErrIdentityInUse).
type IdentityInUseError struct {
	Name   string
	Addr   string // its gossip address
	NodeID uint64
}

func (e *IdentityInUseError) Error() string {
	return fmt.Sprintf("membership: node %q (node ID %d) is alive at %s: either another process runs this node "+
		"from a copy of its data directory (two processes with one raft identity can lose acknowledged writes: "+
		"stop one, and give a copy a fresh data directory), or this node's previous process there has not been declared dead yet",
		e.Name, e.NodeID, e.Addr)
}

// Is reports whether target is ErrIdentityInUse.
func (e *IdentityInUseError) Is(target error) bool { return target == ErrIdentityInUse }

// ClusterMismatchError names both cluster IDs. Is(ErrClusterMismatch).
type ClusterMismatchError struct {
	Local, Remote string // cluster IDs
	Peer          string // the remote node's name
}

func (e *ClusterMismatchError) Error() string {
	return fmt.Sprintf("membership: cluster ID mismatch: local %q, peer %q has %q", e.Local, e.Peer, e.Remote)
}

// Is reports whether target is ErrClusterMismatch.
func (e *ClusterMismatchError) Is(target error) bool { return target == ErrClusterMismatch }

// Defaults, tuned for fast failure detection on a LAN or loopback. A failed
// node is suspected after one missed probe (ProbeInterval + ProbeTimeout) and
// declared dead after the suspicion timeout, SuspicionMult*log10(max(N,10)) *
// ProbeInterval = 1.5 s for small clusters, shortened as others confirm.
const (
	DefaultProbeInterval    = 500 * time.Millisecond // memberlist LAN: 1 s
	DefaultProbeTimeout     = 250 * time.Millisecond // LAN: 500 ms; loopback/LAN RTT is far below
	DefaultSuspicionMult    = 3                      // LAN: 4
	DefaultGossipInterval   = 100 * time.Millisecond // LAN: 200 ms; faster meta propagation
	DefaultPushPullInterval = 10 * time.Second       // LAN: 30 s; anti-entropy for small clusters
	DefaultTCPTimeout       = 2 * time.Second        // LAN: 10 s; bounds a join to a dead seed
	// DefaultDeadReclaim lets a node that died re-join under the same name from
	// a new address after this long (a wiped node rescheduled elsewhere).
	DefaultDeadReclaim   = 10 * time.Second
	DefaultUpdateTimeout = time.Second // UpdateMeta's wait for the broadcast
	// DefaultReconnectInterval is how often a member held dead (not one that
	// left) is asked to sync, so that it learns of its death and refutes it
	// (see reconnectLoop).
	DefaultReconnectInterval = time.Second
	// reconnectFor is how long after its death a member is asked at every
	// interval (one of those, at random); later only once per reconnectSlow.
	// memberlist alone never brings it back: it syncs only with members it
	// holds alive, and stops gossiping to the dead, so that a partition of
	// more than one node a side that outlasted reconnectFor never healed.
	// A member long gone costs a refused or timed-out connection a minute.
	reconnectFor  = 10 * time.Minute
	reconnectSlow = time.Minute
	// ForgetAfter is how long a member stays in Members once it is held dead: then it is
	// forgotten, as if never seen, and no longer asked to sync. One that comes back is a
	// member again. A member that left (its last metadata said Stopping: a node decommissioned
	// and stopped, say) is never asked; one that died without leaving is, while it is kept,
	// as it may be on the other side of a partition that this node's reconnect syncs heal.
	// Kept for good, the members of machines that crashed and were replaced under new names
	// (host names of containers) piled up, listed dead by cluster status and asked to sync
	// every minute each. (A partition that outlasts it still heals from the other side: its
	// nodes' replicas name members it forgot, which they ask; see islandLoop.)
	ForgetAfter = 72 * time.Hour
)

// Config configures Start. Zero values mean the defaults above.
type Config struct {
	Name      string       // node name, unique in the cluster; required
	Bind      string       // host:port for gossip, TCP and UDP; required
	Advertise string       // host:port peers use to reach this node; "" = derived from Bind
	Join      []string     // seeds (host:port); empty = start a new cluster
	SecretKey []byte       // AES key for gossip encryption: nil, or 16, 24 or 32 bytes
	Meta      Meta         // initial metadata; Meta.Name defaults to Name; NodeID required
	Logger    *slog.Logger // its lines carry component=membership; the node's own attributes are the caller's to add
	// OnChange is called after members join, leave, die or update, from a
	// dedicated goroutine; bursts are coalesced into one call. It must not
	// block for long. Optional.
	OnChange func()

	ProbeInterval    time.Duration // default DefaultProbeInterval
	ProbeTimeout     time.Duration // default DefaultProbeTimeout
	SuspicionMult    int           // default DefaultSuspicionMult
	GossipInterval   time.Duration // default DefaultGossipInterval
	PushPullInterval time.Duration // default DefaultPushPullInterval
	// ReconnectInterval: default DefaultReconnectInterval; negative: never reconnect
	// (members held dead come back at memberlist's own pace).
	ReconnectInterval time.Duration

	// WrapTransport, if set, wraps the UDP/TCP transport: fault injection (tests drop
	// packets and refuse connections with it). nil: memberlist's own transport.
	WrapTransport func(memberlist.Transport) memberlist.Transport
}

// Validate checks c and fills the defaults (it is called by Start).
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.Name == "" {
		return bad("Name is required")
	}
	if c.Meta.Name == "" {
		c.Meta.Name = c.Name
	}
	if c.Meta.Name != c.Name {
		return bad("Meta.Name %q differs from Name %q", c.Meta.Name, c.Name)
	}
	if c.Meta.NodeID == 0 {
		return bad("Meta.NodeID is required")
	}
	if _, _, err := splitHostPort(c.Bind); err != nil {
		return bad("Bind %q: %v", c.Bind, err)
	}
	if c.Advertise != "" {
		if _, _, err := splitHostPort(c.Advertise); err != nil {
			return bad("Advertise %q: %v", c.Advertise, err)
		}
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return bad("SecretKey is %d bytes; AES needs 16, 24 or 32", len(c.SecretKey))
	}
	if _, err := EncodeMeta(c.Meta); err != nil {
		return err
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.SuspicionMult <= 0 {
		c.SuspicionMult = DefaultSuspicionMult
	}
	if c.GossipInterval <= 0 {
		c.GossipInterval = DefaultGossipInterval
	}
	if c.PushPullInterval <= 0 {
		c.PushPullInterval = DefaultPushPullInterval
	}
	if c.ReconnectInterval == 0 {
		c.ReconnectInterval = DefaultReconnectInterval
	}
	return nil
}

// gossipIP is the IP memberlist is given for host, which it takes only as an IP: bound to
// anything else (an empty host, a name) it listens on every interface and advertises "::",
// an address that sends a peer on another host to itself. An empty host stands for empty (an
// error when that is "" too); a name is resolved, an IPv4 address preferred (localhost is
// 127.0.0.1, as a seed's address usually is).
func gossipIP(host, empty string) (string, error) {
	switch {
	case host == "" && empty == "":
		return "", errors.New("no host")
	case host == "":
		return empty, nil
	case net.ParseIP(host) != nil:
		return host, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return "", fmt.Errorf("resolving %q: %w", host, err)
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("%q resolves to no address", host)
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	return ips[0].String(), nil
}

func splitHostPort(hp string) (string, int, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("bad port %q", port)
	}
	return host, p, nil
}

// Member is a known member, alive or dead.
type Member struct {
	Meta
	Alive   bool
	Changed time.Time // when it was first seen, or last went alive or dead
	// AliveSince is when it was first seen alive, or last went from dead to alive (zero if
	// never seen alive): a member dead now that came alive after a moment is one that came
	// back and went again, not one that stayed down since.
	AliveSince time.Time
	Addr       string // gossip address (host:port); empty for the local member
}

// Membership is a running gossip member. Its methods are safe for concurrent use.
type Membership struct {
	ml   *memberlist.Memberlist
	log  *slog.Logger
	name string
	addr atomic.Pointer[string] // this node's gossip address as peers see it, once memberlist started
	// bindIP and bindPort are where memberlist listens, once it started (listensOn).
	bindIP   net.IP
	bindPort int
	changed  chan struct{} // capacity 1: a pending OnChange call
	done     chan struct{} // closed by Close
	stopped  sync.WaitGroup
	refused  atomic.Int64 // peers refused for a cluster mismatch (tests, logs)
	closing  atomic.Bool  // Leave or Close began (memberlist's log lines)

	joinMu    sync.Mutex // serializes Join and the reconnect loop's syncs (m.mu.refusals)
	updateMu  sync.Mutex // serializes UpdateMeta, change and broadcast
	closeOnce sync.Once
	leaveMu   sync.Mutex // serializes Leave and Close (memberlist panics on leave after shutdown)
	closed    bool       // guarded by leaveMu

	mu struct {
		sync.Mutex
		self    Meta
		selfEnc []byte
		members map[string]*Member // by name, dead ones included
		// refusals: the latest merges this node refused (cluster mismatch, name taken), so
		// that Join blames on its seeds the refusals its own push/pulls met, and not another
		// node's concurrent attempt to join this one (maxRefusals kept).
		refusals []error
		// foreign: dead members whose address answered a reconnect sync as another cluster's
		// node (or refused this one) -> that address; not asked again there (pickDead).
		foreign map[string]string
		// asked: when each member dead for longer than reconnectFor was last asked.
		asked map[string]time.Time
	}
}

// Start creates the local member, bound to cfg.Bind, and joins cfg.Join if
// any. It fails if no seed could be joined; if a seed refused because of a
// cluster ID mismatch (or this node refused the seed), the error wraps
// ErrClusterMismatch. On error nothing is left running.
func Start(cfg Config) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	enc, _ := EncodeMeta(cfg.Meta) // validated above

	m := &Membership{
		log:     cfg.Logger.With("component", "membership"), // the caller's logger names the node
		name:    cfg.Name,
		changed: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	m.mu.self, m.mu.selfEnc = cfg.Meta, enc
	m.mu.members = map[string]*Member{}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	host, port, _ := splitHostPort(cfg.Bind)
	bindIP, err := gossipIP(host, "0.0.0.0")
	if err == nil && bindIP != "0.0.0.0" && net.ParseIP(bindIP).IsUnspecified() && cfg.Advertise == "" {
		// memberlist finds a private address to advertise for 0.0.0.0 only.
		err = fmt.Errorf("bound to all interfaces as %s, the node needs an address to advertise (Advertise; --gossip-advertise)", bindIP)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: Bind %q: %v", ErrInvalidConfig, cfg.Bind, err)
	}
	mc.BindAddr, mc.BindPort = bindIP, port
	mc.AdvertisePort = port
	if cfg.Advertise != "" {
		host, mc.AdvertisePort, _ = splitHostPort(cfg.Advertise)
		if mc.AdvertiseAddr, err = gossipIP(host, ""); err == nil && net.ParseIP(mc.AdvertiseAddr).IsUnspecified() {
			err = fmt.Errorf("%s is no address a peer can reach", mc.AdvertiseAddr)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: Advertise %q: %v", ErrInvalidConfig, cfg.Advertise, err)
		}
	}
	mc.SecretKey = cfg.SecretKey
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.GossipInterval = cfg.GossipInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.TCPTimeout = DefaultTCPTimeout
	mc.DeadNodeReclaimTime = DefaultDeadReclaim
	mc.Logger = newStdLogger(slogWriter{l: m.log, self: cfg.Name, closing: &m.closing, stray: &loglimit.Limiter{Every: strayLogEvery}})
	d := (*delegate)(m)
	mc.Delegate, mc.Events, mc.Merge, mc.Alive = d, d, d, d
	if cfg.WrapTransport != nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger})
		if err != nil {
			return nil, fmt.Errorf("membership: start on %s: %w", cfg.Bind, err)
		}
		mc.Transport = cfg.WrapTransport(nt)
	}

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: start on %s: %w", cfg.Bind, err)
	}
	m.ml = ml
	m.bindIP, m.bindPort = net.ParseIP(mc.BindAddr), mc.BindPort
	addr := ml.LocalNode().Address()
	m.addr.Store(&addr) // after bindIP and bindPort, which listensOn reads once it is set

	if cfg.OnChange != nil {
		m.stopped.Add(1)
		go m.notifyLoop(cfg.OnChange)
	}
	if cfg.ReconnectInterval > 0 {
		m.stopped.Add(1)
		go m.reconnectLoop(cfg.ReconnectInterval)
	}
	if len(cfg.Join) > 0 {
		if _, err := m.Join(cfg.Join); err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// Join contacts seeds and merges state with them; it returns how many were
// reached. It fails only if none was; the error wraps ErrClusterMismatch or
// ErrNameTaken if a refusal for that reason happened during the attempt.
func (m *Membership) Join(seeds []string) (int, error) {
	select {
	case <-m.done:
		return 0, ErrClosed
	default:
	}
	m.joinMu.Lock()
	defer m.joinMu.Unlock()
	m.mu.Lock()
	m.mu.refusals = nil
	m.mu.Unlock()
	n, err := m.ml.Join(seeds)
	if err == nil {
		return n, nil
	}
	if refused := m.refusalIn(err); refused != nil {
		return n, fmt.Errorf("membership: join %v: %w", seeds, refused)
	}
	msg := flatten(err)
	if everySeed(err, unencryptedSeed) {
		// With a key, memberlist takes any answer that is not encrypted gossip for a keyless
		// seed, a gRPC or HTTP port's too.
		return n, fmt.Errorf("membership: join %v: %w: they answered without encryption: they run without "+
			"--gossip-key-file (the nodes of a cluster share one, or all go without), or they are not gossip addresses "+
			"(--join takes the seeds' --gossip addresses, not their gRPC --listen or --http ones): %s", seeds, ErrGossipKey, msg)
	}
	if everySeed(err, keyMismatch) {
		return n, fmt.Errorf("membership: join %v: %w (the nodes of a cluster share one --gossip-key-file, or all go without): %s",
			seeds, ErrGossipKey, msg)
	}
	const hint = " (is that a gossip address? --join takes the seeds' --gossip addresses, not their gRPC --listen or --http ones)"
	if everySeed(err, notGossip) {
		// Something answered each time, but not memberlist: most likely a node's gRPC or
		// HTTP address. Trying again changes nothing.
		return n, fmt.Errorf("membership: join %v: %w%s: %s", seeds, ErrNotGossip, hint, msg)
	}
	if notGossip(msg) {
		msg += hint
	}
	return n, fmt.Errorf("membership: join %v: %s", seeds, msg)
}

// notGossip tells whether a seed's join failure msg says something other than memberlist
// answered: an HTTP/2 server's first frame, or an HTTP/1 server's "HTTP/1.1 400" ('H' is 72),
// read as a message type.
func notGossip(msg string) bool { return strings.Contains(msg, "invalid msgType") }

// keyMismatch tells whether a seed's join failure msg is for want of a shared encryption key
// (memberlist says so only in its messages).
func keyMismatch(msg string) bool {
	return strings.Contains(msg, "no installed keys could decrypt") ||
		strings.Contains(msg, "remote state is encrypted and encryption is not configured") ||
		strings.Contains(msg, "encryption is configured but remote state is not encrypted")
}

// unencryptedSeed tells whether a seed's join failure msg is an answer that was not encrypted
// gossip, to a node that has a key.
func unencryptedSeed(msg string) bool {
	return strings.Contains(msg, "encryption is configured but remote state is not encrypted")
}

// everySeed tells whether err, from memberlist's Join, failed each seed it tried for a
// reason that is tells from the seed's error message.
func everySeed(err error, is func(msg string) bool) bool {
	errs := []error{err}
	var multi interface{ WrappedErrors() []error }
	if errors.As(err, &multi) {
		errs = multi.WrappedErrors()
	}
	for _, e := range errs {
		if !is(e.Error()) {
			return false
		}
	}
	return len(errs) > 0
}

// flatten turns memberlist's multi-line multierror text into one line.
func flatten(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "1 error occurred:", "")), " ")
}

func (m *Membership) notifyLoop(fn func()) {
	defer m.stopped.Done()
	for {
		select {
		case <-m.done:
			return
		case <-m.changed:
			fn()
		}
	}
}

// signal schedules an OnChange call; never blocks.
func (m *Membership) signal() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Members returns every known member, dead ones included (Alive=false,
// Changed = when it died), sorted by NodeID then Name.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.mu.members)+1)
	for name, mem := range m.mu.members {
		if name == m.name {
			continue
		}
		out = append(out, *mem)
	}
	out = append(out, m.selfLocked())
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		if a.NodeID != b.NodeID {
			if a.NodeID < b.NodeID {
				return -1
			}
			return 1
		}
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Self returns the local member with its current metadata.
func (m *Membership) Self() Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.selfLocked()
}

func (m *Membership) selfLocked() Member {
	self := Member{Meta: m.mu.self, Alive: true}
	if e, ok := m.mu.members[m.name]; ok {
		self.Changed, self.AliveSince = e.Changed, e.AliveSince
	}
	return self
}

// Forget drops a dead member from Members. It returns false (and does
// nothing) if the member is unknown or alive.
func (m *Membership) Forget(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.mu.members[name]
	if !ok || e.Alive || name == m.name {
		return false
	}
	delete(m.mu.members, name)
	return true
}

// UpdateMeta applies fn to a copy of the local metadata and gossips the
// result. It refuses (ErrInvalidMeta) changes of NodeID or Name and changes
// of a non-empty ClusterID; a too-long result returns *MetaTooLongError. In
// both cases the old metadata stays. It waits up to DefaultUpdateTimeout for
// the broadcast; a timeout is not an error (push/pull carries it later).
func (m *Membership) UpdateMeta(fn func(*Meta)) error {
	select {
	case <-m.done:
		return ErrClosed
	default:
	}
	// One update at a time, from the change to its broadcast: memberlist's UpdateNode reads
	// the metadata before it takes its incarnation number, so of two updates racing, the
	// older metadata could go out with the newer number and win everywhere, losing a flag
	// (Stopping, Decommissioning) that Self still shows.
	m.updateMu.Lock()
	defer m.updateMu.Unlock()
	m.mu.Lock()
	next := m.mu.self
	fn(&next)
	switch {
	case next.NodeID != m.mu.self.NodeID:
		m.mu.Unlock()
		return fmt.Errorf("%w: NodeID cannot change (%d -> %d)", ErrInvalidMeta, m.mu.self.NodeID, next.NodeID)
	case next.Name != m.mu.self.Name:
		m.mu.Unlock()
		return fmt.Errorf("%w: Name cannot change (%q -> %q)", ErrInvalidMeta, m.mu.self.Name, next.Name)
	case m.mu.self.ClusterID != "" && next.ClusterID != m.mu.self.ClusterID:
		m.mu.Unlock()
		return fmt.Errorf("%w: ClusterID cannot change once set (%q -> %q)", ErrInvalidMeta, m.mu.self.ClusterID, next.ClusterID)
	}
	enc, err := EncodeMeta(next)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	m.mu.self, m.mu.selfEnc = next, enc
	m.mu.Unlock()

	// memberlist's UpdateNode takes its incarnation number before it locks its node table: a
	// refutation (this node was suspected) taking the next number in between makes it drop the
	// update as older than its own state, and the refutation carried the old metadata. The
	// local node's metadata says whether the update took.
	for attempt := 1; ; attempt++ {
		err := m.ml.UpdateNode(DefaultUpdateTimeout)
		if bytes.Equal(m.ml.LocalNode().Meta, enc) || attempt == maxUpdateAttempts {
			if err != nil {
				m.log.Debug("meta update not yet broadcast", "err", err)
			}
			break
		}
	}
	m.signal()
	return nil
}

// maxUpdateAttempts bounds UpdateMeta's tries of memberlist's UpdateNode.
const maxUpdateAttempts = 3

// Leave broadcasts that this node is leaving and waits up to timeout for the
// broadcast. Safe to call more than once, and after Close (no-op).
func (m *Membership) Leave(timeout time.Duration) error {
	m.leaveMu.Lock()
	defer m.leaveMu.Unlock()
	if m.closed {
		return nil
	}
	m.closing.Store(true)
	// Stopping first (unless a hand-off set it already), so that the others, which see a
	// member that left as dead, do not keep asking it to sync (reconnectLoop).
	if !m.Self().Stopping {
		if err := m.UpdateMeta(func(meta *Meta) { meta.Stopping = true }); err != nil {
			m.log.Debug("marking the member stopping before leaving", "err", err)
		}
	}
	if err := m.ml.Leave(timeout); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// Close stops gossip without announcing a leave (peers will see this node
// die). Idempotent.
func (m *Membership) Close() error {
	var err error
	m.closeOnce.Do(func() {
		m.leaveMu.Lock()
		m.closed = true
		m.leaveMu.Unlock()
		m.closing.Store(true)
		close(m.done)
		err = m.ml.Shutdown()
		m.stopped.Wait()
	})
	return err
}

package node

// Gossip membership: starting it, joining and rejoining the cluster through seeds, and
// remembering the peers last seen alive.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/shoaldb/shoal/internal/buildinfo"
	"github.com/shoaldb/shoal/internal/membership"
	"github.com/shoaldb/shoal/ring"
	"github.com/shoaldb/shoal/shard"
)

// startGossip starts membership with this node's metadata. A node with stored
// settings that cannot reach any seed still starts (its peers may be down too)
// and keeps trying to join in the background.
func (n *Node) startGossip(ctx context.Context, haveSettings bool) error {
	meta := membership.Meta{
		NodeID:          n.dir.id.NodeID,
		Name:            n.dir.id.Name,
		Zone:            n.cfg.Zone,
		GRPCAddr:        n.addr,
		HTTPAddr:        n.httpAddr,
		Version:         buildinfo.Version,
		Decommissioning: n.dir.decommissioning(),
		ShardFormat:     shard.MaxFormat,
		// Read only as a peer's: DecodeMeta sets it for every member of this version.
		FollowsReplication: true,
	}
	if s := n.settings.Load(); s != nil {
		meta.ClusterID, meta.Shards, meta.Replication, meta.ReplicationEpoch = s.ClusterID, s.Shards, s.Replication, s.ReplicationEpoch
	}
	if err := metaFits(meta); err != nil {
		return err
	}
	seeds := n.cfg.Join
	if haveSettings {
		// A restart also seeds from the peers it last saw alive, so a node
		// that created the cluster (started without --join) finds it again.
		stored, err := n.dir.peers()
		if err != nil {
			n.log.Warn("cannot read the stored peers", "err", err)
		}
		seeds = mergeSeeds(seeds, stored, n.cfg.Gossip)
	}
	mc := membership.Config{
		Name:          n.dir.id.Name,
		Bind:          n.cfg.Gossip,
		Advertise:     n.cfg.GossipAdvertise,
		SecretKey:     n.cfg.GossipKey,
		Meta:          meta,
		Logger:        n.log,
		OnChange:      n.refreshMembers,
		WrapTransport: n.cfg.GossipTransport,
		// On Config.Tick's clock, as raft is: the defaults at the default tick.
		ProbeInterval:  10 * n.cfg.Tick,
		ProbeTimeout:   5 * n.cfg.Tick,
		GossipInterval: 2 * n.cfg.Tick,
	}
	// Joined below, not by membership.Start: a join tries its seeds one after another, each
	// up to membership.DefaultTCPTimeout when it does not answer, and ctx must bound that.
	ml, err := membership.Start(mc)
	if err != nil {
		return fmt.Errorf("node: starting gossip on %s: %w", n.cfg.Gossip, err)
	}
	switch {
	case haveSettings && len(seeds) > 0:
		err = n.rejoinAtStart(ctx, ml, seeds, meta.ClusterID)
	case !haveSettings && len(seeds) > 0:
		// A fresh node joins, retrying while its seeds start too.
		err = n.joinSeeds(ctx, ml, seeds)
	}
	if err != nil {
		ml.Close()
		return err
	}
	n.ml.Store(ml)
	n.refreshMembers()
	n.gossipLoops.Go(func() { n.rejoinLoop(ml, seeds) })
	n.gossipLoops.Go(func() { n.islandLoop(ml, n.cfg.Join) }) // the operator's seeds only: peers.json may name a machine of another cluster since
	return nil
}

// metaFits refuses, before anything is written, a configuration whose gossip metadata would
// not fit memberlist's limit with the cluster's settings: its addresses as the node will
// advertise them, at their longest where they are known only once it listens (an
// all-interfaces address, a port 0). Start checks the real metadata again (metaFits).
func (c Config) metaFits() error {
	longest := func(addr string) string {
		host, _, _ := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
			return "[" + strings.Repeat("f", 39) + "]:65535"
		}
		return "255.255.255.255:65535"
	}
	m := membership.Meta{NodeID: math.MaxUint64, Name: c.Name, Zone: c.Zone, GRPCAddr: c.Advertise,
		Version: buildinfo.Version, ShardFormat: shard.MaxFormat, Decommissioning: true}
	if m.Name == "" {
		m.Name, _ = os.Hostname()
	}
	if m.GRPCAddr == "" {
		m.GRPCAddr = longest(c.Listen)
	}
	if !c.DisableHTTP {
		m.HTTPAddr = longest(c.HTTP)
		// An all-interfaces HTTP address is advertised with --advertise's host (Start).
		host, _, _ := net.SplitHostPort(c.HTTP)
		if ah, _, err := net.SplitHostPort(c.Advertise); err == nil && (host == "" || net.ParseIP(host).IsUnspecified()) {
			m.HTTPAddr = net.JoinHostPort(ah, "65535")
		}
	}
	if err := withSettingsFits(m); err != nil {
		field, value := "Name", m.Name
		if c.Advertise != "" {
			field, value = "Advertise", c.Advertise
		}
		return fmt.Errorf("node: config: %s %q, with the node's other names and addresses and the cluster's settings, "+
			"makes gossip metadata too long (shorten the node name, zone or advertised address): %w", field, value, err)
	}
	return nil
}

// withSettingsFits returns the *membership.MetaTooLongError of m once the cluster's ID and
// settings join it, and the fields that grow as the node runs are at their longest, if any.
func withSettingsFits(m membership.Meta) error {
	if m.ClusterID == "" {
		m.ClusterID = strings.Repeat("0", len(newClusterID()))
		m.Shards, m.Replication = math.MaxUint32, math.MaxUint32
	}
	m.ReplicationEpoch = math.MaxUint64 // it grows with every set-replication
	m.SyncMicros = maxSyncMicros        // gossiped as the disk is timed (diskspeed.go)
	_, err := membership.EncodeMeta(m)
	return err
}

// metaFits refuses metadata that would exceed membership.MaxMetaSize once it holds the
// cluster's settings, which a new node adds only after it wrote them (cluster.json).
func metaFits(m membership.Meta) error {
	if err := withSettingsFits(m); err != nil {
		return fmt.Errorf("node: this node's gossip metadata is too long for the cluster's settings to join it: "+
			"shorten its name (--node), zone (--zone) or advertised addresses (--advertise, --http): %w", err)
	}
	return nil
}

// rejoinAtStart joins a restarted node's seeds (--join's and the peers it last saw alive),
// until ctx ends. A node of a cluster starts alone when no seed lets it in, and rejoins when
// a peer appears (rejoinLoop): unless every seed answered as another cluster's (a --join
// pointing elsewhere), a seed refusing it (an address reused by a new cluster) must not keep
// it down while its other seeds are. A seed holding this node's name for another node is
// fatal, as it is for a fresh node. So is this node's name and ID alive at another address
// for Config.JoinTimeout (a second process with this node's raft identity: a copy of its data
// directory); this node's previous process, there, is declared dead within seconds.
func (n *Node) rejoinAtStart(ctx context.Context, ml *membership.Membership, seeds []string, clusterID string) error {
	errc := make(chan error, 1)
	go func() { // ends by itself: each seed is given at most membership.DefaultTCPTimeout
		_, err := ml.Join(seeds)
		for until := time.Now().Add(n.cfg.JoinTimeout); errors.Is(err, membership.ErrIdentityInUse) && time.Now().Before(until); {
			n.log.Warn("this node is alive at another address; waiting for the cluster to declare that process dead",
				"until", until.Format(time.RFC3339), "err", err)
			select {
			case <-time.After(identityRetry):
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			_, err = ml.Join(seeds)
		}
		switch {
		case err == nil, ctx.Err() != nil: // Start gave up: nothing to tell
		case errors.Is(err, membership.ErrNameTaken):
			// This directory's node is in the cluster under this name, so the advice of
			// NameTakenError (another name) does not apply: the name is fixed in it.
			var taken *membership.NameTakenError
			if !errors.As(err, &taken) {
				err = fmt.Errorf("node: starting gossip on %s: %w", n.cfg.Gossip, err)
				break
			}
			err = fmt.Errorf("node: starting gossip on %s: %w: a live member at %s (node ID %d) has the name %q, and this "+
				"data directory's node (ID %d) keeps it: either this node was replaced while it was down (a node started "+
				"under its name on an empty data directory), and this directory is stale: move it away and start on an "+
				"empty one, which joins as a new node; or the live member took the name by mistake: stop it, give it "+
				"another --node and an empty data directory, then start this one again (or, if it stopped a moment ago, "+
				"wait until the cluster declares it dead)",
				n.cfg.Gossip, membership.ErrNameTaken, taken.Addr, taken.NodeID, taken.Name, n.ID())
		case errors.Is(err, membership.ErrIdentityInUse):
			err = fmt.Errorf("node: starting gossip on %s: %w", n.cfg.Gossip, err)
		default:
			if foreign := n.foreignSeeds(ml, seeds); len(foreign) == len(seeds) {
				err = fmt.Errorf("node: every seed of %v belongs to another cluster (this node's is %s): %w",
					seeds, clusterID, membership.ErrClusterMismatch)
			} else if len(foreign) > 0 {
				n.log.Error("seeds belong to another cluster; starting alone and retrying the others in the background",
					"foreign", foreign, "join", seeds)
				err = nil
			} else if errors.Is(err, membership.ErrGossipKey) {
				n.log.Error("the seeds' gossip encryption does not match this node's (--gossip-key-file); starting alone and retrying in the background",
					"join", seeds, "err", err)
				err = nil
			} else if errors.Is(err, membership.ErrNotGossip) {
				n.log.Error("the seeds answer with something other than gossip (--join takes --gossip addresses); starting alone and retrying in the background",
					"join", seeds, "err", err)
				err = nil
			} else if len(n.cfg.Join) == 0 {
				// Only the peers it last saw: a cluster restarted, this node up first (as
				// `shoal dev` starts its nodes one after another). They are joined once up.
				n.log.Info("none of the peers this node last saw alive answers yet; starting alone and joining them "+
					"once they are up", "peers", seeds)
				err = nil
			} else {
				n.log.Warn("no seed reachable; starting alone and retrying in the background", "join", seeds, "err", err)
				err = nil
			}
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return fmt.Errorf("node: joining the seeds %v: %w", seeds, context.Cause(ctx))
	}
}

// foreignSeeds returns the seeds that refuse ml as a member of another cluster, asking each
// on its own (a joint attempt reports one refusal for all).
func (n *Node) foreignSeeds(ml *membership.Membership, seeds []string) []string {
	var foreign []string
	for _, s := range seeds {
		if _, err := ml.Join([]string{s}); errors.Is(err, membership.ErrClusterMismatch) {
			foreign = append(foreign, s)
		}
	}
	return foreign
}

// identityRetry is how often a restarted node asks again whether its identity is still alive
// at another address.
const identityRetry = time.Second

// Join retry for a fresh node: nodes of a new cluster usually start
// together (Compose, systemd, Kubernetes), so a seed may not listen yet.
const (
	joinRetryInitial = 250 * time.Millisecond
	joinRetryMax     = 5 * time.Second
)

// joinSeeds joins a fresh node to its seeds, retrying with exponential
// backoff and jitter until one answers, a seed refuses for belonging to
// another cluster (not retried), or Config.JoinTimeout or ctx ends.
func (n *Node) joinSeeds(ctx context.Context, ml *membership.Membership, seeds []string) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.JoinTimeout)
	defer cancel()
	b := &backoff.ExponentialBackOff{
		InitialInterval:     joinRetryInitial,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         joinRetryMax,
	}
	var last error
	_, err := backoff.Retry(ctx, func() (int, error) {
		k, err := ml.Join(seeds)
		if err == nil && n.alone(ml) {
			err = n.selfJoined(ml, seeds)
		}
		if permanentJoinError(err) {
			return k, backoff.Permanent(err)
		}
		last = err
		return k, err
	},
		backoff.WithBackOff(b),
		backoff.WithMaxElapsedTime(0), // ctx bounds it
		backoff.WithNotify(func(err error, wait time.Duration) {
			n.log.Warn("no seed answered; retrying", "join", seeds, "in", wait.Round(time.Millisecond), "err", err)
		}))
	if err != nil && !permanentJoinError(err) {
		return fmt.Errorf("%w: no seed of %v answered within %v: %w", ErrJoinTimeout, seeds, n.cfg.JoinTimeout, last)
	}
	return err
}

// permanentJoinError tells whether err, from Join, is an answer that trying again does not
// change: the seeds are another cluster's, hold this node's name, use another gossip key, are
// all this node itself, or all answered with something other than gossip (a gRPC or HTTP
// address given for a gossip one).
func permanentJoinError(err error) bool {
	return errors.Is(err, membership.ErrClusterMismatch) || errors.Is(err, membership.ErrNameTaken) ||
		errors.Is(err, membership.ErrGossipKey) || errors.Is(err, ErrJoinSelf) || errors.Is(err, membership.ErrNotGossip)
}

// alone reports whether ml knows no member but this node.
func (n *Node) alone(ml *membership.Membership) bool {
	for _, m := range ml.Members() {
		if m.NodeID != n.dir.id.NodeID {
			return false
		}
	}
	return true
}

// selfJoined is called when a join of seeds answered and left this node alone: every seed
// that answered is this node's own gossip address (memberlist joins it as any other, under
// whatever spelling). It asks each seed on its own: when all are this node, the join can never
// find the cluster (ErrJoinSelf); otherwise the others did not answer yet (an error, retried),
// or one did just now (nil).
func (n *Node) selfJoined(ml *membership.Membership, seeds []string) error {
	self := 0
	for _, s := range seeds {
		if _, err := ml.Join([]string{s}); err == nil {
			if !n.alone(ml) {
				return nil
			}
			self++
		}
	}
	if !n.alone(ml) {
		return nil
	}
	if self == len(seeds) {
		return fmt.Errorf("%w: every seed of %v is this node's own gossip address (%s): start a cluster's first node "+
			"without --join, and give the others its gossip address", ErrJoinSelf, seeds, n.cfg.Gossip)
	}
	return fmt.Errorf("membership: join %v: only this node itself answered (its own gossip address is among the seeds); the others did not", seeds)
}

// refreshMembers caches the member list (membership's OnChange).
func (n *Node) refreshMembers() {
	if n.gossip() == nil {
		return
	}
	// Read and stored under one lock: two refreshes at once (startGossip's and the OnChange
	// callback's) could otherwise store the older list last, which nothing would replace
	// until gossip changed again.
	n.membersMu.Lock()
	m := n.gossip().Members()
	n.members.Store(&m)
	n.savePeers(m)
	n.rememberMembers(m)
	n.noteDiskLowMembers(m)
	n.membersMu.Unlock()
	n.followReplication() // a change of the factor arrives as a member's metadata
}

func (n *Node) memberList() []membership.Member {
	if p := n.members.Load(); p != nil {
		return *p
	}
	return nil
}

// gossipLoopsWait bounds Close's wait for the gossip loops (a join under way).
const gossipLoopsWait = 2 * time.Second

// waitBounded waits for wg, at most d.
func waitBounded(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// rejoinLoop keeps the node in the cluster: whenever it sees no live peer
// (its seeds were down when it started, or a partition outlasted gossip's
// memory of it), it tries to join the seeds and the peers it last saw alive.
func (n *Node) rejoinLoop(ml *membership.Membership, seeds []string) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var lastLog time.Time
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		}
		if len(n.livePeers(ml.Members())) > 0 {
			continue
		}
		stored, _ := n.dir.peers()
		all := mergeSeeds(seeds, stored, n.cfg.Gossip)
		if len(all) == 0 {
			continue
		}
		if _, err := ml.Join(all); err == nil {
			n.log.Info("joined gossip", "seeds", all)
		} else if errors.Is(err, membership.ErrIdentityInUse) && time.Since(lastLog) >= rejoinLogEvery {
			n.log.Error("this node's name and ID are alive at another address; not rejoining", "seeds", all, "err", err)
			lastLog = time.Now()
		} else if time.Since(lastLog) >= rejoinLogEvery {
			// Retried: a seed of another cluster (an address a new cluster took over)
			// does not stop the others from letting this node back in once they answer.
			n.log.Warn("rejoining gossip failed; retrying", "seeds", all, "err", err)
			lastLog = time.Now()
		}
	}
}

// islandLoop asks, every islandRejoinEvery while the node sees live peers, a few of the
// members its shards' configurations name that gossip does not hold alive (at the gossip
// address it last knew them by, members.json), and its seeds that no live member has: nodes
// that restarted while a link between them was down join the peers they reach, and gossip,
// which never heard of the others, would never ask them (memberlist reconnects only to members
// it holds dead): the cluster stayed split into islands, each taking the other's replicas for
// gone. (rejoinLoop covers a node that sees no live peer.)
func (n *Node) islandLoop(ml *membership.Membership, seeds []string) {
	next := 0                    // where the next round starts among the addresses to ask
	foreign := map[string]bool{} // addresses that answered as another cluster's: not asked again
	for {
		t := time.NewTimer(time.Duration(islandRejoinEvery.Load()))
		select {
		case <-n.done:
			t.Stop()
			return
		case <-t.C:
		}
		members := ml.Members()
		live := n.livePeers(members)
		if len(live) == 0 {
			continue // rejoinLoop's
		}
		others := slices.DeleteFunc(mergeSeeds(seeds, n.missingMembers(members), n.cfg.Gossip), func(a string) bool {
			return slices.Contains(live, a) || foreign[a]
		})
		for i := range min(islandProbes, len(others)) {
			a := others[(next+i)%len(others)]
			if _, err := ml.Join([]string{a}); errors.Is(err, membership.ErrClusterMismatch) {
				foreign[a] = true
			}
		}
		next += min(islandProbes, len(others))
		if now := n.livePeers(ml.Members()); len(now) > len(live) {
			n.log.Info("gossip: reached members gossip did not hold alive", "live_before", len(live), "live", len(now))
		}
	}
}

// missingMembers returns the gossip addresses, as last known, of the members that this node's
// replicas' configurations name and that gossip neither holds alive nor saw leave (Stopping:
// decommissioned or stopped, which the reconnect loop does not ask either).
func (n *Node) missingMembers(members []membership.Member) []string {
	skip := map[uint64]bool{}
	for _, m := range members {
		skip[m.NodeID] = m.Alive || m.Stopping
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // a loop stuck on a disk answers nothing
	defer cancel()
	statuses, err := n.host.Statuses(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, st := range statuses {
		if st.Removed {
			continue // its configuration is stale
		}
		for _, id := range slices.Concat(st.Voters, st.Learners) {
			if id == n.dir.id.NodeID || skip[id] {
				continue
			}
			skip[id] = true // looked up once, whatever the shards naming it (mergeSeeds drops repeats)
			if k, ok := n.knownMember(id); ok && k.Addr != "" {
				out = append(out, k.Addr)
			}
		}
	}
	return out
}

// rejoinLogEvery rate-limits rejoinLoop's reports of failed attempts.
const rejoinLogEvery = time.Minute

// islandProbes is how many addresses a round of islandLoop asks.
const islandProbes = 4

// islandRejoinEvery is how often islandLoop asks, in nanoseconds (a variable: tests shorten it).
var islandRejoinEvery atomic.Int64

func init() { islandRejoinEvery.Store(int64(30 * time.Second)) }

// mergeSeeds returns the distinct addresses of a and b, without self.
func mergeSeeds(a, b []string, self string) []string {
	var out []string
	for _, s := range append(slices.Clone(a), b...) {
		if s != "" && s != self && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// livePeers returns the gossip addresses of the members, other than this node, that gossip
// holds alive.
func (n *Node) livePeers(members []membership.Member) []string {
	var live []string
	for _, m := range members {
		if m.Alive && m.Addr != "" && m.NodeID != n.dir.id.NodeID {
			live = append(live, m.Addr)
		}
	}
	return live
}

// savePeers records the gossip addresses of the live peers, when they
// changed, for the next restart.
func (n *Node) savePeers(members []membership.Member) {
	live := n.livePeers(members)
	if len(live) == 0 {
		return
	}
	slices.Sort(live)
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if slices.Equal(live, n.savedPeers) {
		return
	}
	if err := n.dir.savePeers(live); err != nil {
		n.log.Warn("cannot store the peers", "err", err)
		return
	}
	n.savedPeers = live
}

// maxKnownMembers bounds members.json: the members seen that are no longer in the member
// list, newest first, beyond which the oldest are forgotten (a cluster whose nodes are
// replaced by new ones, with new IDs, for years).
const maxKnownMembers = 1024

// rememberMembers records, when it changed, what this node knows of the other members,
// current ones first, for status to name the members that hold replicas but that gossip has
// not brought back since a restart (knownMember). Its callers are serialized (refreshMembers,
// under membersMu); readers (knownMember) take the list without waiting for its file's write.
func (n *Node) rememberMembers(members []membership.Member) {
	var k []knownMember
	for _, m := range members {
		if m.NodeID != 0 && m.NodeID != n.dir.id.NodeID {
			k = append(k, knownMember{ID: m.NodeID, Name: m.Name, Zone: m.Zone, Addr: m.Addr})
		}
	}
	slices.SortFunc(k, func(a, b knownMember) int { return cmp.Compare(a.ID, b.ID) })
	var known []knownMember
	if p := n.known.Load(); p != nil {
		known = *p
	}
	current := len(k)
	for _, o := range known {
		if !slices.ContainsFunc(k[:current], func(m knownMember) bool { return m.ID == o.ID }) && len(k) < maxKnownMembers {
			k = append(k, o)
		}
	}
	if slices.Equal(k, known) {
		return
	}
	if err := n.dir.saveKnownMembers(k); err != nil {
		n.log.Warn("cannot store the members", "err", err)
		return
	}
	n.known.Store(&k)
}

// knownMember returns what this node last learned of member id, if anything.
func (n *Node) knownMember(id uint64) (knownMember, bool) {
	p := n.known.Load()
	if p == nil {
		return knownMember{}, false
	}
	i := slices.IndexFunc(*p, func(m knownMember) bool { return m.ID == id })
	if i < 0 {
		return knownMember{}, false
	}
	return (*p)[i], true
}

// DesiredReplicas returns, per shard, the ordered replica set that ring
// placement wants over the eligible members: alive or dead for less than
// DeadAfter, not decommissioning, and in this cluster. A placement loop
// compares it with each led group's voters.
func (n *Node) DesiredReplicas() [][]uint64 { return n.desiredWithout(nil) }

// desiredWithout is DesiredReplicas over the eligible members other than those in leftOut.
func (n *Node) desiredWithout(leftOut map[uint64]bool) [][]uint64 {
	s := n.Settings()
	var rm []ring.Member
	members := n.Members()
	alive := map[uint64]bool{}
	for _, m := range members {
		alive[m.NodeID] = alive[m.NodeID] || m.Alive
	}
	for _, m := range members {
		if _, out := leftOut[m.NodeID]; m.ClusterID == "" || m.Decommissioning || out {
			continue
		}
		if !m.Alive && (alive[m.NodeID] || time.Since(m.Changed) >= n.cfg.DeadAfter) {
			continue // gone, or an ID gossip also holds alive under another name: that one's zone counts
		}
		rm = append(rm, ring.Member{ID: m.NodeID, Zone: m.Zone})
	}
	if len(rm) == 0 || s.Shards == 0 {
		return nil
	}
	return ring.New(rm).Assign(s.Shards, int(s.Replication))
}

package membership

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate implements memberlist's Delegate, EventDelegate, MergeDelegate
// and AliveDelegate. memberlist calls these from its own goroutines, some
// with its node lock held: they take only m.mu and never call memberlist.
type delegate Membership

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
	_ memberlist.MergeDelegate = (*delegate)(nil)
	_ memberlist.AliveDelegate = (*delegate)(nil)
)

func (d *delegate) m() *Membership { return (*Membership)(d) }

// NodeMeta returns the encoded local metadata (validated <= limit when set).
func (d *delegate) NodeMeta(limit int) []byte {
	m := d.m()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.mu.selfEnc) > limit { // cannot happen: EncodeMeta enforces MaxMetaSize
		return nil
	}
	return append([]byte(nil), m.mu.selfEnc...)
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// check refuses a peer whose cluster ID differs from ours when both are set,
// or whose metadata does not decode.
func (d *delegate) check(peer *memberlist.Node) error {
	m := d.m()
	meta, err := DecodeMeta(peer.Meta)
	if err != nil {
		m.log.Warn("refusing peer with bad meta", "peer", peer.Name, "err", err)
		return err
	}
	m.mu.Lock()
	local := m.mu.self.ClusterID
	var mismatch error
	if local != "" && meta.ClusterID != "" && local != meta.ClusterID {
		mismatch = &ClusterMismatchError{Local: local, Remote: meta.ClusterID, Peer: peer.Name}
	}
	m.mu.Unlock()
	if mismatch != nil {
		m.refused.Add(1)
		m.log.Warn("refusing peer from another cluster", "peer", peer.Name, "local_cluster", local, "peer_cluster", meta.ClusterID)
	}
	return mismatch
}

// NotifyMerge refuses a join's push/pull merge (memberlist asks only when
// joining, on both sides) that would bring in any node of another cluster, or a
// live member with this node's name and another node ID: memberlist keeps one
// member per name, so the cluster would never see this node, and other nodes
// would take its gossip for the other's. A live member with this node's name
// and ID at another address, one this process does not listen on, is another
// process with this node's raft identity (or this node's previous process, not
// yet found dead): refused too.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		err := d.check(p)
		if err == nil {
			err = d.checkName(p)
		}
		if err != nil {
			d.m().noteRefusal(err) // for the Join under way, if this merge is its own
			return err
		}
	}
	return nil
}

// checkName refuses a live peer named as this node with another node ID, or
// with this node's ID at another address. A peer at an address this process
// listens on is this node's previous process, whatever its node ID: the port
// is this process's now, so that process is gone, and its entry stays alive
// only because this process answers the probes of its name there. With
// another ID it ran on a data directory since wiped; the seeds take the new
// ID for the name once this node refutes the old entry. An address this node
// only advertises (--gossip-advertise) is no such proof: a node started from a
// copy of another's configuration advertises that node's address, where that
// node listens, and would refute its entry for as long as both ran.
func (d *delegate) checkName(peer *memberlist.Node) error {
	m := d.m()
	if peer.Name != m.name || peer.State != memberlist.StateAlive && peer.State != memberlist.StateSuspect {
		return nil
	}
	meta, err := DecodeMeta(peer.Meta)
	if err != nil {
		return err
	}
	m.mu.Lock()
	var taken error
	self := m.addr.Load()
	switch {
	case m.listensOn(peer.Address()):
	case meta.NodeID != m.mu.self.NodeID:
		taken = &NameTakenError{Name: peer.Name, Addr: peer.Address(), NodeID: meta.NodeID}
	case self != nil && peer.Address() != *self:
		taken = &IdentityInUseError{Name: peer.Name, Addr: peer.Address(), NodeID: meta.NodeID}
	}
	m.mu.Unlock()
	if taken != nil {
		// Both sides of the merge refuse it: this node's own join (whose caller reports the
		// error, with its advice for this node), or another node's (whose start fails with
		// it). The line says which node was refused, for the live member's log.
		m.log.Warn("refused a merge with a node gossiping under this node's name",
			"peer_addr", peer.Address(), "peer_node_id", meta.NodeID)
	}
	return taken
}

// NotifyAlive refuses gossip about a node of another cluster.
func (d *delegate) NotifyAlive(peer *memberlist.Node) error { return d.check(peer) }

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.upsert(n, true) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.upsert(n, true) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.upsert(n, false) }

// upsert records n's state. A known name with a different NodeID is a new
// member (a wiped node): its entry is replaced.
func (d *delegate) upsert(n *memberlist.Node, alive bool) {
	m := d.m()
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		m.log.Warn("ignoring member event with bad meta", "peer", n.Name, "err", err)
		return
	}
	now := time.Now()
	m.mu.Lock()
	e, ok := m.mu.members[n.Name]
	switch {
	case !ok || e.NodeID != meta.NodeID:
		e = &Member{Meta: meta, Alive: alive, Changed: now, Addr: n.Address()}
		if alive {
			e.AliveSince = now
		}
		m.mu.members[n.Name] = e
	default:
		e.Addr = n.Address()
		if e.Alive != alive {
			e.Changed = now
			if alive {
				e.AliveSince = now
			}
		}
		e.Alive = alive
		e.Meta = meta
	}
	m.mu.Unlock()
	m.signal()
}

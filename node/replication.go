package node

import (
	"errors"
	"fmt"
	"math"

	"github.com/shoaldb/shoal/internal/membership"
)

// Changing the replication factor (shoal cluster set-replication).
//
// The factor is a setting of the whole cluster, kept by every node in cluster.json and gossiped
// with an epoch: the number of changes made to it. The node that takes a change first syncs
// gossip with every other live member, then records the factor under an epoch above every one
// it knows and gossips it; every node adopts the factor of the highest epoch it sees (equal
// epochs, from changes made at once on two nodes: the larger factor), on each change gossip
// reports and each placement round, so all of them settle on one. The placement loop reads the
// factor each round: each shard's leader then adds replicas (learner, caught up, voter) or
// removes extra voters, one safe step at a time, as it does when nodes join or leave. Until a
// node hears of a change it places its shards by the factor it has, which the next rounds
// correct.

// newerReplication reports whether a's factor supersedes b's.
func newerReplication(a, b Settings) bool {
	if a.ReplicationEpoch != b.ReplicationEpoch {
		return a.ReplicationEpoch > b.ReplicationEpoch
	}
	return a.Replication > b.Replication
}

// ReplicationError refuses a change of the replication factor. Is(ErrConfigConflict) when a
// live member cannot follow the change, or cannot be reached to learn the latest factor it holds.
type ReplicationError struct {
	Replication int
	// Member names the live member that does not follow changes of the factor, or that this
	// node could not reach (Unreachable); "" when the factor is out of range.
	Member, Version string
	Unreachable     error
}

func (e *ReplicationError) Error() string {
	switch {
	case e.Member == "":
		return fmt.Sprintf("node: replication factor %d out of range 1..%d", e.Replication, MaxReplication)
	case e.Unreachable != nil:
		return fmt.Sprintf("node: cannot change the replication factor to %d: member %q, alive in gossip, did not answer "+
			"this node's gossip sync, which learns the latest factor every member holds (%v); try again once it answers, "+
			"or once gossip holds it dead", e.Replication, e.Member, e.Unreachable)
	}
	return fmt.Sprintf("node: cannot change the replication factor to %d: member %q runs version %q, which does not follow "+
		"a change of it; upgrade every node first", e.Replication, e.Member, e.Version)
}

// Is reports whether target is ErrConfigConflict, for a member that cannot follow or answer.
func (e *ReplicationError) Is(target error) bool {
	return e.Member != "" && target == ErrConfigConflict
}

// SetReplication changes the cluster's replication factor to r (1..MaxReplication): it records
// it in this node's data directory under a new epoch and gossips it, and the other nodes adopt
// it within a gossip round or two. It returns the settings, and whether they changed: setting
// the factor the cluster already has changes nothing, so a retry is safe.
//
// It first syncs gossip state with every other live member (a push/pull exchange, as a join
// does), so that it decides against the latest factor each of them holds: a change made through
// one node and acknowledged is seen by a later change through any other, which then supersedes
// it. Refused (*ReplicationError) when a live member does not answer that sync, and while a live
// member runs a version that cannot follow a change (it would go on placing its shards by the
// old factor). Two changes made at the same moment through two nodes can both get the same
// epoch; the nodes then settle on the larger factor (newerReplication).
func (n *Node) SetReplication(r int) (Settings, bool, error) {
	if r < 1 || r > MaxReplication {
		return Settings{}, false, &ReplicationError{Replication: r}
	}
	// One change at a time; the syncs run outside replMu, which gossip's change callback and the
	// placement rounds take (a hung member holds a sync for seconds).
	n.setReplMu.Lock()
	defer n.setReplMu.Unlock()
	cur := n.settings.Load()
	if cur == nil {
		return Settings{}, false, conflictf("this node does not know its cluster's settings yet: it is still joining")
	}
	for _, m := range n.Members() {
		if !m.Alive || m.NodeID == n.ID() || m.Addr == "" || m.ClusterID != cur.ClusterID {
			continue
		}
		if _, err := n.gossip().Join([]string{m.Addr}); errors.Is(err, membership.ErrClosed) {
			return Settings{}, false, ErrClosed
		} else if err != nil {
			return Settings{}, false, &ReplicationError{Replication: r, Member: m.Name, Unreachable: err}
		}
	}
	n.replMu.Lock()
	defer n.replMu.Unlock()
	select {
	case <-n.done: // gossip may be closed: the change would reach cluster.json and no peer
		return Settings{}, false, ErrClosed
	default:
	}
	cur = n.settings.Load()
	s, changed, err := replicationChange(*cur, n.ID(), n.Members(), r)
	if err != nil {
		return Settings{}, false, err
	}
	why := ""
	if changed {
		why = "requested here"
	}
	return s, changed, n.adoptReplication(s, why)
}

// replicationChange returns the settings that set the replication factor of cur, node self's,
// to r, given the cluster's members: r under an epoch above every one known, or, when the
// latest factor known (cur's or a member's) is r already, those settings, unchanged (changed
// false).
func replicationChange(cur Settings, self uint64, members []membership.Member, r int) (s Settings, changed bool, err error) {
	if r < 1 || r > MaxReplication {
		return Settings{}, false, &ReplicationError{Replication: r}
	}
	s = cur
	for _, m := range members {
		if m.NodeID == self || m.ClusterID != cur.ClusterID || m.Replication == 0 {
			continue
		}
		if m.Alive && !m.FollowsReplication {
			return Settings{}, false, &ReplicationError{Replication: r, Member: m.Name, Version: m.Version}
		}
		if ms := (Settings{Replication: m.Replication, ReplicationEpoch: m.ReplicationEpoch}); gossipedReplicationValid(m) && newerReplication(ms, s) {
			s.Replication, s.ReplicationEpoch = ms.Replication, ms.ReplicationEpoch
		}
	}
	if s.Replication == uint32(r) {
		return s, false, nil
	}
	if s.ReplicationEpoch == math.MaxUint64 {
		return Settings{}, false, fmt.Errorf("%w: the replication factor's epoch is at its last value (%d): no change can follow it", ErrConfigConflict, s.ReplicationEpoch)
	}
	s.Replication, s.ReplicationEpoch = uint32(r), s.ReplicationEpoch+1
	return s, true, nil
}

// gossipedReplicationValid reports whether m gossips a factor a node could have set: in range,
// under an epoch that a change can still follow. Another is no node's (gossip without a key
// admits anyone), and is ignored.
func gossipedReplicationValid(m membership.Member) bool {
	return m.Replication != 0 && m.Replication <= MaxReplication && m.ReplicationEpoch < math.MaxUint64
}

// followReplication adopts the replication factor of the highest epoch among the members, if
// it supersedes this node's, and gossips this node's factor again if its gossiped one lags (an
// earlier gossip update failed). It runs on every change gossip reports and every placement
// round.
func (n *Node) followReplication() {
	n.replMu.Lock()
	defer n.replMu.Unlock()
	cur := n.settings.Load()
	if cur == nil || n.gossip() == nil {
		return
	}
	best, from := *cur, ""
	for _, m := range n.Members() {
		ms := Settings{Replication: m.Replication, ReplicationEpoch: m.ReplicationEpoch}
		if m.NodeID != n.ID() && m.ClusterID == cur.ClusterID && gossipedReplicationValid(m) && newerReplication(ms, best) {
			best.Replication, best.ReplicationEpoch, from = ms.Replication, ms.ReplicationEpoch, m.Name
		}
	}
	why := ""
	if from != "" {
		why = "gossiped by " + from
	}
	if err := n.adoptReplication(best, why); err != nil {
		n.log.Error("cannot record or gossip the cluster's replication factor; trying again at the next change or placement round", "err", err)
	}
}

// adoptReplication makes s, of this node's cluster, the node's settings (when they differ):
// first in the data directory, so that a restart keeps them, then in memory; and gossips them
// when its gossiped factor differs. why says where a change comes from, for the log ("" logs
// nothing). Called with replMu.
func (n *Node) adoptReplication(s Settings, why string) error {
	if cur := n.settings.Load(); *cur != s {
		if err := n.dir.saveSettings(s); err != nil {
			return err
		}
		n.settings.Store(&s)
		if why != "" {
			n.log.Info("replication factor changed", "replication", s.Replication, "was", cur.Replication,
				"epoch", s.ReplicationEpoch, "by", why)
		}
	}
	if self := n.gossip().Self(); self.Replication == s.Replication && self.ReplicationEpoch == s.ReplicationEpoch {
		return nil
	}
	return n.gossip().UpdateMeta(func(m *membership.Meta) {
		m.Replication, m.ReplicationEpoch = s.Replication, s.ReplicationEpoch
	})
}

// acceptSettings refuses stored or learned settings s that contradict the node's configuration
// (checkSettings), and logs when its --replication is not applied (replicationFlagNote).
func (n *Node) acceptSettings(s Settings) error {
	if err := checkSettings(s, n.cfg.Shards, n.cfg.Replication, n.cfg.DataDir); err != nil {
		return err
	}
	if note := replicationFlagNote(s, n.cfg.Replication); note != "" {
		n.log.Info(note)
	}
	return nil
}

// replicationFlagNote says, when a node's --replication differs from a cluster's factor that
// was changed since its creation, that the flag is not applied ("" otherwise). checkSettings
// refuses such a difference only while the factor is the one the cluster was created with.
func replicationFlagNote(s Settings, replication int) string {
	if replication == 0 || uint32(replication) == s.Replication || s.ReplicationEpoch == 0 {
		return ""
	}
	return fmt.Sprintf("--replication %d applies when a cluster is created; cluster %s's factor is %d since it was changed "+
		"(shoal cluster set-replication), and this node follows it", replication, s.ClusterID, s.Replication)
}

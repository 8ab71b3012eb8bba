package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/shoaldb/shoal/replica"
)

// becomeNewCluster makes this node the only member of a new cluster (Config.NewCluster): every
// shard's raft state is reset to this node alone, at what its state machine applied
// (replica.ResetToSoleVoter), and the cluster gets a new ID, so that a node of the old one is
// refused rather than mixed in; the peers and members last seen, and a decommission, are
// forgotten. It refuses, changing nothing, a directory that holds no cluster, lacks a shard, or
// holds a replica that applied nothing or was removed from its group.
// Run before the groups open; a crash midway is finished by starting with NewCluster again. The
// new cluster's ID goes into the file new-cluster last: a start with NewCluster on a directory
// whose cluster it already made is refused (the flag left in a unit file would otherwise make
// a new cluster at every restart, leaving the nodes that joined).
func (n *Node) becomeNewCluster() error {
	s := n.settings.Load()
	if s == nil {
		return conflictf("--new-cluster needs the data directory of a cluster's member, and %s holds none (no %s)", n.cfg.DataDir, clusterFile)
	}
	var made string
	if _, err := n.dir.readJSON(newClusterFile, &made); err != nil {
		return err
	} else if made == s.ClusterID {
		return conflictf("this node already started cluster %s from its data with --new-cluster: start it without the flag "+
			"(a second new cluster would leave the nodes that joined this one; to make one anyway, remove %s from %s)",
			s.ClusterID, newClusterFile, n.cfg.DataDir)
	}
	if len(n.cfg.Join) > 0 {
		return conflictf("--new-cluster starts a cluster of this node alone: it does not go with --join %v (join the others to it afterwards)", n.cfg.Join)
	}
	groups, err := n.dir.groups()
	if err != nil {
		return err
	}
	var missing []uint32
	for id := range s.Shards {
		if !slices.Contains(groups, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return conflictf("%s holds no replica of shard(s) %v of cluster %s's %d: a new cluster from it would lack them "+
			"(start it from a member that holds every shard)", n.cfg.DataDir, missing, s.ClusterID, s.Shards)
	}
	var replicas []ReplicaState // of every shard the cluster has
	for _, id := range groups {
		if id >= s.Shards {
			continue // a stray entry: no shard of the cluster
		}
		rs, err := readReplica(n.db, id)
		if err != nil {
			return fmt.Errorf("node: new cluster: %w", err)
		}
		replicas = append(replicas, rs)
	}
	_, empty, removed := newClusterProblems(n.dir.id.NodeID, s.Shards, replicas) // none missing: checked above
	// The first shard refused, whatever its reason.
	if len(empty) > 0 && (len(removed) == 0 || empty[0] < removed[0]) {
		return conflictf("the replica of shard %d in %s holds nothing applied (a learner that never caught up): "+
			"a new cluster from it would lose the shard", empty[0], n.cfg.DataDir)
	}
	if len(removed) > 0 {
		return conflictf("the replica of shard %d in %s was removed from the shard's group (its data ends where it left): "+
			"a new cluster from it would lose what the shard took since", removed[0], n.cfg.DataDir)
	}
	for _, r := range replicas {
		if err := replica.ResetToSoleVoter(n.db, r.Shard, n.dir.id.NodeID, r.Applied); err != nil {
			return fmt.Errorf("node: new cluster: %w", err)
		}
	}
	ns := *s
	ns.ClusterID = newClusterID()
	if err := n.dir.saveSettings(ns); err != nil {
		return err
	}
	n.settings.Store(&ns)
	// The old cluster's peers, members and a decommission go before the marker: a crash in
	// between leaves no marker, and a start with the flag finishes the work (one after the
	// marker, refused the flag, would keep them: seeds of the old cluster, and a node
	// draining itself).
	for _, f := range []string{peersFile, membersFile, decomFile, restoreRecordFile} {
		if err := n.dir.fs().Remove(filepath.Join(n.dir.path, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("node: new cluster: %w", err)
		}
	}
	if err := n.dir.syncDir(); err != nil {
		return err
	}
	if err := n.dir.writeJSON(newClusterFile, ns.ClusterID); err != nil {
		return err
	}
	n.known.Store(&[]knownMember{})
	n.log.Warn("this node is now the only member of a new cluster, with the shards as it applied them; "+
		"the old cluster's nodes must not start again with their data", "cluster", ns.ClusterID, "was", s.ClusterID, "shards", s.Shards)
	return nil
}

package node

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/shoaldb/shoal/replica"
	"github.com/shoaldb/shoal/shard"
)

// Inspection is what the data directory of a node that is not running holds, read without
// changing it (Inspect): its identity, its cluster, and how far each of its replicas got. When
// a cluster is lost, it tells which surviving directory applied most, the one to start with
// --new-cluster.
type Inspection struct {
	Dir         string
	NodeID      uint64
	Name        string
	ClusterID   string // "" when the node never created or joined a cluster
	Shards      uint32 // the cluster's shard count
	Replication uint32
	// Backup: the directory is a backup (backup.json) that no start with --restore took yet.
	Backup bool
	// NewCluster: the ID of the cluster a start with --new-cluster made of this directory.
	NewCluster      string
	Decommissioning bool
	// Names gives the node IDs that the directory knows names for (its own, the members last
	// seen).
	Names    map[uint64]string
	Replicas []ReplicaState // by shard
}

// ReplicaState is one replica in an Inspection: its raft state and its state machine's.
type ReplicaState struct {
	Shard uint32
	replica.StoredState
	Applied      uint64 // the raft index the state machine applied
	LastPosition uint64 // the next position the shard's log assigns
	Format       uint64 // the state machine's format
}

// Inspect reads the data directory dir of a node that is not running, changing nothing: it
// takes the directory's lock for the read (a running node holds it: ErrDataDirLocked) and
// opens the store read-only. It refuses a directory that holds no node.
func Inspect(dir string) (*Inspection, error) {
	d := &dataDir{path: dir}
	if ok, err := d.readJSON(identityFile, &d.id); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("node: inspect: %s holds no node (no %s)", dir, identityFile)
	}
	unlock, err := lockToRead(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	in := &Inspection{Dir: dir, NodeID: d.id.NodeID, Name: d.id.Name, Decommissioning: d.decommissioning(),
		Names: map[uint64]string{d.id.NodeID: d.id.Name}}
	if known, err := d.knownMembers(); err == nil { // names only: unreadable, IDs are shown
		for _, m := range known {
			in.Names[m.ID] = m.Name
		}
	}
	s, ok, err := d.settings()
	if err != nil {
		return nil, err
	}
	if ok {
		in.ClusterID, in.Shards, in.Replication = s.ClusterID, s.Shards, s.Replication
	}
	if _, err := os.Stat(filepath.Join(dir, backupManifestFile)); err == nil {
		in.Backup = true
	}
	if _, err := d.readJSON(newClusterFile, &in.NewCluster); err != nil {
		return nil, err
	}
	groups, err := d.groups()
	if err != nil {
		return nil, err
	}
	slices.Sort(groups)
	if len(groups) == 0 {
		return in, nil
	}
	db, _, err := openPebble(d.pebblePath(), slog.New(slog.DiscardHandler), nil, pebbleReadOnly, nil, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("node: inspect: %w", err)
	}
	defer db.Close()
	for _, id := range groups {
		rs := ReplicaState{Shard: id}
		if rs.StoredState, err = replica.Inspect(db, id); err != nil {
			return nil, fmt.Errorf("node: inspect: shard %d: %w", id, err)
		}
		sm, err := shard.Open(db, id, shard.Options{})
		if err != nil {
			return nil, fmt.Errorf("node: inspect: shard %d: %w", id, err)
		}
		rs.Applied, rs.LastPosition, rs.Format = sm.Applied(), sm.LastPosition(), sm.Format()
		// The stored commit index trails (the hard state is stored when its term or vote
		// changes), but an applied entry was committed.
		rs.Commit = max(rs.Commit, rs.Applied)
		sm.Close()
		in.Replicas = append(in.Replicas, rs)
	}
	return in, nil
}

// lockToRead takes dir's lock, as a starting node does, for a reader that must not run beside
// the node; the returned func releases it. A directory without a lock file has never run a
// node, and nothing is created for it.
func lockToRead(dir string) (unlock func(), err error) {
	f, err := os.Open(filepath.Join(dir, lockFile))
	if errors.Is(err, fs.ErrNotExist) {
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: opening lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (a node runs on it: ask it with `shoal cluster status`, or stop it first)", ErrDataDirLocked, dir)
		}
		return nil, fmt.Errorf("node: locking data directory %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

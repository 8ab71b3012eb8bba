package node

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

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
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("node: inspect: %w", err) // "stat /x: no such file or directory"
		}
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
	m, err := d.backupManifest() // refuses an incomplete copy of a backup
	if err != nil {
		return nil, err
	}
	in.Backup = m != nil
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
	db, _, err := openPebble(d.pebblePath(), slog.New(slog.DiscardHandler), unlockedFS{vfs.Default}, pebbleReadOnly, nil, 0, nil)
	if errors.Is(err, pebble.ErrDBDoesNotExist) {
		return nil, fmt.Errorf("node: inspect: %s holds replicas (%s) but no store in %s: its raft state is lost", dir, groupsFile, pebbleDir)
	}
	if err != nil {
		return nil, err
	}
	defer db.Close()
	for _, id := range groups {
		rs, err := readReplica(db, id)
		if err != nil {
			return nil, fmt.Errorf("node: inspect: %w", err)
		}
		in.Replicas = append(in.Replicas, rs)
	}
	return in, nil
}

// readReplica reads the state of db's replica of shard id, raft's and the state machine's,
// without opening either.
func readReplica(db *pebble.DB, id uint32) (ReplicaState, error) {
	rs := ReplicaState{Shard: id}
	var err error
	if rs.StoredState, err = replica.Inspect(db, id); err != nil {
		return rs, fmt.Errorf("shard %d: %w", id, err)
	}
	st, err := shard.Stored(db, id)
	if err != nil {
		return rs, fmt.Errorf("shard %d: %w", id, err)
	}
	rs.Applied, rs.LastPosition, rs.Format = st.Applied, st.LastPosition, st.Format
	// The stored commit index trails (the hard state is stored when its term or vote
	// changes), but an applied entry was committed: a lower bound still.
	rs.Commit = max(rs.Commit, rs.Applied)
	return rs, nil
}

// Role is node self's place in r's stored configuration: "voter", "learner", "removed", or
// "empty" for a replica that holds nothing yet (a learner waiting for its first snapshot).
func (r ReplicaState) Role(self uint64) string {
	switch {
	case slices.Contains(r.Voters, self):
		return "voter"
	case slices.Contains(r.Learners, self):
		return "learner"
	case r.Applied == 0 && len(r.Voters) == 0 && len(r.Learners) == 0:
		return "empty"
	}
	return "removed"
}

// keptBy reports whether --new-cluster on node self keeps r: a replica in its shard's group (a
// voter or a learner) that applied something.
func (r ReplicaState) keptBy(self uint64) bool {
	role := r.Role(self)
	return r.Applied > 0 && (role == "voter" || role == "learner")
}

// newClusterProblems sorts the shards of a cluster of the given count as --new-cluster on node
// self takes its replicas of them: the shards it holds no replica of, those whose replica
// applied nothing, and those whose replica is not in the shard's group (removed). Replicas of
// shards past the count are strays, not looked at.
func newClusterProblems(self uint64, shards uint32, replicas []ReplicaState) (missing, empty, removed []uint32) {
	held := map[uint32]ReplicaState{}
	for _, r := range replicas {
		held[r.Shard] = r
	}
	for id := range shards {
		r, ok := held[id]
		switch {
		case !ok:
			missing = append(missing, id)
		case r.Applied == 0:
			empty = append(empty, id)
		case !r.keptBy(self):
			removed = append(removed, id)
		}
	}
	return missing, empty, removed
}

// unlockedFS is the operating system's file system without Pebble's own lock: a read-only
// open would otherwise create pebble/LOCK (in a backup, which has none), and fail on
// read-only media, the snapshots of lost nodes among them. lockToRead keeps nodes out.
type unlockedFS struct{ vfs.FS }

func (unlockedFS) Lock(string) (io.Closer, error) { return io.NopCloser(nil), nil }

// lockToRead takes a shared hold of dir's lock, which a starting node takes exclusively, for a
// reader that must not run beside the node (readers may run beside each other); the returned
// func releases it. A directory without a lock file has never run a node, and nothing is
// created for it.
func lockToRead(dir string) (unlock func(), err error) {
	f, err := os.Open(filepath.Join(dir, lockFile))
	if errors.Is(err, fs.ErrNotExist) {
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: opening lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (a node runs on it: ask it with `shoal cluster status`, or stop it first)", ErrDataDirLocked, dir)
		}
		return nil, fmt.Errorf("node: locking data directory %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// Survivor is how one directory's replicas compare with those of the other directories of its
// cluster (CompareApplied), for choosing the one to start with --new-cluster, which keeps what
// its node applied.
type Survivor struct {
	Dir      string   `json:"dir"`
	Furthest []uint32 `json:"furthest"` // shards where its replica applied the most of all (ties included)
	Behind   []Gap    `json:"behind"`   // shards where another directory's replica applied more
	// Refused says why --new-cluster would refuse the directory, "" when it would not.
	Refused string `json:"refused,omitempty"`
}

// Gap is a shard where a replica applied fewer entries than another directory's.
type Gap struct {
	Shard   uint32 `json:"shard"`
	Entries uint64 `json:"entries"` // applied entries fewer
}

// CompareApplied compares inspections of one cluster's nodes shard by shard. A replica counts
// when --new-cluster would keep it (becomeNewCluster refuses the others): one of its shard's
// voters or learners that applied something. Applied entries are committed, so the replicas of
// a shard applied prefixes of one log, and the one that applied most holds the others'.
func CompareApplied(ins []*Inspection) []Survivor {
	best := map[uint32]uint64{}
	for _, in := range ins {
		for _, r := range in.Replicas {
			if kept(in, r) {
				best[r.Shard] = max(best[r.Shard], r.Applied)
			}
		}
	}
	out := make([]Survivor, len(ins))
	for i, in := range ins {
		out[i] = Survivor{Dir: in.Dir, Furthest: []uint32{}, Behind: []Gap{}, Refused: in.newClusterRefusal()}
		for _, r := range in.Replicas {
			switch {
			case !kept(in, r):
			case r.Applied == best[r.Shard]:
				out[i].Furthest = append(out[i].Furthest, r.Shard)
			default:
				out[i].Behind = append(out[i].Behind, Gap{Shard: r.Shard, Entries: best[r.Shard] - r.Applied})
			}
		}
	}
	return out
}

// SameLogs reports whether the inspections, of one cluster's nodes, are what a whole-cluster
// restore takes (every node started on its backup with --restore, docs/operations.md, "Backups"):
// the replicas of each shard among them (its voters' and learners') hold one raft log (the same
// last index, its term, and the same term), every voter of every shard is one of them, and
// every shard of the cluster is there. The restore check at each node's start confirms it
// against the members then. One directory passes when its node is every shard's only voter
// (a one-node cluster).
func SameLogs(ins []*Inspection) bool {
	if len(ins) == 0 {
		return false
	}
	nodes := map[uint64]bool{}
	for _, in := range ins {
		if nodes[in.NodeID] {
			return false // two copies of one node: one raft identity, started twice
		}
		nodes[in.NodeID] = true
	}
	type point struct{ last, lastTerm, term uint64 }
	type replicaOf struct {
		shard uint32
		node  uint64
	}
	seen := map[uint32]point{}
	held := map[replicaOf]bool{} // the replicas among ins
	var named []replicaOf        // the voters their configurations name
	for _, in := range ins {
		for _, r := range in.Replicas {
			if role := r.Role(in.NodeID); r.Shard >= in.Shards || role != "voter" && role != "learner" {
				continue
			}
			p := point{r.LastIndex, r.LastTerm, r.Term}
			if q, ok := seen[r.Shard]; ok && q != p {
				return false
			}
			seen[r.Shard] = p
			held[replicaOf{r.Shard, in.NodeID}] = true
			for _, v := range r.Voters {
				named = append(named, replicaOf{r.Shard, v})
			}
		}
	}
	for _, v := range named {
		if !held[v] {
			return false
		}
	}
	return len(seen) == int(ins[0].Shards)
}

// kept reports whether --new-cluster would keep in's replica r: one of the cluster's shards'
// (keptBy).
func kept(in *Inspection, r ReplicaState) bool { return r.Shard < in.Shards && r.keptBy(in.NodeID) }

// newClusterRefusal says why --new-cluster would refuse in's directory (becomeNewCluster), ""
// when it would not.
func (in *Inspection) newClusterRefusal() string {
	if in.ClusterID == "" {
		return "it holds no cluster"
	}
	if in.NewCluster == in.ClusterID {
		return "it already made its cluster with --new-cluster"
	}
	missing, empty, removed := newClusterProblems(in.NodeID, in.Shards, in.Replicas)
	var why []string
	if len(missing) > 0 {
		why = append(why, fmt.Sprintf("no replica of shard(s) %v", missing))
	}
	if len(empty) > 0 {
		why = append(why, fmt.Sprintf("nothing applied in shard(s) %v", empty))
	}
	if len(removed) > 0 {
		why = append(why, fmt.Sprintf("removed from the group of shard(s) %v", removed))
	}
	return strings.Join(why, "; ")
}

package node

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"
)

// Files of a data directory (see doc.go for the layout).
const (
	lockFile       = "LOCK"
	identityFile   = "identity.json"
	clusterFile    = "cluster.json"
	groupsFile     = "groups.json"
	peersFile      = "peers.json"
	membersFile    = "members.json"
	decomFile      = "decommissioning"
	newClusterFile = "new-cluster" // the ID of the cluster --new-cluster made of this directory
	pebbleDir      = "pebble"
	snapshotsDir   = "snapshots"
)

// ErrDataDirLocked is returned by Start when another process (or another Node
// in this process) holds the data directory, and by Inspect when a node does.
var ErrDataDirLocked = errors.New("node: data directory is in use by another process")

// ErrDataDirMismatch is returned by Start when the data directory belongs to
// another node or cluster than the configuration says.
var ErrDataDirMismatch = errors.New("node: data directory does not match the configuration")

// ErrConfigConflict is matched, besides ErrDataDirMismatch, by the errors of Start for a
// setting that contradicts an intact data directory (Name, Shards, Replication, or Join for a
// directory that was creating a cluster of its own): the setting is what to change. The
// other mismatches are of a damaged directory.
var ErrConfigConflict = errors.New("node: configuration contradicts the data directory")

// conflictf returns a mismatch error that is a configuration conflict (ErrConfigConflict).
func conflictf(format string, args ...any) error {
	return conflictError{fmt.Errorf("%w: "+format, append([]any{ErrDataDirMismatch}, args...)...)}
}

type conflictError struct{ error }

func (e conflictError) Unwrap() error        { return e.error }
func (e conflictError) Is(target error) bool { return target == ErrConfigConflict }

// identity is the node's permanent identity, created with the data directory.
type identity struct {
	// NodeID is the raft ID of every replica on this node: random, non-zero,
	// never reused (a wiped directory yields a new ID).
	NodeID uint64 `json:"node_id"`
	Name   string `json:"name"`
	// Backup is set in a backup's copy (to when it was taken) until a start restores it:
	// a backup whose backup.json was lost (the last file of an archive cut short) is still
	// known for one then, and refused as incomplete rather than started as the node.
	Backup *time.Time `json:"backup,omitempty"`
}

// Settings are a cluster's settings. The ID and the shard count are fixed at creation; the
// replication factor changes with Node.SetReplication, and ReplicationEpoch counts its changes
// (replication.go).
type Settings struct {
	ClusterID        string `json:"cluster_id"`
	Shards           uint32 `json:"shards"`
	Replication      uint32 `json:"replication"`
	ReplicationEpoch uint64 `json:"replication_epoch,omitempty"`
}

// dataDir is an open, locked data directory. Not safe for concurrent use
// except where noted; the node serializes its writes under Node.mu.
type dataDir struct {
	path string
	lock *os.File
	// createdLock: the lock file did not exist before this open (a backup's copy has none).
	createdLock bool
	id          identity
	// files, once set, is the file system writeFile writes through: the disk watch's, so that
	// a hung write of groups.json (on the raft loop) or peers.json is a disk stall too.
	files vfs.FS
	// groupsMu is held by every write of groups.json, and by a backup while it copies the
	// store and the file (holdGroups): the groups it lists are those the copy holds.
	groupsMu sync.Mutex
}

// dataDirMode is the mode of a data directory shoal creates, and of its snapshots directory.
const dataDirMode = 0o700

// openDataDir creates dir if absent, takes its exclusive lock, and loads or
// creates its identity. name "" adopts the stored name (or host name, on
// creation); a different non-empty name is refused once the directory's node is in a
// cluster (inCluster), and replaces the stored one before.
func openDataDir(dir, name, hostname string) (*dataDir, error) {
	_, statErr := os.Stat(dir)
	// A new directory is the owner's alone, as PostgreSQL's is: it holds every event of the
	// node's replicas, and Pebble creates its files readable by all (0666 less the umask). An
	// existing directory keeps the mode its operator gave it.
	if err := mkdirMode(dir, dataDirMode); err != nil {
		return nil, fmt.Errorf("node: creating data directory: %w", err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		// The new directory's entry in its parent is durable before anything in it is: a
		// power loss could otherwise take the whole directory, identity included, after the
		// node had acknowledged writes, and it would come back as a new node.
		if err := syncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
			return nil, fmt.Errorf("node: creating data directory: %w", err)
		}
	}
	_, lockErr := os.Stat(filepath.Join(dir, lockFile))
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: opening lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (is another shoal server running with this --data?)", ErrDataDirLocked, dir)
		}
		return nil, fmt.Errorf("node: locking data directory %s: %w", dir, err)
	}
	d := &dataDir{path: dir, lock: f, createdLock: errors.Is(lockErr, fs.ErrNotExist)}
	ok, err := d.readJSON(identityFile, &d.id)
	switch {
	case err != nil:
		d.unlock()
		return nil, err
	case ok:
		if d.id.NodeID == 0 {
			d.unlock()
			return nil, fmt.Errorf("node: %s has node ID 0", filepath.Join(dir, identityFile))
		}
		if name != "" && name != d.id.Name {
			// The name is fixed once the node is in a cluster (created or joined one, or holds
			// replicas): its members know it by that name. Before, it may change: a start
			// refused because a live member has the name must be able to follow the refusal's
			// advice to take another.
			if d.inCluster() {
				d.unlock()
				return nil, conflictf("%s belongs to node %q, not %q (use --node %s or another --data)",
					dir, d.id.Name, name, d.id.Name)
			}
			d.id.Name = name
			if err := d.writeJSON(identityFile, d.id); err != nil {
				d.unlock()
				return nil, err
			}
		}
		// Pebble is opened (and created) after the identity, and the cluster and groups files
		// are written after that: a directory holding either but no Pebble directory lost its
		// raft state. Under its old node ID the node would rejoin its shards with empty logs,
		// vote as if it had never acknowledged anything, and could elect a leader that lacks
		// committed entries.
		// (A Pebble directory without a store, an empty mount point say, is found when Start
		// opens it: raftStateFile.)
		if _, err := os.Stat(filepath.Join(dir, pebbleDir)); errors.Is(err, os.ErrNotExist) {
			if f, ok := d.raftStateFile(); ok {
				d.unlock()
				return nil, d.lostRaftState(f, "no "+pebbleDir+" directory")
			}
		}
	default:
		// A directory holding a node's state but no identity lost its identity file: a
		// new node ID would run the old raft state as another member.
		for _, f := range []string{clusterFile, groupsFile, pebbleDir} {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				d.unlock()
				return nil, fmt.Errorf("%w: %s holds a node's %s but no %s: restore that file, or move the directory away to start a new node",
					ErrDataDirMismatch, dir, f, identityFile)
			}
		}
		if name == "" {
			name = hostname
		}
		d.id = identity{NodeID: randomNodeID(), Name: name}
		if err := d.writeJSON(identityFile, d.id); err != nil {
			d.unlock()
			return nil, err
		}
	}
	return d, nil
}

// inCluster reports whether the directory's node created or joined a cluster, or was
// creating one (its cluster or groups file), as far as the files say.
func (d *dataDir) inCluster() bool {
	for _, f := range []string{clusterFile, groupsFile} {
		if _, err := os.Stat(filepath.Join(d.path, f)); !errors.Is(err, fs.ErrNotExist) {
			return true
		}
	}
	return false
}

func randomNodeID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

func newClusterID() string { return uuid.NewString() }

// settings loads the stored cluster settings; ok is false when none are stored.
func (d *dataDir) settings() (s Settings, ok bool, err error) {
	ok, err = d.readJSON(clusterFile, &s)
	if ok && (s.ClusterID == "" || s.Shards == 0 || s.Replication == 0) {
		return s, false, fmt.Errorf("node: %s is incomplete: %+v", filepath.Join(d.path, clusterFile), s)
	}
	return s, ok, err
}

func (d *dataDir) saveSettings(s Settings) error { return d.writeJSON(clusterFile, s) }

// HasCluster reports whether data directory dir holds the settings of a cluster its node
// created or joined. A directory without them (new, or left by a start that failed before
// the cluster was formed) takes Config.Shards and Config.Replication at its next start.
func HasCluster(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, clusterFile))
	return err == nil
}

// StoredReplication returns the replication factor of the cluster whose settings data directory
// dir holds as its node last knew it, 0 when it holds none or they cannot be read.
func StoredReplication(dir string) uint32 {
	s, ok, err := (&dataDir{path: dir}).settings()
	if !ok || err != nil {
		return 0
	}
	return s.Replication
}

// HoldsReplicas reports whether the node of data directory dir held replicas of shards when
// it stopped (or may have: its list of them cannot be read). A node decommissioned and
// drained holds none.
func HoldsReplicas(dir string) bool {
	d := &dataDir{path: dir}
	g, err := d.groups()
	return err != nil || len(g) > 0
}

// Decommissioning reports whether the node of data directory dir was being decommissioned
// when it stopped.
func Decommissioning(dir string) bool { return (&dataDir{path: dir}).decommissioning() }

// groups returns the shards this node holds replicas of, sorted.
func (d *dataDir) groups() ([]uint32, error) {
	var g []uint32
	_, err := d.readJSON(groupsFile, &g)
	slices.Sort(g)
	return slices.Compact(g), err
}

func (d *dataDir) saveGroups(g []uint32) error {
	g = slices.Clone(g)
	slices.Sort(g)
	d.groupsMu.Lock()
	defer d.groupsMu.Unlock()
	return d.writeJSON(groupsFile, slices.Compact(g))
}

// holdGroups runs fn while no write of groups.json runs.
func (d *dataDir) holdGroups(fn func() error) error {
	d.groupsMu.Lock()
	defer d.groupsMu.Unlock()
	return fn()
}

// peers returns the gossip addresses of the peers last seen alive, the
// seeds of a restart without --join.
func (d *dataDir) peers() ([]string, error) {
	var p []string
	_, err := d.readJSON(peersFile, &p)
	return p, err
}

func (d *dataDir) savePeers(p []string) error { return d.writeJSON(peersFile, p) }

// knownMember is what this node last learned of another member: enough to name in
// status a member that holds replicas but has not been heard since this node started.
type knownMember struct {
	ID   uint64 `json:"id"`
	Name string `json:"name"`
	Zone string `json:"zone,omitempty"`
	Addr string `json:"addr,omitempty"` // gossip address, as last seen
}

// knownMembers returns the members stored by saveKnownMembers.
func (d *dataDir) knownMembers() ([]knownMember, error) {
	var k []knownMember
	_, err := d.readJSON(membersFile, &k)
	return k, err
}

func (d *dataDir) saveKnownMembers(k []knownMember) error { return d.writeJSON(membersFile, k) }

func (d *dataDir) decommissioning() bool {
	_, err := os.Stat(filepath.Join(d.path, decomFile))
	return err == nil
}

func (d *dataDir) setDecommissioning() error {
	return d.writeFile(decomFile, []byte("decommissioning requested\n"))
}

// clearDecommissioning removes the flag durably; it reports whether it was set. Through
// d.files, as writeFile: a remove or directory sync that hangs is a disk stall.
func (d *dataDir) clearDecommissioning() (bool, error) {
	err := d.fs().Remove(filepath.Join(d.path, decomFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("node: removing %s: %w", decomFile, err)
	}
	if err := d.syncDir(); err != nil {
		return true, err
	}
	return true, nil
}

func (d *dataDir) pebblePath() string { return filepath.Join(d.path, pebbleDir) }

// raftStateFile returns the file that says this node has raft state (the cluster or groups
// file, written after Pebble was created), if any: Pebble must then hold its store.
func (d *dataDir) raftStateFile() (string, bool) {
	for _, f := range []string{clusterFile, groupsFile} {
		if _, err := os.Stat(filepath.Join(d.path, f)); err == nil {
			return f, true
		}
	}
	return "", false
}

// lostRaftState is the refusal of a node whose raft state is lost (what: how it was found):
// under its old node ID it would rejoin its shards with empty logs, vote as if it had never
// acknowledged anything, and could elect a leader that lacks committed entries.
func (d *dataDir) lostRaftState(f, what string) error {
	return fmt.Errorf("%w: %s holds node %q's %s but %s: its raft state is lost, and the "+
		"node must not rejoin under its old ID; move the directory away to start it as a new node "+
		"(its replicas are replaced on other nodes, then re-created on it)",
		ErrDataDirMismatch, d.path, d.id.Name, f, what)
}

// resetSnapshots empties (creating it if absent) the directory where the raft
// host writes the snapshots it receives before ingesting them, and returns its
// path. A crash mid-receive leaves a partial file there; nothing in it
// outlives a run.
func (d *dataDir) resetSnapshots() (string, error) {
	dir := filepath.Join(d.path, snapshotsDir)
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("node: emptying %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, dataDirMode); err != nil {
		return "", fmt.Errorf("node: creating %s: %w", dir, err)
	}
	return dir, nil
}

// mkdirMode creates dir with mode if absent, and its missing parents as mkdir -p does (0755
// less the umask): mode is for dir alone.
func mkdirMode(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(dir)), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// dropCreatedLock removes the lock file a refused start created, so that the refusal leaves a
// backup's copy as it was; the lock itself stays held until unlock.
func (d *dataDir) dropCreatedLock() {
	if d.createdLock {
		os.Remove(filepath.Join(d.path, lockFile))
	}
}

func (d *dataDir) unlock() error {
	if d.lock == nil {
		return nil
	}
	syscall.Flock(int(d.lock.Fd()), syscall.LOCK_UN)
	err := d.lock.Close()
	d.lock = nil
	return err
}

// readJSON decodes file into v; ok is false when the file does not exist.
func (d *dataDir) readJSON(file string, v any) (ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(d.path, file))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("node: reading %s: %w", file, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("node: %s is corrupt: %w", filepath.Join(d.path, file), err)
	}
	return true, nil
}

func (d *dataDir) writeJSON(file string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return d.writeFile(file, append(b, '\n'))
}

// writeFile replaces file atomically: write a temp file, fsync it, rename it
// over file, fsync the directory.
func (d *dataDir) writeFile(file string, b []byte) error {
	files := d.fs()
	final := filepath.Join(d.path, file)
	tmp := fmt.Sprintf("%s.tmp%d", final, mrand.Uint64())
	f, err := files.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("node: writing %s: %w", file, err)
	}
	defer files.Remove(tmp) // fails after a successful rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("node: writing %s: %w", file, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("node: syncing %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("node: writing %s: %w", file, err)
	}
	if err := files.Rename(tmp, final); err != nil {
		return fmt.Errorf("node: renaming %s: %w", file, err)
	}
	return d.syncDir()
}

// fs is the file system the directory's own files are written through: d.files once set.
func (d *dataDir) fs() vfs.FS {
	if d.files == nil {
		return vfs.Default
	}
	return d.files
}

// syncDir fsyncs the directory through d.fs, making its entries durable.
func (d *dataDir) syncDir() error {
	dir, err := d.fs().OpenDir(d.path)
	if err == nil {
		err = dir.Sync()
		dir.Close()
	}
	if err != nil {
		return fmt.Errorf("node: syncing data directory: %w", err)
	}
	return nil
}

// syncDir fsyncs directory path, making its entries durable.
func syncDir(path string) error {
	dir, err := os.Open(path)
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// checkSettings refuses stored or learned settings s that contradict the configured
// shards/replication (0 = accept any). A replication factor changed since the cluster's
// creation (s.ReplicationEpoch > 0) is not checked: the flag is the factor a cluster is created
// with, and the node follows the cluster's (replicationFlagNote).
func checkSettings(s Settings, shards, replication int, dir string) error {
	if shards != 0 && uint32(shards) != s.Shards {
		return conflictf("--shards %d differs from cluster %s's %d shards (data directory %s); pass --shards %d or leave it unset",
			shards, s.ClusterID, s.Shards, dir, s.Shards)
	}
	if replication != 0 && uint32(replication) != s.Replication && s.ReplicationEpoch == 0 {
		return conflictf("--replication %d differs from cluster %s's replication %d (data directory %s); pass --replication %d or leave it unset "+
			"(unset, a node follows its cluster's factor, and one that was down while the factor changed learns it once it joins; "+
			"to change the factor of a running cluster, use shoal cluster set-replication)",
			replication, s.ClusterID, s.Replication, dir, s.Replication)
	}
	return nil
}

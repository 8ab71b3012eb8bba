package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/buildinfo"
	"github.com/shoaldb/shoal/shard"
)

// backupManifest is the backup.json a backup directory holds: what it is a copy of.
type backupManifest struct {
	NodeID    uint64    `json:"node_id"`
	Node      string    `json:"node"`
	ClusterID string    `json:"cluster_id"`
	Created   time.Time `json:"created"`
	Version   string    `json:"version"`      // of the node that wrote it
	MaxFormat uint64    `json:"shard_format"` // the highest shard format that version applies
	// Files gives the size of every other file of the backup by its slash-separated path in
	// it, for the first start on the backup to refuse a copy whose files differ, as a copy
	// cut short leaves them (the last WAL cut short replays without an error, losing the
	// writes it held). That start drops it, having checked, before Pebble changes the files.
	// Absent from the backups of earlier versions.
	Files map[string]int64 `json:"files,omitempty"`
}

const backupManifestFile = "backup.json"

// backupNameRE is what a backup's directory name may be (BackupRequest.name).
var backupNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// checkRestore refuses to start on a backup (a directory holding backup.json) unless restore
// (Config.Restore) confirms it: starting there restores the node's past state, which is safe
// only in the cases docs/operations.md ("Backups") names. It returns the backup's manifest
// when the start restores one; finishRestore then removes backup.json, once the start changed
// what it was to change (NewCluster), so that later starts are ordinary.
func (d *dataDir) checkRestore(restore bool) (*backupManifest, error) {
	m, err := d.backupManifest()
	if err != nil || m == nil {
		return nil, err
	}
	if !restore {
		return nil, conflictf("%s is a backup of node %q (ID %d, cluster %s) taken %s: starting on it restores that node's state "+
			"of then, which is safe only for a one-node cluster, a cluster whose every node is restored from backups holding the "+
			"same raft logs (taken while it was idle), or as a new cluster (--new-cluster) (docs/operations.md, \"Backups\"); "+
			"to go ahead, start with --restore",
			d.path, m.Node, m.NodeID, m.ClusterID, m.Created.Format(time.RFC3339))
	}
	if m.Files != nil {
		// Checked: from here on the start changes the files (Pebble's open replays the WAL), and
		// a start interrupted before finishRestore is started again.
		m.Files = nil
		if err := d.writeJSON(backupManifestFile, m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// backupManifest returns the manifest of the backup d holds, nil when d holds none. It
// refuses a backup that is not whole: its backup.json missing though its identity is a
// backup's, or a file missing or of another size than backup.json gives.
func (d *dataDir) backupManifest() (*backupManifest, error) {
	var m backupManifest
	ok, err := d.readJSON(backupManifestFile, &m)
	if err != nil {
		return nil, err
	}
	if !ok {
		if d.id.Backup != nil {
			return nil, conflictf("%s is a backup of node %q taken %s (its %s says so) without its %s: the copy is incomplete; "+
				"copy the backup again", d.path, d.id.Name, d.id.Backup.Format(time.RFC3339), identityFile, backupManifestFile)
		}
		return nil, nil
	}
	var bad []string
	for _, name := range slices.Sorted(maps.Keys(m.Files)) {
		st, err := d.fs().Stat(filepath.Join(d.path, filepath.FromSlash(name)))
		switch {
		case errors.Is(err, os.ErrNotExist):
			bad = append(bad, name+" is missing")
		case err != nil:
			return nil, err
		case st.Size() != m.Files[name]:
			bad = append(bad, fmt.Sprintf("%s holds %d bytes, not %d", name, st.Size(), m.Files[name]))
		}
	}
	if len(bad) > 0 {
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("%d more", len(bad)-5))
		}
		return nil, conflictf("%s is an incomplete copy of a backup of node %q taken %s (%s; %s gives every file's size): "+
			"copy the backup again", d.path, m.Node, m.Created.Format(time.RFC3339), strings.Join(bad, ", "), backupManifestFile)
	}
	return &m, nil
}

// finishRestore makes the identity of restored backup m the node's own again, then removes
// its backup.json.
func (d *dataDir) finishRestore(m *backupManifest, log *slog.Logger) error {
	if d.id.Backup != nil {
		d.id.Backup = nil
		if err := d.writeJSON(identityFile, d.id); err != nil {
			return err
		}
	}
	if err := d.fs().Remove(filepath.Join(d.path, backupManifestFile)); err != nil {
		return fmt.Errorf("node: removing %s after the restore: %w", backupManifestFile, err)
	}
	if err := d.syncDir(); err != nil {
		return err
	}
	log.Warn("started on a restored backup", "backup_of", m.Node, "taken", m.Created)
	return nil
}

// ErrBackupExists is returned by Backup for a name already taken under Config.BackupDir.
var ErrBackupExists = errors.New("node: a backup of that name exists")

// BackupResult is what Backup wrote.
type BackupResult struct {
	Path    string
	Bytes   uint64
	Created time.Time
}

// Backup writes a consistent copy of this node's data directory into BackupDir/name (name
// "" is the node's name and the UTC time): a Pebble checkpoint of the store (its tables
// hard-linked where the file system allows, so a backup next to the data costs little space
// until compactions replace them), taken while no write of groups.json runs, so that the
// groups listed are those whose raft state the checkpoint holds; the identity, cluster and
// groups files (and the decommissioning flag, and the peers and members last seen); and
// backup.json. The copy is what a crash at
// that moment would have left, so starting a node on it recovers as from such a crash. It is
// assembled in a hidden directory and renamed into place, so BackupDir/name is complete or
// absent. The node serves meanwhile. See docs/operations.md, "Backups", for when restoring
// one is safe.
func (n *Node) Backup(name string) (BackupResult, error) {
	created := time.Now().UTC()
	if name == "" {
		name = defaultBackupName(n.Name(), created)
	}
	if !backupNameRE.MatchString(name) {
		return BackupResult{}, &shard.InvalidError{Field: "name", Limit: "1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
			Reason: fmt.Sprintf("%q is not a backup name", name)}
	}
	n.backupOne.Lock() // one backup at a time; Close waits for it
	defer n.backupOne.Unlock()
	n.backupMu.Lock()
	closed := n.backupClosed
	n.backupMu.Unlock()
	if closed {
		return BackupResult{}, ErrClosed
	}
	fs := n.dir.fs()
	dir := n.cfg.BackupDir
	final := filepath.Join(dir, name)
	if _, err := fs.Stat(final); err == nil {
		return BackupResult{}, fmt.Errorf("%w: %s", ErrBackupExists, final)
	} else if !errors.Is(err, os.ErrNotExist) {
		return BackupResult{}, err
	}
	// The backups are the data's: the owner's alone, as the data directory is.
	if err := fs.MkdirAll(dir, dataDirMode); err != nil {
		return BackupResult{}, fmt.Errorf("node: backup: %w", err)
	}
	// This node's own: another's backup of the same name into a shared directory is not
	// removed or mixed in.
	tmp := filepath.Join(dir, backupPartial(name, n.ID()))
	stage := filepath.Join(n.dir.path, backupStageDir)
	for _, d := range []string{tmp, stage} { // a crashed backup's
		if err := fs.RemoveAll(d); err != nil {
			return BackupResult{}, fmt.Errorf("node: backup: %w", err)
		}
	}
	size, err := n.stageBackup(fs, stage, created)
	if err != nil {
		_ = fs.RemoveAll(stage)
		return BackupResult{}, fmt.Errorf("node: backup %s: %w", final, err)
	}
	// Onto BackupDir: a rename on the data's file system; elsewhere a copy, after the
	// checkpoint, so that nothing of the node waits for it, and which Close stops.
	if err := fs.Rename(stage, tmp); err != nil {
		if !errors.Is(err, syscall.EXDEV) {
			_ = fs.RemoveAll(stage)
			return BackupResult{}, fmt.Errorf("node: backup %s: %w", final, err)
		}
		err := n.copyTree(fs, stage, tmp)
		_ = fs.RemoveAll(stage)
		if err != nil {
			_ = fs.RemoveAll(tmp)
			return BackupResult{}, fmt.Errorf("node: backup %s: copying it from the data's file system: %w", final, err)
		}
	}
	if err := fs.Rename(tmp, final); err != nil {
		_ = fs.RemoveAll(tmp)
		return BackupResult{}, fmt.Errorf("node: backup %s: %w", final, err)
	}
	if err := (&dataDir{path: dir, files: fs}).syncDir(); err != nil {
		return BackupResult{}, fmt.Errorf("node: backup %s: %w", final, err)
	}
	n.log.Info("backup written", "path", final, "bytes", size)
	return BackupResult{Path: final, Bytes: size, Created: created}, nil
}

// backupStageDir is where Backup assembles a backup inside the data directory, its tables
// hard links of the store's, before it goes to Config.BackupDir.
const backupStageDir = ".backup.partial"

// backupPartial is the name under Config.BackupDir of node id's backup name while it is
// written.
func backupPartial(name string, id uint64) string {
	return fmt.Sprintf(".%s.partial-%d", name, id)
}

// sweepBackups removes what backups this node was writing when it stopped left: the staging
// directory in the data directory and its partial ones under backupDir, whose hard links
// would keep tables' space taken for good.
func (d *dataDir) sweepBackups(backupDir string, id uint64) error {
	fs := d.fs()
	if err := fs.RemoveAll(filepath.Join(d.path, backupStageDir)); err != nil {
		return fmt.Errorf("node: removing a stopped backup: %w", err)
	}
	names, err := fs.List(backupDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("node: listing %s: %w", backupDir, err)
	}
	suffix := fmt.Sprintf(".partial-%d", id)
	for _, name := range names {
		// Also the versions before node IDs in the names: ".NAME.partial".
		if strings.HasPrefix(name, ".") && (strings.HasSuffix(name, suffix) || strings.HasSuffix(name, ".partial")) {
			if err := fs.RemoveAll(filepath.Join(backupDir, name)); err != nil {
				return fmt.Errorf("node: removing a stopped backup: %w", err)
			}
		}
	}
	return nil
}

// defaultBackupName is the name of a backup taken at created without one given: the node's
// name and the time, the name's characters that a backup name may not hold as "-".
func defaultBackupName(node string, created time.Time) string {
	var b strings.Builder
	for _, r := range node {
		if r < utf8.RuneSelf && (r == '.' || r == '_' || r == '-' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	prefix := b.String()
	if prefix == "" || prefix[0] == '.' || prefix[0] == '_' || prefix[0] == '-' {
		prefix = "node" + prefix
	}
	return fmt.Sprintf("%.110s-%s", prefix, created.Format("20060102T150405Z"))
}

// stageBackup writes the backup's content into stage, a new directory in the data directory,
// while Close waits: the Pebble checkpoint (hard links), taken while no write of groups.json
// runs, the node's files, and backup.json.
func (n *Node) stageBackup(fs vfs.FS, stage string, created time.Time) (uint64, error) {
	n.backupMu.Lock() // Close waits for it before Pebble closes
	defer n.backupMu.Unlock()
	if n.backupClosed {
		return 0, ErrClosed
	}
	return n.writeBackup(fs, stage, created)
}

// copyTree copies directory src to dst, a new directory, file by file, each synced, and the
// directories too. It stops with ErrClosed once the node closes.
func (n *Node) copyTree(fs vfs.FS, src, dst string) error {
	if err := fs.MkdirAll(dst, dataDirMode); err != nil {
		return err
	}
	names, err := fs.List(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		select {
		case <-n.done:
			return ErrClosed
		default:
		}
		from, to := filepath.Join(src, name), filepath.Join(dst, name)
		st, err := fs.Stat(from)
		if err != nil {
			return err
		}
		if st.IsDir() {
			err = n.copyTree(fs, from, to)
		} else {
			err = copyFileStopping(fs, from, to, n.done)
		}
		if err != nil {
			return err
		}
	}
	return (&dataDir{path: dst, files: fs}).syncDir()
}

// writeBackup writes the backup's content into tmp, a new directory.
func (n *Node) writeBackup(fs vfs.FS, tmp string, created time.Time) (size uint64, err error) {
	if err := fs.MkdirAll(tmp, dataDirMode); err != nil {
		return 0, err
	}
	files := []string{clusterFile, groupsFile, decomFile, peersFile, membersFile}
	backup := &dataDir{path: tmp, files: fs}
	id := n.dir.id
	id.Backup = &created
	if err := backup.writeJSON(identityFile, id); err != nil {
		return 0, err
	}
	err = n.dir.holdGroups(func() error {
		// WithFlushedWAL: the checkpoint holds every write acknowledged before it started.
		if err := n.db.Checkpoint(filepath.Join(tmp, pebbleDir), pebble.WithFlushedWAL()); err != nil {
			return err
		}
		for _, f := range files {
			if err := copyFile(fs, filepath.Join(n.dir.path, f), filepath.Join(tmp, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	s := n.Settings()
	m := backupManifest{NodeID: n.ID(), Node: n.Name(), ClusterID: s.ClusterID, Created: created,
		Version: buildinfo.Version, MaxFormat: shard.MaxFormat, Files: map[string]int64{}}
	if err := fileSizes(fs, tmp, "", m.Files); err != nil {
		return 0, err
	}
	// Written last, and synced with tmp's entries (writeJSON syncs the directory).
	if err := backup.writeJSON(backupManifestFile, m); err != nil {
		return 0, err
	}
	// The backup's size: the files listed, and the list (a copy to BackupDir keeps them).
	st, err := fs.Stat(filepath.Join(tmp, backupManifestFile))
	if err != nil {
		return 0, err
	}
	size = uint64(st.Size())
	for _, bytes := range m.Files {
		size += uint64(bytes)
	}
	return size, nil
}

// fileSizes adds to sizes the size of every file under dir, by its slash-separated path
// under it prefixed with prefix.
func fileSizes(fs vfs.FS, dir, prefix string, sizes map[string]int64) error {
	names, err := fs.List(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		st, err := fs.Stat(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if st.IsDir() {
			err = fileSizes(fs, filepath.Join(dir, name), prefix+name+"/", sizes)
		} else {
			sizes[prefix+name] = st.Size()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies src to dst (a new file) and syncs it.
func copyFile(fs vfs.FS, src, dst string) error { return copyFileStopping(fs, src, dst, nil) }

// copyChunk is how much copyFileStopping copies between looks at its stop channel.
const copyChunk = 4 << 20

// copyFileStopping is copyFile, which stops with ErrClosed, between chunks, once stop is closed
// (nil: never).
func copyFileStopping(fs vfs.FS, src, dst string, stop <-chan struct{}) error {
	in, err := fs.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := fs.Create(dst, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	for {
		select {
		case <-stop:
			out.Close()
			return ErrClosed
		default:
		}
		n, err := io.CopyN(out, in, copyChunk)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			out.Close()
			return err
		}
		if n < copyChunk {
			break
		}
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func (s *clusterServer) Backup(ctx context.Context, req *shoalv1.BackupRequest) (*shoalv1.BackupResponse, error) {
	name := req.Node
	if name == "" {
		name = s.n.Name()
	}
	conn, err := s.named(name, req.Forwarded, "backup")
	if err != nil {
		return nil, err
	}
	if conn != nil {
		res, err := shoalv1.NewClusterClient(conn).Backup(ctx, &shoalv1.BackupRequest{Node: name, Name: req.Name, Forwarded: true})
		return res, forwardedOpErr(err, name, "backup", conn.Target())
	}
	res, err := s.n.Backup(req.Name)
	s.n.metrics.backups.WithLabelValues(backupResult(err)).Inc()
	switch {
	case err == nil:
		return &shoalv1.BackupResponse{Node: s.n.Name(), Path: res.Path, Bytes: res.Bytes, CreatedUnixNano: res.Created.UnixNano()}, nil
	case errors.Is(err, ErrBackupExists):
		return nil, status.Error(codes.AlreadyExists, err.Error())
	}
	return nil, s.n.toStatus(err, "", 0) // a bad name, a closing node, or an internal error
}

// backupResult is the result label of shoal_backups_total.
func backupResult(err error) string {
	var inv *shard.InvalidError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &inv), errors.Is(err, ErrBackupExists):
		return "refused"
	}
	return "error"
}

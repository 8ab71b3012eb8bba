package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testaddr"
)

// TestBackupRestore: a backup taken while appends run holds every event acknowledged before
// it was asked for; a node started on a copy of it (the same node, the old one stopped)
// serves them at their versions and takes appends after them. Bad and taken names are
// refused and write nothing.
func TestBackupRestore(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	n := startNode(t, cfg)
	conn := dial(t, n.Addr())
	sc, cc := shoalv1.NewStreamsClient(conn), shoalv1.NewClusterClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Writers append to their own streams until told to stop, recording each acknowledged
	// version; the backup is asked for while they run.
	const writers = 4
	acked := make([]uint64, writers) // versions acknowledged: 0..acked-1
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := uint64(0); ; v++ {
				select {
				case <-stop:
					return
				default:
				}
				exp := exact(v - 1)
				if v == 0 {
					exp = noStream()
				}
				if _, err := sc.Append(ctx, &shoalv1.AppendRequest{Stream: fmt.Sprintf("acct-%d", w), Expected: exp, Events: events("Tick")}); err != nil {
					t.Errorf("append %d to acct-%d: %v", v, w, err)
					return
				}
				mu.Lock()
				acked[w] = v + 1
				mu.Unlock()
			}
		}()
	}
	var before []uint64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		before = append(before[:0], acked...)
		mu.Unlock()
		if slices.Min(before) >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("appends acknowledged before the backup: %v, want 20 per stream", before)
		}
	}
	res, err := cc.Backup(ctx, &shoalv1.BackupRequest{Node: "solo", Name: "b1"})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(cfg.DataDir, "backups", "b1")
	if res.Path != want || res.Node != "solo" || res.Bytes == 0 {
		t.Fatalf("Backup: %+v, want path %s", res, want)
	}
	var m backupManifest
	if b, err := os.ReadFile(filepath.Join(want, backupManifestFile)); err != nil || json.Unmarshal(b, &m) != nil || m.NodeID != n.ID() {
		t.Fatalf("backup.json: %+v, %v; want node ID %d", m, err, n.ID())
	}

	// Refusals write nothing.
	for _, tc := range []struct {
		name string
		code codes.Code
	}{{"b1", codes.AlreadyExists}, {"../escape", codes.InvalidArgument}, {".hidden", codes.InvalidArgument}} {
		if _, err := cc.Backup(ctx, &shoalv1.BackupRequest{Name: tc.name}); status.Code(err) != tc.code {
			t.Fatalf("backup named %q: %v, want %v", tc.name, err, tc.code)
		}
	}
	if _, err := cc.Backup(ctx, &shoalv1.BackupRequest{Node: "nobody"}); status.Code(err) != codes.NotFound {
		t.Fatalf("backup of an unknown node: %v, want NOT_FOUND", err)
	}
	if entries, err := os.ReadDir(filepath.Join(cfg.DataDir, "backups")); err != nil || len(entries) != 1 {
		t.Fatalf("backups directory after the refusals: %v, %v; want b1 alone", entries, err)
	}
	if got := testutil.ToFloat64(n.metrics.backups.WithLabelValues("refused")); got != 3 {
		t.Fatalf("shoal_backups_total{result=refused} %v, want 3", got)
	}

	// An append after the backup: its shard's end on this node is past the restored one's.
	after, err := sc.Append(ctx, &shoalv1.AppendRequest{Stream: "after-backup", Events: events("Late")})
	if err != nil {
		t.Fatal(err)
	}

	// Restore: stop the node, start it on a copy of the backup.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	if err := os.CopyFS(restored, os.DirFS(want)); err != nil {
		t.Fatal(err)
	}
	rcfg := cfg
	rcfg.DataDir, rcfg.BackupDir, rcfg.Gossip = restored, "", testaddr.Gossip(t)
	// Not without saying so: the start is refused, naming the backup, and changes nothing.
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	_, err = Start(sctx, rcfg)
	scancel()
	if !errors.Is(err, ErrConfigConflict) || !strings.Contains(err.Error(), "--restore") {
		t.Fatalf("start on a backup without Restore: %v, want a conflict that names --restore", err)
	}
	if _, err := os.Stat(filepath.Join(restored, backupManifestFile)); err != nil {
		t.Fatalf("the refused start touched backup.json: %v", err)
	}
	if _, err := os.Stat(filepath.Join(restored, lockFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused start left %s in the backup: %v", lockFile, err)
	}
	rcfg.Restore = true
	r := startNode(t, rcfg)
	if _, err := os.Stat(filepath.Join(restored, backupManifestFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backup.json after the restore: %v, want it removed", err)
	}
	if r.ID() != n.ID() {
		t.Fatalf("restored node ID %d, want %d", r.ID(), n.ID())
	}
	rsc := shoalv1.NewStreamsClient(dial(t, r.Addr()))
	// A reader's position from before the restore, past the restored shard's end, is refused
	// (a projection would otherwise wait there, skipping what is written up to it); a stale
	// read, which a lagging replica may serve, is not.
	ahead := &shoalv1.ReadShardRequest{Shard: after.Shard, FromPosition: after.Position + 1}
	if _, err := readShardAll(ctx, rsc, ahead); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("read of shard %d from %d after the restore: %v, want FAILED_PRECONDITION", after.Shard, after.Position+1, err)
	} else if shard, from, end, ok := shoalv1.PositionAhead(status.Convert(err)); !ok || shard != after.Shard || from != after.Position+1 || end > after.Position {
		t.Fatalf("refusal %v: shard %d, from %d, end %d (%v); want shard %d, from %d, end at most %d",
			err, shard, from, end, ok, after.Shard, after.Position+1, after.Position)
	}
	ahead.AllowStale = true
	if evs, err := readShardAll(ctx, rsc, ahead); err != nil || len(evs) != 0 {
		t.Fatalf("stale read of shard %d from %d after the restore: %d events, %v", after.Shard, after.Position+1, len(evs), err)
	}
	for w := range writers {
		stream := fmt.Sprintf("acct-%d", w)
		evs, err := readAll(ctx, rsc, &shoalv1.ReadRequest{Stream: stream})
		if err != nil {
			t.Fatalf("read %s from the restored node: %v", stream, err)
		}
		if uint64(len(evs)) < before[w] {
			t.Fatalf("%s restored with %d events; %d were acknowledged before the backup", stream, len(evs), before[w])
		}
		for i, e := range evs {
			if e.Version != uint64(i) {
				t.Fatalf("%s restored: event %d at version %d", stream, i, e.Version)
			}
		}
		last := uint64(len(evs)) - 1
		if _, err := rsc.Append(ctx, &shoalv1.AppendRequest{Stream: stream, Expected: exact(last), Events: events("After")}); err != nil {
			t.Fatalf("append to %s on the restored node after version %d: %v", stream, last, err)
		}
	}
}

// exdevFS is the operating system's file system, on which a backup's staging directory cannot
// be renamed (a --backup-dir on another file system than the data's).
type exdevFS struct {
	vfs.FS
	refused *atomic.Int32 // renames refused
}

func (fs exdevFS) Rename(oldname, newname string) error {
	if filepath.Base(oldname) == backupStageDir {
		fs.refused.Add(1)
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: syscall.EXDEV}
	}
	return fs.FS.Rename(oldname, newname)
}

// TestBackupToAnotherFileSystem: a backup whose directory is on another file system than the
// data's is staged in the data directory (the checkpoint hard-links, under the lock every
// group change takes) and then copied, outside it; the copy restores. Backups are the owner's
// alone, as the data directory is. What a node's unfinished backups left is removed when it
// starts again, and another node's is not.
func TestBackupToAnotherFileSystem(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	var refused atomic.Int32
	cfg.fs = exdevFS{vfs.Default, &refused}
	cfg.BackupDir = filepath.Join(t.TempDir(), "elsewhere")
	n := startNode(t, cfg)
	sc := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		if _, err := sc.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Expected: anyVersion(), Events: events(fmt.Sprint("e", i))}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := n.Backup("copied")
	if err != nil || refused.Load() != 1 {
		t.Fatalf("backup to another file system: %v, after %d renames refused; want it copied after one", err, refused.Load())
	}
	if st, err := os.Stat(res.Path); err != nil {
		t.Fatal(err)
	} else if st.Mode().Perm() != dataDirMode {
		t.Fatalf("backup directory %s: mode %v, want %v", res.Path, st.Mode().Perm(), os.FileMode(dataDirMode))
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, backupStageDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the staging directory after the backup: %v, want it gone", err)
	}

	// Unfinished backups, this node's and another's, when it starts again.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	own, other := filepath.Join(cfg.BackupDir, backupPartial("b", n.ID())), filepath.Join(cfg.BackupDir, backupPartial("b", n.ID()+1))
	for _, d := range []string{own, other, filepath.Join(cfg.DataDir, backupStageDir)} {
		if err := os.MkdirAll(filepath.Join(d, "pebble"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	rcfg := cfg
	rcfg.Gossip = testaddr.Gossip(t)
	r := startNode(t, rcfg)
	for _, d := range []string{own, filepath.Join(cfg.DataDir, backupStageDir)} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after a restart: %v, want it removed", d, err)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another node's unfinished backup after a restart: %v, want it kept", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// The copy restores.
	restored := filepath.Join(t.TempDir(), "restored")
	if err := os.CopyFS(restored, os.DirFS(res.Path)); err != nil {
		t.Fatal(err)
	}
	bcfg := cfg
	bcfg.DataDir, bcfg.BackupDir, bcfg.Gossip, bcfg.Restore, bcfg.fs = restored, "", testaddr.Gossip(t), true, nil
	b := startNode(t, bcfg)
	evs, err := readAll(ctx, shoalv1.NewStreamsClient(dial(t, b.Addr())), &shoalv1.ReadRequest{Stream: "s"})
	if err != nil || len(evs) != 20 {
		t.Fatalf("read from the restored copy: %d events, %v; want 20", len(evs), err)
	}
}

// TestDefaultBackupName: a backup asked for without a name gets one a backup name may be,
// whatever the node's name holds.
func TestDefaultBackupName(t *testing.T) {
	at := time.Date(2026, 12, 5, 4, 0, 0, 0, time.UTC)
	for _, node := range []string{"n1", "db 1", "nœud", "_x", strings.Repeat("a", 128)} {
		if name := defaultBackupName(node, at); !backupNameRE.MatchString(name) || !strings.HasSuffix(name, "-20261205T040000Z") {
			t.Errorf("default backup name of node %q: %q, not a backup name", node, name)
		}
	}
}

// TestCopyFileStops: a backup's copy to another file system stops between chunks once the node
// closes (it copied each table in full first, after Close had unlocked the data directory).
func TestCopyFileStops(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "table")
	if err := os.WriteFile(src, make([]byte, 3*copyChunk+5), 0o600); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	if err := copyFileStopping(vfs.Default, src, filepath.Join(dir, "copy"), stop); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "copy")); err != nil || st.Size() != 3*copyChunk+5 {
		t.Fatalf("copy: %v, %v; want %d bytes", st, err, 3*copyChunk+5)
	}
	close(stop)
	if err := copyFileStopping(vfs.Default, src, filepath.Join(dir, "stopped"), stop); !errors.Is(err, ErrClosed) {
		t.Fatalf("copy after the stop: %v, want ErrClosed", err)
	}
}

// TestRestoreRefusesIncompleteCopy: a copy of a backup cut short is refused by a start with
// Restore and by Inspect, naming what differs, and the start writes nothing: a WAL cut short
// replays without an error, losing the acknowledged writes it held, and a copy that lost its
// backup.json (the last file of an archive cut short) would start as the node itself. A
// whole copy restores, and its identity is the node's own again afterwards.
func TestRestoreRefusesIncompleteCopy(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	n := startNode(t, cfg)
	sc := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for range 20 {
		if _, err := sc.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: events("E")}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := n.Backup("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	var m backupManifest
	if b, err := os.ReadFile(filepath.Join(res.Path, backupManifestFile)); err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("backup.json: %v", err)
	}
	var wal string // the backup's largest WAL
	for name, size := range m.Files {
		if strings.HasSuffix(name, ".log") && size > 0 && (wal == "" || size > m.Files[wal]) {
			wal = name
		}
	}
	if wal == "" || m.Files[identityFile] == 0 {
		t.Fatalf("backup.json lists %v: want a WAL and %s", m.Files, identityFile)
	}
	copyBackup := func() string {
		dir := filepath.Join(t.TempDir(), "restored")
		if err := os.CopyFS(dir, os.DirFS(res.Path)); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	start := func(dir string, restore bool) (*Node, error) {
		rcfg := cfg
		rcfg.DataDir, rcfg.BackupDir, rcfg.Gossip, rcfg.Restore = dir, "", testaddr.Gossip(t), restore
		sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
		defer scancel()
		return Start(sctx, rcfg)
	}

	cut := copyBackup()
	if err := os.Truncate(filepath.Join(cut, filepath.FromSlash(wal)), m.Files[wal]/2); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s holds %d bytes, not %d", wal, m.Files[wal]/2, m.Files[wal])
	if _, err := start(cut, true); !errors.Is(err, ErrConfigConflict) || !strings.Contains(err.Error(), want) {
		t.Fatalf("start with Restore on a copy whose %s was cut short: %v, want a conflict saying %q", wal, err, want)
	}
	if _, err := Inspect(cut); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Inspect of the copy cut short: %v, want %q", err, want)
	}
	if b, err := os.ReadFile(filepath.Join(cut, backupManifestFile)); err != nil || !strings.Contains(string(b), `"files"`) {
		t.Fatalf("backup.json after the refused start: %s, %v; want it unchanged", b, err)
	}

	lost := copyBackup()
	if err := os.Remove(filepath.Join(lost, backupManifestFile)); err != nil {
		t.Fatal(err)
	}
	for _, restore := range []bool{true, false} {
		if _, err := start(lost, restore); !errors.Is(err, ErrConfigConflict) || !strings.Contains(err.Error(), "without its "+backupManifestFile) {
			t.Fatalf("start (Restore %v) on a copy without %s: %v, want a conflict saying so", restore, backupManifestFile, err)
		}
	}

	whole := copyBackup()
	r, err := start(whole, true)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := readAll(ctx, shoalv1.NewStreamsClient(dial(t, r.Addr())), &shoalv1.ReadRequest{Stream: "s"})
	if err != nil || len(evs) != 20 {
		t.Fatalf("read from the whole copy: %d events, %v; want 20", len(evs), err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(whole, identityFile)); err != nil || strings.Contains(string(b), `"backup"`) {
		t.Fatalf("%s after the restore: %s, %v; want the node's own, without the backup's mark", identityFile, b, err)
	}
}

// TestRestoreChecksFilesOnce: the first start with Restore checks the backup's files and
// then drops their sizes from backup.json before Pebble changes the files, so that a start
// interrupted before the restore finished can be run again.
func TestRestoreChecksFilesOnce(t *testing.T) {
	dir := t.TempDir()
	d := &dataDir{path: dir, id: identity{NodeID: 7, Name: "n"}}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := backupManifest{NodeID: 7, Node: "n", Files: map[string]int64{"f": 3}}
	if err := d.writeJSON(backupManifestFile, m); err != nil {
		t.Fatal(err)
	}
	if got, err := d.checkRestore(true); err != nil || got == nil || got.Files != nil {
		t.Fatalf("first checkRestore: %+v, %v; want the manifest, its files dropped", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("changed by the start"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := d.checkRestore(true); err != nil || got == nil {
		t.Fatalf("checkRestore again, the files changed since: %+v, %v; want the manifest", got, err)
	}
}

package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/lockedbuf"
)

// stallFS is the operating system's file system whose file syncs hang while it is stalled,
// as on a disk that stopped answering.
type stallFS struct {
	vfs.FS
	only    string // if set, only the files whose path contains it stall
	mu      sync.Mutex
	release chan struct{} // non-nil while stalled; closed to end the stall
}

func (fs *stallFS) stall() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.release = make(chan struct{})
}

func (fs *stallFS) resume() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.release != nil {
		close(fs.release)
		fs.release = nil
	}
}

func (fs *stallFS) wait(name string) {
	if !strings.Contains(name, fs.only) {
		return
	}
	fs.mu.Lock()
	r := fs.release
	fs.mu.Unlock()
	if r != nil {
		<-r
	}
}

func (fs *stallFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return stallFile{f, fs, name}, err
}

func (fs *stallFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return stallFile{f, fs, newname}, err
}

func (fs *stallFS) Remove(name string) error {
	fs.wait(name)
	return fs.FS.Remove(name)
}

type stallFile struct {
	vfs.File
	fs   *stallFS
	name string
}

func (f stallFile) Sync() error     { f.fs.wait(f.name); return f.File.Sync() }
func (f stallFile) SyncData() error { f.fs.wait(f.name); return f.File.SyncData() }
func (f stallFile) SyncTo(n int64) (bool, error) {
	f.fs.wait(f.name)
	return f.File.SyncTo(n)
}

// A node whose disk stops answering gives up on it after MaxSyncDuration: it calls
// OnDiskStall (whose default ends the process) once, naming the hung operation, and counts
// the slow-disk reports on the way.
func TestDiskStall(t *testing.T) {
	t.Parallel()
	fs := &stallFS{FS: vfs.Default}
	stalls := make(chan DiskStall, 4)
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, t.TempDir())
	cfg.Registry = reg
	cfg.fs = fs
	cfg.diskSlowAfter = 50 * time.Millisecond
	cfg.MaxSyncDuration = MinMaxSyncDuration
	cfg.OnDiskStall = func(s DiskStall) { stalls <- s }
	n := startNode(t, cfg)
	t.Cleanup(fs.resume) // before the node closes (cleanups run last first)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: events("A")}); err != nil {
		t.Fatal(err)
	}

	fs.stall()
	start := time.Now()
	go func() {
		id := uuid.New()
		c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: []*shoalv1.EventData{{Id: id[:], Type: "B"}}})
	}()
	var s DiskStall
	select {
	case s = <-stalls:
	case <-ctx.Done():
		t.Fatal("no disk stall reported while the WAL's sync hung")
	}
	took := time.Since(start)
	if r := n.notReady(); !strings.HasPrefix(r, "disk slow: ") {
		t.Errorf("readiness while the disk hangs: %q, want it to say the disk is slow", r)
	}
	if s.Duration < cfg.MaxSyncDuration || s.Op == "" || s.Path == "" || took < cfg.MaxSyncDuration {
		t.Fatalf("stall %+v reported after %v, want an operation and a file, at MaxSyncDuration (%v) or later",
			s, took, cfg.MaxSyncDuration)
	}
	t.Logf("stall reported after %v: %v", took.Round(time.Millisecond), s)
	time.Sleep(200 * time.Millisecond) // further reports call OnDiskStall no more
	select {
	case again := <-stalls:
		t.Fatalf("OnDiskStall called twice: %v", again)
	default:
	}
	if v := counterValue(t, reg, "shoal_disk_slow_total"); v < 1 {
		t.Fatalf("shoal_disk_slow_total = %v, want at least 1", v)
	}
}

// counterValue returns the value of the unlabelled counter name in reg (0 if absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// sstFailFS fails the creation of sstables once armed, as a disk without space for a flush's
// table does, while the WAL, whose files Pebble reuses, goes on.
type sstFailFS struct {
	vfs.FS
	armed atomic.Bool
	fails atomic.Int64
}

func (fs *sstFailFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if fs.armed.Load() && strings.HasSuffix(name, ".sst") {
		fs.fails.Add(1)
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	return fs.FS.Create(name, c)
}

// countBackgroundErrors counts the log records of Pebble's background errors.
type countBackgroundErrors struct{ n *atomic.Int64 }

func (h countBackgroundErrors) Enabled(context.Context, slog.Level) bool { return true }
func (h countBackgroundErrors) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "background error") {
		h.n.Add(1)
	}
	return nil
}
func (h countBackgroundErrors) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countBackgroundErrors) WithGroup(string) slog.Handler      { return h }

// TestFlushFailureIsDiskStall: a node whose store cannot flush (no space for an sstable) fills
// its memtables, then stalls every write, the raft loop's included, while no disk operation
// is in flight for the health checks to see: it kept its replicas and its place in gossip,
// serving nothing, for good, and logged each of Pebble's immediate retries (28,000 lines a
// second). Flushes failing for MaxSyncDuration are a disk stall (OnDiskStall, exit 74 by
// default); the retries are logged once per backgroundErrorLogEvery; /readyz says so.
func TestFlushFailureIsDiskStall(t *testing.T) {
	t.Parallel()
	fs := &sstFailFS{FS: vfs.Default}
	var logged atomic.Int64
	stalls := make(chan DiskStall, 1)
	cfg := testConfig(t, t.TempDir())
	cfg.Shards = 1
	cfg.fs = fs
	cfg.memTableSize = 1 << 20
	cfg.MaxSyncDuration = MinMaxSyncDuration
	cfg.OnDiskStall = func(s DiskStall) { stalls <- s }
	cfg.Logger = slog.New(countBackgroundErrors{&logged})
	n := startNode(t, cfg)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fs.armed.Store(true)
	go func() {
		data := make([]byte, 256<<10)
		for ctx.Err() == nil {
			id := uuid.New()
			if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s",
				Events: []*shoalv1.EventData{{Id: id[:], Type: "big", Data: data}}}); err != nil {
				return
			}
		}
	}()
	var s DiskStall
	select {
	case s = <-stalls:
	case <-time.After(30 * time.Second):
	}
	ready := n.notReady()
	fs.armed.Store(false) // the disk has space again: the flushes go through, and Close does not hang
	cancel()
	if s.Op == "" {
		t.Fatalf("no disk stall reported (%d sstable creations refused, %d background errors logged); ready: %q",
			fs.fails.Load(), logged.Load(), ready)
	}
	if !strings.Contains(s.Op, "flush") || s.Duration < cfg.MaxSyncDuration {
		t.Fatalf("stall %v, want the flushes, failing for MaxSyncDuration", s)
	}
	if fails, n := fs.fails.Load(), logged.Load(); fails < 10 || n > 3 {
		t.Fatalf("%d sstable creations refused, %d background errors logged: want them logged at most once per %v",
			fails, n, backgroundErrorLogEvery)
	}
}

// TestFlushFailureAtOpenIsDiskStall: opening the store flushes what its WAL replays, and
// Pebble retries a failing flush at once, for good: a node restarted on a full disk spun a
// core inside the open, never listened, ignored SIGTERM, and said only "background error"
// every few seconds. The flushes are watched from before the open, so that such a start is a
// disk stall after MaxSyncDuration, naming the flush's error.
func TestFlushFailureAtOpenIsDiskStall(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Shards = 1
	cfg.DisableHTTP = true
	n := startNode(t, cfg)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 20 {
		id := uuid.New()
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: fmt.Sprint("s", i),
			Events: []*shoalv1.EventData{{Id: id[:], Type: "t", Data: make([]byte, 4096)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	fs := &sstFailFS{FS: vfs.Default}
	fs.armed.Store(true) // no space for the replayed WAL's sstable
	stalls := make(chan DiskStall, 1)
	cfg = testConfig(t, dir)
	cfg.Shards = 1
	cfg.DisableHTTP = true
	cfg.fs = fs
	cfg.MaxSyncDuration = MinMaxSyncDuration
	cfg.OnDiskStall = func(s DiskStall) { stalls <- s }
	started := make(chan error, 1)
	go func() {
		n, err := Start(ctx, cfg)
		if err == nil {
			n.Close()
		}
		started <- err
	}()
	var s DiskStall
	select {
	case s = <-stalls:
	case <-time.After(20 * time.Second):
	}
	fs.armed.Store(false) // space again: the open goes on and the node closes
	if err := <-started; err != nil {
		t.Fatalf("Start once the disk has space: %v", err)
	}
	if s.Op == "" {
		t.Fatalf("no disk stall reported in 20 s of an open whose flushes fail (%d sstable creations refused)", fs.fails.Load())
	}
	if !strings.Contains(s.Op, "flush") || s.Duration < cfg.MaxSyncDuration || !errors.Is(s.Err, syscall.ENOSPC) ||
		!strings.Contains(s.String(), "no space left on device") {
		t.Fatalf("stall %q (err %v), want the flushes failing for MaxSyncDuration, naming ENOSPC", s, s.Err)
	}
	t.Log(s)
}

// TestDataDirFileStallIsDiskStall: a hung write of one of the data directory's own files
// (groups.json, written on the raft loop; peers.json) is a disk stall like a hung WAL sync:
// with the raft loop blocked on it, no Pebble operation was in flight for the health
// checks to time, and the node hung unnoticed.
func TestDataDirFileStallIsDiskStall(t *testing.T) {
	t.Parallel()
	expectDataDirStall(t, groupsFile, "a write", nil, func(n *Node) error {
		return n.dir.saveGroups([]uint32{0, 1, 2, 3})
	})
}

// TestDecommissionFlagRemoveStallIsDiskStall: recommissioning removes the decommissioning flag
// through the disk watch too: a remove that hangs is reported as a disk stall, as a hung write
// of the data directory's other files is.
func TestDecommissionFlagRemoveStallIsDiskStall(t *testing.T) {
	t.Parallel()
	expectDataDirStall(t, decomFile, "the removal", func(n *Node) error { return n.dir.setDecommissioning() },
		func(n *Node) error { _, err := n.dir.clearDecommissioning(); return err })
}

// expectDataDirStall starts a node whose operations on the data directory's file hang once
// prepared (if prepare is set), runs op, and fails t unless the node reports a disk stall
// naming file; what says what op does to it.
func expectDataDirStall(t *testing.T, file, what string, prepare, op func(n *Node) error) {
	t.Helper()
	fs := &stallFS{FS: vfs.Default, only: file}
	stalls := make(chan DiskStall, 4)
	cfg := testConfig(t, t.TempDir())
	cfg.fs = fs
	cfg.diskSlowAfter = 50 * time.Millisecond
	cfg.MaxSyncDuration = MinMaxSyncDuration
	cfg.OnDiskStall = func(s DiskStall) { stalls <- s }
	n := startNode(t, cfg)
	t.Cleanup(fs.resume) // before the node closes
	if prepare != nil {
		if err := prepare(n); err != nil {
			t.Fatal(err)
		}
	}

	fs.stall() // file's operations only
	done := make(chan error, 1)
	go func() { done <- op(n) }()
	defer func() { fs.resume(); <-done }() // done with the file before the directory is removed
	select {
	case s := <-stalls:
		if !strings.Contains(s.Path, file) {
			t.Fatalf("stall %v, want one of %s", s, file)
		}
		t.Log(s)
	case <-time.After(10 * time.Second):
		t.Fatalf("no disk stall reported while %s of %s hung", what, file)
	}
}

// walFailFS is the operating system's file system whose WAL writes fail with ENOSPC once
// armed, as on a disk that filled up under load.
type walFailFS struct {
	vfs.FS
	armed atomic.Bool
}

func (fs *walFailFS) wrap(f vfs.File, name string, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return walFailFile{File: f, fs: fs, name: name}, nil
}

func (fs *walFailFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(f, name, err)
}

func (fs *walFailFS) ReuseForWrite(old, name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(old, name, c)
	return fs.wrap(f, name, err)
}

type walFailFile struct {
	vfs.File
	fs   *walFailFS
	name string
}

func (f walFailFile) Write(p []byte) (int, error) {
	if f.fs.armed.Load() {
		return 0, &os.PathError{Op: "write", Path: f.name, Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

const storageFailureDirEnv = "SHOAL_TEST_STORAGE_FAILURE_DIR"

// A WAL write that fails under load (the disk full) ends the server with one log line naming
// the error and status 74, as a disk stall does, rather than a panic's status 2 and stack
// trace. The node runs in a child process of the test binary.
func TestStorageFailureEndsProcess(t *testing.T) {
	if dir := os.Getenv(storageFailureDirEnv); dir != "" {
		appendUntilStorageFailure(t, dir)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), storageFailureDirEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != ExitDiskStall {
		t.Fatalf("the child ended with %v, want exit status %d:\n%s", err, ExitDiskStall, out)
	}
	if s := string(out); !strings.Contains(s, "storage failure") || !strings.Contains(s, "no space left on device") ||
		strings.Contains(s, "panic") || strings.Contains(s, "goroutine ") {
		t.Fatalf("the child's output does not name the storage failure alone:\n%s", out)
	}
	t.Logf("%s", out)
}

// appendUntilStorageFailure runs a node on dir whose WAL writes fail after a first append,
// and appends until the process ends.
func appendUntilStorageFailure(t *testing.T, dir string) {
	fs := &walFailFS{FS: vfs.Default}
	cfg := testConfig(t, dir)
	cfg.Shards = 1
	cfg.DisableHTTP = true
	cfg.fs = fs
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	n := startNode(t, cfg)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: events("A")}); err != nil {
		t.Fatal(err)
	}
	fs.armed.Store(true)
	for ctx.Err() == nil {
		_, _ = c.Append(ctx, &shoalv1.AppendRequest{Stream: "s", Events: events("B")})
	}
	t.Fatal("the node still runs 20 s after its WAL writes began to fail")
}

// TestWriteStallSeconds: a write stall of the store counts its length when it ends, once; an
// end without a beginning counts nothing.
func TestWriteStallSeconds(t *testing.T) {
	w := newDiskWatch(slog.New(slog.DiscardHandler), -1, nil)
	w.writeStallEnded()
	if got := testutil.ToFloat64(w.stallSeconds); got != 0 {
		t.Fatalf("an end without a stall counted %v s", got)
	}
	w.writeStallBegan()
	time.Sleep(20 * time.Millisecond)
	if d, ok := w.writesStalled(); !ok || d < 20*time.Millisecond {
		t.Fatalf("writesStalled = %v, %v during a stall", d, ok)
	}
	w.writeStallEnded()
	w.writeStallEnded()
	if got := testutil.ToFloat64(w.stallSeconds); got < 0.02 || got > 10 {
		t.Fatalf("a stall of about 20 ms counted %v s", got)
	}
}

// An operation reported past MaxSyncDuration is a stall only once a later report of it shows it
// still pending: a process stopped for longer (SIGSTOP, a paused VM) finds its operations in
// flight that old as it resumes, and each file's check may report one before it returns. Such
// an operation, not reported again, is logged and the node goes on; another file's report at
// the same moment confirms nothing; a report of the same operation a tick later is a stall.
func TestDiskStallConfirmed(t *testing.T) {
	t.Parallel()
	var log lockedbuf.Buffer
	stalls := make(chan DiskStall, 4)
	w := newDiskWatch(slog.New(slog.NewTextHandler(&log, nil)), 20*time.Second, func(s DiskStall) { stalls <- s })
	wal := vfs.DiskSlowInfo{Path: "/data/pebble/000040.log", OpType: vfs.OpTypeSyncData, Duration: 25 * time.Second}
	sst := vfs.DiskSlowInfo{Path: "/data/pebble/000041.sst", OpType: vfs.OpTypeWrite, Duration: 24 * time.Second}

	// A pause: two files' operations reported as the process resumes, then nothing.
	w.diskSlow(wal)
	w.diskSlow(sst)
	select {
	case s := <-stalls:
		t.Fatalf("stall declared for operations that returned once the process resumed: %v", s)
	case <-time.After(stallConfirmWithin + 500*time.Millisecond):
	}
	time.Sleep(100 * time.Millisecond) // the line is logged as the wait ends
	if !strings.Contains(log.String(), "lasted past --max-sync-duration, then returned") {
		t.Fatalf("no line saying the operation returned:\n%s", log.String())
	}

	// A hung disk: the same operation reported again a tick later.
	w.diskSlow(wal)
	wal.Duration += 2 * time.Second
	w.diskSlow(wal)
	select {
	case s := <-stalls:
		if s.Path != wal.Path || s.Duration != wal.Duration {
			t.Fatalf("stall %v, want the WAL's sync at %v", s, wal.Duration)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no stall declared for an operation reported again a tick later")
	}
}

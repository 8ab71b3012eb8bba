package replica

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

var errInjectedStorage = errors.New("injected storage failure")

// failingSM is a testSM whose Apply of the data "fail" reports a storage failure.
type failingSM struct{ *testSM }

func (s failingSM) Apply(b *pebble.Batch, index uint64, data []byte) any {
	if string(data) == "fail" {
		return errInjectedStorage // nothing written, as a failed Pebble read leaves it
	}
	return s.testSM.Apply(b, index, data)
}

func (s failingSM) ApplyFailure(result any) error {
	if err, ok := result.(error); ok && errors.Is(err, errInjectedStorage) {
		return err
	}
	return nil
}

type nopTransport struct{}

func (nopTransport) Send([]ShardMessage)       {}
func (nopTransport) SendSnapshot(ShardMessage) {}

const applyFailDirEnv = "SHOAL_TEST_APPLY_FAILURE_DIR"

// A storage failure inside Apply stops the node before the apply batch commits, instead of
// answering the proposer with it as a verdict and counting the entry as applied on this replica
// only. The node runs in a child process (it panics); the test then reopens its directory: the
// failed entry is not applied, and a restart applies it from the log.
func TestApplyStorageFailureStopsNode(t *testing.T) {
	if dir := os.Getenv(applyFailDirEnv); dir != "" {
		applyUntilFailure(t, dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestApplyStorageFailureStopsNode$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), applyFailDirEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the node did not stop on the storage failure:\n%s", out)
	}
	if !strings.Contains(string(out), "replica: storage failure: shard 1: applying entry") ||
		!strings.Contains(string(out), errInjectedStorage.Error()) {
		t.Fatalf("the node stopped without the storage failure (%v):\n%s", err, out)
	}

	db, h := openApplyFailNode(t, dir)
	sm := newTestSM(t, db, 1)
	if got := sm.values(t); !slices.Equal(got, []string{"before"}) {
		t.Fatalf("applied before the restart: %q, want only %q", got, "before")
	}
	if _, err := h.OpenGroup(1, sm, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if got := sm.values(t); !slices.Equal(got, []string{"before", "fail"}) {
			return errors.New("applied after the restart: " + strings.Join(got, ","))
		}
		return nil
	})
}

// applyUntilFailure is the child process: it applies "before", then "fail", which must panic.
func applyUntilFailure(t *testing.T, dir string) {
	db, h := openApplyFailNode(t, dir)
	g, err := h.OpenGroup(1, failingSM{newTestSM(t, db, 1)}, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	for !g.IsLeader() {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := g.Propose(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	v, err := g.Propose(ctx, []byte("fail"))
	t.Fatalf("the failing apply was answered (%v, %v) instead of stopping the node", v, err)
}

func openApplyFailNode(t *testing.T, dir string) (*pebble.DB, *Host) {
	t.Helper()
	db, err := pebble.Open(dir+"/db", &pebble.Options{FS: vfs.Default, Logger: quietLogger{}, FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(Config{NodeID: 1, DB: db, FS: vfs.Default, SnapshotDir: dir + "/snapshots",
		Transport: nopTransport{}, TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.Close()
		_ = db.Close()
	})
	return db, h
}

package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
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

// runChild runs t's test alone in a child process of the test binary, with env added to the
// environment (which tells the test it is the child), and returns the child's output.
func runChild(t *testing.T, env string) ([]byte, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env)
	return cmd.CombinedOutput()
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
	out, err := runChild(t, applyFailDirEnv+"="+dir)
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

// reloadFailSM is a testSM whose Reload fails once fail is set (as after a failed Pebble read).
type reloadFailSM struct {
	*testSM
	fail atomic.Bool
}

func (s *reloadFailSM) Reload() error {
	if s.fail.Load() {
		return errInjectedStorage
	}
	return s.testSM.Reload()
}

const reloadFailEnv = "SHOAL_TEST_SNAPSHOT_RELOAD_FAILURE"

// A state machine that cannot load the state a snapshot just replaced stops the node, instead
// of the receive failing while the span already holds the snapshot's data (raft would then
// apply entries from its old applied index over a state it does not describe). The learner
// runs in a child process: it must panic with the storage failure.
func TestSnapshotReloadFailureStopsNode(t *testing.T) {
	if os.Getenv(reloadFailEnv) != "" {
		receiveUntilReloadFails(t)
		return
	}
	out, err := runChild(t, reloadFailEnv+"=1")
	if err == nil || !strings.Contains(string(out), "replica: storage failure: shard 3: loading the state of the snapshot at") ||
		!strings.Contains(string(out), errInjectedStorage.Error()) {
		t.Fatalf("the learner did not stop on the failed reload (%v):\n%s", err, out)
	}
}

// receiveUntilReloadFails is the child process: node 2 joins shard 3 after its log was
// compacted, so it catches up by snapshot, and its state machine's Reload fails.
func receiveUntilReloadFails(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 2, retain: 10})
	n2 := c.nodes[2]
	n2.host.SetGroupFactory(func(shard uint32) (StateMachine, error) {
		sm := &reloadFailSM{testSM: newTestSM(t, n2.db, shard)}
		sm.fail.Store(true)
		return sm, nil
	})
	c.open(1, 3, []uint64{1})
	lead := c.leader(3)
	for i := range 60 {
		c.propose(3, fmt.Sprintf("p%d", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := lead.AddLearner(ctx, 2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Second) // the snapshot arrives within milliseconds
	t.Fatalf("the learner went on after its state machine failed to load the snapshot: received %v",
		testutilCounter(n2.host.metrics.SnapshotsReceived))
}

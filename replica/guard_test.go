package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// walStallFS blocks the syncs of WAL files while armed (a disk whose fsync stalls).
type walStallFS struct {
	vfs.FS
	armed atomic.Bool
	mu    sync.Mutex
	gate  chan struct{}
}

func newWALStallFS() *walStallFS { return &walStallFS{FS: vfs.NewMem(), gate: make(chan struct{})} }

func (s *walStallFS) arm() { s.armed.Store(true) }
func (s *walStallFS) release() {
	s.armed.Store(false)
	s.mu.Lock()
	close(s.gate)
	s.gate = make(chan struct{})
	s.mu.Unlock()
}
func (s *walStallFS) wait(name string) {
	if !strings.HasSuffix(name, ".log") || !s.armed.Load() {
		return
	}
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	<-g
}

type walStallFile struct {
	vfs.File
	fs   *walStallFS
	name string
}

func (f walStallFile) Sync() error                  { f.fs.wait(f.name); return f.File.Sync() }
func (f walStallFile) SyncData() error              { f.fs.wait(f.name); return f.File.SyncData() }
func (f walStallFile) SyncTo(n int64) (bool, error) { f.fs.wait(f.name); return f.File.SyncTo(n) }

func (s *walStallFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	return walStallFile{File: f, fs: s, name: name}, nil
}
func (s *walStallFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := s.FS.Create(name, c)
	return s.wrap(name, f, err)
}
func (s *walStallFS) ReuseForWrite(o, n string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := s.FS.ReuseForWrite(o, n, c)
	return s.wrap(n, f, err)
}
func (s *walStallFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := s.FS.OpenReadWrite(name, c, opts...)
	return s.wrap(name, f, err)
}

// TestGuardedChanges: a guarded change (ProposeGuarded, AddLearnerGuarded) is refused with
// ErrUnsettled while a configuration change or a guarded proposal of the leader is unapplied,
// even one whose caller gave up (its fsync stalled); once they are applied, the guard sees
// the configuration they made, and its error refuses the change.
func TestGuardedChanges(t *testing.T) {
	fss := map[uint64]*walStallFS{}
	c := newCluster(t, clusterOpts{nodes: 3, noQuiesce: true, fsFor: func(id uint64) vfs.FS {
		fss[id] = newWALStallFS()
		return fss[id]
	}})
	c.openVoters(1)
	c.propose(1, "warm")
	l := c.leader(1)
	self := l.h.cfg.NodeID
	allow := func([]uint64) error { return nil }
	called := false
	never := func([]uint64) error { called = true; return errors.New("guard called") }

	// A learner added while the leader's disk stalls: its caller gives up, the change stays.
	fss[self].arm()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := l.AddLearner(ctx, 4)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AddLearner: %v, want a timeout", err)
	}
	if _, err := l.ProposeGuarded(context.Background(), []byte("raise"), never); !errors.Is(err, ErrUnsettled) || called {
		t.Fatalf("ProposeGuarded with a configuration change pending: %v (guard called %v), want ErrUnsettled", err, called)
	}
	fss[self].release()

	// Applied: the guard sees the learner, and its refusal is returned.
	var seen []uint64
	eventually(t, 10*time.Second, func() error {
		_, err := l.ProposeGuarded(context.Background(), []byte("raise"), func(m []uint64) error {
			seen = m
			return errors.New("member 4 is too old")
		})
		if err == nil || errors.Is(err, ErrUnsettled) {
			return fmt.Errorf("ProposeGuarded: %v", err)
		}
		return nil
	})
	if !slices.Contains(seen, 4) || len(seen) != 4 {
		t.Fatalf("guard saw members %v, want the three voters and learner 4", seen)
	}

	// A guarded proposal whose caller gave up keeps other guarded changes out until applied.
	fss[self].arm()
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = l.ProposeGuarded(ctx, []byte("raise"), allow)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ProposeGuarded: %v, want a timeout", err)
	}
	if err := l.AddLearnerGuarded(context.Background(), 5, never); !errors.Is(err, ErrUnsettled) || called {
		t.Fatalf("AddLearnerGuarded with a guarded proposal pending: %v (guard called %v), want ErrUnsettled", err, called)
	}
	fss[self].release()
	eventually(t, 10*time.Second, func() error {
		err := l.AddLearnerGuarded(context.Background(), 5, func([]uint64) error { return errors.New("refused") })
		if err == nil || errors.Is(err, ErrUnsettled) {
			return fmt.Errorf("AddLearnerGuarded: %v", err)
		}
		return nil
	})
	if slices.Contains(l.Status().Learners, 5) {
		t.Fatal("a refused learner was added")
	}
	for id := uint64(1); id <= 3; id++ {
		eventually(t, 10*time.Second, func() error {
			if n := strings.Count(strings.Join(c.sm(id, 1).values(t), ","), "raise"); n != 1 {
				return fmt.Errorf("node %d applied %d raises, want the one allowed", id, n)
			}
			return nil
		})
	}
}

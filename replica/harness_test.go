package replica

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// testSM is an append-only log under S|shard: E|index -> data, X -> applied index.
type testSM struct {
	db      *pebble.DB
	shard   uint32
	applied atomic.Uint64
	pending uint64
}

func newTestSM(t testing.TB, db *pebble.DB, shard uint32) *testSM {
	sm := &testSM{db: db, shard: shard}
	if err := sm.Reload(); err != nil {
		t.Fatal(err)
	}
	return sm
}

func (s *testSM) key(kind byte, idx ...uint64) []byte {
	k := []byte{'S', 0, 0, 0, 0, kind}
	binary.BigEndian.PutUint32(k[1:], s.shard)
	for _, i := range idx {
		k = binary.BigEndian.AppendUint64(k, i)
	}
	return k
}

func (s *testSM) Apply(b *pebble.Batch, index uint64, data []byte) any {
	_ = b.Set(s.key('E', index), data, nil)
	s.SetApplied(b, index)
	return index
}

func (s *testSM) SetApplied(b *pebble.Batch, index uint64) {
	_ = b.Set(s.key('X'), binary.BigEndian.AppendUint64(nil, index), nil)
	s.pending = index
}

func (s *testSM) Applied() uint64 { return s.applied.Load() }
func (s *testSM) Committed()      { s.applied.Store(s.pending) }

func (s *testSM) Span() (lo, hi []byte) {
	lo = []byte{'S', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(lo[1:], s.shard)
	hi = []byte{'S', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hi[1:], s.shard+1)
	return lo, hi
}

func (s *testSM) Reload() error {
	v, c, err := s.db.Get(s.key('X'))
	if errors.Is(err, pebble.ErrNotFound) {
		s.applied.Store(0)
		s.pending = 0
		return nil
	} else if err != nil {
		return err
	}
	defer c.Close()
	s.pending = binary.BigEndian.Uint64(v)
	s.applied.Store(s.pending)
	return nil
}

// indexOf returns the index of the first entry past after holding data.
func (s *testSM) indexOf(t testing.TB, data string, after uint64) (uint64, bool) {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: s.key('E', after+1), UpperBound: s.key('F')})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if string(it.Value()) == data {
			return binary.BigEndian.Uint64(it.Key()[len(it.Key())-8:]), true
		}
	}
	return 0, false
}

// values returns every applied data in index order.
func (s *testSM) values(t testing.TB) []string {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: s.key('E'), UpperBound: s.key('F')})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, string(it.Value()))
	}
	return out
}

// network is an in-test transport between hosts that can cut links.
type network struct {
	mu    sync.Mutex
	hosts map[uint64]*Host
	cut   map[[2]uint64]bool
	// lossy links drop every MsgApp that carries entries (a lost append).
	lossy map[[2]uint64]bool
	// drop, when set, is asked about every message sent; true drops it.
	drop func(from uint64, m *pb.Message) bool
	// snapGate, when set, holds every snapshot stream until it is closed (a slow transfer).
	snapGate chan struct{}
	queue    map[uint64]chan ShardMessage
	wg       sync.WaitGroup
	stop     chan struct{}
	sent     atomic.Int64 // messages queued for delivery (Send), all links
}

func newNetwork() *network {
	return &network{hosts: map[uint64]*Host{}, cut: map[[2]uint64]bool{}, lossy: map[[2]uint64]bool{},
		queue: map[uint64]chan ShardMessage{}, stop: make(chan struct{})}
}

func (n *network) close() {
	close(n.stop)
	n.wg.Wait()
}

func (n *network) attach(id uint64, h *Host) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hosts[id] = h
	if _, ok := n.queue[id]; ok {
		return
	}
	q := make(chan ShardMessage, 4096)
	n.queue[id] = q
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			select {
			case <-n.stop:
				return
			case m := <-q:
				batch := []ShardMessage{m}
			drain:
				for len(batch) < 256 {
					select {
					case m := <-q:
						batch = append(batch, m)
					default:
						break drain
					}
				}
				n.mu.Lock()
				h := n.hosts[id]
				n.mu.Unlock()
				if h != nil {
					h.HandleMessages(batch)
				}
			}
		}
	}()
}

func (n *network) detach(id uint64) {
	n.mu.Lock()
	delete(n.hosts, id)
	n.mu.Unlock()
}

// setLossy makes the link from -> to drop every MsgApp that carries entries, or heals it.
func (n *network) setLossy(from, to uint64, lossy bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lossy[[2]uint64{from, to}] = lossy
}

// isolate cuts (or heals) every link of id in both directions.
func (n *network) isolate(id uint64, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for other := range n.queue {
		n.cut[[2]uint64{id, other}] = cut
		n.cut[[2]uint64{other, id}] = cut
	}
}

// cutLink cuts (or heals) the link between a and b, both ways.
func (n *network) cutLink(a, b uint64, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[[2]uint64{a, b}] = cut
	n.cut[[2]uint64{b, a}] = cut
}

func (n *network) linkUp(from, to uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.cut[[2]uint64{from, to}] && n.hosts[to] != nil
}

func cloneMsg(m *pb.Message) *pb.Message {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	out := new(pb.Message)
	if err := proto.Unmarshal(b, out); err != nil {
		panic(err)
	}
	return out
}

type nodeTransport struct {
	n    *network
	from uint64
}

func (t *nodeTransport) Send(msgs []ShardMessage) {
	for _, m := range msgs {
		to := m.Msg.GetTo()
		if !t.n.linkUp(t.from, to) {
			continue
		}
		t.n.mu.Lock()
		q, lossy := t.n.queue[to], t.n.lossy[[2]uint64{t.from, to}]
		drop := t.n.drop != nil && t.n.drop(t.from, m.Msg)
		t.n.mu.Unlock()
		if lossy && m.Msg.GetType() == pb.MsgApp && len(m.Msg.Entries) > 0 || drop {
			continue
		}
		select {
		case q <- ShardMessage{Shard: m.Shard, Msg: cloneMsg(m.Msg), Waited: m.Waited}:
			t.n.sent.Add(1)
		default:
		}
	}
}

func (t *nodeTransport) SendSnapshot(m ShardMessage) {
	to, m2 := m.Msg.GetTo(), ShardMessage{Shard: m.Shard, Msg: cloneMsg(m.Msg)}
	// The sender is the host calling now; a host restarted under the same ID before the
	// goroutine runs is another one, which must not get this send's report.
	t.n.mu.Lock()
	sender := t.n.hosts[t.from]
	t.n.mu.Unlock()
	t.n.wg.Add(1)
	go func() {
		defer t.n.wg.Done()
		t.n.mu.Lock()
		gate := t.n.snapGate
		t.n.mu.Unlock()
		if gate != nil {
			<-gate
		}
		t.n.mu.Lock()
		src, dst := t.n.hosts[t.from], t.n.hosts[to]
		t.n.mu.Unlock()
		if src == nil || src != sender {
			return
		}
		if dst == nil || !t.n.linkUp(t.from, to) {
			src.ReportSnapshot(m, false)
			return
		}
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(src.WriteSnapshot(m.Shard, m2.Msg.GetSnapshot(), pw)) }()
		err := dst.ReceiveSnapshot(m2, pr)
		pr.CloseWithError(io.ErrClosedPipe)
		src.ReportSnapshot(m, err == nil)
	}()
}

// testNode is one host with its own in-memory Pebble.
type testNode struct {
	id   uint64
	fs   vfs.FS
	db   *pebble.DB
	host *Host
	sms  map[uint32]*testSM
	mu   sync.Mutex
}

type clusterOpts struct {
	retain    uint64
	factory   bool
	nodes     int
	fsFor     func(id uint64) vfs.FS
	dir       string        // DB directory (default "db"); received snapshots go to dir+"-snapshots"
	maxBytes  uint64        // Config.MaxLogBytes
	snapSST   uint64        // Host.snapTableBytes (0 = default)
	election  int           // Config.ElectionTicks (0 = default)
	tick      time.Duration // Config.TickInterval (0 = the harness's 10 ms)
	noQuiesce bool          // Config.NoQuiesce
	maxProps  int           // Config.MaxQueuedProposals
	delay     time.Duration // Config.CommitDelay's, with the DB's WALMinSyncInterval
}

type cluster struct {
	t     testing.TB
	net   *network
	nodes map[uint64]*testNode
}

func newCluster(t testing.TB, o clusterOpts) *cluster {
	c := &cluster{t: t, net: newNetwork(), nodes: map[uint64]*testNode{}}
	for i := 1; i <= o.nodes; i++ {
		var fs vfs.FS = vfs.NewMem()
		if o.fsFor != nil {
			fs = o.fsFor(uint64(i))
		}
		c.start(uint64(i), fs, o)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stopNode(n.id)
		}
		c.net.close()
	})
	return c
}

func (c *cluster) start(id uint64, fs vfs.FS, o clusterOpts) *testNode {
	c.t.Helper()
	dir := "db"
	if o.dir != "" {
		dir = o.dir
	}
	popts := &pebble.Options{FS: fs, Logger: quietLogger{}, FormatMajorVersion: pebble.FormatNewest}
	var delay *CommitDelay
	if o.delay > 0 {
		delay = NewCommitDelay(o.delay, CommitSiblings)
		popts.WALMinSyncInterval = delay.Func
	}
	db, err := pebble.Open(dir, popts)
	if err != nil {
		c.t.Fatal(err)
	}
	h, err := NewHost(Config{NodeID: id, DB: db, FS: fs, SnapshotDir: dir + "-snapshots",
		Transport: &nodeTransport{n: c.net, from: id}, TickInterval: cmp.Or(o.tick, 10*time.Millisecond),
		LogRetainEntries: o.retain, MaxLogBytes: o.maxBytes, ElectionTicks: o.election,
		NoQuiesce: o.noQuiesce, MaxQueuedProposals: o.maxProps, CommitDelay: delay})
	if err != nil {
		c.t.Fatal(err)
	}
	if o.snapSST != 0 {
		h.snapTableBytes = o.snapSST // before attach: no snapshot arrives earlier
	}
	n := &testNode{id: id, fs: fs, db: db, host: h, sms: map[uint32]*testSM{}}
	if o.factory {
		h.SetGroupFactory(func(shard uint32) (StateMachine, error) {
			n.mu.Lock()
			defer n.mu.Unlock()
			sm := newTestSM(c.t, db, shard)
			n.sms[shard] = sm
			return sm, nil
		})
	}
	c.nodes[id] = n
	c.net.attach(id, h)
	return n
}

func (c *cluster) stopNode(id uint64) {
	n := c.nodes[id]
	if n == nil || n.host == nil {
		return
	}
	c.net.detach(id)
	_ = n.host.Close()
	_ = n.db.Close()
	n.host = nil
}

func (c *cluster) open(id uint64, shard uint32, bootstrap []uint64) *Group {
	c.t.Helper()
	n := c.nodes[id]
	sm := newTestSM(c.t, n.db, shard)
	n.mu.Lock()
	n.sms[shard] = sm
	n.mu.Unlock()
	g, err := n.host.OpenGroup(shard, sm, bootstrap)
	if err != nil {
		c.t.Fatal(err)
	}
	return g
}

// openVoters opens shard on every node, with every node a bootstrap voter.
func (c *cluster) openVoters(shard uint32) {
	c.t.Helper()
	ids := slices.Sorted(maps.Keys(c.nodes))
	for _, id := range ids {
		c.open(id, shard, ids)
	}
}

func (c *cluster) sm(id uint64, shard uint32) *testSM {
	n := c.nodes[id]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sms[shard]
}

func (c *cluster) group(id uint64, shard uint32) *Group {
	if n := c.nodes[id]; n != nil && n.host != nil {
		g, _ := n.host.Group(shard)
		return g
	}
	return nil
}

// leading returns a group of shard that leads now (among ids, or all nodes), or nil.
func (c *cluster) leading(shard uint32, ids ...uint64) *Group {
	if len(ids) == 0 {
		ids = slices.Collect(maps.Keys(c.nodes))
	}
	for _, id := range ids {
		if g := c.group(id, shard); g != nil && g.IsLeader() {
			return g
		}
	}
	return nil
}

// others returns the IDs of the cluster's nodes but id, in order.
func (c *cluster) others(id uint64) []uint64 {
	var ids []uint64
	for _, o := range slices.Sorted(maps.Keys(c.nodes)) {
		if o != id {
			ids = append(ids, o)
		}
	}
	return ids
}

// leader waits until exactly one live node leads shard (among ids, or all live nodes).
func (c *cluster) leader(shard uint32, ids ...uint64) *Group {
	c.t.Helper()
	if len(ids) == 0 {
		for id, n := range c.nodes {
			if n.host != nil {
				ids = append(ids, id)
			}
		}
	}
	var found *Group
	eventually(c.t, 10*time.Second, func() error {
		found = nil
		for _, id := range ids {
			if g := c.group(id, shard); g != nil && g.IsLeader() {
				if found != nil {
					return errors.New("two leaders")
				}
				found = g
			}
		}
		if found == nil {
			return errors.New("no leader")
		}
		return nil
	})
	return found
}

func eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// propose proposes on shard's current leader, retrying on leadership changes.
func (c *cluster) propose(shard uint32, data string) uint64 {
	c.t.Helper()
	for try := 0; try < 50; try++ {
		id, g := c.leaderID(shard)
		after := c.sm(id, shard).Applied() // the proposal's index is past it
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := g.Propose(ctx, []byte(data))
		cancel()
		switch {
		case err == nil:
			return v.(uint64)
		case errors.Is(err, ErrRefused):
			// Certainly not applied: proposed again below.
		case errors.Is(err, ErrNotLeader):
			// The leadership was lost while the proposal waited in raft: it may yet be
			// applied, by the next leader. Proposed again, it could be applied twice.
			if idx, ok := c.settled(shard, data, after); ok {
				return idx
			}
		default:
			c.t.Fatalf("propose %q: %v", data, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("propose %q: no stable leader", data)
	return 0
}

// leaderID returns the group of shard that leads now and its node.
func (c *cluster) leaderID(shard uint32) (uint64, *Group) {
	c.t.Helper()
	for {
		g := c.leader(shard)
		for id := range c.nodes {
			if c.group(id, shard) == g {
				return id, g
			}
		}
	}
}

// settled resolves a proposal of data whose outcome was unknown (proposed after index after):
// once the current leader confirms a read index it applied every entry its term committed, and
// one it did not commit is never applied. It reports the index of data, if applied.
func (c *cluster) settled(shard uint32, data string, after uint64) (uint64, bool) {
	c.t.Helper()
	for try := 0; try < 50; try++ {
		id, g := c.leaderID(shard)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := g.ReadIndex(ctx)
		cancel()
		if err == nil {
			return c.sm(id, shard).indexOf(c.t, data, after)
		}
		time.Sleep(20 * time.Millisecond) // not the leader by now: ask the next
	}
	c.t.Fatalf("propose %q: no leader confirmed a read index to settle its outcome", data)
	return 0, false
}

// converged waits until every listed node's state machine holds want.
func (c *cluster) converged(shard uint32, want []string, ids ...uint64) {
	c.t.Helper()
	eventually(c.t, 15*time.Second, func() error {
		for _, id := range ids {
			sm := c.sm(id, shard)
			if sm == nil {
				return fmt.Errorf("node %d has no state machine", id)
			}
			got := sm.values(c.t)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("node %d has %d values, want %d", id, len(got), len(want))
			}
		}
		return nil
	})
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)         {}
func (quietLogger) Errorf(string, ...any)        {}
func (quietLogger) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }

package membership

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/lockedbuf"
	"github.com/shoaldb/shoal/internal/testaddr"
	"github.com/shoaldb/shoal/internal/testgossip"
)

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() && os.Getenv("MEMBERSHIP_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// fastProbes has cfg's node probe its peers often, so that a member that died without
// leaving is declared dead within about a second.
func fastProbes(cfg Config) Config {
	cfg.ProbeInterval, cfg.ProbeTimeout = 100*time.Millisecond, 50*time.Millisecond
	return cfg
}

func testConfig(t *testing.T, name string, id uint64, cluster string, join ...string) Config {
	return Config{
		Name:   name,
		Bind:   testaddr.Gossip(t),
		Join:   join,
		Logger: testLogger(t),
		Meta:   Meta{NodeID: id, Name: name, Zone: "z-" + name, GRPCAddr: "127.0.0.1:1" + fmt.Sprint(id), ClusterID: cluster, Shards: 32, Replication: 3, FollowsReplication: true},
	}
}

func start(t *testing.T, cfg Config) *Membership {
	t.Helper()
	m, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// eventually polls cond every 20ms for up to 15s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func find(m *Membership, name string) (Member, bool) {
	for _, mem := range m.Members() {
		if mem.Name == name {
			return mem, true
		}
	}
	return Member{}, false
}

func TestThreeMembers(t *testing.T) {
	var changes atomic.Int64
	ca := testConfig(t, "a", 30, "c1")
	ca.OnChange = func() { changes.Add(1) }
	a := start(t, ca)
	b := start(t, testConfig(t, "b", 10, "c1", ca.Bind))
	cc := testConfig(t, "c", 20, "c1", ca.Bind)
	c := start(t, cc)

	for _, m := range []*Membership{a, b, c} {
		eventually(t, m.name+" sees 3 alive", func() bool {
			ms := m.Members()
			if len(ms) != 3 {
				return false
			}
			for _, mem := range ms {
				if !mem.Alive {
					return false
				}
			}
			return true
		})
		ms := m.Members()
		if ms[0].Name != "b" || ms[1].Name != "c" || ms[2].Name != "a" {
			t.Fatalf("%s: Members not sorted by NodeID: %+v", m.name, ms)
		}
		if ms[1].Meta != cc.Meta {
			t.Fatalf("%s sees c's meta %+v, want %+v", m.name, ms[1].Meta, cc.Meta)
		}
	}
	if a.Self().Name != "a" || !a.Self().Alive {
		t.Fatalf("Self = %+v", a.Self())
	}
	eventually(t, "OnChange called", func() bool { return changes.Load() > 0 })

	// Meta update propagates.
	if err := b.UpdateMeta(func(m *Meta) { m.Decommissioning = true; m.HTTPAddr = "127.0.0.1:9" }); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Membership{a, c} {
		eventually(t, m.name+" sees b decommissioning", func() bool {
			mem, _ := find(m, "b")
			return mem.Decommissioning && mem.HTTPAddr == "127.0.0.1:9"
		})
	}

	// A stopped member becomes dead, with the time it died, and stays listed.
	stopped := time.Now()
	c.Close()
	c.Close() // idempotent
	if err := c.Leave(time.Second); err != nil {
		t.Fatalf("Leave after Close: %v", err)
	}
	for _, m := range []*Membership{a, b} {
		eventually(t, m.name+" sees c dead", func() bool {
			mem, ok := find(m, "c")
			return ok && !mem.Alive
		})
		mem, _ := find(m, "c")
		if mem.Changed.Before(stopped) || mem.NodeID != 20 {
			t.Fatalf("%s: dead c = %+v (stopped at %v)", m.name, mem, stopped)
		}
	}
	t.Logf("c seen dead %v after Close", time.Since(stopped).Round(10*time.Millisecond))

	// A wiped node rejoins under the same name with a new NodeID: a new member.
	cc2 := cc
	cc2.Meta.NodeID = 40
	cc2.Join = []string{ca.Bind}
	start(t, cc2)
	eventually(t, "a sees the new c", func() bool {
		mem, ok := find(a, "c")
		return ok && mem.Alive && mem.NodeID == 40
	})
	if n := len(a.Members()); n != 3 {
		t.Fatalf("a lists %d members after rejoin, want 3: %+v", n, a.Members())
	}

	// Leave is seen as not alive; Forget drops a dead member only.
	if err := b.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.Leave(time.Second); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
	eventually(t, "a sees b left", func() bool { mem, _ := find(a, "b"); return !mem.Alive })
	if a.Forget("c") {
		t.Fatal("Forget removed an alive member")
	}
	if !a.Forget("b") {
		t.Fatal("Forget(b) = false")
	}
	if _, ok := find(a, "b"); ok {
		t.Fatal("b still listed after Forget")
	}
}

func TestClusterMismatch(t *testing.T) {
	ca := testConfig(t, "a", 1, "cluster-x")
	a := start(t, ca)

	_, err := Start(testConfig(t, "b", 2, "cluster-y", ca.Bind))
	if !errors.Is(err, ErrClusterMismatch) {
		t.Fatalf("join to another cluster: %v, want ErrClusterMismatch", err)
	}
	var ce *ClusterMismatchError
	if !errors.As(err, &ce) || ce.Local != "cluster-y" || ce.Remote != "cluster-x" {
		t.Fatalf("error does not name both IDs: %v", err)
	}
	if !strings.Contains(err.Error(), "cluster-x") || !strings.Contains(err.Error(), "cluster-y") {
		t.Fatalf("message does not name both IDs: %v", err)
	}
	t.Logf("joiner: %v", err)
	eventually(t, "seed refuses too", func() bool { return a.refused.Load() > 0 })
	if _, ok := find(a, "b"); ok {
		t.Fatal("seed lists the refused peer")
	}

	// A fresh node (no cluster ID) is accepted and adopts the cluster ID.
	c := start(t, testConfig(t, "c", 3, "", ca.Bind))
	eventually(t, "a sees fresh c", func() bool { _, ok := find(a, "c"); return ok })
	if err := c.UpdateMeta(func(m *Meta) { m.ClusterID = "cluster-x" }); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a sees c adopt the ID", func() bool { mem, _ := find(a, "c"); return mem.ClusterID == "cluster-x" })
	if err := c.UpdateMeta(func(m *Meta) { m.ClusterID = "cluster-z" }); !errors.Is(err, ErrInvalidMeta) {
		t.Fatalf("changing a set cluster ID: %v", err)
	}
}

// A seed address where something other than memberlist answers, such as a node's gRPC port
// (HTTP/2 begins with a SETTINGS frame), fails the join with a hint at the likely mix-up.
func TestJoinNotGossip(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0}) // an empty HTTP/2 SETTINGS frame
			c.Close()
		}
	}()
	web := httptest.NewServer(http.NotFoundHandler()) // an HTTP/1 server: "HTTP/1.1 400 Bad Request"
	defer web.Close()
	for _, seeds := range [][]string{{ln.Addr().String()}, {web.Listener.Addr().String()}, {ln.Addr().String(), web.Listener.Addr().String()}} {
		_, err = Start(testConfig(t, "b", 2, "", seeds...))
		if !errors.Is(err, ErrNotGossip) || !strings.Contains(err.Error(), "--join takes the seeds' --gossip addresses") {
			t.Fatalf("join to non-gossip ports %v: %v", seeds, err)
		}
	}
	// One seed answering with something else, one gossiping: joined.
	ac := testConfig(t, "a", 1, "")
	start(t, ac)
	b := start(t, testConfig(t, "b", 2, "", ln.Addr().String(), ac.Bind))
	eventually(t, "a at b", func() bool { m, ok := find(b, "a"); return ok && m.Alive })
}

func TestEncryption(t *testing.T) {
	key := []byte("0123456789abcdef")
	ca := testConfig(t, "a", 1, "c")
	ca.SecretKey = key
	a := start(t, ca)

	cb := testConfig(t, "b", 2, "c", ca.Bind)
	cb.SecretKey = key
	start(t, cb)
	eventually(t, "a sees b", func() bool { mem, ok := find(a, "b"); return ok && mem.Alive })

	wrong := testConfig(t, "w", 3, "c", ca.Bind)
	wrong.SecretKey = []byte("fedcba9876543210fedcba9876543210")
	if m, err := Start(wrong); err == nil {
		m.Close()
		t.Fatal("joined with a wrong key")
	} else if !errors.Is(err, ErrGossipKey) {
		t.Fatalf("wrong key: %v, want ErrGossipKey", err)
	}
	plain := testConfig(t, "p", 4, "c", ca.Bind)
	if m, err := Start(plain); err == nil {
		m.Close()
		t.Fatal("joined without a key")
	} else if !errors.Is(err, ErrGossipKey) {
		t.Fatalf("no key: %v, want ErrGossipKey", err)
	}
	// A key where the seed has none; and a seed with the wrong key beside one that does not
	// answer: that one might yet be the cluster's, so the answer is no ErrGossipKey.
	unkeyed := testConfig(t, "u", 6, "c")
	start(t, unkeyed)
	keyed := testConfig(t, "e", 7, "c", unkeyed.Bind)
	keyed.SecretKey = key
	if m, err := Start(keyed); err == nil || !errors.Is(err, ErrGossipKey) || !strings.Contains(err.Error(), "they run without --gossip-key-file") {
		if m != nil {
			m.Close()
		}
		t.Fatalf("a key towards a seed without: %v, want ErrGossipKey saying the seed has none", err)
	}
	mixed := testConfig(t, "x", 8, "c", ca.Bind, testaddr.Gossip(t))
	if m, err := Start(mixed); err == nil || errors.Is(err, ErrGossipKey) {
		if m != nil {
			m.Close()
		}
		t.Fatalf("a seed with another key and one not answering: %v, want an error other than ErrGossipKey", err)
	}
	if _, ok := find(a, "w"); ok {
		t.Fatal("a lists the wrong-key node")
	}

	bad := testConfig(t, "k", 5, "c")
	bad.SecretKey = []byte("short")
	if _, err := Start(bad); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "16, 24 or 32") {
		t.Fatalf("5-byte key: %v", err)
	}
}

func TestMetaTooLongRefused(t *testing.T) {
	cfg := testConfig(t, "a", 1, "c")
	cfg.Meta.Version = strings.Repeat("x", 600)
	if _, err := Start(cfg); !errors.Is(err, ErrMetaTooLong) {
		t.Fatalf("Start with long meta: %v", err)
	}
	cfg.Meta.Version = "v1"
	m := start(t, cfg)
	err := m.UpdateMeta(func(m *Meta) { m.Zone = strings.Repeat("z", 500) })
	if !errors.Is(err, ErrMetaTooLong) {
		t.Fatalf("UpdateMeta with long meta: %v", err)
	}
	if m.Self().Zone != cfg.Meta.Zone {
		t.Fatalf("refused update changed meta: %+v", m.Self())
	}
	if err := m.UpdateMeta(func(m *Meta) { m.NodeID = 9 }); !errors.Is(err, ErrInvalidMeta) {
		t.Fatalf("NodeID change: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"no name":       func(c *Config) { c.Name = "" },
		"no node ID":    func(c *Config) { c.Meta.NodeID = 0 },
		"bad bind":      func(c *Config) { c.Bind = "localhost" },
		"bad advertise": func(c *Config) { c.Advertise = "1.2.3.4:x" },
		"name differs":  func(c *Config) { c.Meta.Name = "other" },
		"key 20 bytes":  func(c *Config) { c.SecretKey = make([]byte, 20) },
	} {
		c := Config{Name: "n", Bind: "127.0.0.1:0", Meta: Meta{NodeID: 1}}
		mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate = %v", name, err)
		}
	}
	c := Config{Name: "n", Bind: "127.0.0.1:0", Meta: Meta{NodeID: 1}}
	if err := c.Validate(); err != nil || c.Meta.Name != "n" || c.ProbeInterval != DefaultProbeInterval {
		t.Fatalf("defaults: %v %+v", err, c)
	}
}

// lossyConfig returns a maker of cluster-x members whose gossip goes through lossy, that
// declare a silent member dead within a second, sync with a live one only every 30 s and
// with one held dead every reconnect.
func lossyConfig(t *testing.T, lossy *testgossip.Net, reconnect time.Duration) func(name string, id uint64, join ...string) Config {
	return func(name string, id uint64, join ...string) Config {
		c := testConfig(t, name, id, "cluster-x", join...)
		c.ProbeInterval, c.ProbeTimeout = 100*time.Millisecond, 50*time.Millisecond // dead sooner
		c.PushPullInterval = 30 * time.Second
		c.ReconnectInterval = reconnect
		c.WrapTransport = lossy.Wrap(c.Bind)
		return c
	}
}

// TestReconnectAfterPartition: c is cut off from a and b until they hold it dead (and it them);
// once the network heals, each holds the others alive again within a few reconnect
// intervals, long before memberlist's own push/pull sync (30 s here) would tell the members
// held dead of their deaths.
func TestReconnectAfterPartition(t *testing.T) {
	lossy := &testgossip.Net{}
	cfg := lossyConfig(t, lossy, 200*time.Millisecond)
	ac := cfg("a", 1)
	a := start(t, ac)
	bc := cfg("b", 2, ac.Bind)
	b := start(t, bc)
	cc := cfg("c", 3, ac.Bind)
	c := start(t, cc)
	alive := func(m *Membership, name string) bool {
		mem, ok := find(m, name)
		return ok && mem.Alive
	}
	eventually(t, "three members alive everywhere", func() bool {
		return alive(a, "b") && alive(a, "c") && alive(b, "c") && alive(c, "a") && alive(c, "b")
	})

	lossy.Cut(cc.Bind, ac.Bind, true)
	lossy.Cut(cc.Bind, bc.Bind, true)
	eventually(t, "c held dead by a and b, and they by c", func() bool {
		return !alive(a, "c") && !alive(b, "c") && !alive(c, "a") && !alive(c, "b")
	})
	lossy.Cut(cc.Bind, ac.Bind, false)
	lossy.Cut(cc.Bind, bc.Bind, false)
	healed := time.Now()
	deadline := healed.Add(5 * time.Second)
	for !(alive(a, "c") && alive(b, "c") && alive(c, "a") && alive(c, "b")) {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the partition healed: a holds c alive %v, b holds c alive %v, c holds a %v and b %v",
				alive(a, "c"), alive(b, "c"), alive(c, "a"), alive(c, "b"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("every member alive everywhere %v after the partition healed", time.Since(healed).Round(10*time.Millisecond))
}

// leftAndDied starts member a, without its reconnect loop (its methods are called directly),
// and members b and c, then has b leave and c die without leaving, and returns a once it holds
// both dead, b marked stopping.
func leftAndDied(t *testing.T) *Membership {
	t.Helper()
	ac := fastProbes(testConfig(t, "a", 1, "cluster-x"))
	ac.ReconnectInterval = -1
	a := start(t, ac)
	b := start(t, fastProbes(testConfig(t, "b", 2, "cluster-x", ac.Bind)))
	c := start(t, fastProbes(testConfig(t, "c", 3, "cluster-x", ac.Bind)))
	eventually(t, "b and c alive at a", func() bool {
		mb, okb := find(a, "b")
		mc, okc := find(a, "c")
		return okb && okc && mb.Alive && mc.Alive
	})
	if err := b.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	b.Close()
	c.Close() // dies without leaving
	eventually(t, "b and c dead at a", func() bool {
		mb, _ := find(a, "b")
		mc, _ := find(a, "c")
		return !mb.Alive && !mc.Alive
	})
	if mb, _ := find(a, "b"); !mb.Stopping {
		t.Fatal("b left without being marked stopping")
	}
	return a
}

// TestReconnectSkipsLeft: a member that left (Leave) is not asked to sync, while one that
// died is: at every interval until reconnectFor after its death, then once per
// reconnectSlow (a partition that outlasted reconnectFor used to never heal: memberlist
// syncs only with members it holds alive).
func TestReconnectSkipsLeft(t *testing.T) {
	a := leftAndDied(t)
	for range 20 {
		if name, _ := a.pickDead(time.Now()); name != "c" {
			t.Fatalf("pickDead chose %q, want c (b left)", name)
		}
	}
	late := time.Now().Add(reconnectFor + time.Minute)
	if name, _ := a.pickDead(late); name != "c" {
		t.Fatalf("pickDead past reconnectFor chose %q, want c", name)
	}
	if name, _ := a.pickDead(late.Add(reconnectSlow / 2)); name != "" {
		t.Fatalf("pickDead chose %q again within reconnectSlow", name)
	}
	if name, _ := a.pickDead(late.Add(reconnectSlow)); name != "c" {
		t.Fatalf("pickDead after reconnectSlow chose %q, want c", name)
	}
}

// TestReconnectSkipsForeignAddress: a dead member's address taken over by a node of another
// cluster is asked to sync once, refused, and not asked again (before, every second for
// reconnectFor, each time logging the refusal).
func TestReconnectSkipsForeignAddress(t *testing.T) {
	fast := func(c Config) Config {
		c = fastProbes(c)
		c.ReconnectInterval = 50 * time.Millisecond
		return c
	}
	ac := fast(testConfig(t, "a", 1, "cluster-x"))
	a := start(t, ac)
	bc := fast(testConfig(t, "b", 2, "cluster-x", ac.Bind))
	b := start(t, bc)
	eventually(t, "b alive at a", func() bool { mb, ok := find(a, "b"); return ok && mb.Alive })
	b.Close()
	eventually(t, "b dead at a", func() bool { mb, _ := find(a, "b"); return !mb.Alive })
	other := testConfig(t, "d", 4, "cluster-y")
	other.Bind = bc.Bind // the dead member's address, now another cluster's
	start(t, other)
	eventually(t, "a refuses the node at b's address", func() bool { return a.refused.Load() > 0 })
	first := a.refused.Load()
	time.Sleep(20 * ac.ReconnectInterval)
	if n := a.refused.Load(); n > first {
		t.Fatalf("a synced with the foreign node at b's address %d more times after its refusal", n-first)
	}
	if name, _ := a.pickDead(time.Now()); name != "" {
		t.Fatalf("pickDead chose %q, whose address belongs to another cluster now", name)
	}
}

// joinRepeatedly has f try to join addr every 50 ms until the test ends: a node of another
// cluster whose --join points here, or whose reconnect loop dials an address this cluster
// took over. Each attempt is refused.
func joinRepeatedly(t *testing.T, f *Membership, addr string) {
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				f.Join([]string{addr})
			}
		}
	}()
}

// A reconnect sync with a member that is merely cut off (its dial hangs) overlapping the
// refusal of another cluster's node joining at the same time: the member's address must not
// be taken for another cluster's, or it would not be asked again once the partition heals.
func TestReconnectNotBlamedForAnotherNodesRefusal(t *testing.T) {
	lossy := &testgossip.Net{}
	cfg := lossyConfig(t, lossy, 100*time.Millisecond)
	ac := cfg("a", 1)
	a := start(t, ac)
	cc := cfg("c", 3, ac.Bind)
	cc.ReconnectInterval = -1 // only a's reconnects matter here
	start(t, cc)
	eventually(t, "c alive at a", func() bool { m, ok := find(a, "c"); return ok && m.Alive })
	lossy.Cut(ac.Bind, cc.Bind, true)
	eventually(t, "c dead at a", func() bool { m, _ := find(a, "c"); return !m.Alive })

	joinRepeatedly(t, start(t, testConfig(t, "f", 9, "cluster-y")), ac.Bind)
	eventually(t, "a refuses f", func() bool { return a.refused.Load() > 0 })
	time.Sleep(2*DefaultTCPTimeout + time.Second) // two of a's syncs with c, each hanging
	a.mu.Lock()
	foreign := a.mu.foreign["c"]
	a.mu.Unlock()
	if foreign != "" {
		t.Fatalf("c (cluster-x, merely cut off) is marked as another cluster's address %s", foreign)
	}
}

// A join whose seed does not answer, while another cluster's node is refused: the join fails
// as unreachable, not as a cluster mismatch (a restarting node whose seeds were all down took
// that for "every seed belongs to another cluster" and exited).
func TestJoinNotBlamedForAnotherNodesRefusal(t *testing.T) {
	ac := testConfig(t, "a", 1, "cluster-x")
	a := start(t, ac)
	ln, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers: the join waits
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	joinRepeatedly(t, start(t, testConfig(t, "f", 9, "cluster-y")), ac.Bind)
	eventually(t, "a refuses f", func() bool { return a.refused.Load() > 0 })
	_, err = a.Join([]string{ln.Addr().String()})
	if err == nil || errors.Is(err, ErrClusterMismatch) {
		t.Fatalf("join of a seed that never answers: %v; want a plain failure", err)
	}
	t.Logf("join: %v", err)
}

// A member held dead for ForgetAfter, having left (a node decommissioned and stopped) or not
// (a machine that crashed and was replaced under another name), is forgotten: it leaves
// cluster status and the reconnect loop's round, where such members piled up for good. One
// dead for less stays listed.
func TestLongDeadMemberForgotten(t *testing.T) {
	a := leftAndDied(t)
	mb, _ := find(a, "b")
	mc, _ := find(a, "c")
	died := mb.Changed
	if mc.Changed.After(died) {
		died = mc.Changed
	}
	a.forgetLongDead(died.Add(ForgetAfter - time.Minute))
	for _, name := range []string{"b", "c"} {
		if _, ok := find(a, name); !ok {
			t.Fatalf("%s forgotten before ForgetAfter", name)
		}
	}
	a.forgetLongDead(died.Add(10 * ForgetAfter))
	if _, ok := find(a, "b"); ok {
		t.Fatal("b, which left, still listed after ForgetAfter dead")
	}
	if _, ok := find(a, "c"); ok {
		t.Fatal("c, dead without leaving, still listed after ForgetAfter dead")
	}
	if _, ok := find(a, "a"); !ok {
		t.Fatal("a forgot itself")
	}
}

// TestReconnectPrefersRecentlyDead: while a member died within reconnectFor (a partition, a
// crash being restarted), the reconnect loop asks it, not the members dead for long, each of
// which may be asked once a minute: a hundred of them crowded it out.
func TestReconnectPrefersRecentlyDead(t *testing.T) {
	now := time.Now()
	m := &Membership{name: "self"}
	m.mu.members = map[string]*Member{"self": {Alive: true}}
	for i := range 100 {
		m.mu.members[fmt.Sprintf("old-%d", i)] = &Member{Addr: fmt.Sprintf("10.0.0.%d:7401", i), Changed: now.Add(-time.Hour)}
	}
	m.mu.members["recent"] = &Member{Addr: "10.0.1.1:7401", Changed: now.Add(-time.Minute)}
	for range 50 {
		if name, _ := m.pickDead(now); name != "recent" {
			t.Fatalf("pickDead chose %q while a member died a minute ago", name)
		}
	}
	delete(m.mu.members, "recent")
	if name, _ := m.pickDead(now); !strings.HasPrefix(name, "old-") {
		t.Fatalf("pickDead chose %q with only long-dead members, want one of them", name)
	}
}

// A join is refused by a seed of another cluster however the seed was named: at an address
// other than the one it advertises (NAT, a published port, all interfaces), or by host name.
// The refusal is told by the join's own error, not by matching addresses.
func TestForeignSeedRefusalAttributed(t *testing.T) {
	fc := testConfig(t, "f", 9, "cluster-y")
	_, port, _ := net.SplitHostPort(fc.Bind)
	fc.Advertise = net.JoinHostPort("127.0.0.2", port) // not the address dialled
	start(t, fc)
	a := start(t, testConfig(t, "a", 1, "cluster-x"))
	for _, seed := range []string{fc.Bind, "localhost:" + port} {
		if _, err := a.Join([]string{seed}); !errors.Is(err, ErrClusterMismatch) {
			t.Errorf("join of a foreign seed as %s (advertising %s): %v; want ErrClusterMismatch", seed, fc.Advertise, err)
		}
	}
}

// TestBindWithoutIPAdvertisesReachable: a member bound to all interfaces written as ":port",
// or to a host name, tells its peers an address they can dial, not the unspecified "::" (a
// peer on another host dialling [::]:port reaches itself). An advertised name is resolved;
// an unspecified advertised address, or "::" without one, is refused.
func TestBindWithoutIPAdvertisesReachable(t *testing.T) {
	for _, tc := range []struct{ bind, advertise string }{{"", ""}, {"localhost", ""}, {"127.0.0.1", "localhost"}} {
		_, port, _ := net.SplitHostPort(testaddr.Gossip(t))
		ca := testConfig(t, "a", 1, "c")
		ca.Bind = net.JoinHostPort(tc.bind, port)
		if tc.advertise != "" {
			ca.Advertise = net.JoinHostPort(tc.advertise, port)
		}
		a := start(t, ca)
		b := start(t, testConfig(t, "b", 2, "c", net.JoinHostPort("127.0.0.1", port)))
		eventually(t, "b sees a", func() bool { _, ok := find(b, "a"); return ok })
		mem, _ := find(b, "a")
		h, _, _ := net.SplitHostPort(mem.Addr)
		if ip := net.ParseIP(h); ip == nil || ip.IsUnspecified() {
			t.Errorf("bind %q, advertise %q: peers are told to reach a at %s", ca.Bind, ca.Advertise, mem.Addr)
		}
		a.Close()
		b.Close()
	}
	for _, tc := range []struct{ bind, advertise, want string }{
		{"[::]:0", "", "needs an address to advertise"},
		{"127.0.0.1:0", "0.0.0.0:7401", "no address a peer can reach"},
		{"127.0.0.1:0", ":7401", "no host"},
		{"no-such-host.invalid:0", "", "resolving"},
	} {
		cfg := testConfig(t, "c", 3, "c")
		cfg.Bind, cfg.Advertise = tc.bind, tc.advertise
		m, err := Start(cfg)
		if err == nil {
			m.Close()
		}
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bind %q, advertise %q: %v, want ErrInvalidConfig saying %q", tc.bind, tc.advertise, err, tc.want)
		}
	}
}

// TestIdentityInUseRefused: a member with this node's name and node ID alive at another
// address (a copy of its data directory started beside it) is refused at join, naming that
// address, on a seed that is that member or not; once the other process is found dead, the
// join goes through (a restart at a new address).
func TestIdentityInUseRefused(t *testing.T) {
	ac := fastProbes(testConfig(t, "a", 7, "c1"))
	a := start(t, ac)
	bc := fastProbes(testConfig(t, "b", 8, "c1", ac.Bind))
	b := start(t, bc)
	copyOfA := start(t, fastProbes(testConfig(t, "a", 7, "c1")))
	for _, seed := range []string{bc.Bind, ac.Bind} {
		_, err := copyOfA.Join([]string{seed})
		var inUse *IdentityInUseError
		if !errors.As(err, &inUse) || inUse.Addr != ac.Bind || inUse.NodeID != 7 {
			t.Fatalf("join through %s of a second process of a: %v", seed, err)
		}
		t.Log(err)
	}
	if m, ok := find(b, "a"); !ok || m.Addr != ac.Bind || !m.Alive {
		t.Fatalf("b's view of a after the refused joins: %+v", m)
	}
	a.Close() // dies without leaving
	eventually(t, "a dead at b", func() bool {
		m, _ := find(b, "a")
		return !m.Alive
	})
	if _, err := copyOfA.Join([]string{bc.Bind}); err != nil {
		t.Fatalf("join once the first process of a is dead: %v", err)
	}
}

// TestRestartAtAnotherAdvertisedAddressJoins: a node that listens on every interface restarts
// advertising another of the host's addresses. Its old entry stays alive at the seeds (their
// probes of the old address reach the new process, which answers for its name), and it is that
// process: not refused as a second process with its identity.
func TestRestartAtAnotherAdvertisedAddressJoins(t *testing.T) {
	ac := fastProbes(testConfig(t, "a", 7, "c1"))
	a := start(t, ac)
	bc := fastProbes(testConfig(t, "b", 8, "c1", ac.Bind))
	_, port, _ := net.SplitHostPort(bc.Bind)
	bc.Bind, bc.Advertise = "0.0.0.0:"+port, "127.0.0.1:"+port
	b1 := start(t, bc)
	eventually(t, "b alive at a", func() bool { m, ok := find(a, "b"); return ok && m.Alive })
	b1.Close() // dies without leaving

	bc.Join, bc.Advertise = nil, "127.0.0.2:"+port
	b2 := start(t, bc)
	if _, err := b2.Join([]string{ac.Bind}); err != nil {
		m, _ := find(a, "b")
		t.Fatalf("restarted b, a holding it alive at %s (alive %v): %v", m.Addr, m.Alive, err)
	}
}

// TestWipedRestartAtSameAddressJoins: a node restarted at once at its gossip address with a
// wiped data directory (a new node ID under its name) finds its previous process still alive
// at the seeds: their probes of that address reach the new process, which answers for its
// name. That member is not another node holding the name (the new process holds its port);
// the join goes through and the seeds take the new ID for the name.
func TestWipedRestartAtSameAddressJoins(t *testing.T) {
	ac := fastProbes(testConfig(t, "a", 7, "c1"))
	a := start(t, ac)
	bc := fastProbes(testConfig(t, "b", 8, "c1", ac.Bind))
	b1 := start(t, bc)
	eventually(t, "b alive at a", func() bool { m, ok := find(a, "b"); return ok && m.Alive })
	b1.Close() // dies without leaving

	bc.Join, bc.Meta.NodeID = nil, 9
	b2 := start(t, bc)
	if _, err := b2.Join([]string{ac.Bind}); err != nil {
		m, _ := find(a, "b")
		t.Fatalf("b restarted with a new ID at its address, a holding its old ID %d alive (%v) at %s: %v", m.NodeID, m.Alive, m.Addr, err)
	}
	eventually(t, "a to take b's new ID", func() bool { m, ok := find(a, "b"); return ok && m.Alive && m.NodeID == 9 })
}

// TestNameTakenAtCopiedAdvertiseAddressRefused: a node started elsewhere from a copy of a
// live node's configuration, name and --gossip-advertise included (another node ID, another
// address it listens on), is refused with ErrNameTaken, as with any other advertised address.
// The live member at its advertised address is not its previous process: it does not listen
// there, and the other node does. Taken for its previous process, it joined, and the two
// refuted each other's entry for the name for as long as both ran.
func TestNameTakenAtCopiedAdvertiseAddressRefused(t *testing.T) {
	ac := testConfig(t, "a", 7, "c1")
	a := start(t, ac)
	bc := testConfig(t, "b", 8, "c1", ac.Bind)
	start(t, bc)
	eventually(t, "b alive at a", func() bool { m, ok := find(a, "b"); return ok && m.Alive })

	copyOfA := testConfig(t, "a", 9, "c1")
	copyOfA.Advertise = ac.Bind
	m := start(t, copyOfA)
	_, err := m.Join([]string{bc.Bind})
	var taken *NameTakenError
	if !errors.As(err, &taken) || taken.Addr != ac.Bind || taken.NodeID != 7 {
		t.Fatalf("join through b of a node named a that listens on %s and advertises a's address %s: %v",
			copyOfA.Bind, ac.Bind, err)
	}
	if mem, ok := find(a, "a"); !ok || mem.NodeID != 7 {
		t.Fatalf("a's view of its name after the refused join: %+v", mem)
	}
}

// TestNameTakenLogged: a node refused for joining under a live member's name is told by its
// Join's error, which its caller reports; the live member logs one warning naming the node it
// refused (its address and node ID), not the joiner's advice at Error, and memberlist's own
// line for the refused merge stays at Debug.
func TestNameTakenLogged(t *testing.T) {
	var liveLog, joinerLog lockedbuf.Buffer
	logTo := func(b *lockedbuf.Buffer) *slog.Logger {
		return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ac := testConfig(t, "a", 7, "c1")
	ac.Logger = logTo(&liveLog)
	start(t, ac)
	other := testConfig(t, "a", 9, "c1")
	other.Logger = logTo(&joinerLog)
	m := start(t, other)
	if _, err := m.Join([]string{ac.Bind}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("join under a live member's name: %v", err)
	}
	want := fmt.Sprintf(`level=WARN msg="refused a merge with a node gossiping under this node's name" component=membership peer_addr=%s peer_node_id=9`, other.Bind)
	eventually(t, "the live member's warning", func() bool { return strings.Contains(liveLog.String(), want) })
	for name, log := range map[string]string{"live member": liveLog.String(), "joiner": joinerLog.String()} {
		if strings.Contains(log, "level=ERROR") {
			t.Errorf("the %s logged at Error:\n%s", name, log)
		}
	}
	if strings.Count(liveLog.String(), "level=WARN") != 1 {
		t.Errorf("the live member's warnings, want one:\n%s", liveLog.String())
	}
}

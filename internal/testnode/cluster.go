package testnode

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/shoaldb/shoal/node"
)

// ShardState is one shard's raft configuration as the running node that
// leads it reports it.
type ShardState struct {
	Shard            uint32
	Leader           uint64
	Voters, Learners []uint64
	// Inactive lists the members the leader has not heard from recently
	// (raft's RecentActive is false), e.g. a dead or wedged replica.
	Inactive []uint64
}

func (s ShardState) String() string {
	return fmt.Sprintf("shard %d: leader %d voters %v learners %v inactive %v",
		s.Shard, s.Leader, s.Voters, s.Learners, s.Inactive)
}

// Running reports whether node i has not been stopped.
func (c *Cluster) Running(i int) bool { return !c.isClosed(i) }

// Shards returns the state of every shard that a running node leads, indexed
// by shard; a shard without a running leader is absent.
func (c *Cluster) Shards() map[uint32]ShardState {
	out := map[uint32]ShardState{}
	for i, n := range c.Nodes {
		if c.isClosed(i) {
			continue
		}
		for _, g := range n.Groups() {
			st := g.Status()
			if st.Removed || st.Leader != n.ID() {
				continue
			}
			s := ShardState{Shard: st.Shard, Leader: st.Leader,
				Voters: slices.Clone(st.Voters), Learners: slices.Clone(st.Learners)}
			for id, pr := range st.Progress {
				if id != n.ID() && !pr.RecentActive {
					s.Inactive = append(s.Inactive, id)
				}
			}
			slices.Sort(s.Inactive)
			out[st.Shard] = s
		}
	}
	return out
}

// BusiestLeader returns the running node that leads the most shards (the lowest ID among
// equals) and the shards it leads; 0 and none while no shard has a leader. Shards without a
// leader (mid-election, mid-transfer) count for no node: they made ID 0 the busiest when they
// were as many as the shards of the node leading most (a test then looked up node 0).
func (c *Cluster) BusiestLeader() (id uint64, shards []uint32) {
	led := map[uint64][]uint32{}
	for sh, s := range c.Shards() {
		if s.Leader != 0 {
			led[s.Leader] = append(led[s.Leader], sh)
		}
	}
	for l, ss := range led {
		if len(ss) > len(led[id]) || len(ss) == len(led[id]) && l < id {
			id = l
		}
	}
	return id, led[id]
}

// WaitFor polls cond every 50ms until it returns "" (done) or timeout
// passes; then it fails t with what and cond's last answer.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not done after %v: %s", what, timeout, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Add starts one more node (name n<k>, zone z<k> unless configure changes
// them) that joins the cluster through the first running node's gossip
// address, and waits until every running node sees it alive.
func (c *Cluster) Add(t testing.TB, configure func(cfg *node.Config)) *node.Node {
	t.Helper()
	k := len(c.Nodes) + 1
	var seed string
	for i, cfg := range c.Configs {
		if !c.isClosed(i) {
			seed = cfg.Gossip
			break
		}
	}
	if seed == "" {
		t.Fatal("testnode: no running node to join")
	}
	cfg := node.Config{
		DataDir:     filepath.Join(filepath.Dir(c.Configs[0].DataDir), fmt.Sprintf("n%d", k)),
		Listen:      "127.0.0.1:0",
		HTTP:        "127.0.0.1:0",
		Gossip:      FreeGossipAddr(t),
		Name:        fmt.Sprintf("n%d", k),
		Zone:        fmt.Sprintf("z%d", k),
		Join:        []string{seed},
		JoinTimeout: 20 * time.Second,
	}
	if os.Getenv("SHOAL_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).
			With("test_node", cfg.Name)
	}
	if configure != nil {
		configure(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nd, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("testnode: starting node %d: %v", k, err)
	}
	c.mu.Lock()
	c.Nodes = append(c.Nodes, nd)
	c.Configs = append(c.Configs, cfg)
	c.closed = append(c.closed, false)
	c.mu.Unlock()
	c.WaitFormed(t, 20*time.Second)
	return nd
}

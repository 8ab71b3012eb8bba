package node

import (
	"testing"

	"github.com/shoaldb/shoal/internal/membership"
)

// TestResolvePrefersAlive: a node ID gossip holds under two names (a node renamed, a stale or
// forged entry) resolves to the address of the entry alive, whichever comes first; one held
// only dead still resolves.
func TestResolvePrefersAlive(t *testing.T) {
	n := &Node{dir: &dataDir{id: identity{NodeID: 1}}}
	members := []membership.Member{
		{Meta: membership.Meta{NodeID: 2, GRPCAddr: "10.0.0.9:7400"}},              // dead, listed first
		{Meta: membership.Meta{NodeID: 2, GRPCAddr: "10.0.0.2:7400"}, Alive: true}, // the node as it is
		{Meta: membership.Meta{NodeID: 3, GRPCAddr: "10.0.0.3:7400"}},              // dead only
	}
	n.members.Store(&members)
	for _, tc := range []struct {
		id   uint64
		want string
		ok   bool
	}{{2, "10.0.0.2:7400", true}, {3, "10.0.0.3:7400", true}, {4, "", false}} {
		if got, ok := n.resolve(tc.id); got != tc.want || ok != tc.ok {
			t.Errorf("resolve(%d) = %q, %v; want %q, %v", tc.id, got, ok, tc.want, tc.ok)
		}
	}
}

// TestSettingsFitReplicationEpoch: metadata that fits only while the replication epoch is
// small is refused up front: every set-replication grows it, and a node whose metadata then
// outgrew gossip's limit went on announcing the old factor.
func TestSettingsFitReplicationEpoch(t *testing.T) {
	m := membership.Meta{NodeID: 1, ClusterID: newClusterID(), Shards: 32, Replication: 3, GRPCAddr: "10.0.0.1:7400"}
	for {
		m.Name += "n"
		if _, err := membership.EncodeMeta(m); err != nil {
			m.Name = m.Name[1:] // the longest name that fits with epoch 0
			break
		}
	}
	if err := withSettingsFits(m); err == nil {
		t.Fatalf("metadata of %d bytes of name that fits only with a replication epoch of 0 passed", len(m.Name))
	}
}

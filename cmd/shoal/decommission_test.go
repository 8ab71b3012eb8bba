package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testaddr"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestDecommissionUnansweringNode: `node decommission NAME` runs on the named node, which the
// node asked forwards it to. A node alive in gossip whose gRPC address answers nothing (here it
// advertises a port nobody listens on) makes the command say that NAME did not answer, not
// that the --server it was given cannot be reached.
func TestDecommissionUnansweringNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	dead := fmt.Sprintf("127.0.0.1:%d", testaddr.Ports(t, 1)[0]) // drawn, never bound
	c := testnode.Start(t, 3, testnode.Options{Shards: 1, Replication: 1, Configure: func(i int, cfg *node.Config) {
		if i == 2 {
			cfg.Advertise = dead
		}
	}})
	testnode.WaitFor(t, 10*time.Second, "n3 alive to n1", func() string {
		for _, m := range c.Nodes[0].Members() {
			if m.Name == "n3" && m.Alive {
				return ""
			}
		}
		return "n3 not alive"
	})
	server := c.Nodes[0].Addr()
	for _, op := range []string{"decommission", "recommission"} {
		code, out, errOut := runCLI(t, nil, "", "node", op, "n3", "--server", server)
		msg := out + errOut
		// The last attempt went through the server, which forwarded it to n3, or to n3 itself,
		// the client having learnt of it from the topology.
		forwarded := "the cluster at " + server + " answered, but node \"n3\", alive in gossip, did not answer at " + dead
		direct := "the cluster at " + server + " answered, but the request about \"n3\" did not go through"
		if code != exitError || !strings.Contains(msg, forwarded) && !(strings.Contains(msg, direct) && strings.Contains(msg, dead)) ||
			strings.Contains(msg, "cannot reach a shoal server") {
			t.Fatalf("node %s n3 (unanswering): exit %d\n%s\nwant: the cluster answered, n3 did not", op, code, msg)
		}
	}
}

// TestDecommissionLastOfZone: draining the last node of a zone, when the other nodes lie in
// fewer zones than the replication factor, says beforehand that shards will keep two replicas in
// one zone; cluster status repeats it while the node still holds replicas.
func TestDecommissionLastOfZone(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four servers")
	}
	c := testnode.Start(t, 4, testnode.Options{Shards: 2, Configure: func(i int, cfg *node.Config) {
		if i == 3 {
			cfg.Zone = "z1" // n1 and n4 in z1, n2 in z2, n3 alone in z3
		}
	}})
	testnode.WaitFor(t, 30*time.Second, "n3 holds a replica", func() string {
		for _, n := range c.Nodes[0].Members() {
			if n.Name == "n3" && !n.Alive {
				return "n3 not alive"
			}
		}
		code, out, errOut := runCLI(t, nil, "", "cluster", "status", "--server", c.Nodes[0].Addr())
		if code != 0 {
			return errOut
		}
		for line := range strings.Lines(out) {
			if f := strings.Fields(line); len(f) > 7 && f[0] == "n3" && f[7] != "0" { // REPLICAS
				return ""
			}
		}
		return "n3 holds no replica yet:\n" + out
	})
	want := `note: n3 is the last of zone "z3" to hold replicas: once drained, the other nodes are in 2 zones (z1 and z2)`
	code, out, errOut := runCLI(t, nil, "", "node", "decommission", "n3", "--server", c.Nodes[0].Addr())
	if code != 0 || !strings.Contains(out, "decommissioning n3: its replicas are moving away") || !strings.Contains(out, want) {
		t.Fatalf("node decommission n3: exit %d\n%s%s\nwant the zone note %q", code, out, errOut, want)
	}
}

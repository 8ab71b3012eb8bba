package node_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
)

// TestMeasureFlappingNodeLeaderships measures what a node whose links flap costs the shards it
// is the preferred leader of: three nodes at the default placement interval (1 s), the links
// of the node leading the most shards cut for 3 s and healed for 6 s, five times, counting how
// often each of its shards was handed its leadership back and how many elections that shard
// held (SHOAL_FLAP_CYCLES sets another number of cycles). A handed-back leadership is lost at the next cut, an election each time, so placement
// waits longer after each loss in a row (handBackRounds). A measurement, not a check (its
// numbers depend on the machine): run with SHOAL_E2E_MEASURE=1.
func TestMeasureFlappingNodeLeaderships(t *testing.T) {
	if os.Getenv("SHOAL_E2E_MEASURE") == "" {
		t.Skip("a measurement: set SHOAL_E2E_MEASURE=1 to run it")
	}
	nw := newTestNet()
	c, _ := startFailoverCluster(t, func(i int, cfg *node.Config) {
		cfg.PeerDialer = nw.dialer(i)
		cfg.PlacementInterval = node.DefaultPlacementInterval
	})
	for i, n := range c.Nodes {
		nw.register(n.Addr(), i)
	}
	flapID, _ := c.BusiestLeader()
	flap := c.Index(flapID)
	var others []int
	for i := range c.Nodes {
		if i != flap {
			others = append(others, i)
		}
	}
	preferred := map[uint32]bool{}
	for sh, s := range c.Shards() {
		if s.Leader == flapID {
			preferred[sh] = true
		}
	}
	leader := map[uint32]uint64{}
	regained, elections := map[uint32]int{}, map[uint32]int{}
	terms := map[uint32]uint64{}
	watch := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			for sh, s := range c.Shards() {
				if !preferred[sh] {
					continue
				}
				if s.Leader == flapID && leader[sh] != 0 && leader[sh] != flapID {
					regained[sh]++
				}
				if s.Leader != 0 {
					leader[sh] = s.Leader
				}
				if g, ok := c.Nodes[c.Index(s.Leader)].Host().Group(sh); ok {
					if term := g.Status().Term; terms[sh] != 0 && term > terms[sh] {
						elections[sh] += int(term - terms[sh])
						terms[sh] = term
					} else if terms[sh] == 0 {
						terms[sh] = term
					}
				}
			}
		}
	}
	cycles := 5
	if v, err := strconv.Atoi(os.Getenv("SHOAL_FLAP_CYCLES")); err == nil && v > 0 {
		cycles = v
	}
	for range cycles {
		nw.isolate(flap, others)
		watch(3 * time.Second)
		nw.heal()
		watch(6 * time.Second)
	}
	testnode.WaitFor(t, 30*time.Second, "a leader for every shard", func() string {
		for sh := range preferred {
			if _, ok := c.Shards()[sh]; !ok {
				return "no leader yet"
			}
		}
		return ""
	})
	for sh := range preferred {
		t.Logf("shard %d: node %d (its preferred leader) handed its leadership back %d times in %d cut-and-heal cycles; %d terms",
			sh, flapID, regained[sh], cycles, elections[sh])
	}
}

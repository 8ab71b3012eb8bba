package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/ring"
)

// A node stopping on purpose hands its leaderships to other voters first: afterwards it leads
// no shard, the other nodes move none back to it, and once it is closed every shard it led
// takes appends.
func TestHandOffLeaders(t *testing.T) {
	const shards = 6
	c, _ := startReplicatedCluster(t, shards, nil)
	defer c.Close()

	victimID, victimLed := c.BusiestLeader()
	victim := c.Index(victimID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	moved, kept := c.Nodes[victim].HandOffLeaders(ctx)
	t.Logf("n%d handed off %d of its %d leaderships (shards %v), kept %d", victim+1, moved, len(victimLed), victimLed, kept)
	if moved != len(victimLed) || kept != 0 {
		t.Fatalf("moved %d, kept %d; want %d and 0", moved, kept, len(victimLed))
	}
	// Every shard has a leader among the others, and keeps it: the other placement loops (every
	// 100 ms here) see the node stopping and do not balance leadership back to it.
	noneLed := func() string {
		state := c.Shards()
		for id := uint32(0); id < shards; id++ {
			s, ok := state[id]
			switch {
			case !ok:
				return fmt.Sprintf("shard %d has no leader", id)
			case s.Leader == victimID:
				return fmt.Sprintf("n%d leads shard %d again", victim+1, id)
			}
		}
		return ""
	}
	// Every node's topology (what `cluster status` shows) says the node is stopping.
	for i, n := range c.Nodes {
		testnode.WaitFor(t, 5*time.Second, fmt.Sprintf("n%d reporting n%d stopping", i+1, victim+1), func() string {
			for _, ni := range n.Topology(ctx).GetNodes() {
				if ni.GetId() == victimID && ni.GetStopping() {
					return ""
				}
			}
			return "not reported"
		})
	}
	testnode.WaitFor(t, 5*time.Second, "a leader for every shard", noneLed)
	time.Sleep(2 * time.Second) // several placement rounds and balance settles
	if msg := noneLed(); msg != "" {
		t.Fatal(msg)
	}

	c.Stop(t, victim)
	var addrs []string
	for i, n := range c.Nodes {
		if i != victim {
			addrs = append(addrs, n.Addr())
		}
	}
	cl, err := client.Dial(ctx, addrs)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, sh := range victimLed {
		stream := ""
		for k := 0; stream == ""; k++ {
			if s := fmt.Sprintf("handoff-%d", k); ring.ShardOf(s, shards) == sh {
				stream = s
			}
		}
		if _, err := cl.Append(ctx, stream, client.NoStream, client.Event{Type: "t.HandedOff", Data: []byte(`{}`)}); err != nil {
			t.Fatalf("append to shard %d after the hand-off: %v", sh, err)
		}
	}
}

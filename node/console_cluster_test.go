package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// TestConsoleCluster reads the console of a three-node cluster: a node that holds no replica
// of a stream's shard shows the stream (its read is forwarded, as a client's), every node's
// overview names the three, and once a node stops the overview shows it dead and the shards
// it held a voter of degraded. Once a second node stops, the stream listing leaves out the
// streams of the shards that lost their quorum, and says so.
func TestConsoleCluster(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := testnode.Start(t, 4, testnode.Options{Shards: placementShards, Replication: 3,
		Configure: func(i int, cfg *node.Config) {
			placementConfig(cfg)
			cfg.DeadAfter = time.Hour // dead, not replaced: the overview shows the shards degraded
			cfg.DisableHTTP, cfg.HTTP, cfg.ConsoleData = false, "127.0.0.1:0", true
		}})
	waitPlaced(t, c, "replication 3", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, []string{c.Nodes[0].Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const stream = "order-7"
	if _, err := cl.Append(ctx, stream, client.NoStream, client.Event{Type: "Placed", Data: []byte(`{"total":12}`)}); err != nil {
		t.Fatal(err)
	}
	id := ring.ShardOf(stream, placementShards)
	// The node outside the shard's configuration as its leader has it: a replica placement just
	// removed can still take itself for a voter until it applies its removal, or never, having
	// handed its leadership over and heard no more.
	st, ok := c.Shards()[id]
	if !ok {
		t.Fatalf("shard %d has no running leader", id)
	}
	var outside *node.Node // holds no replica of the stream's shard
	for _, n := range c.Nodes {
		if !slices.Contains(st.Voters, n.ID()) && !slices.Contains(st.Learners, n.ID()) {
			outside = n
		}
	}
	if outside == nil {
		t.Fatalf("every node holds a replica of shard %d, with replication 3 of 4 nodes", id)
	}
	get := func(n *node.Node, path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + n.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get(outside, "/console/stream?name="+url.QueryEscape(stream)); code != 200 ||
		!strings.Contains(body, "1 event") || !strings.Contains(body, ">Placed<") {
		t.Fatalf("%s's console, stream %s (shard %d held elsewhere): %d\n%s", outside.Name(), stream, id, code, body)
	}
	for _, n := range c.Nodes {
		testnode.WaitFor(t, 10*time.Second, n.Name()+"'s overview shows 4 nodes and every shard ok", func() string {
			code, body := get(n, "/console/")
			if code != 200 || !strings.Contains(body, "4 nodes") || !strings.Contains(body, ">"+strconv.Itoa(placementShards)+" ok<") {
				return fmt.Sprintf("%d\n%s", code, body)
			}
			return ""
		})
	}

	// The shards n4 is a voter of, as the others see them: the overview merges their views.
	stopped := c.Nodes[3]
	held := 0
	for _, sh := range c.Nodes[0].Topology(ctx).Shards {
		if slices.Contains(sh.Voters, stopped.ID()) {
			held++
		}
	}
	if held == 0 {
		t.Fatal("n4 holds no voter after placement")
	}
	c.Stop(t, 3)
	testnode.WaitFor(t, 30*time.Second, "the overview shows n4 dead", func() string {
		code, body := get(c.Nodes[0], "/console/")
		if code != 200 {
			return body
		}
		if !strings.Contains(body, `<td>n4</td>`) || !strings.Contains(body, `<span class="bad">dead</span>`) {
			return "n4 not shown dead"
		}
		if got := strings.Count(body, `n4 <span class="bad">(dead)</span>`); got != held {
			return "shards with n4's voter marked dead: " + strconv.Itoa(got) + ", want " + strconv.Itoa(held)
		}
		if !strings.Contains(body, strconv.Itoa(held)+" degraded") {
			return "degraded count is not " + strconv.Itoa(held)
		}
		return ""
	})

	// n3 stops too: the shards whose voters were n3 and n4 lose their quorum. The stream
	// listing leaves their streams out and says so; a stale listing has them all.
	var lost []string
	for _, sh := range c.Nodes[0].Topology(ctx).Shards {
		if slices.Contains(sh.Voters, stopped.ID()) && slices.Contains(sh.Voters, c.Nodes[2].ID()) {
			lost = append(lost, fmt.Sprintf("shard %d: ", sh.Shard))
		}
	}
	c.Stop(t, 2)
	// A leader whose followers just stopped may still serve reads until it steps down.
	testnode.WaitFor(t, 30*time.Second, fmt.Sprintf("the listing without shards %q", lost), func() string {
		code, body := get(c.Nodes[0], "/console/streams")
		for _, l := range lost {
			if !strings.Contains(body, l) {
				return "no note on " + l
			}
		}
		if code != 200 || strings.Count(body, "its streams are missing from this page") != len(lost) ||
			strings.Contains(body, ">"+stream+"<") != !slices.Contains(lost, fmt.Sprintf("shard %d: ", id)) {
			return fmt.Sprintf("%d\n%s", code, body)
		}
		return ""
	})
	if code, body := get(c.Nodes[0], "/console/streams?stale=1"); code != 200 || !strings.Contains(body, ">"+stream+"<") ||
		strings.Contains(body, "missing") {
		t.Fatalf("stale streams with shards %q down: %d\n%s", lost, code, body)
	}
}

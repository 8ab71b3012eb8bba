package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testnode"
)

// TestClusterStatusAndLostQuorum runs the CLI against three in-process nodes. `cluster status
// --server X` is answered by X, whichever node X is, and fails when X is down rather than
// asking another node. Once two of them are stopped the shard has no quorum: an append or a
// delete through the third, whose every attempt is refused before anything is proposed, says
// that the shard has no leader and that nothing was written, not that its outcome is unknown;
// a read says how to read the replica anyway.
func TestClusterStatusAndLostQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	c := testnode.Start(t, 3, testnode.Options{Shards: 1, Replication: 3})
	testnode.WaitFor(t, 30*time.Second, "shard 0 on three voters", func() string {
		s, ok := c.Shards()[0]
		if !ok || len(s.Voters) != 3 || len(s.Learners) > 0 {
			return fmt.Sprint(c.Shards())
		}
		return ""
	})
	cli := func(want int, args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(t, nil, "", args...)
		if code != want {
			t.Fatalf("shoal %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errOut)
		}
		return out + errOut
	}

	for round := range 2 {
		for i, n := range c.Nodes {
			r := decode(t, cli(exitOK, "cluster", "status", "--json", "--check", "--server", n.Addr()))
			if want := fmt.Sprintf("n%d", i+1); r["answered_by"] != want {
				t.Fatalf("round %d: cluster status --server %s (%s) answered by %v", round, n.Addr(), want, r["answered_by"])
			}
		}
	}

	// --check: one voter's node dead, the shard serves degraded (exit 5); two, it is
	// unavailable (exit 1, below).
	c.Stop(t, 1)
	testnode.WaitFor(t, 30*time.Second, "cluster status --check to say degraded", func() string {
		code, _, errOut := runCLI(t, nil, "", "cluster", "status", "--check", "--server", c.Nodes[0].Addr())
		if code != exitDegraded || !strings.Contains(errOut, "check: 1 of 1 shards not ok: 1 degraded") {
			return fmt.Sprintf("exit %d: %s", code, errOut)
		}
		return ""
	})
	c.Stop(t, 2)
	down := c.Nodes[1].Addr()
	if out := cli(exitError, "cluster", "status", "--server", down); !strings.Contains(out, "cannot reach a shoal server at "+down) {
		t.Fatalf("cluster status --server %s (stopped): %s", down, out)
	}
	// The survivor's replica stops taking itself for (or hearing from) a leader within an
	// election timeout or two: from then on every write to the shard is refused.
	testnode.WaitFor(t, 20*time.Second, "the survivor to know no leader", func() string {
		for _, g := range c.Nodes[0].Groups() {
			if st := g.Status(); st.Leader != 0 {
				return fmt.Sprintf("shard %d: leader %d", st.Shard, st.Leader)
			}
		}
		return ""
	})
	server := c.Nodes[0].Addr()
	// Unavailable once gossip holds the stopped nodes dead (unknown while it does not yet);
	// the survivor, whose every shard lost its quorum, says it is not ready.
	testnode.WaitFor(t, 30*time.Second, "cluster status --check to say unavailable", func() string {
		code, out, errOut := runCLI(t, nil, "", "cluster", "status", "--check", "--server", server)
		if code != exitError || !strings.Contains(errOut, "check: 1 of 1 shards not ok: 1 unavailable, 1 node not ready") ||
			!strings.Contains(out, "n1 is not ready: ") {
			return fmt.Sprintf("exit %d: %s%s", code, out, errOut)
		}
		return ""
	})
	for _, args := range [][]string{
		{"append", "q-1", "--type", "T", "--server", server},
		{"delete", "q-1", "--server", server},
	} {
		out := cli(exitError, args...)
		// The CLI retries for 5 s: by its last attempt the replica has known no leader for
		// longer than an election takes, and the server says so.
		if !strings.Contains(out, "shard 0 has no leader that answers: the replicas the server reached have known no leader for ") ||
			!strings.Contains(out, "nothing was written") || strings.Contains(out, "outcome is unknown") {
			t.Fatalf("shoal %s, the shard without quorum: %s\nwant: no leader, quorum lost, nothing was written", strings.Join(args, " "), out)
		}
	}
	// A read the leader must serve says that --stale would read the replica; one bounded with
	// --max-staleness also names the bound that the replica, cut off from any leader, missed.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"read", "q-1", "--server", server}, []string{"shard 0 has no leader that answers", "; --stale reads what a replica has"}},
		{[]string{"read", "q-1", "--max-staleness", "1s", "--server", server},
			[]string{"shard 0 has no leader that answers", "within --max-staleness 1s; --stale reads what a replica has"}},
	} {
		out := cli(exitError, tc.args...)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Fatalf("shoal %s, the shard without quorum: %s\nwant it to say %q", strings.Join(tc.args, " "), out, w)
			}
		}
	}
	// The shard's line says how long the replica has known no leader.
	if out := cli(exitOK, "cluster", "status", "--server", server); !strings.Contains(out, "answered by n1") ||
		!strings.Contains(out, "1 unavailable") || !strings.Contains(out, "unavailable (no leader for ") {
		t.Fatalf("cluster status --server %s after the quorum loss:\n%s", server, out)
	}
}

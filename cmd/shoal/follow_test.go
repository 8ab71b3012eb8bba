package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/lockedbuf"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// following is a `shoal ... --follow` running in the background.
type following struct {
	args        []string
	out, errOut lockedbuf.Buffer
	cancel      context.CancelFunc // what SIGINT does to the command
	done        chan int           // its exit code
}

func startFollowing(t *testing.T, env map[string]string, args ...string) *following {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &following{args: args, cancel: cancel, done: make(chan int, 1)}
	t.Cleanup(cancel)
	a := newApp(strings.NewReader(""), &f.out, &f.errOut, func(k string) string { return env[k] })
	go func() { f.done <- a.run(ctx, args) }()
	return f
}

// lines waits until the command has printed n lines and returns them; it fails t if the
// command ends first or prints more.
func (f *following) lines(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := f.out.String()
		if got := strings.Count(out, "\n"); got >= n {
			if got > n {
				t.Fatalf("shoal %s: %d lines, want %d:\n%s", strings.Join(f.args, " "), got, n, out)
			}
			return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		}
		select {
		case code := <-f.done:
			t.Fatalf("shoal %s ended (exit %d, stderr %q) after:\n%s", strings.Join(f.args, " "), code, f.errOut.String(), out)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("shoal %s: %d lines after 10s, want %d:\n%s", strings.Join(f.args, " "), strings.Count(out, "\n"), n, out)
		}
	}
}

// stop interrupts the command and checks that it ends with exit code 0 and says nothing on stderr.
func (f *following) stop(t *testing.T) {
	t.Helper()
	f.cancel()
	select {
	case code := <-f.done:
		if code != exitOK || f.errOut.String() != "" {
			t.Fatalf("shoal %s, interrupted: exit %d, stderr %q; want 0 and nothing", strings.Join(f.args, " "), code, f.errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("shoal %s did not end when interrupted", strings.Join(f.args, " "))
	}
}

// TestFollow: `shoal read --follow` and `shoal read-shard --follow` print what is there, then
// each new event as it is appended (so stdout is flushed per event), wait for a stream that does
// not exist yet, print only new events with --from end, and end with exit code 0 on an interrupt.
func TestFollow(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := dialNode(t, n)
	testnode.WaitMaxFormat(t, c, 20*time.Second) // deletes in the shard log
	env := map[string]string{"SHOAL_SERVER": n.Addr()}
	appendOne := func(stream, typ string) client.AppendResult {
		t.Helper()
		res, err := c.Append(ctx, stream, client.Any, client.Event{Type: typ, Data: []byte(`{"t":"` + typ + `"}`)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	// A stream that does not exist yet, and one followed from its end.
	if code, _, _ := runCLI(t, env, "", "read", "tail-new"); code != exitNotFound {
		t.Fatalf("read of a missing stream without --follow: exit %d, want %d", code, exitNotFound)
	}
	appendOne("tail-old", "Old0")
	appendOne("tail-old", "Old1")
	fresh := startFollowing(t, env, "read", "tail-new", "--follow")
	fromEnd := startFollowing(t, env, "read", "tail-old", "-f", "--from", "end", "--json")
	// Give both time to subscribe, so that the appends below come after: fresh then waits
	// for a stream that does not exist, and fromEnd must not print Old0 and Old1.
	time.Sleep(200 * time.Millisecond)
	fresh.lines(t, 0)
	fromEnd.lines(t, 0)
	for i := range 3 {
		appendOne("tail-new", fmt.Sprint("New", i))
	}
	appendOne("tail-old", "Old2")
	for i, l := range fresh.lines(t, 3) {
		if !strings.HasPrefix(l, fmt.Sprintf("tail-new@%d  New%d  ", i, i)) {
			t.Fatalf("read --follow, line %d: %q", i, l)
		}
	}
	if m := decode(t, fromEnd.lines(t, 1)[0]); m["version"] != 2.0 || m["type"] != "Old2" {
		t.Fatalf("read --follow --from end --json: %v", m)
	}
	appendOne("tail-new", "New3")
	if l := fresh.lines(t, 4)[3]; !strings.HasPrefix(l, "tail-new@3  New3  ") {
		t.Fatalf("read --follow, line 3: %q", l)
	}
	fresh.stop(t)
	fromEnd.stop(t)

	// A shard's log from a position on, deletes included; only tail-sh is written meanwhile.
	first := appendOne("tail-sh", "Placed")
	if sh := ring.ShardOf("tail-sh", 4); first.Shard != sh {
		t.Fatalf("tail-sh is in shard %d, ring.ShardOf says %d", first.Shard, sh)
	}
	shard := startFollowing(t, env, "read-shard", fmt.Sprint(first.Shard), "--follow", "--deletes", "--from", fmt.Sprint(first.Position))
	shard.lines(t, 1)
	shardEnd := startFollowing(t, env, "read-shard", fmt.Sprint(first.Shard), "--follow", "--from", "end")
	allEnd := startFollowing(t, env, "read-all", "--follow", "--from", "end", "--type", "Replaced")
	time.Sleep(200 * time.Millisecond) // subscribed before what follows
	if err := c.Delete(ctx, "tail-sh", client.Exact(0)); err != nil {
		t.Fatal(err)
	}
	appendOne("tail-sh", "Replaced")
	lines := shard.lines(t, 3)
	for i, want := range []string{"tail-sh@0  Placed", "tail-sh@0  soft delete", "tail-sh@1  Replaced"} {
		if !strings.HasPrefix(lines[i], fmt.Sprintf("%d  %s", first.Position+uint64(i), want)) {
			t.Fatalf("read-shard --follow --deletes:\n%s", strings.Join(lines, "\n"))
		}
	}
	if l := shardEnd.lines(t, 1)[0]; !strings.HasPrefix(l, fmt.Sprintf("%d  tail-sh@1  Replaced", first.Position+2)) {
		t.Fatalf("read-shard --follow --from end: %q, want only the event appended after it started", l)
	}
	if l := allEnd.lines(t, 1)[0]; !strings.HasPrefix(l, fmt.Sprintf("%d:%d  tail-sh@1  Replaced", first.Shard, first.Position+2)) {
		t.Fatalf("read-all --follow --from end --type Replaced: %q", l)
	}
	shard.stop(t)
	shardEnd.stop(t)
	allEnd.stop(t)
}

// TestFollowLosesCluster: a subscription whose cluster goes away (here its one node closes)
// ends with exit 1 after the client's retry budget, saying so and where to resume.
func TestFollowLosesCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dialNode(t, n)
	res, err := c.Append(ctx, "lost", client.Any, client.Event{Type: "One"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		from uint64
	}{
		{[]string{"read", "lost", "--follow"}, 1},
		{[]string{"read-shard", fmt.Sprint(res.Shard), "--follow", "--from", fmt.Sprint(res.Position)}, res.Position + 1},
	} {
		f := startFollowing(t, map[string]string{"SHOAL_SERVER": n.Addr()}, tc.args...)
		f.lines(t, 1)
		defer func() {
			select {
			case code := <-f.done:
				if want := fmt.Sprintf("--from %d", tc.from); code != exitError || !strings.Contains(f.errOut.String(), "lost the cluster") ||
					!strings.Contains(f.errOut.String(), want) {
					t.Errorf("shoal %s: exit %d, stderr %q; want %d, lost the cluster, %s", strings.Join(tc.args, " "), code, f.errOut.String(), exitError, want)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("shoal %s did not end after its cluster went away", strings.Join(tc.args, " "))
			}
		}()
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestFollowRefusedAtLimit: a subscription that the node refuses at its --max-subscriptions
// ends, once the client's retries give up, with exit 1 and the node's refusal naming the
// limit, not with "cannot reach a shoal server": the server answered.
func TestFollowRefusedAtLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	n := startNodeWith(t, func(cfg *node.Config) { cfg.MaxSubscriptions = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := dialNode(t, n).Append(ctx, "held", client.Any, client.Event{Type: "One"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SHOAL_SERVER": n.Addr()}
	held := startFollowing(t, env, "read", "held", "--follow")
	held.lines(t, 1) // printed from the subscription: the node holds it
	for _, args := range [][]string{{"read", "held", "--follow"}, {"read-all", "--follow"}} {
		code, _, stderr := runCLI(t, env, "", args...)
		if code != exitError || !strings.Contains(stderr, "--max-subscriptions 1") || strings.Contains(stderr, "cannot reach") {
			t.Errorf("shoal %s past the limit: exit %d, stderr %q; want %d and the refusal naming --max-subscriptions 1",
				strings.Join(args, " "), code, stderr, exitError)
		}
	}
	held.stop(t)
}

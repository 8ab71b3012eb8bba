package node_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// TestFollowBoundedStalenessVerdict: a bounded-staleness subscription (MaxStaleness) served by
// a follower resumes on another replica when its follower, cut off from the leader, ends it
// for not being current, and ends with the server's verdict when the stream is tombstoned (the
// client's stall timer, which cancels a live attempt that heard nothing for three heartbeats,
// does not take the answer's place with a retry or its own error).
func TestFollowBoundedStalenessVerdict(t *testing.T) {
	t.Parallel()
	nw := newTestNet()
	c, regs := startFailoverCluster(t, func(i int, cfg *node.Config) { cfg.PeerDialer = nw.dialer(i) })
	const shard = 1
	leader, sc, cl := subscriberCutFromLeader(t, c, nw, shard) // the subscription goes to a follower
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stream string
	for i := 0; stream == ""; i++ {
		if name := fmt.Sprint("bounded-", i); ring.ShardOf(name, failoverShards) == shard {
			stream = name
		}
	}
	appendOne(t, cl, stream, "before")
	sub := collect(sc.Read(ctx, stream, client.Follow(), client.MaxStaleness(time.Second)))
	if f := next(t, sub, 10*time.Second); f.err != nil || f.ev.Type != "before" {
		t.Fatalf("first: %q, %v", f.ev.Type, f.err)
	}
	serving := -1
	for i, reg := range regs {
		if counterValue(t, reg, "shoal_subscriptions", "stream") == 1 {
			serving = i
		}
	}
	if serving < 0 || serving == leader {
		t.Fatalf("the subscription is served by node %d, want a follower (the leader is %d)", serving+1, leader+1)
	}
	nw.cutLink(serving, leader)
	t.Logf("cut node %d, serving the subscription, off from the leader %d", serving+1, leader+1)
	time.Sleep(3 * time.Second) // past the bound, and a heartbeat: the node ends the subscription
	appendOne(t, cl, stream, "after")
	if f := next(t, sub, 10*time.Second); f.err != nil || f.ev.Type != "after" {
		t.Fatalf("after the cut: %q, %v; want the event appended", f.ev.Type, f.err)
	}
	if n := counterValue(t, regs[serving], "shoal_subscriptions_ended_total", "not_current"); n != 1 {
		t.Fatalf("node %d ended %v subscriptions for not being current, want the one it served", serving+1, n)
	}
	if err := cl.Delete(ctx, stream, client.Any, client.Tombstone()); err != nil {
		t.Fatal(err)
	}
	if f := next(t, sub, 10*time.Second); !errors.Is(f.err, client.ErrStreamDeleted) {
		t.Fatalf("after the tombstone: %q, %v; want ErrStreamDeleted", f.ev.Type, f.err)
	}
}

// TestFollowIdleLongTick: with the longest --tick, a quiesced leader's heartbeat comes every
// 5 s (20 ticks), and a linearizable subscription on an idle, healthy shard is not ended for its
// replica not being current (it was, every 6 or 7 s, with a fixed bound of 3 s).
func TestFollowIdleLongTick(t *testing.T) {
	t.Parallel()
	c, regs := startFailoverCluster(t, func(i int, cfg *node.Config) { cfg.Tick = node.MaxTick })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, c.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	appendOne(t, cl, "idle-long-tick", "before")
	sub := collect(cl.Read(ctx, "idle-long-tick", client.Follow()))
	if f := next(t, sub, 10*time.Second); f.err != nil {
		t.Fatal(f.err)
	}
	time.Sleep(20 * time.Second)
	var ended float64
	for _, reg := range regs {
		ended += counterValue(t, reg, "shoal_subscriptions_ended_total", "not_current")
	}
	if ended > 0 {
		t.Fatalf("an idle, healthy shard's subscription was ended %v times in 20 s for its replica not being current", ended)
	}
}

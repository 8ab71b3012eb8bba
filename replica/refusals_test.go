package replica

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// A learner added on a node that never answered is not promoted, however soon after its
// addition: raft marks a new member active before it is heard from, and a single-voter group
// that promoted it would need two voters for a quorum, with one of them down for good.
func TestPromoteRefusesLearnerNeverHeard(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 1, noQuiesce: true})
	c.open(1, 3, []uint64{1})
	lead := c.leader(3)
	c.propose(3, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := lead.AddLearner(ctx, 2); err != nil { // no node 2 exists
		t.Fatal(err)
	}
	if err := lead.PromoteLearner(ctx, 2); !errors.Is(err, ErrUnsafeConfChange) {
		t.Fatalf("promoting a learner never heard from: %v, want ErrUnsafeConfChange", err)
	}
	c.propose(3, "b") // still one voter, and a quorum
}

// Proposals wait in a bounded queue while the loop holds them back (group commit behind slow
// fsyncs): one past Config.MaxQueuedProposals is refused with ErrBusy, naming the limit, and
// proposes nothing; and those whose callers gave up while they waited are not proposed.
func TestProposalQueueBounded(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 1, maxProps: 4})
	c.open(1, 3, []uint64{1})
	lead := c.leader(3)
	c.propose(3, "before")
	h := c.nodes[1].host
	h.syncsInFlight.Add(maxSyncsInFlight) // as if that many fsyncs were under way: proposals stay queued
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if _, err := lead.Propose(ctx, []byte(fmt.Sprintf("abandoned-%d", i))); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("held proposal %d: %v, want its deadline", i, err)
			}
		}()
	}
	queued := func(want int) func() error {
		return func() error {
			h.mu.Lock()
			defer h.mu.Unlock()
			if n := len(h.mu.props); n != want {
				return fmt.Errorf("%d proposals queued, want %d", n, want)
			}
			return nil
		}
	}
	eventually(t, 5*time.Second, queued(4))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := lead.Propose(ctx, []byte("refused")); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "limits 4 proposals") {
		t.Fatalf("a fifth proposal: %v, want ErrBusy naming the limit", err)
	}
	wg.Wait()
	h.syncsInFlight.Add(-maxSyncsInFlight)
	h.notify()
	eventually(t, 5*time.Second, queued(0))
	c.propose(3, "after")
	c.converged(3, []string{"before", "after"}, 1)
}

// A request run in the loop iteration that stepped a message ending this replica's leadership
// (a later term's) is refused as not-leader, before observe records the change: a conf change
// let through would be forwarded by raft to the new leader, unvetted, and leave its waiter and
// the pending mark here until the next leadership change.
func TestCheckSeesLeadershipEndedThisIteration(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 3, noQuiesce: true})
	c.openVoters(4)
	lead := c.leader(4)
	st := lead.Status()
	other := st.ID%3 + 1
	err := lead.h.call(context.Background(), func() error {
		if err := lead.check(); err != nil {
			return fmt.Errorf("before the message: %w", err)
		}
		if err := lead.rn.Step(&pb.Message{Type: pb.MsgHeartbeat.Enum(), From: new(other), To: new(st.ID), Term: new(st.Term + 5)}); err != nil {
			return err
		}
		return lead.check()
	})
	if !errors.Is(err, ErrNotLeader) || strings.HasPrefix(err.Error(), "before") {
		t.Fatalf("check after a later term's heartbeat in the same iteration: %v, want not-leader", err)
	}
}

// Propose's error says whether raft took the proposal, which the caller cannot tell from the
// leadership it read before the call (this replica may have been elected while Propose checked
// it again). One raft took, then failed as the host closed or this replica was removed from its
// group while it waited, may still be applied: ErrStopped or ErrGroupRemoved, not ErrRefused.
// One refused before raft saw it (still queued when the host closed, or proposed on a closed
// host or removed replica) was not: the same errors, matching ErrRefused.
func TestProposeTellsRefusalFromTaken(t *testing.T) {
	const shard = 1
	for _, tc := range []struct {
		name    string
		queued  bool // held in the host's queue (group commit behind fsyncs) rather than taken by raft
		end     func(t *testing.T, c *cluster)
		want    error
		refused bool
	}{
		{name: "taken, then stopped", end: func(_ *testing.T, c *cluster) { c.stopNode(1) }, want: ErrStopped},
		{name: "taken, then removed", end: func(t *testing.T, c *cluster) { retire(t, c, 1, shard) }, want: ErrGroupRemoved},
		{name: "queued, then stopped", queued: true, end: func(_ *testing.T, c *cluster) { c.stopNode(1) }, want: ErrStopped, refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := slowElectionCluster(t, shard) // node 1 leads, and keeps leading without a quorum
			lead := c.group(1, shard)
			h := lead.h
			waiting := func() error {
				h.mu.Lock()
				queued := len(h.mu.props)
				h.mu.Unlock()
				taken := 0
				if err := h.call(context.Background(), func() error { taken = len(lead.waiters); return nil }); err != nil {
					return err
				}
				if tc.queued && queued != 1 || !tc.queued && taken != 1 {
					return fmt.Errorf("%d proposals queued, %d taken by raft", queued, taken)
				}
				return nil
			}
			if tc.queued {
				h.syncsInFlight.Add(maxSyncsInFlight) // as if that many fsyncs were under way: proposals stay queued
			} else {
				c.net.isolate(1, true) // no follower hears of the proposal: it waits in raft
			}
			errc := make(chan error, 1)
			go func() {
				_, err := lead.Propose(context.Background(), []byte("b"))
				errc <- err
			}()
			eventually(t, 5*time.Second, waiting)
			tc.end(t, c)
			if err := <-errc; !errors.Is(err, tc.want) || errors.Is(err, ErrRefused) != tc.refused {
				t.Fatalf("Propose: %v (refused %t), want %v, refused %t", err, errors.Is(err, ErrRefused), tc.want, tc.refused)
			}
			if _, err := lead.Propose(context.Background(), []byte("c")); !errors.Is(err, tc.want) || !errors.Is(err, ErrRefused) {
				t.Fatalf("Propose afterwards: %v (refused %t), want %v, refused", err, errors.Is(err, ErrRefused), tc.want)
			}
		})
	}
}

// retire takes node id's replica of shard out of its group (RetireGroupIfQuiet), as placement
// does with one removed while it did not hear of it.
func retire(t *testing.T, c *cluster, id uint64, shard uint32) {
	t.Helper()
	if ok, err := c.nodes[id].host.RetireGroupIfQuiet(shard, time.Now()); !ok || err != nil {
		t.Fatalf("RetireGroupIfQuiet: %t, %v", ok, err)
	}
}

package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
)

// shardSubs subscribes to every shard's log (client.Follow) and records what each yields.
type shardSubs struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	got    [][]client.RecordedEvent
	errs   []error
}

func subscribeShards(c *client.Client, shards int) *shardSubs {
	ctx, cancel := context.WithCancel(context.Background())
	s := &shardSubs{cancel: cancel, got: make([][]client.RecordedEvent, shards), errs: make([]error, shards)}
	for shard := range shards {
		s.wg.Go(func() {
			for ev, err := range c.ReadShard(ctx, uint32(shard), 0, 0, client.Follow(), client.IncludeDeletes()) {
				s.mu.Lock()
				if err != nil {
					if ctx.Err() == nil {
						s.errs[shard] = err
					}
				} else {
					s.got[shard] = append(s.got[shard], ev)
				}
				s.mu.Unlock()
			}
		})
	}
	return s
}

// verify waits until every subscription yielded as many entries as its shard's log holds
// (read linearizably through c), then checks that it yielded exactly that log, and stops them.
func (s *shardSubs) verify(t *testing.T, c *client.Client) {
	t.Helper()
	defer func() { s.cancel(); s.wg.Wait() }()
	total := 0
	for shard := range s.got {
		var log []client.RecordedEvent
		for ev, err := range c.ReadShard(context.Background(), uint32(shard), 0, 0, client.IncludeDeletes()) {
			if err != nil {
				t.Fatalf("reading shard %d: %v", shard, err)
			}
			log = append(log, ev)
		}
		var got []client.RecordedEvent
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			s.mu.Lock()
			var err error
			got, err = slices.Clone(s.got[shard]), s.errs[shard]
			s.mu.Unlock()
			if err != nil {
				t.Fatalf("the subscription to shard %d ended: %v", shard, err)
			}
			if len(got) >= len(log) || time.Now().After(deadline) {
				break
			}
		}
		if msg := diffEvents(log, got); msg != "" {
			t.Fatalf("the subscription to shard %d: %s", shard, msg)
		}
		total += len(got)
	}
	t.Logf("%d subscriptions yielded their shards' logs exactly (%d entries)", len(s.got), total)
}

// diffEvents describes the first difference between a shard's log and what a subscription
// yielded, "" when they are the same entries in the same order.
func diffEvents(log, got []client.RecordedEvent) string {
	for i := range min(len(log), len(got)) {
		if log[i].ID != got[i].ID || log[i].Position != got[i].Position || log[i].Deletion != got[i].Deletion {
			return fmt.Sprintf("entry %d is %s at %d, the log's is %s at %d", i, got[i].ID, got[i].Position, log[i].ID, log[i].Position)
		}
	}
	if len(log) != len(got) {
		return fmt.Sprintf("%d entries yielded, the log holds %d", len(got), len(log))
	}
	return ""
}

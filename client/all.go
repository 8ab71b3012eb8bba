package client

import (
	"context"
	"fmt"
	"iter"
	"sync"
)

// ReadAll reads every shard's log at once: the events of all streams, in
// position order within each shard and interleaved across shards as they
// arrive (there is no total order across shards). from holds the position to
// start at per shard, indexed by shard; nil, or a shorter slice, starts the
// other shards at 0. The caller's checkpoint is that vector: after handling
// an event, set from[ev.Shard] = ev.Position+1, and resume with it.
//
// Without Follow the sequence ends once every shard was read to its end;
// with Follow it is a subscription to everything appended to the cluster
// (FromEnd: from now on). Each shard is read as ReadShard reads it, with the
// same resumption after failures, so the sequence yields no entry twice and
// skips none; the first error of any shard ends it. Options are ReadShard's
// (Follow, FromEnd, StreamPrefix, EventTypes, IncludeDeletes, Linearizable,
// Stale, MaxStaleness, Wait); not ResumeAt. Breaking out of the loop ends
// every shard's read.
//
//	cp := make([]uint64, shards) // or the stored checkpoint
//	for ev, err := range c.ReadAll(ctx, cp, client.Follow(), client.EventTypes("OrderPlaced")) {
//		if err != nil { return err }
//		handle(ev)
//		cp[ev.Shard] = ev.Position + 1
//	}
func (c *Client) ReadAll(ctx context.Context, from []uint64, opts ...ReadOption) iter.Seq2[RecordedEvent, error] {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	return func(yield func(RecordedEvent, error) bool) {
		if o.resume != nil {
			yield(RecordedEvent{}, &InvalidArgumentError{Field: "ResumeAt", Limit: "ReadShard only",
				Reason: "ReadAll resumes per shard: keep from[ev.Shard] = ev.Position+1"})
			return
		}
		shards, err := c.Shards(ctx)
		if err != nil {
			yield(RecordedEvent{}, err)
			return
		}
		if len(from) > int(shards) {
			yield(RecordedEvent{}, &InvalidArgumentError{Field: "from", Limit: fmt.Sprintf("at most %d positions (the shard count)", shards),
				Reason: fmt.Sprintf("%d given", len(from))})
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		type item struct {
			ev  RecordedEvent
			err error
		}
		items := make(chan item, 256)
		var wg sync.WaitGroup
		for shard := range shards {
			start := uint64(0)
			if int(shard) < len(from) {
				start = from[shard]
			}
			wg.Go(func() {
				for ev, err := range c.ReadShard(ctx, shard, start, 0, opts...) {
					select {
					case items <- item{ev, err}:
					case <-ctx.Done():
						return
					}
				}
			})
		}
		go func() { wg.Wait(); close(items) }()
		defer func() {
			cancel()
			for range items { // let every shard's read end
			}
		}()
		for it := range items {
			if !yield(it.ev, it.err) || it.err != nil {
				return
			}
		}
	}
}

package client

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
)

// ReadAll reads every shard's log at once: the events of all streams, in
// position order within each shard and interleaved across shards as they
// arrive (there is no total order across shards). from holds the position to
// start at per shard, indexed by shard; nil, or a shorter slice, starts the
// other shards at 0. The checkpoint is that vector. Keep it with ResumeAllAt,
// which also passes the entries the filters skip and, with FromEnd, records
// where each shard's end was; or, without filters and FromEnd, set
// from[ev.Shard] = ev.Position+1 after handling each event.
//
// Without Follow the sequence ends once every shard was read to its end;
// with Follow it is a subscription to everything appended to the cluster
// (FromEnd: from now on). Each shard is read as ReadShard reads it, with the
// same resumption after failures, so the sequence yields no entry twice and
// skips none; the first error of any shard, or the end of ctx, ends it with
// that error. Options are ReadShard's (Follow, FromEnd, StreamPrefix,
// EventTypes, IncludeDeletes, Linearizable, Stale, MaxStaleness, Wait), and
// ResumeAllAt instead of ResumeAt. Breaking out of the loop ends every
// shard's read.
//
//	cp := make([]atomic.Uint64, shards) // loaded from the stored checkpoint
//	for ev, err := range c.ReadAll(ctx, from(cp), client.Follow(), client.EventTypes("OrderPlaced"),
//		client.ResumeAllAt(cp)) {
//		if err != nil { return err }
//		handle(ev) // store cp now and then, from any goroutine
//	}
func (c *Client) ReadAll(ctx context.Context, from []uint64, opts ...ReadOption) iter.Seq2[RecordedEvent, error] {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	return func(yield func(RecordedEvent, error) bool) {
		if o.resume != nil {
			yield(RecordedEvent{}, &InvalidArgumentError{Field: "ResumeAt", Limit: "ReadShard only",
				Reason: "ReadAll keeps a position per shard: use ResumeAllAt"})
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
		if o.resumeAll != nil && len(o.resumeAll) != int(shards) {
			yield(RecordedEvent{}, &InvalidArgumentError{Field: "ResumeAllAt", Limit: fmt.Sprintf("%d positions (the shard count)", shards),
				Reason: fmt.Sprintf("%d given", len(o.resumeAll))})
			return
		}
		parent := ctx
		ctx, cancel := context.WithCancel(ctx)
		// Each shard's read hands over one entry at a time and waits until the loop body
		// for it returned: ReadShard's resume position then passes only handled entries.
		type item struct {
			ev   RecordedEvent
			err  error
			done chan struct{} // signalled once the loop body for it returned
		}
		items := make(chan item)
		var wg sync.WaitGroup
		for shard := range shards {
			start := uint64(0)
			if int(shard) < len(from) {
				start = from[shard]
			}
			// unhandled: this shard's read stops at an entry that the caller's loop body was
			// never given (the read ended first), or did not return for: the shard's resume
			// position stays before it.
			unhandled := false
			shardOpts := opts
			if o.resumeAll != nil {
				shardOpts = append(slices.Clip(opts), ResumeAt(&o.resumeAll[shard]),
					func(o *readOptions) { o.unhandled = func() bool { return unhandled } })
			}
			wg.Go(func() {
				done := make(chan struct{}, 1)
				for ev, err := range c.ReadShard(ctx, shard, start, 0, shardOpts...) {
					select {
					case items <- item{ev, err, done}:
					case <-ctx.Done():
						unhandled = true
						return
					}
					select {
					case <-done:
					case <-ctx.Done():
						// Taken by the drain after the loop ended, or handed to a body
						// still running: not handled, unless it returned meanwhile.
						select {
						case <-done:
						default:
							unhandled = true
							return
						}
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
			more := yield(it.ev, it.err)
			it.done <- struct{}{}
			if !more || it.err != nil {
				return
			}
		}
		// Every shard's read ended. Without Follow that is the end of every log, unless
		// the caller's context ended first: a shard's read stopped by it may not say so.
		if err := parent.Err(); err != nil {
			yield(RecordedEvent{}, err)
		}
	}
}

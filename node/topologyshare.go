package node

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// sharedGathers lets a node's client-facing topology requests share their gathers of the
// members' views (gatherTopologies). Every such request would otherwise ask every alive
// member for its view, and through it every member's raft loop: after a failover, when
// all of a cluster's clients refresh their topology at once, N clients cost each member
// N questions. A request joins the next gather instead, which starts once the one under
// way (if any) has ended: its answer is gathered after it arrived, so it is as fresh as
// a gather of its own would be, and a node has at most one gather running and one
// waiting, however many clients ask it at once. The gather carries the suspects of all
// the requests that joined it (their union, up to a limit).
type sharedGathers struct {
	mu      sync.Mutex
	running chan struct{} // closed when the gather under way ends; nil when none is
	next    *gather       // the gather arriving requests join; nil until one does
	closed  bool          // wait began: no gather starts any more
	wg      sync.WaitGroup
}

// gather is one shared gather: the suspects it carries, and its answer once done is closed.
type gather struct {
	suspects []*shoalv1.SuspectLeader
	seen     map[suspectKey]struct{} // suspects' keys
	joined   int                     // the requests that joined it (tests)
	done     chan struct{}
	resp     *shoalv1.TopologyResponse
	err      error
}

// do answers a topology request from the next gather, joining it (and starting it when
// this is its first request): run makes the answer, or the error every request of the
// gather gets, under a context cancelled when stop is closed (a gather that ends after
// that fails UNAVAILABLE, shutting down). The caller's own context only
// ends its wait (ctx's error): the gather goes on for the others. The answer is shared by
// every request of the gather: not to be modified.
func (g *sharedGathers) do(ctx context.Context, stop <-chan struct{}, suspects []*shoalv1.SuspectLeader, limit int,
	run func(context.Context, []*shoalv1.SuspectLeader) (*shoalv1.TopologyResponse, error)) (*shoalv1.TopologyResponse, error) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, status.Error(codes.Unavailable, shuttingDownMsg)
	}
	next := g.next
	if next == nil {
		next = &gather{done: make(chan struct{})}
		g.next = next
		g.wg.Go(func() { g.start(next, stop, run) })
	}
	next.addSuspects(suspects, limit)
	next.joined++
	g.mu.Unlock()
	select {
	case <-next.done:
		return next.resp, next.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// wait waits for the gathers started to end (once stop is closed, at once); requests from
// then on are refused UNAVAILABLE (shutting down).
func (g *sharedGathers) wait() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}

// start runs this gather once the one under way has ended. Only the next gather waits, so
// one goroutine at most waits here.
func (g *sharedGathers) start(this *gather, stop <-chan struct{},
	run func(context.Context, []*shoalv1.SuspectLeader) (*shoalv1.TopologyResponse, error)) {
	g.mu.Lock()
	for g.running != nil {
		running := g.running
		g.mu.Unlock()
		<-running
		g.mu.Lock()
	}
	running := make(chan struct{})
	g.running = running
	g.next = nil // requests arriving from now on wait for a later gather
	suspects := this.suspects
	g.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	this.resp, this.err = run(ctx, suspects)
	cancel()
	select {
	case <-stop:
		// Its context was cancelled under it: the views it lacks would make every shard
		// look unknown.
		this.resp, this.err = nil, status.Error(codes.Unavailable, shuttingDownMsg)
	default:
	}
	close(this.done)

	g.mu.Lock()
	g.running = nil
	g.mu.Unlock()
	close(running)
}

// addSuspects adds to the gather the suspects of add it lacks (the same shard and address),
// up to limit in all.
func (g *gather) addSuspects(add []*shoalv1.SuspectLeader, limit int) {
	for _, s := range add {
		if len(g.suspects) >= limit {
			return
		}
		k := suspectKey{s.GetShard(), s.GetAddr()}
		if _, dup := g.seen[k]; dup {
			continue
		}
		if g.seen == nil {
			g.seen = map[suspectKey]struct{}{}
		}
		g.seen[k] = struct{}{}
		g.suspects = append(g.suspects, s)
	}
}

type suspectKey struct {
	shard uint32
	addr  string
}

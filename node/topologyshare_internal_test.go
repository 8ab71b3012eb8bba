package node

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// TestSharedGathers: requests arriving while a gather runs share the next one, which starts
// only once the running one ends, carries the union of their suspects, and answers them all;
// a request whose context ends stops waiting without ending the gather for the others.
func TestSharedGathers(t *testing.T) {
	t.Parallel()
	var g sharedGathers
	stop := make(chan struct{})
	defer close(stop)
	type run struct {
		suspects []*shoalv1.SuspectLeader
		release  chan struct{}
		resp     *shoalv1.TopologyResponse
	}
	runs := make(chan *run, 10)
	gatherFn := func(ctx context.Context, suspects []*shoalv1.SuspectLeader) *shoalv1.TopologyResponse {
		r := &run{suspects: suspects, release: make(chan struct{}), resp: &shoalv1.TopologyResponse{}}
		runs <- r
		<-r.release
		return r.resp
	}
	suspect := func(shard uint32, addr string) []*shoalv1.SuspectLeader {
		return []*shoalv1.SuspectLeader{{Shard: shard, Addr: addr}}
	}
	ctx := context.Background()
	type answer struct {
		resp *shoalv1.TopologyResponse
		err  error
	}
	ask := func(ctx context.Context, s []*shoalv1.SuspectLeader) chan answer {
		ch := make(chan answer, 1)
		go func() {
			resp, err := g.do(ctx, stop, s, 3, gatherFn)
			ch <- answer{resp, err}
		}()
		return ch
	}
	first := ask(ctx, suspect(1, "a"))
	r1 := <-runs

	// Four requests while the first gather runs: a fifth gives up; the rest share one gather.
	var waiting []chan answer
	waiting = append(waiting, ask(ctx, suspect(2, "b")), ask(ctx, suspect(2, "b")), ask(ctx, suspect(3, "c")))
	gone, cancel := context.WithCancel(ctx)
	quitter := ask(gone, suspect(4, "d"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.mu.Lock()
		joined := g.next != nil && len(g.next.suspects) == 3
		g.mu.Unlock()
		if joined {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the requests did not join the next gather")
		}
		time.Sleep(time.Millisecond)
	}
	waiting = append(waiting, ask(ctx, suspect(5, "e"))) // past the limit of 3: its suspect is dropped
	cancel()
	if a := <-quitter; a.err != context.Canceled {
		t.Fatalf("cancelled request: %v, want context.Canceled", a.err)
	}
	select {
	case r := <-runs:
		t.Fatalf("a second gather started while the first ran (suspects %v)", r.suspects)
	case <-time.After(50 * time.Millisecond):
	}
	close(r1.release)
	if a := <-first; a.err != nil || a.resp != r1.resp {
		t.Fatalf("first request: %v %v", a.resp, a.err)
	}
	r2 := <-runs
	var got []string
	for _, s := range r2.suspects {
		got = append(got, s.GetAddr())
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"b", "c", "d"}) {
		t.Fatalf("second gather's suspects %v, want [b c d] (duplicates merged, the limit kept)", got)
	}
	close(r2.release)
	for i, ch := range waiting {
		if a := <-ch; a.err != nil || a.resp != r2.resp {
			t.Fatalf("waiting request %d: %v %v, want the second gather's answer", i, a.resp, a.err)
		}
	}
	select {
	case r := <-runs:
		t.Fatalf("a third gather ran (suspects %v)", r.suspects)
	default:
	}

	// Idle again: the next request gathers at once.
	var wg sync.WaitGroup
	wg.Go(func() {
		r := <-runs
		close(r.release)
	})
	if a := <-ask(ctx, nil); a.err != nil {
		t.Fatal(a.err)
	}
	wg.Wait()
}

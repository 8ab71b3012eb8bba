package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/testaddr"
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
		err      error
	}
	runs := make(chan *run, 10)
	gatherFn := func(ctx context.Context, suspects []*shoalv1.SuspectLeader) (*shoalv1.TopologyResponse, error) {
		r := &run{suspects: suspects, release: make(chan struct{}), resp: &shoalv1.TopologyResponse{}}
		runs <- r
		<-r.release
		return r.resp, r.err
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
	waitJoined := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			g.mu.Lock()
			joined := g.next != nil && g.next.joined == n
			g.mu.Unlock()
			if joined {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d requests did not join the next gather", n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitJoined(4)
	waiting = append(waiting, ask(ctx, suspect(5, "e"))) // past the limit of 3: its suspect is dropped
	waitJoined(5)
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

	// Idle again: the next request gathers at once. A gather that fails fails all its
	// requests.
	var wg sync.WaitGroup
	failed := errors.New("gather failed")
	wg.Go(func() {
		r := <-runs
		r.err = failed
		close(r.release)
	})
	if a := <-ask(ctx, nil); a.err != failed {
		t.Fatalf("a failed gather's request: %v %v, want its error", a.resp, a.err)
	}
	wg.Wait()

	// Closing: no gather starts any more.
	g.wait()
	if a := <-ask(ctx, nil); status.Code(a.err) != codes.Unavailable {
		t.Fatalf("a request after wait: %v %v, want UNAVAILABLE", a.resp, a.err)
	}
}

// TestConsoleWhileJoining: a restarted node serves HTTP before it has rejoined gossip (its seed
// here accepts connections and never answers); its console overview answers 503 "starting"
// then, rather than gathering a topology without gossip (which dereferenced the absent
// membership in a gather's goroutine and ended the process).
func TestConsoleWhileJoining(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.HTTP = fmt.Sprintf("127.0.0.1:%d", testaddr.Ports(t, 1)[0])
	n := startNode(t, cfg)
	n.Close()

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	cfg.Join = []string{silent.Addr().String()}
	started := make(chan *Node, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n, err := Start(ctx, cfg)
		if err != nil {
			t.Errorf("Start: %v", err)
		}
		started <- n
	}()
	answered := 0
	for {
		select {
		case n := <-started:
			if n != nil {
				n.Close()
			}
			if answered == 0 {
				t.Fatal("the console never answered while the node joined gossip")
			}
			return
		default:
		}
		resp, err := http.Get("http://" + cfg.HTTP + "/console/")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "still starting") {
				select {
				case n := <-started: // Start finished between the request and the answer
					started <- n
					continue
				case <-time.After(time.Second):
				}
				t.Fatalf("console while joining: %d %s", resp.StatusCode, body)
			}
			answered++
		}
		time.Sleep(5 * time.Millisecond)
	}
}

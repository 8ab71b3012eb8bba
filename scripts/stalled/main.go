// Command stalled measures what readers that stop taking pages cost a node (scripts/stalled.sh):
// it fills streams with 32 KiB events, opens reads or subscriptions that never receive, and
// prints the node's heap in use (after a forced GC) before and after; or it reads the streams
// back and prints the rate.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

const (
	streams   = 4
	eventSize = 32 << 10
	batch     = 100
)

func main() {
	addr := flag.String("addr", "127.0.0.1:17400", "a node's gRPC address")
	httpAddr := flag.String("http", "127.0.0.1:17480", "the same node's HTTP address (its heap is read there)")
	fill := flag.Int("fill", 0, "append this many events of 32 KiB to each of the four streams, then exit")
	stall := flag.Int("stall", 0, "open this many calls that never receive (spread over the four streams)")
	follow := flag.Bool("follow", true, "with -stall: subscriptions (else plain reads)")
	readAll := flag.Bool("readall", false, "read the four streams back and print the rate")
	flag.Parse()
	cc, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20), grpc.MaxCallSendMsgSize(32<<20)))
	check(err)
	c := shoalv1.NewStreamsClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	switch {
	case *fill > 0:
		for s := range streams {
			for done := 0; done < *fill; done += batch {
				req := &shoalv1.AppendRequest{Stream: stream(s)}
				for range min(batch, *fill-done) {
					ev := &shoalv1.EventData{Id: make([]byte, 16), Type: "Filled", Data: make([]byte, eventSize)}
					rand.Read(ev.Id)
					rand.Read(ev.Data) // incompressible, as most payloads are to the block cache
					req.Events = append(req.Events, ev)
				}
				_, err := c.Append(ctx, req)
				check(err)
			}
		}
		fmt.Printf("filled %d streams with %d events of %d KiB\n", streams, *fill, eventSize>>10)
	case *readAll:
		start, events := time.Now(), 0
		for s := range streams {
			rs, err := c.Read(ctx, &shoalv1.ReadRequest{Stream: stream(s)})
			check(err)
			for {
				p, err := rs.Recv()
				if err == io.EOF {
					break
				}
				check(err)
				events += len(p.Events)
			}
		}
		el := time.Since(start)
		mib := float64(events) * eventSize / (1 << 20)
		fmt.Printf("read %d events (%.0f MiB) through %s in %v: %.0f MiB/s\n", events, mib, *addr, el.Round(time.Millisecond), mib/el.Seconds())
	case *stall > 0:
		before := heapInUse(*httpAddr)
		kind := map[bool]string{true: "subscriptions", false: "reads"}[*follow]
		for i := range *stall {
			_, err := c.Read(ctx, &shoalv1.ReadRequest{Stream: stream(i % streams), Follow: *follow})
			check(err) // never received from: the call stays open until this process exits
		}
		time.Sleep(5 * time.Second)
		after := heapInUse(*httpAddr)
		fmt.Printf("%d stalled %s through %s: heap in use %.0f -> %.0f MiB, %.2f MiB a call\n", *stall, kind, *addr,
			before, after, (after-before)/float64(*stall))
	default:
		fmt.Fprintln(os.Stderr, "give -fill N, -stall N or -readall")
		os.Exit(2)
	}
}

func stream(i int) string { return fmt.Sprint("stalled-", i) }

// heapInUse is the node's heap in use in MiB, after a GC (pprof's heap page runs one).
func heapInUse(httpAddr string) float64 {
	resp, err := http.Get("http://" + httpAddr + "/debug/pprof/heap?gc=1&debug=1")
	check(err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	check(err)
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "# HeapInuse = "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v / (1 << 20)
		}
	}
	fmt.Fprintln(os.Stderr, "no HeapInuse on", httpAddr, "(is pprof served on its HTTP port?)")
	os.Exit(1)
	return 0
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "stalled:", err)
		os.Exit(1)
	}
}

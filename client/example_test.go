package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/node"
)

// startNode starts a one-node shoal cluster in this process (every shard a
// one-voter group) on free loopback ports, with its data in a temporary
// directory. It returns the node's gRPC address and a function that stops
// the node and deletes its data. Real programs dial a running server
// instead, e.g. one started with `shoal server`.
func startNode() (addr string, stop func()) {
	dir, err := os.MkdirTemp("", "shoal-example-")
	if err != nil {
		log.Fatal(err)
	}
	n, err := node.Start(context.Background(), node.Config{
		DataDir:     dir,
		Listen:      "127.0.0.1:0",
		Gossip:      "127.0.0.1:0",
		DisableHTTP: true,
		Name:        "example",
		Shards:      4,
		Replication: 1,
	})
	if err != nil {
		os.RemoveAll(dir)
		log.Fatal(err)
	}
	return n.Addr(), func() {
		n.Close()
		os.RemoveAll(dir)
	}
}

func ExampleDial() {
	addr, stop := startNode()
	defer stop()

	ctx := context.Background()
	// One address is enough; give several so that Dial works while some
	// nodes are down. The client learns the rest of the cluster itself.
	c, err := client.Dial(ctx, []string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	shards, err := c.Shards(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("shards:", shards)
	// Output:
	// shards: 4
}

// A service that may start before its cluster makes its client with New,
// which contacts nothing: the first call waits for the cluster, within its
// context and the retry policy.
func ExampleNew() {
	addr, stop := startNode()
	defer stop()

	c, err := client.New([]string{addr})
	if err != nil {
		log.Fatal(err) // bad addresses or options only
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Append(ctx, "greetings-1", client.NoStream, client.Event{Type: "Greeted"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("version:", res.FirstVersion)
	// Output:
	// version: 0
}

func ExampleClient_Append() {
	addr, stop := startNode()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, []string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// NoStream: create the stream; fails if it already exists.
	res, err := c.Append(ctx, "order-42", client.NoStream,
		client.Event{Type: "OrderPlaced", Data: []byte(`{"total":30}`), ContentType: "application/json"},
		client.Event{Type: "ItemAdded", Data: []byte(`{"sku":"tea"}`), ContentType: "application/json"},
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("created: versions %d..%d\n", res.FirstVersion, res.LastVersion)

	// Exact: append only if version 1 is still the stream's last event
	// (optimistic concurrency). The ID is usually left zero (the client
	// generates one); it is set here to show idempotency.
	paid := client.Event{
		ID:   uuid.MustParse("8f0e7f4c-3c1a-4b0e-9d1e-2f6a7c9b5d01"),
		Type: "OrderPaid",
		Data: []byte(`{"amount":30}`),
	}
	res, err = c.Append(ctx, "order-42", client.Exact(1), paid)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("paid: version %d, duplicate %v\n", res.LastVersion, res.Duplicate)

	// Sending the same event again (say, after a timeout left the outcome
	// unknown) is recognised by its ID: nothing is written twice.
	res, err = c.Append(ctx, "order-42", client.Exact(1), paid)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("resent: version %d, duplicate %v\n", res.LastVersion, res.Duplicate)
	// Output:
	// created: versions 0..1
	// paid: version 2, duplicate false
	// resent: version 2, duplicate true
}

func ExampleClient_Read() {
	addr, stop := startNode()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, []string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for i := range 3 {
		if _, err := c.Append(ctx, "cart-7", client.Any, client.Event{Type: "ItemAdded", Data: fmt.Appendf(nil, `{"n":%d}`, i)}); err != nil {
			log.Fatal(err)
		}
	}

	// Read is an iterator: it fetches pages as the loop advances.
	for ev, err := range c.Read(ctx, "cart-7") {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Stream, ev.Version, ev.Type, string(ev.Data))
	}
	// Newest first:
	for ev, err := range c.Read(ctx, "cart-7", client.FromEnd(), client.Backward(), client.Count(2)) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("backward", ev.Version)
	}
	// Output:
	// cart-7 0 ItemAdded {"n":0}
	// cart-7 1 ItemAdded {"n":1}
	// cart-7 2 ItemAdded {"n":2}
	// backward 2
	// backward 1
}

func ExampleClient_ReadPage() {
	addr, stop := startNode()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, []string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for i := range 5 {
		if _, err := c.Append(ctx, "ledger-1", client.Any, client.Event{Type: "Posted", Data: fmt.Appendf(nil, "%d", i)}); err != nil {
			log.Fatal(err)
		}
	}

	// Page through the stream two events at a time.
	var from uint64
	for {
		page, err := c.ReadPage(ctx, "ledger-1", client.FromVersion(from), client.Count(2))
		if err != nil {
			log.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		fmt.Print("page:")
		for _, ev := range page {
			fmt.Print(" ", ev.Version)
		}
		fmt.Println()
		from = page[len(page)-1].Version + 1
	}
	// Output:
	// page: 0 1
	// page: 2 3
	// page: 4
}

func ExampleClient_Delete() {
	addr, stop := startNode()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, []string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Append(ctx, "session-1", client.NoStream, client.Event{Type: "Started"}); err != nil {
		log.Fatal(err)
	}

	// A soft delete: the stream reads as not found, and may be written again.
	if err := c.Delete(ctx, "session-1", client.Exact(0)); err != nil {
		log.Fatal(err)
	}
	_, err = c.ReadPage(ctx, "session-1")
	fmt.Println("after soft delete, not found:", errors.Is(err, client.ErrStreamNotFound))
	if _, err := c.Append(ctx, "session-1", client.NoStream, client.Event{Type: "Started"}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("recreated")

	// A tombstone: the name can never be used again.
	if err := c.Delete(ctx, "session-1", client.Any, client.Tombstone()); err != nil {
		log.Fatal(err)
	}
	_, err = c.Append(ctx, "session-1", client.Any, client.Event{Type: "Started"})
	fmt.Println("after tombstone, deleted:", errors.Is(err, client.ErrStreamDeleted))
	// Output:
	// after soft delete, not found: true
	// recreated
	// after tombstone, deleted: true
}

func ExampleWrongExpectedVersionError() {
	addr, stop := startNode()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, []string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Append(ctx, "account-9", client.NoStream, client.Event{Type: "Opened"}, client.Event{Type: "Credited"}); err != nil {
		log.Fatal(err)
	}

	// A writer that last saw version 0 loses the race: the stream moved on.
	_, err = c.Append(ctx, "account-9", client.Exact(0), client.Event{Type: "Debited"})
	var wev *client.WrongExpectedVersionError
	if errors.As(err, &wev) {
		fmt.Printf("stream %s: expected %s, actual %d\n", wev.Stream, wev.Expected, wev.Actual)
	}
	fmt.Println(errors.Is(err, client.ErrWrongExpectedVersion))
	// Output:
	// stream account-9: expected version 0, actual 1
	// true
}

func ExampleClient_Read_notFound() {
	addr, stop := startNode()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, []string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	for _, err := range c.Read(ctx, "no-such-stream") {
		if errors.Is(err, client.ErrStreamNotFound) {
			fmt.Println("not found")
			break
		}
		if err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// not found
}

// A subscription: Read with Follow yields the stream's events and then each new one as it is
// committed, until the context ends or the loop breaks.
func ExampleFollow() {
	addr, stop := startNode()
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := client.Dial(ctx, []string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Append(ctx, "cart-7", client.NoStream, client.Event{Type: "CartOpened"}); err != nil {
		log.Fatal(err)
	}
	appended := make(chan error, 1)
	go func() {
		// Appended while the subscriber waits.
		for _, typ := range []string{"ItemAdded", "CheckedOut"} {
			if _, err := c.Append(ctx, "cart-7", client.Any, client.Event{Type: typ}); err != nil {
				appended <- err
				return
			}
		}
		appended <- nil
	}()
	for ev, err := range c.Read(ctx, "cart-7", client.Follow()) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Version, ev.Type)
		if ev.Type == "CheckedOut" {
			break // ends the subscription
		}
	}
	// A subscriber may see an event before its writer has the acknowledgement.
	if err := <-appended; err != nil {
		log.Fatal(err)
	}
	// Output:
	// 0 CartOpened
	// 1 ItemAdded
	// 2 CheckedOut
}

func ExampleClient_ListStreams() {
	addr, stop := startNode()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, []string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	for _, stream := range []string{"order-2", "order-10", "cart-7", "order-1"} {
		if _, err := c.Append(ctx, stream, client.Any, client.Event{Type: "Opened"}); err != nil {
			log.Fatal(err)
		}
	}
	if err := c.Delete(ctx, "order-10", client.Any); err != nil {
		log.Fatal(err)
	}
	// Name order is bytewise, over every shard: order-10 comes before order-2.
	for s, err := range c.ListStreams(ctx, "", client.StreamPrefix("order-"), client.IncludeDeletes()) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %s, %d events\n", s.Name, s.State, s.Events())
	}
	// The version an exact expected version names.
	info, err := c.StreamInfo(ctx, "cart-7")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("cart-7 is at version", info.LastVersion)
	// Output:
	// order-1: live, 1 events
	// order-10: deleted, 0 events
	// order-2: live, 1 events
	// cart-7 is at version 0
}

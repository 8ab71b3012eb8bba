package query_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/query"
)

// startExampleNode starts a one-node shoal cluster in this process (every shard a one-voter
// group) on free loopback ports, with its data in a temporary directory, and returns a client
// dialled to it and a function that closes both and deletes the data. Real programs dial a
// running server instead, e.g. one started with `shoal server`.
func startExampleNode() (*client.Client, func()) {
	dir, err := os.MkdirTemp("", "shoal-example-")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, node.Config{DataDir: dir, Listen: "127.0.0.1:0", Gossip: "127.0.0.1:0",
		DisableHTTP: true, Name: "example", Shards: 4, Replication: 1})
	if err != nil {
		os.RemoveAll(dir)
		log.Fatal(err)
	}
	c, err := client.Dial(ctx, []string{n.Addr()})
	if err != nil {
		n.Close()
		os.RemoveAll(dir)
		log.Fatal(err)
	}
	return c, func() {
		c.Close()
		n.Close()
		os.RemoveAll(dir)
	}
}

// A read model of order totals per customer, kept in the projection's own
// database and queried with Get and Scan.
func ExampleProjection() {
	c, stop := startExampleNode()
	defer stop()
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "shoal-projection")
	defer os.RemoveAll(dir)

	totals := query.HandlerFunc(func(ctx context.Context, b *query.Batch, ev client.RecordedEvent) error {
		key := []byte("total/" + string(ev.Metadata)) // metadata: customer
		v, _, err := b.Get(key)
		if err != nil {
			return err
		}
		sum, _ := strconv.Atoi(string(v))
		amount, _ := strconv.Atoi(string(ev.Data))
		return b.Set(key, []byte(strconv.Itoa(sum+amount)))
	})
	p, err := query.Open(query.Config{Name: "totals", Client: c, Handler: totals,
		Dir: filepath.Join(dir, "totals"), StreamPrefix: "order-", EventTypes: []string{"OrderPlaced"}})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()

	var last client.AppendResult
	for i, o := range []struct{ customer, amount string }{{"ann", "30"}, {"bob", "5"}, {"ann", "12"}} {
		last, err = c.Append(ctx, "order-"+strconv.Itoa(i), client.NoStream,
			client.Event{Type: "OrderPlaced", Data: []byte(o.amount), Metadata: []byte(o.customer)})
		if err != nil {
			panic(err)
		}
		// Wait until this order is in the read model (read-your-writes).
		if err := p.WaitForAppend(ctx, last); err != nil {
			panic(err)
		}
	}
	ann, _ := p.Get([]byte("total/ann"))
	fmt.Printf("ann: %s\n", ann)
	_ = p.Scan([]byte("total/"), func(k, v []byte) error {
		fmt.Printf("%s = %s\n", k, v)
		return nil
	})
	cancel()
	<-done
	// Output:
	// ann: 42
	// total/ann = 42
	// total/bob = 5
}

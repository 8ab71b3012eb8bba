package snapshot_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strconv"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/snapshot"
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

type cart struct{ Items, Total int }

func applyCart(c cart, ev client.RecordedEvent) (cart, error) {
	price, err := strconv.Atoi(string(ev.Data))
	c.Items++
	c.Total += price
	return c, err
}

func ExampleRepository() {
	c, stop := startExampleNode()
	defer stop()
	ctx := context.Background()

	store, err := snapshot.New(c, snapshot.Options{})
	if err != nil {
		panic(err)
	}
	repo, err := snapshot.NewRepository(snapshot.RepositoryConfig[cart]{
		Store:   store,
		Codec:   snapshot.JSONCodec[cart]("cart/json/v1"),
		Initial: func() cart { return cart{} },
		Apply:   applyCart,
		Policy:  snapshot.Policy{Every: 100},
	})
	if err != nil {
		panic(err)
	}
	var events []client.Event
	for i := range 250 {
		events = append(events, client.Event{Type: "ItemAdded", Data: []byte(strconv.Itoa(i % 10))})
	}
	if _, err := c.Append(ctx, "cart-7", client.NoStream, events...); err != nil {
		panic(err)
	}

	for range 2 {
		l, err := repo.Load(ctx, "cart-7")
		if err != nil {
			panic(err)
		}
		fmt.Printf("version %d, from snapshot %v, replayed %d, state %+v\n", l.Version, l.FromSnapshot, l.Replayed, l.State)
	}
	// Output:
	// version 249, from snapshot false, replayed 250, state {Items:250 Total:1125}
	// version 249, from snapshot true, replayed 0, state {Items:250 Total:1125}
}

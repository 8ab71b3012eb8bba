package shard_test

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"

	"github.com/shoaldb/shoal/shard"
)

// Example shows the apply loop a replica runs and a read.
func Example() {
	db, _ := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	defer db.Close()
	s, _ := shard.Open(db, 0, shard.Options{})
	defer s.Close()

	cmd := &shard.AppendCommand{
		Stream:   "order-1",
		Expected: shard.Expected{Kind: shard.ExpectNoStream},
		Events:   []shard.Event{{ID: uuid.New(), Type: "OrderPlaced", Data: []byte(`{"total":42}`)}},
		Time:     1700000000000000000,
	}
	if err := shard.ValidateAppend(cmd); err != nil {
		panic(err)
	}
	data := shard.EncodeAppend(cmd) // proposed through raft

	b := db.NewIndexedBatch()
	res := s.Apply(b, 1, data) // once the entry is committed
	if err := b.Commit(pebble.NoSync); err != nil {
		panic(err)
	}
	b.Close()
	s.Committed()
	fmt.Printf("%+v applied=%d\n", *res.(*shard.AppendResult), s.Applied())

	// The same bytes again are an idempotent retry.
	b = db.NewIndexedBatch()
	res = s.Apply(b, 2, data)
	_ = b.Commit(pebble.NoSync)
	b.Close()
	s.Committed()
	fmt.Printf("%+v\n", *res.(*shard.AppendResult))

	_ = s.ReadStream("order-1", 0, false, false, 0, func(ev *shard.RecordedEvent) error {
		fmt.Println(ev.Stream, ev.Version, ev.Type, string(ev.Data))
		return nil
	})
	// Output:
	// {FirstVersion:0 LastVersion:0 Position:0 LastPosition:0 Duplicate:false} applied=1
	// {FirstVersion:0 LastVersion:0 Position:0 LastPosition:0 Duplicate:true}
	// order-1 0 OrderPlaced {"total":42}
}

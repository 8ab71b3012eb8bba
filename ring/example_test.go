package ring_test

import (
	"fmt"

	"github.com/shoaldb/shoal/ring"
)

func Example() {
	r := ring.New([]ring.Member{
		{ID: 101, Zone: "a"}, {ID: 102, Zone: "b"}, {ID: 103, Zone: "c"},
		{ID: 104, Zone: "a"}, {ID: 105, Zone: "b"}, {ID: 106, Zone: "c"},
	})
	shard := ring.ShardOf("orders-42", 32)
	replicas := r.Replicas(shard, 32, 3)
	fmt.Println(shard < 32, len(replicas))
	// Output: true 3
}

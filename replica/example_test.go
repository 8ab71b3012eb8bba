package replica_test

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/shoaldb/shoal/replica"
)

// counter is a minimal StateMachine: it counts applied commands under its span.
type counter struct {
	n, applied, pending uint64
}

func (c *counter) Apply(b *pebble.Batch, index uint64, data []byte) any {
	c.n++
	c.SetApplied(b, index)
	return c.n
}
func (c *counter) SetApplied(b *pebble.Batch, index uint64) {
	_ = b.Set([]byte("S\x00\x00\x00\x01X"), []byte(fmt.Sprint(index)), nil)
	c.pending = index
}
func (c *counter) Applied() uint64 { return c.applied }
func (c *counter) Committed()      { c.applied = c.pending }
func (c *counter) Span() (lo, hi []byte) {
	return []byte("S\x00\x00\x00\x01"), []byte("S\x00\x00\x00\x02")
}
func (c *counter) Reload() error { return nil }

type noTransport struct{}

func (noTransport) Send([]replica.ShardMessage)       {}
func (noTransport) SendSnapshot(replica.ShardMessage) {}

func Example() {
	fs := vfs.NewMem()
	db, _ := pebble.Open("db", &pebble.Options{FS: fs, FormatMajorVersion: pebble.FormatNewest})
	defer db.Close()
	h, _ := replica.NewHost(replica.Config{NodeID: 1, DB: db, FS: fs, SnapshotDir: "snapshots",
		Transport: noTransport{}})
	defer h.Close()
	g, _ := h.OpenGroup(1, &counter{}, []uint64{1}) // a one-voter group
	for !g.IsLeader() {                             // a single voter elects itself at once
		time.Sleep(time.Millisecond)
	}
	v, err := g.Propose(context.Background(), []byte("hello"))
	fmt.Println(v, err)
	// Output: 1 <nil>
}

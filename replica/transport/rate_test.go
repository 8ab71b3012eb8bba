package transport

import (
	"io"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/shoaldb/shoal/replica"
)

// Config.SnapshotRate paces the compressed bytes a node sends, all its streams together: two
// snapshots of incompressible data go no faster than the rate allows, and arrive intact.
func TestSnapshotRate(t *testing.T) {
	rng := seed(t)
	const rateBytes = 2 << 20
	data := make([]byte, 3<<20)
	for i := range data { // incompressible throughout: the wire carries about len(data)
		data[i] = byte(rng.Uint32())
	}
	dir := newDirectory()
	n1 := startNode(t, 1, "c", dir, func(c *Config) { c.SnapshotRate = rateBytes; c.SnapshotChunkSize = 256 << 10 })
	n2 := startNode(t, 2, "c", dir, nil)
	n3 := startNode(t, 3, "c", dir, nil)
	n1.rec.writeSnap = func(_ uint32, _ *pb.Snapshot, w io.Writer) error { // two at once: rng is not theirs
		_, err := w.Write(data)
		return err
	}
	got := make(chan int, 2)
	receive := func(_ replica.ShardMessage, r io.Reader) error {
		n, err := io.Copy(io.Discard, r)
		got <- int(n)
		return err
	}
	n2.rec.receiveSnap, n3.rec.receiveSnap = receive, receive
	start := time.Now()
	n1.tr.SendSnapshot(snapMsg(7, 1, 2, 42))
	n1.tr.SendSnapshot(snapMsg(8, 1, 3, 43))
	for range 2 {
		select {
		case n := <-got:
			if n != len(data) {
				t.Fatalf("received %d bytes, want %d", n, len(data))
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the snapshots did not arrive")
		}
	}
	took := time.Since(start)
	wire := counterValue(n1.tr.Metrics().SnapshotBytes.WithLabelValues("sent"))
	// The limiter's burst lets one second's worth go at once; the rest waits its turn.
	if least := time.Duration((wire - rateBytes) / rateBytes * float64(time.Second)); took < least {
		t.Fatalf("%.0f bytes sent in %v at %d bytes/s, want at least %v", wire, took, rateBytes, least)
	}
	t.Logf("%.0f bytes sent in %v", wire, took)
}

func TestSnapshotRateValidated(t *testing.T) {
	cfg := Config{NodeID: 1, Resolve: func(uint64) (string, bool) { return "", false }, SnapshotRate: MinSnapshotRate}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "MaxSnapshotSends") {
		t.Fatalf("a rate of %d for the default 2 sends: %v, want refused naming MaxSnapshotSends", MinSnapshotRate, err)
	}
	cfg.MaxSnapshotSends = 1
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

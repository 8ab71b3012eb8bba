package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoaldb/shoal/client"
)

// TestKill9UnderLoad runs concurrent writers against one real server
// process, sends it SIGKILL twice mid-load, restarts it each time, and checks
// that writes resume, that nothing acknowledged was lost or duplicated, and
// that the server accepts appends afterwards.
func TestKill9UnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	seed := testSeed(t)
	s := newServer(t, "n1", "z1", nil, "--shards", "8")
	s.start()
	s.waitReady(30 * time.Second)

	c, err := client.Dial(context.Background(), []string{s.grpcAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ld := startLoad(c, seed, fmt.Sprintf("e2e-%d", seed%1000), 24, 8)
	defer ld.stop()
	ld.l.waitAcks(t, 200, 20*time.Second, "before the first kill")
	for round := range 2 {
		time.Sleep(time.Second)
		t.Logf("round %d: kill -9 after %d acknowledged appends", round, ld.l.count())
		s.kill()
		killed := time.Now()
		time.Sleep(200 * time.Millisecond)
		s.start()
		s.waitReady(30 * time.Second)
		ready := time.Since(killed)
		// Writes must resume: the restart is pointless if the writers are
		// still stuck when the next kill comes.
		resumed := ld.l.waitAcks(t, 100, 20*time.Second, fmt.Sprintf("round %d: after the restart", round))
		t.Logf("round %d: ready %v after the kill, 100 more appends %v later", round, ready.Round(time.Millisecond), resumed.Round(time.Millisecond))
	}
	time.Sleep(time.Second)
	if !ld.finish(t) {
		t.Log(s.tail())
		return
	}
	verify(t, c, ld.l)

	// The server still takes new appends.
	res, err := c.Append(context.Background(), fmt.Sprintf("e2e-after-%d", seed), client.NoStream, client.Event{Type: "e2e.After", Data: []byte(`{}`)})
	if err != nil || res.LastVersion != 0 {
		t.Fatalf("append after the kills: %+v, %v", res, err)
	}
}

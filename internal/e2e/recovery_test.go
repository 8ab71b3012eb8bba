package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/grpcopt"
)

// TestClusterRecoveryFromBackup runs writers against a three-process cluster (replication 3),
// stops them once every replica holds what was acknowledged, backs every node up with
// `shoal cluster backup`, and SIGKILLs all three. A server started on n1's backup with
// --restore --new-cluster, and two new servers joining it, make a cluster again: every shard
// back to three identical replicas, every acknowledged event present once at its version.
func TestClusterRecoveryFromBackup(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const shards = 8
	cl, ld, ok := loadedThenSettled(t, shards, "e2e-dr", 300)
	if !ok {
		return
	}
	cl.backup("dr")
	for _, s := range cl.servers {
		s.kill()
	}

	r1 := newServer(t, "n1", "z1", nil, "--restore", "--new-cluster")
	r1.dataDir = filepath.Join(cl.servers[0].dataDir, "backups", "dr")
	r1.start()
	r1.waitReady(30 * time.Second)
	rc := &cluster{t: t, shards: shards, servers: []*server{r1}}
	for i := 2; i <= 3; i++ {
		s := newServer(t, fmt.Sprintf("n%d", i+2), fmt.Sprintf("z%d", i), []string{r1.gossip})
		s.start()
		s.waitReady(30 * time.Second)
		rc.servers = append(rc.servers, s)
	}
	c2 := rc.dial()
	_, took := rc.waitReplicated(c2, 60*time.Second)
	t.Logf("the recovered cluster has 3 voters per shard %v after its new nodes started", took.Round(time.Millisecond))
	verify(t, c2, ld.l)
	if t.Failed() {
		t.Log(rc.tails())
		return
	}
	rc.waitReplicasIdentical(ld.l.acks, 30*time.Second)
}

// loadedThenSettled starts three servers with shards shards, runs writers (streams named after
// prefix) until at least acks appends were acknowledged, stops them, and waits until every
// replica holds what was acknowledged. ok is false when the writers failed (the test failed,
// with the servers' logs).
func loadedThenSettled(t *testing.T, shards int, prefix string, acks int) (cl *cluster, ld *load, ok bool) {
	t.Helper()
	seed := testSeed(t)
	cl = startCluster(t, 3, shards)
	c := cl.dial()
	cl.waitReplicated(c, 60*time.Second)
	ld = startLoad(c, seed, fmt.Sprintf("%s-%d", prefix, seed%1000), 8, 8)
	t.Cleanup(ld.stop)
	ld.l.waitAcks(t, acks, 20*time.Second, "before the backups")
	if !ld.finish(t) {
		t.Log(cl.tails())
		return cl, ld, false
	}
	cl.waitReplicasIdentical(ld.l.acks, 30*time.Second)
	return cl, ld, true
}

// backup backs every server of cl up with `shoal cluster backup --name name`.
func (cl *cluster) backup(name string) {
	cl.t.Helper()
	out, err := exec.Command(binPath, "cluster", "backup", "--name", name, "--server", cl.servers[0].grpcAddr).CombinedOutput()
	if err != nil || strings.Count(string(out), " written to ") != 3 {
		cl.t.Fatalf("shoal cluster backup: %v\n%s", err, out)
	}
}

// TestRestoreIntoRunningClusterRefused: a real server started on its node's backup
// (--restore) after the cluster went on exits with status 1, saying so, and keeps
// backup.json; the two other servers serve on.
func TestRestoreIntoRunningClusterRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	cl := startCluster(t, 3, 8)
	c := cl.dial()
	cl.waitReplicated(c, 60*time.Second)
	out, err := exec.Command(binPath, "node", "backup", "n3", "--name", "b", "--server", cl.servers[0].grpcAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("shoal node backup n3: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const streams = 16
	for i := range streams { // the cluster goes on: every shard's log grows
		if _, err := c.Append(ctx, fmt.Sprintf("after-%d", i), client.NoStream, client.Event{Type: "After"}); err != nil {
			t.Fatal(err)
		}
	}
	n3 := cl.byName("n3")
	n3.kill()

	// n3 again, on its backup, with its addresses and flags.
	r := newServer(t, "n3", "z3", n3.join, "--restore")
	r.dataDir = filepath.Join(n3.dataDir, "backups", "b")
	r.grpcAddr, r.gossip, r.httpAddr = n3.grpcAddr, n3.gossip, n3.httpAddr
	r.start()
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the server on n3's backup still runs after 60 s:\n%s", r.tail())
	}
	if code := r.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(r.tail(), "the cluster went on after it") {
		t.Fatalf("the server on n3's backup exited with %d; want 1, saying the cluster went on:\n%s", code, r.tail())
	}
	if _, err := os.Stat(filepath.Join(r.dataDir, "backup.json")); err != nil {
		t.Fatalf("backup.json after the refused restore: %v", err)
	}
	for i := range streams {
		n := 0
		for _, err := range c.Read(ctx, fmt.Sprintf("after-%d", i)) {
			if err != nil {
				t.Fatalf("read after-%d: %v", i, err)
			}
			n++
		}
		if n != 1 {
			t.Fatalf("after-%d: %d events, want 1", i, n)
		}
	}
}

// TestWholeClusterRestore: the documented whole-cluster restore with real servers. Writers run
// and stop; once every replica holds what was acknowledged and the nodes' raft logs stay the
// same (asked with RaftPoints before and after), `shoal cluster backup` backs all three up;
// all three are SIGKILLed and started again on their backups with --restore, each waiting for
// the others; every acknowledged event is there and the replicas end identical.
func TestWholeClusterRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const shards = 8
	cl, ld, ok := loadedThenSettled(t, shards, "e2e-wr", 200)
	if !ok {
		return
	}

	name := ""
	for attempt := 0; name == "" && attempt < 20; attempt++ {
		before, ok := cl.raftPoints(shards)
		if !ok {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		n := fmt.Sprintf("idle-%d", attempt)
		cl.backup(n)
		if after, ok := cl.raftPoints(shards); ok && after == before {
			name = n
		}
	}
	if name == "" {
		t.Fatal("the nodes' raft logs never stayed the same across a cluster backup")
	}
	for _, s := range cl.servers {
		s.kill()
	}

	rc := &cluster{t: t, shards: shards}
	for _, s := range cl.servers {
		r := newServer(t, s.name, s.zone, s.join, "--restore")
		r.dataDir = filepath.Join(s.dataDir, "backups", name)
		r.grpcAddr, r.gossip, r.httpAddr = s.grpcAddr, s.gossip, s.httpAddr
		r.start() // each waits for the others before it opens its shards
		rc.servers = append(rc.servers, r)
	}
	for _, r := range rc.servers {
		r.waitReady(60 * time.Second)
	}
	c2 := rc.dial()
	verify(t, c2, ld.l)
	if t.Failed() {
		t.Log(rc.tails())
		return
	}
	rc.waitReplicasIdentical(ld.l.acks, 30*time.Second)
}

// raftPoints asks every server of cl where its replicas of the shards stand and returns them,
// when all servers hold the same (for every shard, each holding a replica of it).
func (cl *cluster) raftPoints(shards int) (string, bool) {
	ids := make([]uint32, shards)
	for i := range ids {
		ids[i] = uint32(i)
	}
	var ref string
	for i, s := range cl.servers {
		conn, err := grpc.NewClient(s.grpcAddr, grpcopt.DialOptions()...)
		if err != nil {
			cl.t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := shoalv1.NewClusterClient(conn).RaftPoints(ctx, &shoalv1.RaftPointsRequest{Shards: ids})
		cancel()
		conn.Close()
		if err != nil || len(resp.GetCurrent()) != shards {
			return "", false
		}
		var b strings.Builder
		for _, p := range resp.GetCurrent() {
			fmt.Fprintf(&b, "%d:%d/%d/%d ", p.GetShard(), p.GetTerm(), p.GetLastIndex(), p.GetLastTerm())
		}
		if i == 0 {
			ref = b.String()
		} else if b.String() != ref {
			return "", false
		}
	}
	return ref, true
}

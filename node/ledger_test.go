package node_test

// The ledger: what a multi-node test wrote, kept to be read back after its fault. Checks of
// placement alone (voters, learners, zones) pass when a replica move lost data, e.g. a
// snapshot to a learner that left events out, promoted before the old voters were removed.
// A test that records its writes here reads them back after the move, linearizably
// (checkWritten), and from each voter's own replica (waitVotersEqual), and fails on any event
// missing, moved, changed or added.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/grpcopt"
	"github.com/shoaldb/shoal/internal/testnode"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/ring"
)

// maxMismatches is how many differences a check lists before it gives the count of the rest.
const maxMismatches = 20

// written is one event a test had acknowledged: where it is and what it holds.
type written struct {
	stream  string
	version uint64
	id      uuid.UUID
	typ     string
	data    []byte
}

func (w written) String() string {
	return fmt.Sprintf("%s@%d id %s type %s data %q", w.stream, w.version, w.id, w.typ, w.data)
}

// ledger records what a test wrote, stream by stream in version order. Safe for concurrent
// use.
type ledger struct {
	mu      sync.Mutex
	streams map[string][]written
}

// ledgers holds each running test's ledger by its testing.TB, so that placementAppendRead,
// which many tests call with no ledger of their own to pass, records into the test's.
var ledgers sync.Map

// ledgerOf returns t's ledger, made at the first call and forgotten when t ends.
func ledgerOf(t testing.TB) *ledger {
	l, loaded := ledgers.LoadOrStore(t, &ledger{streams: map[string][]written{}})
	if !loaded {
		t.Cleanup(func() { ledgers.Delete(t) })
	}
	return l.(*ledger)
}

// add records evs, acknowledged in stream at versions first, first+1, ….
func (l *ledger) add(stream string, first uint64, evs []*shoalv1.EventData) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, ev := range evs {
		id, _ := uuid.FromBytes(ev.Id)
		l.streams[stream] = append(l.streams[stream], written{stream: stream, version: first + uint64(i),
			id: id, typ: ev.Type, data: slices.Clone(ev.Data)})
	}
}

// byStream returns a copy of the ledger, by stream.
func (l *ledger) byStream() map[string][]written {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]written, len(l.streams))
	for s, evs := range l.streams {
		out[s] = slices.Clone(evs)
	}
	return out
}

// inShard returns the events recorded in streams of shard (of shards), by event ID.
func (l *ledger) inShard(shard, shards uint32) map[uuid.UUID]written {
	out := map[uuid.UUID]written{}
	for s, evs := range l.byStream() {
		if ring.ShardOf(s, shards) != shard {
			continue
		}
		for _, w := range evs {
			out[w.id] = w
		}
	}
	return out
}

// mismatches collects differences between what was written and what was read, and fails
// the test once, with the first maxMismatches of them and the count of the rest.
type mismatches struct {
	n     int
	first []string
}

func (m *mismatches) addf(format string, args ...any) {
	if m.n++; m.n <= maxMismatches {
		m.first = append(m.first, fmt.Sprintf(format, args...))
	}
}

func (m *mismatches) fail(t testing.TB, what string) {
	t.Helper()
	if m.n == 0 {
		return
	}
	more := ""
	if m.n > len(m.first) {
		more = fmt.Sprintf("\n… and %d more", m.n-len(m.first))
	}
	t.Fatalf("%s: %d differences from what was written:\n%s%s", what, m.n, strings.Join(m.first, "\n"), more)
}

// diffStream adds to m every difference between a stream's events as written and as read:
// each written event at its version (dense from 0), with its ID, type and data, and nothing
// else.
func diffStream(m *mismatches, stream string, want []written, got []*shoalv1.RecordedEvent) {
	for i := range max(len(want), len(got)) {
		switch {
		case i >= len(got):
			m.addf("%s: missing %v", stream, want[i])
			continue
		case i >= len(want):
			m.addf("%s: unexpected event at index %d: %v", stream, i, got[i])
			continue
		}
		w, g := want[i], got[i]
		gid, _ := uuid.FromBytes(g.Id)
		if g.Stream != stream || g.Version != uint64(i) || g.Version != w.version || gid != w.id ||
			g.Type != w.typ || !bytes.Equal(g.Data, w.data) {
			m.addf("%s index %d: read %s@%d id %s type %s data %q, written %v", stream, i,
				g.Stream, g.Version, gid, g.Type, g.Data, w)
		}
	}
}

// readStream reads stream to its end through conn (a linearizable read), asking again while
// the answer is UNAVAILABLE (an election on a loaded machine) until ctx ends.
func readStream(ctx context.Context, conn *grpc.ClientConn, stream string) ([]*shoalv1.RecordedEvent, error) {
	for {
		got, err := readStreamOnce(ctx, conn, stream)
		if err == nil {
			return got, nil
		}
		if st, _ := status.FromError(err); st.Code() != codes.Unavailable || ctx.Err() != nil {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readStreamOnce(ctx context.Context, conn *grpc.ClientConn, stream string) ([]*shoalv1.RecordedEvent, error) {
	rs, err := shoalv1.NewStreamsClient(conn).Read(ctx, &shoalv1.ReadRequest{Stream: stream})
	var got []*shoalv1.RecordedEvent
	for err == nil {
		var r *shoalv1.ReadResponse
		if r, err = rs.Recv(); err == nil {
			got = append(got, r.Events...)
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return got, err
}

// checkWritten reads back, linearizably through node from, every stream t's ledger records,
// and fails unless each holds exactly the events written to it: every one once, at its
// version, with its ID, type and data, and nothing else.
func checkWritten(t *testing.T, c *testnode.Cluster, from int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn := c.Dial(t, from)
	streams := ledgerOf(t).byStream()
	var m mismatches
	for _, s := range slices.Sorted(maps.Keys(streams)) {
		got, err := readStream(ctx, conn, s)
		if err != nil {
			t.Fatalf("read %s via node %d: %v", s, from+1, err)
		}
		diffStream(&m, s, streams[s], got)
	}
	m.fail(t, fmt.Sprintf("the %d streams written, read through node %d", len(streams), from+1))
}

// dialNode returns a gRPC connection to n, closed at the end of the test: n may be a node
// restarted outside the cluster (startAgain), which c.Dial does not know.
func dialNode(t testing.TB, n *node.Node) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(n.Addr(), grpcopt.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// runningNodes returns c's nodes that have not been stopped.
func runningNodes(c *testnode.Cluster) []*node.Node {
	var out []*node.Node
	for i, n := range c.Nodes {
		if c.Running(i) {
			out = append(out, n)
		}
	}
	return out
}

// waitVotersEqual waits until, in every shard, the voters its leader among nodes names hold
// identical logs in their own replicas (local_only reads, never forwarded: a voter without
// the replica fails), then fails unless that log holds exactly the events t's ledger records
// in the shard: each once, at its version, with its ID, type and data, and nothing else.
// Nothing but the ledger's writer may write to the cluster's shards.
func waitVotersEqual(t *testing.T, nodes []*node.Node) {
	t.Helper()
	var state map[uint32]testnode.ShardState
	testnode.WaitFor(t, placementWait, "a leader for every shard", func() string {
		state = ledShards(nodes)
		return everyLed(nodes, func(testnode.ShardState) string { return "" })
	})
	byID := map[uint64]*node.Node{}
	for _, n := range nodes {
		byID[n.ID()] = n
	}
	conns := map[uint64]*grpc.ClientConn{}
	l := ledgerOf(t)
	var m mismatches
	for sh := range uint32(placementShards) {
		// The voters as the shard's leader names them now, once they are all running nodes
		// (placement may still be replacing a stopped one).
		s := state[sh]
		testnode.WaitFor(t, placementWait, fmt.Sprintf("shard %d's voters all running", sh), func() string {
			s = ledShards(nodes)[sh]
			if len(s.Voters) == 0 {
				return fmt.Sprintf("shard %d has no leader among the running nodes", sh)
			}
			for _, id := range s.Voters {
				if byID[id] == nil {
					return fmt.Sprintf("%v: voter %d is none of the running nodes", s, id)
				}
			}
			return ""
		})
		voterConns := map[string]*grpc.ClientConn{}
		for _, id := range s.Voters {
			n := byID[id]
			if conns[id] == nil {
				conns[id] = dialNode(t, n)
			}
			voterConns[fmt.Sprintf("%s (%d)", n.Name(), id)] = conns[id]
		}
		want := l.inShard(sh, placementShards)
		log := waitReplicasEqual(t, sh, len(want), voterConns)
		seen := map[uuid.UUID]bool{}
		for _, ev := range log {
			id, _ := uuid.FromBytes(ev.Id)
			w, ok := want[id]
			switch {
			case !ok:
				m.addf("shard %d: unexpected event %v", sh, ev)
			case seen[id]:
				m.addf("shard %d: %v held twice", sh, w)
			case ev.Stream != w.stream || ev.Version != w.version || ev.Type != w.typ || !bytes.Equal(ev.Data, w.data):
				m.addf("shard %d: replicas hold %s@%d type %s data %q, written %v", sh, ev.Stream, ev.Version, ev.Type, ev.Data, w)
			}
			seen[id] = true
		}
		for id, w := range want {
			if !seen[id] {
				m.addf("shard %d: replicas lack %v", sh, w)
			}
		}
	}
	m.fail(t, "every voter's replica")
}

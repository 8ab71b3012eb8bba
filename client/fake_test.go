package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// fakeCluster is a fault-injecting test double of shoal's gRPC API for the
// client's own tests: every fakeNode serves the same in-memory store (as if
// servers forwarded to the leader), reports the shared topology, and runs
// each test's fault hook before handling a call.
type fakeCluster struct {
	t      *testing.T
	shards uint32
	nodes  []*fakeNode

	mu      sync.Mutex
	leader  uint64          // node ID leading every shard; 0 = unknown
	term    uint64          // the leader's term (ShardInfo.Term)
	dead    map[uint64]bool // nodes the topology names dead
	streams map[string][]*shoalv1.RecordedEvent
	pos     map[uint32]uint64 // next position by shard
	pages   int               // events per Read page
	// unary makes the nodes answer AppendPipeline Unimplemented, as a server
	// from before the pipeline would.
	unary bool
	// id is the cluster ID the topology names ("" = "fake").
	id string
	// decommissioning is the one node's drain Recommission cancels.
	decommissioning bool
	// The shards' retention policies and formats (retention_test.go; a shard absent from
	// formats is at format 6), and a refusal of SetRetention by shard (nil: none).
	policies       map[uint32][]*shoalv1.RetentionPolicy
	formats        map[uint32]uint64
	retentionFault func(shard uint32) error
	// retentionReadFault, if set, fails a Retention read of a shard (nil: none).
	retentionReadFault func(shard uint32) error
}

type fakeNode struct {
	shoalv1.UnimplementedStreamsServer
	shoalv1.UnimplementedClusterServer
	c    *fakeCluster
	id   uint64
	addr string
	srv  *grpc.Server

	mu       sync.Mutex
	calls    map[string]int
	fault    func(ctx context.Context, method string, n int) error // n: the method's 1-based call count
	itemHook func(k int) error                                     // AppendPipeline, per item read (setItemFault)
	reqs     []any                                                 // every request received, in order
	// readFault, if set, is asked after each page of a Read or ReadShard
	// whether to fail the stream there.
	readFault func(page int) error
	// follow, if set, serves a Read with follow (without it the node answers as a server
	// from before subscriptions, ending the read at the stream's end).
	follow func(req *shoalv1.ReadRequest, srv grpc.ServerStreamingServer[shoalv1.ReadResponse]) error
	// lag, if set, is the leader and term this node's Topology names for every shard instead
	// of the cluster's: a node that has not heard of the latest election yet.
	lag *[2]uint64
	// unheard, if set, names the nodes this node's Topology lists without addresses, dead: a
	// node gossip has not brought it news of (a member that joined since), yet a voter.
	unheard map[uint64]bool
}

func newFakeCluster(t *testing.T, nodes int, shards uint32) *fakeCluster {
	t.Helper()
	c := &fakeCluster{t: t, shards: shards, leader: 1, streams: map[string][]*shoalv1.RecordedEvent{}, pos: map[uint32]uint64{}, pages: 10}
	for i := range nodes {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		n := &fakeNode{c: c, id: uint64(i + 1), addr: lis.Addr().String(), srv: grpc.NewServer(), calls: map[string]int{}}
		shoalv1.RegisterStreamsServer(n.srv, n)
		shoalv1.RegisterClusterServer(n.srv, n)
		go n.srv.Serve(lis)
		t.Cleanup(n.srv.Stop)
		c.nodes = append(c.nodes, n)
	}
	return c
}

func (c *fakeCluster) setLeader(id uint64) { c.mu.Lock(); c.leader = id; c.mu.Unlock() }

// setDead makes the topology name node id dead, as gossip does a node that stopped answering.
func (c *fakeCluster) setDead(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead == nil {
		c.dead = map[uint64]bool{}
	}
	c.dead[id] = true
}

func (n *fakeNode) setFault(f func(ctx context.Context, method string, n int) error) {
	n.mu.Lock()
	n.fault = f
	n.mu.Unlock()
}

// setReadFault sets the node's readFault (nil: none).
func (n *fakeNode) setReadFault(f func(page int) error) {
	n.mu.Lock()
	n.readFault = f
	n.mu.Unlock()
}

func (n *fakeNode) count(method string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls[method]
}

// enter records a call and runs the fault hook.
func (n *fakeNode) enter(ctx context.Context, method string, req any) error {
	n.mu.Lock()
	n.calls[method]++
	k := n.calls[method]
	n.reqs = append(n.reqs, req)
	f := n.fault
	n.mu.Unlock()
	if f != nil {
		return f(ctx, method, k)
	}
	return nil
}

func (n *fakeNode) requests() []any {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]any(nil), n.reqs...)
}

// statusWith builds a status error carrying one detail.
func statusWith(code codes.Code, msg string, detail protoadapt.MessageV1) error {
	st, err := status.New(code, msg).WithDetails(detail)
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func unavailable() error { return status.Error(codes.Unavailable, "fake: node unavailable") }

func notLeader(to *fakeNode) error {
	return statusWith(codes.Unavailable, "fake: not leader", &shoalv1.NotLeader{Shard: 0, LeaderId: to.id, LeaderAddr: to.addr})
}

func (n *fakeNode) Topology(ctx context.Context, req *shoalv1.TopologyRequest) (*shoalv1.TopologyResponse, error) {
	if err := n.enter(ctx, "Topology", req); err != nil {
		return nil, err
	}
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &shoalv1.TopologyResponse{Settings: &shoalv1.ClusterSettings{ClusterId: cmp.Or(c.id, "fake"), Shards: c.shards, Replication: uint32(len(c.nodes))}}
	var voters []uint64
	n.mu.Lock()
	unheard := n.unheard
	n.mu.Unlock()
	for _, m := range c.nodes {
		if unheard[m.id] {
			resp.Nodes = append(resp.Nodes, &shoalv1.NodeInfo{Id: m.id})
		} else {
			resp.Nodes = append(resp.Nodes, &shoalv1.NodeInfo{Id: m.id, Name: fmt.Sprintf("n%d", m.id), GrpcAddr: m.addr, Alive: !c.dead[m.id]})
		}
		voters = append(voters, m.id)
	}
	leader, term := c.leader, c.term
	n.mu.Lock()
	if n.lag != nil {
		leader, term = n.lag[0], n.lag[1]
	}
	n.mu.Unlock()
	for s := range c.shards {
		resp.Shards = append(resp.Shards, &shoalv1.ShardInfo{Shard: s, LeaderId: leader, Term: term, Voters: voters})
	}
	return resp, nil
}

func (n *fakeNode) Status(ctx context.Context, req *shoalv1.StatusRequest) (*shoalv1.StatusResponse, error) {
	if err := n.enter(ctx, "Status", req); err != nil {
		return nil, err
	}
	return &shoalv1.StatusResponse{NodeId: n.id, Topology: &shoalv1.TopologyResponse{
		Settings: &shoalv1.ClusterSettings{ClusterId: n.c.id, Shards: n.c.shards}}}, nil
}

func (n *fakeNode) Decommission(ctx context.Context, req *shoalv1.DecommissionRequest) (*shoalv1.DecommissionResponse, error) {
	if err := n.enter(ctx, "Decommission", req); err != nil {
		return nil, err
	}
	return &shoalv1.DecommissionResponse{}, nil
}

// Recommission cancels the drain whatever the fault: a fault is an answer lost on the way.
func (n *fakeNode) Recommission(ctx context.Context, req *shoalv1.RecommissionRequest) (*shoalv1.RecommissionResponse, error) {
	err := n.enter(ctx, "Recommission", req)
	n.c.mu.Lock()
	was := n.c.decommissioning
	n.c.decommissioning = false
	n.c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &shoalv1.RecommissionResponse{WasDecommissioning: was}, nil
}

// AppendPipeline answers each item with what Append answers (faults
// included), concurrently, as the server does.
func (n *fakeNode) AppendPipeline(stream shoalv1.Streams_AppendPipelineServer) error {
	n.c.mu.Lock()
	unary := n.c.unary
	n.c.mu.Unlock()
	if unary {
		return status.Error(codes.Unimplemented, "unknown method AppendPipeline")
	}
	n.mu.Lock()
	n.calls["AppendPipeline"]++
	n.mu.Unlock()
	var mu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	cancels := map[uint64]context.CancelFunc{}
	ended := false
	for {
		b, err := stream.Recv()
		if err != nil {
			return err
		}
		mu.Lock()
		for _, id := range b.Cancel {
			if cancel := cancels[id]; cancel != nil {
				// Counted before the cancel: the cancelled call may
				// report to the test before this loop runs again.
				n.mu.Lock()
				n.calls["cancel"]++
				n.mu.Unlock()
				cancel()
			}
		}
		mu.Unlock()
		for _, it := range b.Items {
			if err := n.itemFault(); err != nil {
				mu.Lock()
				ended = true // items in flight are applied, and not answered
				mu.Unlock()
				return err
			}
			ctx, cancel := context.WithCancel(stream.Context())
			if it.TimeoutMs > 0 {
				ctx, cancel = context.WithTimeout(stream.Context(), time.Duration(it.TimeoutMs)*time.Millisecond)
			}
			mu.Lock()
			cancels[it.Id] = cancel
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer cancel()
				resp, err := n.Append(ctx, it.Request)
				r := &shoalv1.AppendItemResult{Id: it.Id, Response: resp}
				if err != nil {
					r = &shoalv1.AppendItemResult{Id: it.Id, Error: shoalv1.ItemStatusOf(err)}
				}
				mu.Lock()
				defer mu.Unlock()
				if !ended {
					stream.Send(&shoalv1.AppendResults{Results: []*shoalv1.AppendItemResult{r}})
				}
			}()
		}
	}
}

// setItemFault sets the hook AppendPipeline runs for the k-th item it reads (from 1, over all
// its streams): an error ends the stream with it.
func (n *fakeNode) setItemFault(f func(k int) error) {
	n.mu.Lock()
	n.itemHook = f
	n.mu.Unlock()
}

func (n *fakeNode) itemFault() error {
	n.mu.Lock()
	n.calls["AppendPipeline.item"]++
	k := n.calls["AppendPipeline.item"]
	f := n.itemHook
	n.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(k)
}

func (n *fakeNode) Append(ctx context.Context, req *shoalv1.AppendRequest) (*shoalv1.AppendResponse, error) {
	if err := n.enter(ctx, "Append", req); err == errLoseAck {
		if _, err := n.apply(req); err != nil {
			return nil, err
		}
		return nil, unavailable()
	} else if err != nil {
		return nil, err
	}
	return n.apply(req)
}

// errLoseAck, returned by a fault hook for Append or Delete, makes the node apply the
// write and then answer Unavailable, as if the acknowledgement was lost.
var errLoseAck = errors.New("fake: lose the acknowledgement")

func (n *fakeNode) apply(req *shoalv1.AppendRequest) (*shoalv1.AppendResponse, error) {
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	evs, exists := c.streams[req.Stream]
	// Idempotency (simplified): the batch's first ID already stored.
	for _, e := range evs {
		if string(e.Id) == string(req.Events[0].Id) {
			return &shoalv1.AppendResponse{FirstVersion: e.Version, LastVersion: e.Version + uint64(len(req.Events)) - 1, Position: e.Position, Duplicate: true}, nil
		}
	}
	var last uint64
	if exists {
		last = uint64(len(evs)) - 1
	}
	ok := true
	switch exp := req.GetExpected(); exp.GetKind() {
	case shoalv1.ExpectedVersion_KIND_NO_STREAM:
		ok = !exists
	case shoalv1.ExpectedVersion_KIND_EXISTS:
		ok = exists
	case shoalv1.ExpectedVersion_KIND_EXACT:
		ok = exists && last == exp.GetVersion()
	}
	if !ok {
		return nil, statusWith(codes.FailedPrecondition, "fake: wrong expected version", &shoalv1.WrongExpectedVersion{
			Stream: req.Stream, Expected: req.Expected, StreamExists: exists, ActualVersion: last,
		})
	}
	first := uint64(len(evs))
	shard := uint32(0)
	pos := c.pos[shard]
	for i, e := range req.Events {
		evs = append(evs, &shoalv1.RecordedEvent{
			Stream: req.Stream, Version: first + uint64(i), Id: e.Id, Type: e.Type, Data: e.Data,
			Metadata: e.Metadata, ContentType: e.ContentType, CreatedUnixNano: time.Now().UnixNano(),
			Shard: shard, Position: pos + uint64(i),
		})
	}
	c.streams[req.Stream] = evs
	c.pos[shard] = pos + uint64(len(req.Events))
	return &shoalv1.AppendResponse{Shard: shard, FirstVersion: first, LastVersion: uint64(len(evs)) - 1, Position: pos}, nil
}

func (n *fakeNode) Delete(ctx context.Context, req *shoalv1.DeleteRequest) (*shoalv1.DeleteResponse, error) {
	err := n.enter(ctx, "Delete", req)
	if err != nil && err != errLoseAck {
		return nil, err
	}
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.streams[req.Stream]; !ok {
		return nil, statusWith(codes.NotFound, "fake: stream not found", &shoalv1.StreamNotFound{Stream: req.Stream})
	}
	delete(c.streams, req.Stream)
	if err == errLoseAck {
		return nil, unavailable()
	}
	return &shoalv1.DeleteResponse{}, nil
}

// Truncate removes the stream's events before req.Before, keeping the last (the fake keeps a
// stream's events from version 0, so a truncated event is one with an empty type).
func (n *fakeNode) Truncate(ctx context.Context, req *shoalv1.TruncateRequest) (*shoalv1.TruncateResponse, error) {
	err := n.enter(ctx, "Truncate", req)
	if err != nil && err != errLoseAck {
		return nil, err
	}
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	evs, ok := c.streams[req.Stream]
	if !ok {
		return nil, statusWith(codes.NotFound, "fake: stream not found", &shoalv1.StreamNotFound{Stream: req.Stream})
	}
	last := uint64(len(evs)) - 1
	if exp := req.GetExpected(); exp.GetKind() == shoalv1.ExpectedVersion_KIND_EXACT && exp.GetVersion() != last {
		return nil, statusWith(codes.FailedPrecondition, "fake: wrong expected version", &shoalv1.WrongExpectedVersion{
			Stream: req.Stream, Expected: req.Expected, StreamExists: true, ActualVersion: last,
		})
	}
	start := min(req.Before, last)
	for _, e := range evs[:start] {
		e.Type = ""
	}
	if err == errLoseAck {
		return nil, status.Error(codes.Internal, "fake: the answer was lost")
	}
	return &shoalv1.TruncateResponse{Start: start}, nil
}

// Read serves the stream in pages of c.pages events.
func (n *fakeNode) Read(req *shoalv1.ReadRequest, srv grpc.ServerStreamingServer[shoalv1.ReadResponse]) error {
	if err := n.enter(srv.Context(), "Read", req); err != nil {
		return err
	}
	n.mu.Lock()
	follow := n.follow
	n.mu.Unlock()
	if req.Follow && follow != nil {
		return follow(req, srv)
	}
	c := n.c
	c.mu.Lock()
	all, ok := c.streams[req.Stream]
	all = append([]*shoalv1.RecordedEvent(nil), all...)
	pages := c.pages
	c.mu.Unlock()
	if !ok {
		return statusWith(codes.NotFound, "fake: stream not found", &shoalv1.StreamNotFound{Stream: req.Stream})
	}
	var sel []*shoalv1.RecordedEvent
	if req.Backward {
		from := int64(req.FromVersion)
		if req.FromEnd || from >= int64(len(all)) {
			from = int64(len(all)) - 1
		}
		for v := from; v >= 0; v-- {
			sel = append(sel, all[v])
		}
	} else if req.FromVersion < uint64(len(all)) {
		sel = all[req.FromVersion:]
	}
	if req.Count > 0 && uint64(len(sel)) > req.Count {
		sel = sel[:req.Count]
	}
	for page := 1; len(sel) > 0; page++ {
		k := min(pages, len(sel))
		if err := srv.Send(&shoalv1.ReadResponse{Events: sel[:k]}); err != nil {
			return err
		}
		sel = sel[k:]
		if err := n.readFaultAt(page); err != nil {
			return err
		}
	}
	return nil
}

func (n *fakeNode) readFaultAt(page int) error {
	n.mu.Lock()
	f := n.readFault
	n.mu.Unlock()
	if f != nil {
		return f(page)
	}
	return nil
}

// ReadShard serves shard 0's log: every stored event by position.
func (n *fakeNode) ReadShard(req *shoalv1.ReadShardRequest, srv grpc.ServerStreamingServer[shoalv1.ReadShardResponse]) error {
	if err := n.enter(srv.Context(), "ReadShard", req); err != nil {
		return err
	}
	c := n.c
	c.mu.Lock()
	var log []*shoalv1.RecordedEvent
	for _, evs := range c.streams {
		log = append(log, evs...)
	}
	pages := c.pages
	c.mu.Unlock()
	byPos := make(map[uint64]*shoalv1.RecordedEvent, len(log))
	for _, e := range log {
		byPos[e.Position] = e
	}
	var sel []*shoalv1.RecordedEvent
	for p := req.FromPosition; ; p++ {
		e, ok := byPos[p]
		if !ok || (req.Count > 0 && uint64(len(sel)) == req.Count) {
			break
		}
		sel = append(sel, e)
	}
	next := req.FromPosition
	for page := 1; len(sel) > 0; page++ {
		k := min(pages, len(sel))
		next = sel[k-1].Position + 1
		if err := srv.Send(&shoalv1.ReadShardResponse{Events: sel[:k], NextPosition: next}); err != nil {
			return err
		}
		sel = sel[k:]
		if err := n.readFaultAt(page); err != nil {
			return err
		}
	}
	return nil
}

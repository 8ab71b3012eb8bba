package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/internal/membership"
)

// clusterServer implements shoalv1.ClusterServer.
type clusterServer struct {
	shoalv1.UnimplementedClusterServer
	n *Node
}

func (s *clusterServer) Topology(ctx context.Context, req *shoalv1.TopologyRequest) (*shoalv1.TopologyResponse, error) {
	suspects := req.Suspects
	limit := max(int(s.n.Settings().Shards), maxSuspects)
	if len(suspects) > limit {
		// A hint, not an order: the topology is what the caller needs; the rest are ignored.
		s.n.log.Debug("topology request names more suspects than the limit; the rest are ignored",
			"suspects", len(suspects), "limit", limit)
		suspects = suspects[:limit]
	}
	s.n.suspectLeaders(suspects)
	if req.LocalOnly {
		t, err := s.n.localTopology(ctx)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "node %s: its raft loop did not answer in time (a stalled disk?): %v", s.n.Name(), err)
		}
		return t, nil
	}
	n := s.n
	n.metrics.topologyRequests.WithLabelValues("topology").Inc()
	t, err := n.gathers.do(ctx, n.done, suspects, limit, n.gatherFor("topology", true))
	if err != nil {
		return nil, gatherError(err)
	}
	return t, nil
}

// gatherError is the gRPC error of a shared gather's err: its own status, or the caller's
// context's.
func gatherError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.FromContextError(err).Err()
}

// gatherFor returns the run of a shared gather (sharedGathers) of the given kind (the metrics'
// label; early as topologyOf takes it).
func (n *Node) gatherFor(kind string, early bool) func(context.Context, []*shoalv1.SuspectLeader) (*shoalv1.TopologyResponse, error) {
	return func(ctx context.Context, suspects []*shoalv1.SuspectLeader) (*shoalv1.TopologyResponse, error) {
		n.metrics.topologyGathers.WithLabelValues(kind).Inc()
		return n.topologyOf(ctx, early, suspects), nil
	}
}

// maxSuspects is the fewest suspects a topology request may name before the rest are ignored
// (more when the cluster has more shards: a client names at most one per shard).
const maxSuspects = 1024

// suspectLeaders passes a topology request's suspects on to the local replicas of their
// shards (replica.Group.SuspectLeader).
func (n *Node) suspectLeaders(suspects []*shoalv1.SuspectLeader) {
	if len(suspects) == 0 {
		return
	}
	ids := map[string]uint64{}
	for _, m := range n.Members() {
		if _, taken := ids[m.GRPCAddr]; m.GRPCAddr != "" && (m.Alive || !taken) { // an alive member's address first
			ids[m.GRPCAddr] = m.NodeID
		}
	}
	for _, s := range suspects {
		if id, ok := ids[s.GetAddr()]; ok && id != n.ID() {
			if g, ok := n.host.Group(s.GetShard()); ok {
				g.SuspectLeader(id)
			}
		}
	}
}

func (s *clusterServer) Status(ctx context.Context, _ *shoalv1.StatusRequest) (*shoalv1.StatusResponse, error) {
	st, err := s.n.status(ctx)
	if err != nil {
		return nil, gatherError(err)
	}
	return st, nil
}

// status is the cluster as this node sees it (the Status RPC, the console's overview): every
// alive member's view, not only those in before topologyGrace once every shard is led (as a
// client's topology request), since a status that names a slow node as not answering says its
// view may be partial, which is not what a healthy cluster should show. Requests arriving
// together share their gathers of the views, as clients' topology requests do (sharedGathers:
// monitors polling several nodes, consoles refreshing). The error is ctx's, when it ends first,
// or UNAVAILABLE once Close began.
func (n *Node) status(ctx context.Context) (*shoalv1.StatusResponse, error) {
	n.metrics.topologyRequests.WithLabelValues("status").Inc()
	t, err := n.statusGathers.do(ctx, n.done, nil, 0, n.gatherFor("status", false))
	if err != nil {
		return nil, err
	}
	return &shoalv1.StatusResponse{Topology: t, NodeId: n.ID()}, nil
}

func (s *clusterServer) Settings(context.Context, *shoalv1.SettingsRequest) (*shoalv1.ClusterSettings, error) {
	return s.n.protoSettings(), nil
}

func (s *clusterServer) RaftPoints(_ context.Context, req *shoalv1.RaftPointsRequest) (*shoalv1.RaftPointsResponse, error) {
	settings := s.n.settings.Load()
	if settings == nil {
		return nil, status.Errorf(codes.Unavailable, "node %s %s: it does not know its cluster yet", s.n.dir.id.Name, startingMsg)
	}
	if len(req.GetShards()) > int(settings.Shards) {
		return nil, status.Errorf(codes.InvalidArgument, "RaftPoints asks for %d shards; the cluster has %d", len(req.GetShards()), settings.Shards)
	}
	for _, id := range req.GetShards() {
		if id >= settings.Shards {
			return nil, status.Errorf(codes.InvalidArgument, "RaftPoints asks for shard %d; the cluster has %d shards", id, settings.Shards)
		}
	}
	resp, err := s.n.raftPoints(req)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return resp, nil
}

func (s *clusterServer) SetReplication(_ context.Context, req *shoalv1.SetReplicationRequest) (*shoalv1.SetReplicationResponse, error) {
	settings, changed, err := s.n.SetReplication(int(req.GetReplication()))
	var re *ReplicationError
	switch {
	case errors.As(err, &re) && re.Member == "":
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrConfigConflict):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrClosed):
		return nil, status.Error(codes.Unavailable, shuttingDownMsg)
	case err != nil:
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &shoalv1.SetReplicationResponse{Settings: protoSettings(settings), Changed: changed, Epoch: settings.ReplicationEpoch}, nil
}

func (s *clusterServer) Decommission(ctx context.Context, req *shoalv1.DecommissionRequest) (*shoalv1.DecommissionResponse, error) {
	conn, err := s.named(req.Node, req.Forwarded, "decommission")
	if err != nil {
		return nil, err
	}
	if conn == nil {
		if err := s.n.Decommission(); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		return &shoalv1.DecommissionResponse{}, nil
	}
	res, err := shoalv1.NewClusterClient(conn).Decommission(ctx, &shoalv1.DecommissionRequest{Node: req.Node, Forwarded: true})
	return res, forwardedOpErr(err, req.Node, "decommission", conn.Target())
}

func (s *clusterServer) Recommission(ctx context.Context, req *shoalv1.RecommissionRequest) (*shoalv1.RecommissionResponse, error) {
	conn, err := s.named(req.Node, req.Forwarded, "recommission")
	if err != nil {
		return nil, err
	}
	if conn == nil {
		was, err := s.n.Recommission()
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		return &shoalv1.RecommissionResponse{WasDecommissioning: was}, nil
	}
	res, err := shoalv1.NewClusterClient(conn).Recommission(ctx, &shoalv1.RecommissionRequest{Node: req.Node, Forwarded: true})
	return res, forwardedOpErr(err, req.Node, "recommission", conn.Target())
}

// forwardedOpErr is the answer to an operator's request about node name that this node
// forwarded to it at addr and that failed with err: the named node's own answer as it is, but
// a failure to reach it (UNAVAILABLE, DEADLINE_EXCEEDED) says that the named node did not
// answer, where the caller would take it for this node's silence, and carries
// shoalv1.NodeUnreachableReason: a client's circuit breaker for this node, which did answer,
// must not count it (the client retries through every node, and each would open).
func forwardedOpErr(err error, name, what, addr string) error {
	if c := status.Code(err); c == codes.Unavailable || c == codes.DeadlineExceeded {
		return shoalv1.NodeUnreachableError(c, fmt.Sprintf("node %q, alive in gossip, did not answer at %s (it runs its own %s): %s",
			name, addr, what, status.Convert(err).Message()), name)
	}
	return err
}

// named finds the node an operator's request about node name must run on: nil for this node,
// else a connection to it (counted as a forward of kind what). A request forwarded here
// already is not forwarded again.
func (s *clusterServer) named(name string, forwarded bool, what string) (*grpc.ClientConn, error) {
	n := s.n
	switch {
	case name == "":
		return nil, withDetails(codes.InvalidArgument, fmt.Sprintf("a %s names its node: node is empty", what),
			&shoalv1.InvalidField{Field: "node", Limit: fmt.Sprintf("1..%d bytes", MaxNameLen), Reason: "empty"})
	case len(name) > MaxNameLen:
		return nil, withDetails(codes.InvalidArgument, fmt.Sprintf("a %s names its node: node is %d bytes, longer than "+
			"a node name's limit of %d", what, len(name), MaxNameLen),
			&shoalv1.InvalidField{Field: "node", Limit: fmt.Sprintf("1..%d bytes", MaxNameLen), Reason: fmt.Sprintf("%d bytes", len(name))})
	case name == n.Name():
		return nil, nil
	}
	if forwarded {
		return nil, status.Errorf(codes.FailedPrecondition,
			"%s of %q was forwarded to node %q (gossip address stale?)", what, name, n.Name())
	}
	var target *membership.Member
	for _, m := range n.Members() {
		if m.Name == name {
			target = &m
			break
		}
	}
	if target == nil {
		return nil, status.Errorf(codes.NotFound, "no node named %q in the cluster", name)
	}
	if !target.Alive || target.GRPCAddr == "" {
		// Not UNAVAILABLE: this node answered, and retrying here changes nothing.
		return nil, status.Errorf(codes.FailedPrecondition, "node %q is not alive; start it first: a %s needs it running", name, what)
	}
	conn, err := n.peers.get(target.GRPCAddr)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	n.metrics.forwarded.WithLabelValues(what).Inc()
	return conn, nil
}

// Decommission marks this node as draining: the flag is persisted in the data
// directory (so it survives restarts) and gossiped. Placement then moves the
// node's replicas elsewhere.
func (n *Node) Decommission() error {
	n.decomMu.Lock() // the data directory and gossip agree when a Recommission races it
	defer n.decomMu.Unlock()
	if err := n.dir.setDecommissioning(); err != nil {
		return err
	}
	n.log.Info("decommissioning requested")
	return n.gossip().UpdateMeta(func(m *membership.Meta) { m.Decommissioning = true })
}

// Recommission cancels a decommission of this node: the flag leaves the data directory and
// gossip, and placement may give the node replicas and leaderships again. It reports whether
// the node was decommissioning; repeating it changes nothing.
func (n *Node) Recommission() (bool, error) {
	n.decomMu.Lock()
	defer n.decomMu.Unlock()
	was, err := n.dir.clearDecommissioning()
	if err != nil {
		return was, err
	}
	if was {
		n.log.Info("decommission cancelled")
	}
	return was, n.gossip().UpdateMeta(func(m *membership.Meta) { m.Decommissioning = false })
}

func (n *Node) protoSettings() *shoalv1.ClusterSettings { return protoSettings(n.Settings()) }

func protoSettings(s Settings) *shoalv1.ClusterSettings {
	return &shoalv1.ClusterSettings{ClusterId: s.ClusterID, Shards: s.Shards, Replication: s.Replication}
}

func (n *Node) nodeInfo(m membership.Member) *shoalv1.NodeInfo {
	return &shoalv1.NodeInfo{
		Id: m.NodeID, Name: m.Name, Zone: m.Zone, GrpcAddr: m.GRPCAddr, HttpAddr: m.HTTPAddr,
		Alive: m.Alive, Decommissioning: m.Decommissioning, Stopping: m.Stopping, Version: m.Version,
		Replication: m.Replication, DiskLow: m.DiskLow, DiskSlow: m.DiskSlow, SyncMicros: m.SyncMicros,
	}
}

// localTopology is this node's own view: the groups it holds, and itself as
// the only node.
func (n *Node) localTopology(ctx context.Context) (*shoalv1.TopologyResponse, error) {
	// Bounded, within half the time ctx leaves (a peer gathering views allows topologyTimeout,
	// and an answer at its deadline would be dropped): a raft loop stuck behind a stalled disk
	// must not hold every topology answer, and the leader cache's refresh, until the stall
	// ends the process. Such a node gives no view rather than one made up without its loop.
	d := topologyTimeout / 2
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)/2)
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	sts, err := n.host.Statuses(ctx)
	if err != nil {
		return nil, err
	}
	ml := n.gossip()
	if ml == nil { // a start still joining gossip (the console may ask then)
		return nil, errors.New("not in gossip yet")
	}
	t := &shoalv1.TopologyResponse{Settings: n.protoSettings()}
	self := n.nodeInfo(ml.Self())
	repl := int(n.Settings().Replication)
	zones := zonesOf(n.Members())
	for _, st := range sts {
		si := &shoalv1.ShardInfo{
			Shard: st.Shard, LeaderId: st.Leader, Term: st.Term,
			Voters: slices.Clone(st.Voters), Learners: slices.Clone(st.Learners),
			UnderReplicated: underReplicated(st.Voters, repl, zones), Unavailable: st.Leader == 0, Applied: st.Applied,
		}
		if sm, _, ok := n.shardSM(st.Shard); ok {
			si.LastPosition, si.Format = sm.LastPosition(), sm.Format()
		}
		if p := n.placer.Load(); p != nil && st.Leader == n.ID() {
			si.Unheard = p.unheard(st.Shard, st.Term)
		}
		if g, ok := n.host.Group(st.Shard); ok && st.Leader == 0 {
			d, _ := g.Leaderless() // 0 while it knows a leader
			si.LeaderlessMs = uint64(d.Milliseconds())
		}
		self.Replicas++
		if st.Leader == n.ID() {
			self.ShardsLed++
		}
		t.Shards = append(t.Shards, si)
	}
	slices.SortFunc(t.Shards, func(a, b *shoalv1.ShardInfo) int { return int(a.Shard) - int(b.Shard) })
	self.NotReady = n.notReady()
	t.Nodes = []*shoalv1.NodeInfo{self}
	t.ViewsFrom = []uint64{self.Id}
	return t, nil
}

// Topology merges the local views of every alive member that answers: for each
// shard the view of the node that leads it (highest term) wins. A shard nobody
// reports a leader for is unavailable, and unknown as well when it may be led where
// this node cannot see: a member alive but not answering (the answer's unanswered)
// holds one of its voters, or no answering node holds the shard at all.
func (n *Node) Topology(ctx context.Context) *shoalv1.TopologyResponse { return n.topology(ctx, nil) }

// topology is Topology, passing suspects on to the peers it asks (suspectLeaders).
func (n *Node) topology(ctx context.Context, suspects []*shoalv1.SuspectLeader) *shoalv1.TopologyResponse {
	return n.topologyOf(ctx, true, suspects)
}

// topologyOf is topology, the views gathered with early as gatherTopologies takes it.
func (n *Node) topologyOf(ctx context.Context, early bool, suspects []*shoalv1.SuspectLeader) *shoalv1.TopologyResponse {
	views := n.gatherTopologies(ctx, early, suspects)
	best := bestShardViews(views)
	settings := n.Settings()
	members := n.Members()
	t := &shoalv1.TopologyResponse{Settings: n.protoSettings()}
	notReady := map[uint64]string{} // what each node said of itself in its view
	for _, v := range views {
		if len(v.Nodes) > 0 && !slices.Contains(t.ViewsFrom, v.Nodes[0].Id) {
			t.ViewsFrom = append(t.ViewsFrom, v.Nodes[0].Id)
			notReady[v.Nodes[0].Id] = v.Nodes[0].NotReady
		}
	}
	for _, m := range members {
		if m.Alive && !slices.Contains(t.ViewsFrom, m.NodeID) {
			t.Unanswered = append(t.Unanswered, m.NodeID)
		}
	}
	slices.Sort(t.Unanswered)
	led := map[uint64]uint32{}
	held := map[uint64]uint32{}
	for i := uint32(0); i < settings.Shards; i++ {
		s, ok := best[i]
		if !ok {
			s = &shoalv1.ShardInfo{Shard: i, Unavailable: true, UnderReplicated: true}
		}
		if unknownShard(s, ok, t.Unanswered) {
			s.Unknown, s.Unavailable = true, true // s is this call's own: the views are gathered afresh
		}
		if s.LeaderId != 0 {
			led[s.LeaderId]++
		}
		for _, id := range s.Voters {
			held[id]++
		}
		for _, id := range s.Learners {
			held[id]++
		}
		t.Shards = append(t.Shards, s)
	}
	for _, m := range members {
		ni := n.nodeInfo(m)
		ni.ShardsLed, ni.Replicas, ni.NotReady = led[m.NodeID], held[m.NodeID], notReady[m.NodeID]
		t.Nodes = append(t.Nodes, ni)
	}
	// A replica's node that gossip has not brought back since this node started is listed
	// as dead, with the name and zone this node last learned of it (members.json), so that
	// status says which machine is missing rather than a bare ID. Without its addresses:
	// clients would take it for a dead node's and abandon calls there, and a node that has
	// just started may not have heard yet of a member that is alive.
	var unlisted []uint64
	for id := range held {
		if !slices.ContainsFunc(members, func(m membership.Member) bool { return m.NodeID == id }) {
			unlisted = append(unlisted, id)
		}
	}
	slices.Sort(unlisted)
	for _, id := range unlisted {
		ni := &shoalv1.NodeInfo{Id: id, ShardsLed: led[id], Replicas: held[id]}
		if k, ok := n.knownMember(id); ok {
			ni.Name, ni.Zone = k.Name, k.Zone
		}
		t.Nodes = append(t.Nodes, ni)
	}
	return t
}

// unknownShard reports whether the merged view s of a shard (reported by an answering
// node, or made up when none holds it) leaves its leader unknown: it names none, and a
// member that did not answer holds one of its voters, or may, when no answering node
// holds the shard.
func unknownShard(s *shoalv1.ShardInfo, reported bool, unanswered []uint64) bool {
	if s.LeaderId != 0 || len(unanswered) == 0 {
		return false
	}
	return !reported || slices.ContainsFunc(s.Voters, func(id uint64) bool { return slices.Contains(unanswered, id) })
}

// bestShardViews picks, for every shard, the most authoritative of the nodes' local views
// (each view's first node is its reporter): the leader's own view, of the highest term
// among leaders' views; without one, the view of the highest term, and at equal terms one
// that names a leader over one that does not. A follower cut off from its leader (a
// partition between two followers and the leader, one of them answering) knows no leader
// while another follower still hears it: the shard has a leader, and is not unavailable.
// A follower naming a node whose own view, at that term or later, says it does not lead is
// not believed: the leader stepped down (CheckQuorum) and the follower has not heard yet.
func bestShardViews(views []*shoalv1.TopologyResponse) map[uint32]*shoalv1.ShardInfo {
	type nodeShard struct {
		node  uint64
		shard uint32
	}
	notLeading := map[nodeShard]uint64{} // the highest term at which a node says it does not lead
	for _, v := range views {
		reporter := reporterOf(v)
		if reporter == 0 {
			continue
		}
		for _, s := range v.Shards {
			if k := (nodeShard{reporter, s.Shard}); s.LeaderId != reporter && s.Term >= notLeading[k] {
				notLeading[k] = s.Term
			}
		}
	}
	voterLost := votersWithoutLeader(views)
	best := make(map[uint32]*shoalv1.ShardInfo)
	bestIsLeader := make(map[uint32]bool)
	bestDisowned := make(map[uint32]bool)
	bestRemoved := make(map[uint32]bool)
	for _, v := range views {
		reporter := reporterOf(v)
		for _, s := range v.Shards {
			fromLeader := s.LeaderId != 0 && s.LeaderId == reporter
			disowned := false
			if !fromLeader && s.LeaderId != 0 {
				t, ok := notLeading[nodeShard{s.LeaderId, s.Shard}]
				disowned = ok && t >= s.Term
			}
			// A replica removed from its group (its own configuration leaves it out) names
			// the leader it last knew, at the term it last knew, which a shard that lost its
			// quorum keeps (PreVote): its view is shown only when no member's is at hand, and
			// then without that leader (below).
			// So does a learner, which never campaigns, whose leader went with the quorum: its
			// view counts last too when a voter's, at its term or later, knows no leader.
			removed := len(s.Voters)+len(s.Learners) > 0 && outOfConfig(s, reporter) ||
				staleLearnerView(s, reporter, voterLost)
			cur, ok := best[s.Shard]
			if ok && removed != bestRemoved[s.Shard] {
				if !removed {
					best[s.Shard], bestIsLeader[s.Shard], bestDisowned[s.Shard], bestRemoved[s.Shard] = s, fromLeader, disowned, false
				}
				continue
			}
			bestRemoved[s.Shard] = removed
			names := s.LeaderId != 0 && !disowned
			switch {
			case !ok,
				fromLeader && (!bestIsLeader[s.Shard] || s.Term > cur.Term),
				!fromLeader && !bestIsLeader[s.Shard] && s.Term > cur.Term,
				!fromLeader && !bestIsLeader[s.Shard] && s.Term == cur.Term &&
					(names && (cur.LeaderId == 0 || bestDisowned[s.Shard]) || s.LeaderId == 0 && bestDisowned[s.Shard]):
				best[s.Shard], bestIsLeader[s.Shard], bestDisowned[s.Shard] = s, fromLeader, disowned
			}
		}
	}
	// Only a removed replica's view at hand: its leader may be gone (with the quorum, or
	// with every member's node), and no member's view says otherwise. The shard's leader is
	// unknown, not the one it names, to which clients would be sent.
	for id, removed := range bestRemoved {
		if s := best[id]; removed && s.LeaderId != 0 {
			s = proto.CloneOf(s)
			s.LeaderId, s.Unavailable, s.Unknown = 0, true, true
			best[id] = s
		}
	}
	return best
}

// reporterOf returns the ID of the node whose local view v is (its first node), 0 when v names
// none.
func reporterOf(v *shoalv1.TopologyResponse) uint64 {
	if len(v.GetNodes()) == 0 {
		return 0
	}
	return v.GetNodes()[0].GetId()
}

// outOfConfig reports whether s, reporter's view of a shard, is of a replica that its own
// configuration leaves out: one removed from its group, which names the leader it last knew,
// or one not yet initialised (its configuration empty).
func outOfConfig(s *shoalv1.ShardInfo, reporter uint64) bool {
	return reporter != 0 && !slices.Contains(s.Voters, reporter) && !slices.Contains(s.Learners, reporter)
}

// votersWithoutLeader returns, per shard, the highest term at which a voter's view (its
// reporter a voter in its own configuration) knows no leader.
func votersWithoutLeader(views []*shoalv1.TopologyResponse) map[uint32]uint64 {
	lost := map[uint32]uint64{}
	for _, v := range views {
		reporter := reporterOf(v)
		if reporter == 0 {
			continue
		}
		for _, s := range v.GetShards() {
			if t, ok := lost[s.Shard]; s.LeaderId == 0 && slices.Contains(s.Voters, reporter) && (!ok || s.Term > t) {
				lost[s.Shard] = s.Term
			}
		}
	}
	return lost
}

// staleLearnerView reports whether s, reporter's view, is a learner's naming a leader that a
// voter's view (voterLost: votersWithoutLeader) knows no longer, at the learner's term or
// later. A learner never campaigns: it keeps its last leader until another reaches it, after
// the voters lost theirs with the quorum (a follower forgets a leader it does not hear from
// within an election timeout, a quiesced one when it lapses). So does a replica whose
// configuration does not have it as a voter in any way: one not yet initialised (a learner
// before its first snapshot: its configuration is empty), or removed.
func staleLearnerView(s *shoalv1.ShardInfo, reporter uint64, voterLost map[uint32]uint64) bool {
	if reporter == 0 || s.LeaderId == 0 || slices.Contains(s.Voters, reporter) {
		return false
	}
	t, ok := voterLost[s.Shard]
	return ok && t >= s.Term
}

// String helps logs and tests.
func (s Settings) String() string {
	return fmt.Sprintf("cluster %s (%d shards, replication %d)", s.ClusterID, s.Shards, s.Replication)
}

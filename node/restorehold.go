package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
)

// A node started on a restored backup (--restore, without --new-cluster) holds its shards
// closed until it knows the cluster did not go on without the state it restores: raft
// replicas must never forget what they wrote, and one that comes back with an older log than
// it acknowledged can cost its shard acknowledged events, or let two leaders be elected in
// one term. Before it reopens its groups (and while it refuses all raft traffic and
// snapshots, raftReceiver), it asks the members where their replicas of its shards stand (RaftPoints): every
// member gossip shows alive, and, alive or not (it waits for them), every voter of those
// shards, as the backup's configurations name them and as the members' answers name them now.
// It goes on only when each replica of its shards holds the raft log the backup holds (the
// cluster was idle since the backup), or did when its node was itself restored from a backup
// of the same moment and neither this node nor one being restored again has sent it raft
// traffic since (a whole-cluster restore; crossCheckRestore), and no member has this node in a shard the backup does not hold (given to it
// after the backup). Otherwise the start ends with ErrRestoreUnsafe, leaving backup.json.

// ErrRestoreUnsafe is returned by Start for a restored backup (Config.Restore) whose shards'
// other replicas hold other raft logs than it: the cluster went on after the backup was
// taken, or the nodes' backups were not taken at the same idle moment.
var ErrRestoreUnsafe = errors.New("node: restoring this backup is unsafe")

// restoreRecordFile holds where the node's replicas stood when it started on a restored
// backup (restoreRecord), for its peers' restores of the same moment.
const restoreRecordFile = "restored.json"

// raftPoint is where one replica's raft log stands.
type raftPoint struct {
	Term      uint64 `json:"term"` // the hard state's
	LastIndex uint64 `json:"last_index"`
	LastTerm  uint64 `json:"last_term"`
}

func (p raftPoint) String() string {
	return fmt.Sprintf("log ending at entry %d of term %d, in term %d", p.LastIndex, p.LastTerm, p.Term)
}

func pointOf(p *shoalv1.RaftPoint) raftPoint {
	return raftPoint{Term: p.GetTerm(), LastIndex: p.GetLastIndex(), LastTerm: p.GetLastTerm()}
}

// restoreRecord is restored.json.
type restoreRecord struct {
	Backup  string               `json:"backup"` // when the backup was taken (RFC 3339)
	Started time.Time            `json:"started"`
	Points  map[uint32]raftPoint `json:"points"` // by shard: the replicas held then
	// RanSince: the nodes whose raft traffic reached this node since (they ran in the cluster
	// after the restore, and a restore of theirs from a backup of that moment would forget
	// what they did since).
	RanSince []uint64 `json:"ran_since,omitempty"`
}

// restoreState is the node's side of the restore check.
type restoreState struct {
	// hold: this node's replicas while it waits for its peers (holdForRestore); nil otherwise.
	hold atomic.Pointer[map[uint32]heldReplica]
	// refused: the check refused this node's restore; it answers RaftPoints with that.
	refused atomic.Pointer[string]
	mu      sync.Mutex
	rec     *restoreRecord // restored.json, nil when the node was never restored
	// ran: rec.RanSince as a set, read without mu by noteRaftSenders; nil when no record.
	ran atomic.Pointer[map[uint64]bool]
}

// heldReplica is one replica of a backup being restored.
type heldReplica struct {
	point            raftPoint
	voters, learners []uint64
}

func (r heldReplica) proto(shard uint32) *shoalv1.RaftPoint {
	return &shoalv1.RaftPoint{Shard: shard, Term: r.point.Term, LastIndex: r.point.LastIndex, LastTerm: r.point.LastTerm,
		Voters: r.voters, Learners: r.learners}
}

// restoreWaitLogEvery is how often a held start says what it waits for.
const restoreWaitLogEvery = 10 * time.Second

// restoreAskEvery is how often a held start asks the members it has no answer from.
const restoreAskEvery = 500 * time.Millisecond

// restoreSettle is the least a held start waits, for gossip to show the members alive.
const restoreSettle = 2 * time.Second

// restoreSeedWait is how long a held start whose backup names no other voter waits for some
// member to show alive when it has seeds to join.
const restoreSeedWait = 30 * time.Second

// heldReplicas reads the replicas this node holds (voter or learner of their stored
// configuration) and where they stand.
func (n *Node) heldReplicas() (map[uint32]heldReplica, error) {
	groups, err := n.dir.groups()
	if err != nil {
		return nil, err
	}
	self := n.dir.id.NodeID
	out := map[uint32]heldReplica{}
	for _, id := range groups {
		st, err := replica.Inspect(n.db, id)
		if err != nil {
			return nil, fmt.Errorf("node: shard %d: %w", id, err)
		}
		if !slices.Contains(st.Voters, self) && !slices.Contains(st.Learners, self) {
			continue // removed from its group: the group counts on nothing it holds
		}
		out[id] = heldReplica{point: raftPoint{Term: st.Term, LastIndex: st.LastIndex, LastTerm: st.LastTerm},
			voters: st.Voters, learners: st.Learners}
	}
	return out, nil
}

// beginRestoreHold reads the replicas of the backup being restored and holds the shards
// closed from here on: the group factory refuses raft traffic, and RaftPoints answers as
// restoring. Called by Start before gRPC serves.
func (n *Node) beginRestoreHold() error {
	held, err := n.heldReplicas()
	if err != nil {
		return err
	}
	n.restore.hold.Store(&held)
	return nil
}

// holdForRestore runs the restore check for backup m (see above) and then records it:
// restored.json, and backup.json removed, before the hold ends. Called by Start once gossip
// runs, before the groups reopen. A refused start answers the peers' checks of it with the
// refusal while it closes.
func (n *Node) holdForRestore(ctx context.Context, m *backupManifest) error {
	held := *n.restore.hold.Load()
	if err := n.awaitRestorePeers(ctx, m, held); err != nil {
		if errors.Is(err, ErrRestoreUnsafe) {
			msg := err.Error()
			n.restore.refused.Store(&msg)
		}
		return err
	}
	rec := &restoreRecord{Backup: m.Created.Format(time.RFC3339Nano), Started: time.Now().UTC(), Points: map[uint32]raftPoint{}}
	for s, r := range held {
		rec.Points[s] = r.point
	}
	// The hold let no raft traffic through (raftReceiver), so no node has run with this
	// restore yet: RanSince starts empty, whatever an earlier record said.
	n.restore.mu.Lock()
	err := n.dir.writeJSON(restoreRecordFile, rec)
	if err == nil {
		n.setRestoreRecordLocked(rec)
	}
	n.restore.mu.Unlock()
	if err != nil {
		return err
	}
	if err := n.dir.finishRestore(m, n.log); err != nil {
		return err
	}
	n.restore.hold.Store(nil)
	return nil
}

// restorePeer is what the check knows of one member.
type restorePeer struct {
	required bool   // a voter of a held shard: waited for until it answers
	done     bool   // answered as it must
	restorer bool   // answered as restoring: asked again before the hold ends
	waiting  string // why there is no answer yet
	// ranSince: for a member accepted by where its replicas stood when it was restored, the
	// nodes that ran in the cluster since (its answer's ran_since).
	ranSince []uint64
}

// awaitRestorePeers asks the members (see above) until every required one answered as it
// must and every alive one answered; a member that answers otherwise ends the start with
// ErrRestoreUnsafe.
func (n *Node) awaitRestorePeers(ctx context.Context, m *backupManifest, held map[uint32]heldReplica) error {
	self := n.dir.id.NodeID
	shards := slices.Sorted(maps.Keys(held))
	peers := map[uint64]*restorePeer{}
	require := func(ids []uint64) {
		for _, id := range ids {
			if id == self {
				continue
			}
			if peers[id] == nil {
				peers[id] = &restorePeer{}
			}
			peers[id].required = true
		}
	}
	for _, r := range held {
		require(r.voters)
	}
	ticker := time.NewTicker(restoreAskEvery)
	defer ticker.Stop()
	began, logged := time.Now(), time.Now()
	stored, _ := n.dir.peers()
	seeds := mergeSeeds(n.cfg.Join, stored, n.cfg.Gossip)
	n.log.Warn("started on a restored backup: the shards stay closed until the members show the cluster did not go on after it",
		"taken", m.Created, "voters", n.peerNames(slices.Sorted(maps.Keys(peers))))
	confirming := false
	for {
		for _, mem := range n.memberList() {
			if mem.NodeID != self && mem.Alive && peers[mem.NodeID] == nil {
				peers[mem.NodeID] = &restorePeer{}
			}
		}
		for _, id := range slices.Sorted(maps.Keys(peers)) {
			p := peers[id]
			if p.done && !(confirming && p.restorer) {
				continue
			}
			addr, alive := n.aliveAddr(id)
			if !alive {
				p.done, p.waiting = false, "not alive in gossip"
				if !p.required {
					delete(peers, id) // a member that went away since, holding none of these shards
				}
				continue
			}
			resp, err := n.askRaftPoints(ctx, addr, shards)
			if status.Code(err) == codes.Unimplemented {
				return fmt.Errorf("%w: %s runs a version without the restore check (RaftPoints): upgrade it first, or start this node "+
					"with an empty data directory instead (it joins as a new node); backup.json is kept", ErrRestoreUnsafe, n.peerNames([]uint64{id}))
			}
			if err != nil {
				p.done, p.waiting = false, err.Error()
				continue
			}
			byRestore, err := n.judgeRestore(m, held, id, resp)
			if err != nil {
				return err
			}
			p.ranSince = nil
			if byRestore {
				p.ranSince = resp.GetRanSince()
			}
			// The voters the member's replicas have now are waited for too.
			for _, cp := range resp.GetCurrent() {
				require(cp.GetVoters())
			}
			p.done, p.restorer, p.waiting = true, resp.GetRestoring(), ""
		}
		// Not before gossip had a moment to show the members alive (a backup may name none),
		// nor, when there are seeds to join, before some member is alive (a failed join would
		// show none) or restoreSeedWait passed: a one-node cluster's peers.json may name nodes
		// long gone.
		waited := time.Since(began)
		lonely := len(seeds) > 0 && len(peers) == 0 && waited < restoreSeedWait
		all := waited >= restoreSettle && !lonely
		restorers := false
		for _, p := range peers {
			all, restorers = all && p.done, restorers || p.restorer
		}
		switch {
		case all && !confirming && restorers:
			confirming = true // once more: a restoring peer may have been refused since
			continue
		case all:
			if err := n.crossCheckRestore(m, peers); err != nil {
				return err
			}
			n.log.Info("restore check passed: every replica of the shards holds the restored raft logs, or was restored from backups of the same moment",
				"members", len(peers))
			return nil
		}
		confirming = false
		if time.Since(logged) >= restoreWaitLogEvery && lonely {
			logged = time.Now()
			n.log.Warn("started on a restored backup: no member is alive in gossip yet; waiting for one before opening the shards",
				"seeds", strings.Join(seeds, ","), "gives_up_after", restoreSeedWait)
		}
		if time.Since(logged) >= restoreWaitLogEvery {
			logged = time.Now()
			var waiting []string
			for _, id := range slices.Sorted(maps.Keys(peers)) {
				if p := peers[id]; !p.done {
					waiting = append(waiting, fmt.Sprintf("%s (%s)", n.peerNames([]uint64{id}), p.waiting))
				}
			}
			n.log.Warn("started on a restored backup: waiting for members to answer before opening the shards; start them "+
				"(with --restore, for a whole-cluster restore), or, if they are lost for good, stop this node and restore the cluster "+
				"from one node with --restore --new-cluster, or start this node with an empty data directory",
				"waiting", strings.Join(waiting, ", "))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node: starting on a restored backup: waiting for members to answer: %w", ctx.Err())
		case <-ticker.C:
		}
	}
}

// judgeRestore checks member id's answer: each of its replicas of the held shards must hold
// the backup's raft log (now, or when it was restored), a voter of the backup's configuration
// must still hold one, and none may have this node in a shard the backup does not hold.
//
// It reports whether it accepted some shard by where the member's replica stood when it was
// restored (crossCheckRestore then looks at the nodes that ran since).
func (n *Node) judgeRestore(m *backupManifest, held map[uint32]heldReplica, id uint64, resp *shoalv1.RaftPointsResponse) (byRestore bool, err error) {
	current, restored := map[uint32]raftPoint{}, map[uint32]raftPoint{}
	for _, cp := range resp.GetCurrent() {
		current[cp.GetShard()] = pointOf(cp)
	}
	for _, rp := range resp.GetRestored() {
		restored[rp.GetShard()] = pointOf(rp)
	}
	peer := n.peerNames([]uint64{id})
	refuse := func(what, advice string) (bool, error) { return false, n.restoreRefusal(m, what, advice) }
	if s := resp.GetListingYou(); len(s) > 0 {
		return refuse(fmt.Sprintf("the cluster went on after it: %s has this node in shard %d, of which the backup holds no replica", peer, s[0]), restoreFresh)
	}
	for _, s := range slices.Sorted(maps.Keys(held)) {
		mine := held[s].point
		cur, ok := current[s]
		switch {
		case ok && cur == mine:
			continue
		case !ok && !slices.Contains(held[s].voters, id):
			continue // not a replica of it, and not one when the backup was taken
		}
		if was, ok := restored[s]; ok && was == mine {
			byRestore = true
			continue
		}
		switch {
		case resp.GetRestoring() && !ok:
			return refuse(fmt.Sprintf("%s, starting on a restored backup too, holds no replica of shard %d, a voter of which it was here: "+
				"the backups were not taken at one idle moment", peer, s),
				"Compare the backups with `shoal node inspect` and start the one furthest in every shard with --restore --new-cluster")
		case resp.GetRestoring():
			return refuse(fmt.Sprintf("%s, starting on a restored backup too, holds another raft log of shard %d (a %s; this backup a %s): "+
				"the backups were not taken at one idle moment, and a cluster restored from them can lose entries one node applied",
				peer, s, cur, mine),
				"Compare the backups with `shoal node inspect` and start the one furthest in every shard with --restore --new-cluster")
		case !ok:
			return refuse(fmt.Sprintf("the cluster went on after it: %s, a voter of shard %d then, holds no replica of it now", peer, s), restoreFresh)
		}
		what := fmt.Sprintf("the cluster went on after it: %s holds a %s of shard %d; this backup a %s", peer, cur, s, mine)
		if resp.GetYouRanSince() {
			what += fmt.Sprintf(" (%s was restored too, and this node has run in the cluster since)", peer)
		}
		return refuse(what, restoreFresh)
	}
	return byRestore, nil
}

// restoreFresh is the refusal's advice when the cluster went on.
const restoreFresh = "Start this node with an empty data directory instead (it joins as a new node and placement gives it replicas), " +
	"or restore the whole cluster from one node's backup with --restore --new-cluster"

// restoreRefusal is the restore check's refusal of backup m: what shows the cluster went
// on, and what to do.
func (n *Node) restoreRefusal(m *backupManifest, what, advice string) error {
	return fmt.Errorf("%w: %s is a backup of node %q taken %s, and %s. A replica restored from it would forget entries and votes "+
		"it acknowledged since, and its shard could lose acknowledged events or elect two leaders in one term. %s "+
		"(docs/operations.md, \"Backups\"). The backup's raft state is unchanged, and backup.json kept",
		ErrRestoreUnsafe, n.dir.path, m.Node, m.Created.Format(time.RFC3339), what, advice)
}

// crossCheckRestore, once every member answered, refuses a member accepted by where its
// replicas stood when it was restored while a node that ran in the cluster since (its
// ran_since) answers as restoring: that node is restored again, and would forget what it
// acknowledged since; the member's restored point no longer says the cluster is where the
// backup is.
func (n *Node) crossCheckRestore(m *backupManifest, peers map[uint64]*restorePeer) error {
	for _, id := range slices.Sorted(maps.Keys(peers)) {
		for _, r := range peers[id].ranSince {
			if p := peers[r]; p != nil && p.restorer {
				return n.restoreRefusal(m, fmt.Sprintf("the cluster went on after it: %s, starting on a restored backup, ran in the cluster "+
					"after %s was restored from a backup of this moment, and would forget what it did since", n.peerNames([]uint64{r}), n.peerNames([]uint64{id})),
					restoreFresh)
			}
		}
	}
	return nil
}

// aliveAddr returns the gRPC address of member id if gossip has it alive.
func (n *Node) aliveAddr(id uint64) (string, bool) {
	for _, m := range n.memberList() {
		if m.NodeID == id && m.Alive && m.GRPCAddr != "" {
			return m.GRPCAddr, true
		}
	}
	return "", false
}

// peerNames names node IDs for a log or an error: "n2", or the ID when no name is known.
func (n *Node) peerNames(ids []uint64) string {
	names := make([]string, 0, len(ids))
	for _, id := range ids {
		name := ""
		for _, m := range n.memberList() {
			if m.NodeID == id {
				name = m.Name
			}
		}
		if k := n.known.Load(); name == "" && k != nil {
			for _, m := range *k {
				if m.ID == id {
					name = m.Name
				}
			}
		}
		if name == "" {
			name = fmt.Sprintf("node %d", id)
		}
		names = append(names, name)
	}
	return strings.Join(names, ", ")
}

// askRaftPoints asks the node at addr for its RaftPoints of shards.
func (n *Node) askRaftPoints(ctx context.Context, addr string, shards []uint32) (*shoalv1.RaftPointsResponse, error) {
	conn, err := n.peers.get(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if id := n.clusterID(); id != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, shoalv1.ClusterIDHeader, id)
	}
	return shoalv1.NewClusterClient(conn).RaftPoints(ctx, &shoalv1.RaftPointsRequest{Shards: shards, NodeId: n.dir.id.NodeID})
}

// raftPoints answers RaftPoints: while this node holds for its own restore, the replicas it
// restores (or its refusal); otherwise its replicas' stored state, the shards not asked for
// that have the asking node in their configuration, and its restore record's points unless
// the asking node ran in the cluster since.
func (n *Node) raftPoints(req *shoalv1.RaftPointsRequest) (*shoalv1.RaftPointsResponse, error) {
	if msg := n.restore.refused.Load(); msg != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s refused its own restore: %s", n.dir.id.Name, *msg)
	}
	resp := &shoalv1.RaftPointsResponse{}
	self, asker := n.dir.id.NodeID, req.GetNodeId()
	if hold := n.restore.hold.Load(); hold != nil {
		resp.Restoring = true
		for _, s := range slices.Sorted(maps.Keys(*hold)) {
			switch r := (*hold)[s]; {
			case slices.Contains(req.GetShards(), s):
				resp.Current = append(resp.Current, r.proto(s))
			case asker != 0 && (slices.Contains(r.voters, asker) || slices.Contains(r.learners, asker)):
				resp.ListingYou = append(resp.ListingYou, s)
			}
		}
		return resp, nil
	}
	groups, err := n.dir.groups()
	if err != nil {
		return nil, err
	}
	for _, s := range groups {
		if !slices.Contains(req.GetShards(), s) {
			voters, learners, err := replica.StoredMembers(n.db, s)
			if err != nil {
				return nil, fmt.Errorf("node: shard %d: %w", s, err)
			}
			if asker != 0 && (slices.Contains(voters, asker) || slices.Contains(learners, asker)) {
				resp.ListingYou = append(resp.ListingYou, s)
			}
			continue
		}
		st, err := replica.Inspect(n.db, s)
		if err != nil {
			return nil, fmt.Errorf("node: shard %d: %w", s, err)
		}
		if slices.Contains(st.Voters, self) || slices.Contains(st.Learners, self) {
			r := heldReplica{point: raftPoint{Term: st.Term, LastIndex: st.LastIndex, LastTerm: st.LastTerm}, voters: st.Voters, learners: st.Learners}
			resp.Current = append(resp.Current, r.proto(s))
		}
	}
	n.restore.mu.Lock()
	defer n.restore.mu.Unlock()
	switch rec := n.restore.rec; {
	case rec == nil:
	case slices.Contains(rec.RanSince, asker):
		resp.YouRanSince = true
	default:
		for _, s := range req.GetShards() {
			if p, ok := rec.Points[s]; ok {
				resp.Restored = append(resp.Restored, &shoalv1.RaftPoint{Shard: s, Term: p.Term, LastIndex: p.LastIndex, LastTerm: p.LastTerm})
			}
		}
		if len(resp.Restored) > 0 {
			resp.RanSince = slices.Clone(rec.RanSince)
		}
	}
	return resp, nil
}

// loadRestoreRecord reads restored.json, if the node was ever restored.
func (n *Node) loadRestoreRecord() error {
	var rec restoreRecord
	ok, err := n.dir.readJSON(restoreRecordFile, &rec)
	if err != nil || !ok {
		return err
	}
	n.setRestoreRecord(&rec)
	return nil
}

// setRestoreRecord makes rec the restore record the node answers with and adds to.
func (n *Node) setRestoreRecord(rec *restoreRecord) {
	n.restore.mu.Lock()
	defer n.restore.mu.Unlock()
	n.setRestoreRecordLocked(rec)
}

func (n *Node) setRestoreRecordLocked(rec *restoreRecord) {
	ran := map[uint64]bool{}
	for _, id := range rec.RanSince {
		ran[id] = true
	}
	n.restore.rec = rec
	n.restore.ran.Store(&ran)
}

// noteRaftSenders records, in the restore record, the senders of msgs not heard from since
// the node's restore, and reports whether it could: a batch whose sender could not be
// recorded is dropped (raft sends again), so that no node runs in the cluster unrecorded.
func (n *Node) noteRaftSenders(msgs []replica.ShardMessage) bool {
	ran := n.restore.ran.Load()
	if ran == nil {
		return true
	}
	for _, m := range msgs {
		from := m.Msg.GetFrom()
		if from == 0 || (*ran)[from] {
			continue
		}
		n.restore.mu.Lock()
		rec := n.restore.rec
		if slices.Contains(rec.RanSince, from) {
			n.restore.mu.Unlock()
			continue
		}
		next := *rec
		next.RanSince = append(slices.Clone(rec.RanSince), from)
		slices.Sort(next.RanSince)
		err := n.dir.writeJSON(restoreRecordFile, &next)
		if err == nil {
			n.setRestoreRecordLocked(&next)
		}
		n.restore.mu.Unlock()
		if err != nil {
			n.log.Error("recording a peer heard from since this node's restore; its raft traffic is dropped until it is recorded", "peer", from, "err", err)
			return false
		}
		ran = n.restore.ran.Load()
	}
	return true
}

// raftReceiver is the transport's handler: the host, with the senders noted in the restore
// record, if the node was ever restored.
type raftReceiver struct {
	*replica.Host
	n *Node
}

// HandleMessages drops msgs while the restore check holds the shards closed (the group factory
// would refuse them, but a message queued then might reach the loop only after the hold ended,
// its sender unrecorded), and otherwise notes their senders first. The hold ends only once the
// restore record is set, so what passes here is recorded.
func (r raftReceiver) HandleMessages(msgs []replica.ShardMessage) {
	if r.n.restore.hold.Load() == nil && r.n.noteRaftSenders(msgs) {
		r.Host.HandleMessages(msgs)
	}
}

// ReceiveSnapshot refuses a snapshot while the restore check holds the shards closed, and
// otherwise notes its sender first.
func (r raftReceiver) ReceiveSnapshot(m replica.ShardMessage, rd io.Reader) error {
	if r.n.restore.hold.Load() != nil {
		return fmt.Errorf("node: shard %d's snapshot refused: the restore check holds the shards closed", m.Shard)
	}
	if !r.n.noteRaftSenders([]replica.ShardMessage{m}) {
		return fmt.Errorf("node: recording shard %d's snapshot sender %d since this node's restore failed", m.Shard, m.Msg.GetFrom())
	}
	return r.Host.ReceiveSnapshot(m, rd)
}

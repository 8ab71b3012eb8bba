package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/metadata"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/replica"
)

// A node started on a restored backup (--restore, without --new-cluster) holds its shards
// closed until it knows the cluster did not go on without the state it restores: raft
// replicas must never forget what they wrote, and one that comes back with an older log
// than it acknowledged can cost its shard acknowledged events, or let two leaders be elected
// in one term. Before it reopens its groups (and while it refuses the raft traffic that would
// open them), it asks every voter peer of each shard it holds as a voter where that peer's
// replica stands (RaftPoints), and goes on only when each holds the same raft log (the
// cluster was idle since the backup), or did when it was itself restored from a backup of the
// same moment and this node has not run in the cluster since (a whole-cluster restore). A
// peer that is down is waited for; one whose log differs refuses the start (ErrRestoreUnsafe),
// which leaves backup.json in place.

// ErrRestoreUnsafe is returned by Start for a restored backup (Config.Restore) whose shards'
// voter peers hold other raft logs than it: the cluster went on after the backup was taken,
// or the nodes' backups were not taken at the same idle moment.
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

func (p raftPoint) proto(shard uint32) *shoalv1.RaftPoint {
	return &shoalv1.RaftPoint{Shard: shard, Term: p.Term, LastIndex: p.LastIndex, LastTerm: p.LastTerm}
}

func pointOf(p *shoalv1.RaftPoint) raftPoint {
	return raftPoint{Term: p.GetTerm(), LastIndex: p.GetLastIndex(), LastTerm: p.GetLastTerm()}
}

// restoreRecord is restored.json.
type restoreRecord struct {
	Backup  string               `json:"backup"` // when the backup was taken (RFC 3339)
	Started time.Time            `json:"started"`
	Points  map[uint32]raftPoint `json:"points"` // by shard: the replicas held then
	// Peers: the voter peers of those shards; RanSince: those whose raft traffic reached this
	// node since (they ran in the cluster after the restore, and a restore of theirs from a
	// backup of that moment would forget what they did since).
	Peers    []uint64 `json:"peers,omitempty"`
	RanSince []uint64 `json:"ran_since,omitempty"`
}

// restoreState is the node's side of the restore check.
type restoreState struct {
	// hold: this node's points while it waits for its peers (holdForRestore); nil otherwise.
	hold atomic.Pointer[map[uint32]raftPoint]
	// own and peers: the restored replicas' points, and the shards each voter peer shares as
	// a voter (beginRestoreHold); Start's goroutine only.
	own   map[uint32]raftPoint
	peers map[uint64][]uint32
	mu    sync.Mutex
	rec   *restoreRecord // restored.json, nil when the node was never restored
	// watching: rec names peers not yet heard from (noteRaftSenders looks).
	watching atomic.Bool
}

// restoreWaitLogEvery is how often a held start says what it waits for.
const restoreWaitLogEvery = 10 * time.Second

// restoreAskEvery is how often a held start asks the peers it has no answer from.
const restoreAskEvery = 500 * time.Millisecond

// ownPoints reads where this node's replicas stand (stored state), and for each shard of which
// it is a voter, its other voters.
func (n *Node) ownPoints() (points map[uint32]raftPoint, peers map[uint64][]uint32, err error) {
	groups, err := n.dir.groups()
	if err != nil {
		return nil, nil, err
	}
	self := n.dir.id.NodeID
	points, peers = map[uint32]raftPoint{}, map[uint64][]uint32{}
	for _, id := range groups {
		st, err := replica.Inspect(n.db, id)
		if err != nil {
			return nil, nil, fmt.Errorf("node: shard %d: %w", id, err)
		}
		voter := slices.Contains(st.Voters, self)
		if !voter && !slices.Contains(st.Learners, self) {
			continue // removed, or empty: it holds nothing to forget
		}
		points[id] = raftPoint{Term: st.Term, LastIndex: st.LastIndex, LastTerm: st.LastTerm}
		if !voter {
			continue
		}
		for _, v := range st.Voters {
			if v != self {
				peers[v] = append(peers[v], id)
			}
		}
	}
	return points, peers, nil
}

// beginRestoreHold reads where the replicas of the backup being restored stand and, if some
// shard has other voters, holds the shards closed from here on: the group factory refuses
// raft traffic, and RaftPoints answers as restoring. Called by Start before gRPC serves.
func (n *Node) beginRestoreHold() error {
	own, peers, err := n.ownPoints()
	if err != nil {
		return err
	}
	n.restore.own, n.restore.peers = own, peers
	if len(peers) > 0 {
		n.restore.hold.Store(&own)
	}
	return nil
}

// holdForRestore runs the restore check for backup m (see above) and then records it:
// restored.json, and backup.json removed. Called by Start once gossip runs, before the groups
// reopen. A refused start keeps the hold while it closes, answering the peers' checks of it
// as restoring.
func (n *Node) holdForRestore(ctx context.Context, m *backupManifest) error {
	own, peers := n.restore.own, n.restore.peers
	if len(peers) > 0 {
		if err := n.awaitRestorePeers(ctx, m, own, peers); err != nil {
			return err
		}
	}
	rec := &restoreRecord{Backup: m.Created.Format(time.RFC3339Nano), Started: time.Now().UTC(), Points: own,
		Peers: slices.Sorted(maps.Keys(peers))}
	if err := n.dir.writeJSON(restoreRecordFile, rec); err != nil {
		return err
	}
	n.restore.mu.Lock()
	n.restore.rec = rec
	n.restore.watching.Store(len(rec.Peers) > 0)
	n.restore.mu.Unlock()
	n.restore.hold.Store(nil)
	return n.dir.finishRestore(m, n.log)
}

// awaitRestorePeers asks each voter peer (peers: the shards it shares as a voter) where its
// replicas stand until every one answered as it must; a peer that answers otherwise ends the
// start with ErrRestoreUnsafe.
func (n *Node) awaitRestorePeers(ctx context.Context, m *backupManifest, own map[uint32]raftPoint, peers map[uint64][]uint32) error {
	done := map[uint64]bool{}
	lastErr := map[uint64]error{}
	ticker := time.NewTicker(restoreAskEvery)
	defer ticker.Stop()
	logged := time.Now()
	n.log.Warn("started on a restored backup: the shards stay closed until each voter peer shows the cluster did not go on after it",
		"taken", m.Created, "peers", n.peerNames(slices.Sorted(maps.Keys(peers))))
	for {
		for id, shards := range peers {
			if done[id] {
				continue
			}
			addr, alive := n.aliveAddr(id)
			if !alive {
				lastErr[id] = errors.New("not alive in gossip")
				continue
			}
			resp, err := n.askRaftPoints(ctx, addr, shards)
			if err != nil {
				lastErr[id] = err
				continue
			}
			if err := n.judgeRestore(m, own, id, shards, resp); err != nil {
				return err
			}
			done[id] = true
			delete(lastErr, id)
		}
		if len(done) == len(peers) {
			n.log.Info("restore check passed: every voter peer holds the restored raft logs, or was restored from backups of the same moment")
			return nil
		}
		if time.Since(logged) >= restoreWaitLogEvery {
			logged = time.Now()
			var waiting []string
			for _, id := range slices.Sorted(maps.Keys(lastErr)) {
				waiting = append(waiting, fmt.Sprintf("%s (%v)", n.peerNames([]uint64{id}), lastErr[id]))
			}
			n.log.Warn("started on a restored backup: waiting for voter peers to answer before opening the shards; "+
				"start them (with --restore, for a whole-cluster restore), or stop this node and start it with an empty data directory",
				"waiting", strings.Join(waiting, ", "))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node: starting on a restored backup: waiting for voter peers to answer: %w", ctx.Err())
		case <-ticker.C:
		}
	}
}

// judgeRestore checks peer id's answer for the shards it shares with this node as a voter.
func (n *Node) judgeRestore(m *backupManifest, own map[uint32]raftPoint, id uint64, shards []uint32, resp *shoalv1.RaftPointsResponse) error {
	current, restored := map[uint32]raftPoint{}, map[uint32]raftPoint{}
	for _, p := range resp.GetCurrent() {
		current[p.GetShard()] = pointOf(p)
	}
	for _, p := range resp.GetRestored() {
		restored[p.GetShard()] = pointOf(p)
	}
	peer := n.peerNames([]uint64{id})
	for _, s := range shards {
		mine := own[s]
		cur, held := current[s]
		if held && cur == mine {
			continue
		}
		if was, ok := restored[s]; ok && was == mine {
			continue
		}
		advice := "Start this node with an empty data directory instead (it joins as a new node and placement gives it replicas), " +
			"or restore the whole cluster from one node's backup with --restore --new-cluster"
		what := fmt.Sprintf("the cluster went on after it: %s, a voter of shard %d, holds no replica of it now", peer, s)
		switch {
		case resp.GetRestoring():
			what = fmt.Sprintf("%s, starting on a restored backup too, holds another raft log of shard %d (a %s; this backup a %s): "+
				"the backups were not taken at one idle moment, and a cluster restored from them can lose entries one node applied",
				peer, s, cur, mine)
			advice = "Compare the backups with `shoal node inspect` and start the one furthest in every shard with --restore --new-cluster"
		case held:
			what = fmt.Sprintf("the cluster went on after it: %s, a voter of shard %d, holds a %s; this backup a %s", peer, s, cur, mine)
		}
		return fmt.Errorf("%w: %s is a backup of node %q taken %s, and %s. A replica restored from it would forget entries and votes "+
			"it acknowledged since, and its shard could lose acknowledged events or elect two leaders in one term. %s "+
			"(docs/operations.md, \"Backups\"). backup.json is kept: nothing was changed",
			ErrRestoreUnsafe, n.dir.path, m.Node, m.Created.Format(time.RFC3339), what, advice)
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
	if s := n.settings.Load(); s != nil {
		ctx = metadata.AppendToOutgoingContext(ctx, shoalv1.ClusterIDHeader, s.ClusterID)
	}
	return shoalv1.NewClusterClient(conn).RaftPoints(ctx, &shoalv1.RaftPointsRequest{Shards: shards, NodeId: n.dir.id.NodeID})
}

// raftPoints answers RaftPoints: while this node holds for its own restore, the points it
// restored; otherwise its replicas' stored state, and its restore record's points unless the
// asking node ran in the cluster since.
func (n *Node) raftPoints(req *shoalv1.RaftPointsRequest) (*shoalv1.RaftPointsResponse, error) {
	resp := &shoalv1.RaftPointsResponse{}
	if hold := n.restore.hold.Load(); hold != nil {
		resp.Restoring = true
		for _, s := range req.GetShards() {
			if p, ok := (*hold)[s]; ok {
				resp.Current = append(resp.Current, p.proto(s))
			}
		}
		return resp, nil
	}
	groups, err := n.dir.groups()
	if err != nil {
		return nil, err
	}
	self := n.dir.id.NodeID
	for _, s := range req.GetShards() {
		if !slices.Contains(groups, s) {
			continue
		}
		st, err := replica.Inspect(n.db, s)
		if err != nil {
			return nil, fmt.Errorf("node: shard %d: %w", s, err)
		}
		if slices.Contains(st.Voters, self) || slices.Contains(st.Learners, self) {
			resp.Current = append(resp.Current, raftPoint{Term: st.Term, LastIndex: st.LastIndex, LastTerm: st.LastTerm}.proto(s))
		}
	}
	n.restore.mu.Lock()
	defer n.restore.mu.Unlock()
	if rec := n.restore.rec; rec != nil && !slices.Contains(rec.RanSince, req.GetNodeId()) {
		for _, s := range req.GetShards() {
			if p, ok := rec.Points[s]; ok {
				resp.Restored = append(resp.Restored, p.proto(s))
			}
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
	n.restore.mu.Lock()
	defer n.restore.mu.Unlock()
	n.restore.rec = &rec
	n.restore.watching.Store(len(rec.RanSince) < len(rec.Peers))
	return nil
}

// noteRaftSenders records, in the restore record, the peers whose raft traffic reaches this
// node for the first time since its restore. Called for every batch received while some
// peer is unheard (restore.watching).
func (n *Node) noteRaftSenders(msgs []replica.ShardMessage) {
	n.restore.mu.Lock()
	defer n.restore.mu.Unlock()
	rec := n.restore.rec
	if rec == nil {
		return
	}
	for _, m := range msgs {
		from := m.Msg.GetFrom()
		if !slices.Contains(rec.Peers, from) || slices.Contains(rec.RanSince, from) {
			continue
		}
		next := *rec
		next.RanSince = append(slices.Clone(rec.RanSince), from)
		slices.Sort(next.RanSince)
		if err := n.dir.writeJSON(restoreRecordFile, &next); err != nil {
			n.log.Error("recording a peer heard from since this node's restore", "peer", from, "err", err)
			return // asked again with the next batch
		}
		n.restore.rec = &next
		rec = &next
	}
	n.restore.watching.Store(len(rec.RanSince) < len(rec.Peers))
}

// raftReceiver is the transport's handler: the host, with the senders noted for the restore
// record while some peer is unheard.
type raftReceiver struct {
	*replica.Host
	n *Node
}

func (r raftReceiver) HandleMessages(msgs []replica.ShardMessage) {
	if r.n.restore.watching.Load() {
		r.n.noteRaftSenders(msgs)
	}
	r.Host.HandleMessages(msgs)
}

// Package clusterstatus turns a node's answer to a status request into what an operator reads:
// nodes and shards by name, each shard's state, and notes on states that wait on the operator.
// `shoal cluster status` prints it as tables or JSON, and the node's web console as pages.
package clusterstatus

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// Status is a cluster's state as one node sees it, what `cluster status` prints. Node IDs
// are strings in JSON: they are 64-bit and would lose precision as numbers
// in JavaScript tools.
type Status struct {
	ClusterID   string `json:"cluster_id"`
	ShardCount  uint32 `json:"shard_count"`
	Replication uint32 `json:"replication"`
	AnsweredBy  string `json:"answered_by"`
	// ViewsFrom names the nodes whose own views the answer merges (empty from servers before
	// it was reported), Unanswered the alive nodes whose views it lacks: Partial when any.
	ViewsFrom  []string `json:"views_from"`
	Unanswered []string `json:"unanswered"`
	Partial    bool     `json:"partial"`
	Nodes      []Node   `json:"nodes"`
	Shards     []Shard  `json:"shards"`
	// Notes explain states an operator may wait on, such as a drain that cannot finish.
	Notes []string `json:"notes,omitempty"`
}

// Node is one member: alive or dead, with what it leads and holds.
type Node struct {
	Name            string `json:"name"`
	ID              string `json:"id"`
	Zone            string `json:"zone"`
	GRPC            string `json:"grpc"`
	HTTP            string `json:"http"`
	State           string `json:"state"` // alive, dead
	Decommissioning bool   `json:"decommissioning"`
	// Drained: decommissioning and holding no replica, so it may be stopped (or, dead, it was).
	Drained  bool   `json:"drained"`
	Stopping bool   `json:"stopping"` // alive and handing off its leaderships before it exits
	Version  string `json:"version"`
	Leads    uint32 `json:"leads"`
	Replicas uint32 `json:"replicas"`
	// Replication is the factor the node gossips and places its shards by (0: unknown).
	Replication uint32 `json:"replication,omitempty"`
	// NotReady is why the node answers /readyz 503, as it said itself ("": ready, or not asked).
	NotReady string `json:"not_ready,omitempty"`
	// DiskLow: the node's disk has less free space than its --min-free-disk, so the shards it
	// holds a replica of refuse appends.
	DiskLow bool `json:"disk_low,omitempty"`
	// DiskSlow: the node's disk syncs far slower than the other members' (--slow-sync), or
	// hangs: it hands its leaderships to voters on healthy disks and is given none.
	DiskSlow bool `json:"disk_slow,omitempty"`
	// SyncMicros is the mean duration of the node's write-ahead log syncs over its last
	// measured window, in microseconds, as it gossips it (0: unknown).
	SyncMicros uint64 `json:"sync_micros,omitempty"`
}

// Shard is one shard: its leader and replicas by name, and its state.
type Shard struct {
	Shard      uint32   `json:"shard"`
	Leader     string   `json:"leader"` // node name, "" when none
	Term       uint64   `json:"term"`
	Voters     []string `json:"voters"`
	Learners   []string `json:"learners"`
	DeadVoters []string `json:"dead_voters,omitempty"` // voters on nodes not alive
	// Unheard: members (voters or learners) on nodes gossip holds alive that the shard's
	// leader has not heard from in raft for a while (ShardInfo.unheard).
	Unheard      []string `json:"unheard,omitempty"`
	State        string   `json:"state"` // ok, degraded, under-replicated, unavailable, unknown
	Applied      uint64   `json:"applied"`
	LastPosition uint64   `json:"last_position"` // the next position the shard's log assigns (0: empty), as ShardInfo has it
	Format       uint64   `json:"format"`        // state-machine format (0: not reported by the leader's version)
	// LeaderlessMS: how long the replica whose view was shown has known no leader (0 while
	// one is known, and from servers before the field).
	LeaderlessMS uint64 `json:"leaderless_ms,omitempty"`
	// AppendsRefused: the voters with room on their disks are no majority, so the leader
	// refuses appends (RefusesAppends), whatever State says of the replicas.
	AppendsRefused bool `json:"appends_refused,omitempty"`
	// Members are the voters, sorted by name, each marked when its node is not alive (by ID:
	// two nodes may share a name, a wiped node that came back as a new member).
	Members []Member `json:"-"`
}

// Member is a shard's voter.
type Member struct {
	ID      string // the node's ID, as Node.ID gives it
	Name    string
	Dead    bool
	Unheard bool // alive in gossip, but its leader's raft does not hear it
}

// New names st's nodes (a node the answer does not list keeps its ID), sorts nodes and
// replicas by name, derives each shard's state and writes the notes.
func New(st *shoalv1.StatusResponse) *Status {
	topo := st.GetTopology()
	names := map[uint64]string{}
	alive := map[uint64]bool{}
	for _, n := range topo.GetNodes() {
		names[n.GetId()] = n.GetName()
		alive[n.GetId()] = alive[n.GetId()] || n.GetAlive()
	}
	name := func(id uint64) string {
		if n, ok := names[id]; ok && n != "" {
			return n
		}
		return strconv.FormatUint(id, 10)
	}
	s := &Status{
		ClusterID:   topo.GetSettings().GetClusterId(),
		ShardCount:  topo.GetSettings().GetShards(),
		Replication: topo.GetSettings().GetReplication(),
		AnsweredBy:  name(st.GetNodeId()),
		ViewsFrom:   []string{},
		Unanswered:  []string{},
		Partial:     len(topo.GetUnanswered()) > 0,
		Nodes:       []Node{},
		Shards:      []Shard{},
	}
	for _, id := range topo.GetViewsFrom() {
		s.ViewsFrom = append(s.ViewsFrom, name(id))
	}
	for _, id := range topo.GetUnanswered() {
		s.Unanswered = append(s.Unanswered, name(id))
	}
	slices.Sort(s.ViewsFrom) // the server's order says nothing; sorted, they read at a glance
	slices.Sort(s.Unanswered)
	for _, n := range topo.GetNodes() {
		state := "dead"
		if n.GetAlive() {
			state = "alive"
		}
		// A dead node's last gossip may still say it was stopping: it has stopped since.
		s.Nodes = append(s.Nodes, Node{
			Name: n.GetName(), ID: strconv.FormatUint(n.GetId(), 10), Zone: n.GetZone(),
			GRPC: n.GetGrpcAddr(), HTTP: n.GetHttpAddr(), State: state,
			Decommissioning: n.GetDecommissioning(), Drained: n.GetDecommissioning() && n.GetReplicas() == 0,
			Stopping: n.GetStopping() && n.GetAlive(), Version: n.GetVersion(),
			Leads: n.GetShardsLed(), Replicas: n.GetReplicas(), Replication: n.GetReplication(),
			NotReady: n.GetNotReady(), DiskLow: n.GetDiskLow(), DiskSlow: n.GetDiskSlow(), SyncMicros: n.GetSyncMicros(),
		})
	}
	slices.SortFunc(s.Nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	for _, sh := range topo.GetShards() {
		ss := Shard{
			Shard: sh.GetShard(), Term: sh.GetTerm(), State: "ok",
			Applied: sh.GetApplied(), LastPosition: sh.GetLastPosition(), Format: sh.GetFormat(),
			Voters: []string{}, Learners: []string{},
		}
		if sh.GetLeaderId() != 0 {
			ss.Leader = name(sh.GetLeaderId())
		} else {
			ss.LeaderlessMS = sh.GetLeaderlessMs()
		}
		for _, id := range sh.GetUnheard() {
			if alive[id] {
				ss.Unheard = append(ss.Unheard, name(id))
			}
		}
		unheardVoters := 0
		for _, v := range sh.GetVoters() {
			unheard := alive[v] && slices.Contains(sh.GetUnheard(), v)
			ss.Voters = append(ss.Voters, name(v))
			ss.Members = append(ss.Members, Member{ID: strconv.FormatUint(v, 10), Name: name(v), Dead: !alive[v], Unheard: unheard})
			switch {
			case !alive[v]:
				ss.DeadVoters = append(ss.DeadVoters, name(v))
			case unheard:
				unheardVoters++
			}
		}
		for _, l := range sh.GetLearners() {
			ss.Learners = append(ss.Learners, name(l))
		}
		slices.Sort(ss.Voters) // raft's configuration order says nothing; sorted, they compare at a glance
		slices.Sort(ss.Learners)
		slices.Sort(ss.DeadVoters)
		slices.Sort(ss.Unheard)
		slices.SortStableFunc(ss.Members, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
		// A shard with a voter down runs on the others: one failure more and it has no quorum.
		switch {
		case sh.GetUnknown(): // its leader may be where the answering node cannot see
			ss.State = "unknown"
		case sh.GetUnavailable():
			ss.State = "unavailable"
		case len(ss.DeadVoters) > 0 || unheardVoters > 0:
			ss.State = "degraded"
		case sh.GetUnderReplicated():
			ss.State = "under-replicated"
		}
		s.Shards = append(s.Shards, ss)
	}
	s.markAppendsRefused()
	s.Notes = append(s.StalledDrains(), s.mixedFormats()...)
	s.Notes = append(s.Notes, s.mixedVersions()...)
	s.Notes = append(s.Notes, s.notReady()...)
	s.Notes = append(s.Notes, s.diskLow()...)
	s.Notes = append(s.Notes, s.diskSlow()...)
	s.Notes = append(s.Notes, s.unheard()...)
	s.Notes = append(s.Notes, s.zonesAlike()...)
	noted := map[string]bool{} // one note per zone, naming every node draining there
	for _, n := range s.Nodes {
		if noted[n.Zone] {
			continue
		}
		if note := s.DrainZone(n.Name); note != "" {
			noted[n.Zone] = true
			s.Notes = append(s.Notes, note)
		}
	}
	s.Notes = append(s.Notes, s.replicationSpread()...)
	s.Notes = append(s.Notes, s.replicaCounts()...)
	return s
}

// unheard explains the members that shards' leaders do not hear in raft while gossip holds
// them alive, one note per node.
func (s *Status) unheard() []string {
	shards := map[string]int{}
	for _, sh := range s.Shards {
		for _, name := range sh.Unheard {
			shards[name]++
		}
	}
	var notes []string
	for _, name := range slices.Sorted(maps.Keys(shards)) {
		notes = append(notes, fmt.Sprintf("the leaders of %s do not hear %s in raft, though gossip holds it alive: it is cut "+
			"off from them, wedged, or not the node it was (a node started again on an empty data directory without --join "+
			"makes a cluster of its own at the old address)", Count(shards[name], "shard"), name))
	}
	return notes
}

// replicaCounts explains shards whose voters do not number the replication factor: too few
// because the cluster has too few nodes or zones (a one-node cluster under the default factor
// of 3 lists every shard as under-replicated), or too many while placement takes them away
// one at a time (after the factor was lowered), which the states, all "ok", do not show.
func (s *Status) replicaCounts() []string {
	var notes []string
	under := s.StateCounts()["under-replicated"]
	if room := s.ReplicaRoom(int(s.Replication)); under > 0 && room != "" {
		notes = append(notes, room)
	}
	over := 0
	for _, sh := range s.Shards {
		if sh.State == "ok" && s.Replication > 0 && len(sh.Voters) > int(s.Replication) {
			over++
		}
	}
	if over > 0 {
		notes = append(notes, fmt.Sprintf("%s %s more voters than the replication factor (%d): their leaders "+
			"remove one at a time (a factor lowered, or a replica moving)", Count(over, "shard"), Agree(over, "has", "have"), s.Replication))
	}
	return notes
}

// Agree is one for n == 1, many otherwise: a verb agreeing with a count ("has", "have").
func Agree(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// notReady names the alive nodes that said they are not ready, and why.
func (s *Status) notReady() []string {
	var out []string
	for _, n := range s.Nodes {
		if n.notReady() {
			out = append(out, fmt.Sprintf("%s is not ready: %s", n.Name, n.NotReady))
		}
	}
	return out
}

// notReady reports whether n is alive and said it is not ready.
func (n Node) notReady() bool { return n.State == "alive" && n.NotReady != "" }

// NotReadyNodes counts the alive nodes that said they are not ready.
func (s *Status) NotReadyNodes() int { return s.countNodes(Node.notReady) }

// countNodes counts the nodes that is true of.
func (s *Status) countNodes(is func(Node) bool) int {
	count := 0
	for _, n := range s.Nodes {
		if is(n) {
			count++
		}
	}
	return count
}

// diskLow names the alive nodes whose disk is below their --min-free-disk.
func (s *Status) diskLow() []string {
	var out []string
	for _, name := range s.lowOnDisk() {
		out = append(out, fmt.Sprintf("%s has less free disk than its --min-free-disk: a shard most of whose voters are "+
			"so refuses appends until space is freed (reads, deletes and truncations go on)", name))
	}
	return out
}

// lowOnDisk returns the names of the alive nodes that said their disk is below their
// --min-free-disk.
func (s *Status) lowOnDisk() []string {
	var names []string
	for _, n := range s.Nodes {
		if n.lowOnDisk() {
			names = append(names, n.Name)
		}
	}
	return names
}

// lowOnDisk reports whether n is alive and said its disk is below its --min-free-disk.
func (n Node) lowOnDisk() bool { return n.State == "alive" && n.DiskLow }

// DiskLowNodes counts the alive nodes whose disk is below their --min-free-disk.
func (s *Status) DiskLowNodes() int { return len(s.lowOnDisk()) }

// diskSlow names the alive nodes whose disk counts as slow, and what their syncs take beside
// the fastest other alive node's.
func (s *Status) diskSlow() []string {
	var out []string
	for _, n := range s.Nodes {
		if !n.SlowDisk() {
			continue
		}
		var fastest uint64
		for _, o := range s.Nodes {
			if o.ID != n.ID && o.State == "alive" && o.SyncMicros > 0 && (fastest == 0 || o.SyncMicros < fastest) {
				fastest = o.SyncMicros
			}
		}
		took := "too few syncs lately to time them; slow or hung ones counted it so"
		if n.SyncMicros > 0 {
			took = "its syncs took " + SyncString(n.SyncMicros) + " on average over its last 10 s"
			if fastest > 0 {
				took += ", the fastest other node's " + SyncString(fastest)
			}
		}
		out = append(out, fmt.Sprintf("%s's disk is slow (%s): its leaderships go to voters on healthy disks, "+
			"and it is given none until its syncs keep within bounds for 30 s (--slow-sync)", n.Name, took))
	}
	return out
}

// SlowDisk reports whether n is alive and said its disk is slow (a dead node's last word is no
// measure of its disk now).
func (n Node) SlowDisk() bool { return n.State == "alive" && n.DiskSlow }

// DiskSlowNodes counts the alive nodes whose disk counts as slow.
func (s *Status) DiskSlowNodes() int { return s.countNodes(Node.SlowDisk) }

// SyncString is a mean sync of micros microseconds as the status prints it ("-": unknown).
func SyncString(micros uint64) string {
	if micros == 0 {
		return "-"
	}
	d := time.Duration(micros) * time.Microsecond
	if d >= 10*time.Millisecond {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Microsecond).String()
}

// RefusesAppends reports whether the leader of a shard of voters voters, low of them on disks
// below their --min-free-disk, refuses appends: when those with room are no majority.
func RefusesAppends(voters, low int) bool { return low > 0 && voters-low <= voters/2 }

// markAppendsRefused sets AppendsRefused on the shards whose leaders refuse appends for their
// voters' disks (RefusesAppends, as the leaders count).
func (s *Status) markAppendsRefused() {
	low := map[string]bool{} // by ID, as the leaders count them: two nodes may share a name
	for _, n := range s.Nodes {
		if n.lowOnDisk() {
			low[n.ID] = true
		}
	}
	if len(low) == 0 {
		return
	}
	for i := range s.Shards {
		sh := &s.Shards[i]
		k := 0
		for _, m := range sh.Members {
			if low[m.ID] {
				k++
			}
		}
		sh.AppendsRefused = RefusesAppends(len(sh.Members), k)
	}
}

// AppendsRefused returns the shards whose leaders refuse appends for their voters' disks
// (Shard.AppendsRefused).
func (s *Status) AppendsRefused() map[uint32]bool {
	var refused map[uint32]bool
	for _, sh := range s.Shards {
		if sh.AppendsRefused {
			if refused == nil {
				refused = map[uint32]bool{}
			}
			refused[sh.Shard] = true
		}
	}
	return refused
}

// replicationSpread points at live nodes that place shards by different replication factors:
// a change (shoal cluster set-replication) still spreading by gossip, which takes a moment, or
// a node that cannot follow it (or missed it) when the note stays.
func (s *Status) replicationSpread() []string {
	by := map[uint32][]string{}
	for _, n := range s.Nodes {
		if n.State == "alive" && n.Replication != 0 {
			by[n.Replication] = append(by[n.Replication], n.Name)
		}
	}
	if len(by) < 2 {
		return nil
	}
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, fmt.Sprintf("%s %d", strings.Join(by[r], ", "), r))
	}
	return []string{fmt.Sprintf("nodes place shards by different replication factors (%s): a change of it is still "+
		"spreading; if this stays, a node does not follow changes (its version) and the factor should be set again once it does",
		strings.Join(parts, "; "))}
}

// zonesAlike points at zone names that differ only in case, "z1" and "Z1": placement compares
// zones byte for byte and takes them for two zones (a node alone in one gets a replica of
// every shard), which is seldom what was meant. Only live nodes that are not being drained
// count: a decommissioning node's zone no longer matters to placement, nor a dead one's once it
// is replaced (after --dead-after), and a note about a node long gone would never go away.
func (s *Status) zonesAlike() []string {
	spellings := map[string][]string{}
	for _, n := range s.Nodes {
		if n.State != "alive" || n.Decommissioning {
			continue
		}
		k := strings.ToLower(n.Zone)
		if !slices.Contains(spellings[k], n.Zone) {
			spellings[k] = append(spellings[k], n.Zone)
		}
	}
	var notes []string
	for _, k := range slices.Sorted(maps.Keys(spellings)) {
		if zs := spellings[k]; len(zs) > 1 {
			slices.Sort(zs)
			notes = append(notes, fmt.Sprintf("zones %s differ only in case: placement takes them for %d zones "+
				"(a zone name is compared byte for byte); give their nodes one spelling of --zone", quoteList(zs), len(zs)))
		}
	}
	return notes
}

// quoteList is "a", "b" and "c".
func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return List(q)
}

// List is a, b and c.
func List(ss []string) string {
	if len(ss) <= 1 {
		return strings.Join(ss, "")
	}
	return strings.Join(ss[:len(ss)-1], ", ") + " and " + ss[len(ss)-1]
}

// mixedFormats explains shards at different formats, as during a rolling upgrade: a shard's
// leader raises it once every node holding a replica runs a version that applies the later
// format, and until then it keeps the earlier one. A shard led by a version that does not
// report formats counts as format 1.
func (s *Status) mixedFormats() []string {
	count := map[uint64]int{}
	for _, sh := range s.Shards {
		if sh.State != "unavailable" && sh.State != "unknown" {
			count[max(sh.Format, 1)]++
		}
	}
	if len(count) < 2 {
		return nil
	}
	formats := slices.Sorted(maps.Keys(count))
	var parts []string
	for _, f := range formats {
		parts = append(parts, fmt.Sprintf("%d at format %d", count[f], f))
	}
	return []string{fmt.Sprintf("shards are at different formats (%s): a shard is raised to format %d once every node "+
		"holding it runs a version that applies it and is alive; until then it keeps its format",
		strings.Join(parts, ", "), formats[len(formats)-1])}
}

// mixedVersions names the versions the alive nodes run when they differ, as during a rolling
// upgrade: shards stay at the format all their members apply, and placement keeps replicas of
// raised shards off the older nodes, until the upgrade is finished.
func (s *Status) mixedVersions() []string {
	byVersion := map[string][]string{}
	for _, n := range s.Nodes {
		if n.State == "alive" && n.Version != "" {
			byVersion[n.Version] = append(byVersion[n.Version], n.Name)
		}
	}
	if len(byVersion) < 2 {
		return nil
	}
	var parts []string
	for _, v := range slices.Sorted(maps.Keys(byVersion)) {
		parts = append(parts, fmt.Sprintf("%s on %s", v, strings.Join(byVersion[v], ", ")))
	}
	return []string{fmt.Sprintf("the nodes run %d versions (%s): an upgrade under way; finish it one node at a time, "+
		"each once `cluster status --check` exits 0 (docs/operations.md, \"Upgrades\")", len(byVersion), strings.Join(parts, "; "))}
}

// StalledDrains explains why a decommissioning node that is alive keeps replicas: placement
// moves a replica only to a node that can take it, and with fewer other nodes alive than the
// replication factor there is none, so the node gives up its leaderships and waits.
func (s *Status) StalledDrains() []string {
	others, _ := s.holders()
	if others >= int(s.Replication) {
		return nil
	}
	var notes []string
	for _, n := range s.Nodes {
		if n.State == "alive" && n.Decommissioning && n.Replicas > 0 {
			notes = append(notes, fmt.Sprintf("%s is decommissioning but still holds %s, which no other node "+
				"can take yet: %s alive for replication %d; start a node to finish the drain",
				n.Name, Count(int(n.Replicas), "replica"), Count(others, "other node"), s.Replication))
		}
	}
	return notes
}

// DrainZone says, when node name is being drained and holds replicas ("" otherwise), that the
// nodes draining in its zone are the zone's last able to hold replicas, and that the cluster's
// other such nodes lie in fewer zones than the replication factor: once they are drained, some
// shards keep two or more replicas in one zone, where an outage of that zone can take their
// quorum, and count as under-replicated until a node of another zone joins, or one of the
// zone's nodes that are down comes back. A drain that cannot move the replicas at all is
// StalledDrains'.
func (s *Status) DrainZone(name string) string {
	zone, found := "", false
	for _, n := range s.Nodes {
		if n.Name == name && n.State == "alive" && n.Decommissioning && n.Replicas > 0 {
			zone, found = n.Zone, true
		}
	}
	nodes, zones := s.holders()
	if !found || zone == "" || zones[zone] || zones[""] || nodes < int(s.Replication) || len(zones) >= int(s.Replication) {
		return ""
	}
	var draining, down []string
	for _, n := range s.Nodes {
		switch {
		case n.Zone != zone:
		case n.State == "alive" && n.Decommissioning:
			draining = append(draining, n.Name)
		case n.State != "alive" && !n.Decommissioning:
			down = append(down, cmp.Or(n.Name, n.ID))
		}
	}
	until := "a node of another zone joins"
	if len(down) > 0 {
		until = fmt.Sprintf("%s %s back or a node of another zone joins", List(down), Agree(len(down), "comes", "come"))
	}
	return fmt.Sprintf("%s %s the last of zone %q to hold replicas: once drained, the other nodes are in %s "+
		"(%s) for replication %d, so shards keep more than one replica in a zone, whose outage can take their quorum, "+
		"and count as under-replicated until %s",
		List(draining), Agree(len(draining), "is", "are"), zone, Count(len(zones), "zone"),
		List(slices.Sorted(maps.Keys(zones))), s.Replication, until)
}

// holders counts the nodes that can hold replicas, alive and not decommissioning, and the zones
// they are in.
func (s *Status) holders() (nodes int, zones map[string]bool) {
	zones = map[string]bool{}
	for _, n := range s.Nodes {
		if n.State == "alive" && !n.Decommissioning {
			nodes++
			zones[n.Zone] = true
		}
	}
	return nodes, zones
}

// ReplicaRoom says, when the cluster has fewer nodes able to hold replicas (alive, not
// decommissioning), or fewer zones among them, than replication, that its shards stay
// under-replicated ("" otherwise), and until when: nodes down that are not decommissioning
// come back, or more join.
func (s *Status) ReplicaRoom(replication int) string {
	nodes, zones := s.holders()
	var down, draining []string
	for _, n := range s.Nodes {
		switch {
		case n.State != "alive" && !n.Decommissioning:
			down = append(down, cmp.Or(n.Name, n.ID))
		case n.State == "alive" && n.Decommissioning:
			draining = append(draining, cmp.Or(n.Name, n.ID))
		}
	}
	// Decommissioning nodes keep the replicas no other node can take, so that shards can show
	// more voters than the count below: say why they do not count.
	besides := ""
	if len(draining) > 0 {
		besides = fmt.Sprintf(" (besides %s, decommissioning, which %s the replicas no other node can take)",
			List(draining), Agree(len(draining), "keeps", "keep"))
	}
	switch {
	case nodes < replication && len(down) > 0:
		verb := "come"
		if len(down) == 1 {
			verb = "comes"
		}
		return fmt.Sprintf("the cluster has %s alive to hold replicas%s: its shards stay under-replicated (%d of %d) "+
			"until %s %s back or more nodes join", Count(nodes, "node"), besides, nodes, replication, List(down), verb)
	case nodes < replication:
		return fmt.Sprintf("the cluster has %s to hold replicas%s: its shards stay under-replicated (%d of %d) until more join",
			Count(nodes, "node"), besides, nodes, replication)
	case len(zones) < replication && !zones[""]:
		return fmt.Sprintf("the cluster's live nodes are in %s: shards get %d replicas, but count as under-replicated "+
			"(fewer zones than replicas) until nodes of more zones join", Count(len(zones), "zone"), replication)
	}
	return ""
}

// StateCounts counts the shards in each state.
func (s *Status) StateCounts() map[string]int {
	counts := map[string]int{}
	for _, sh := range s.Shards {
		counts[sh.State]++
	}
	return counts
}

// Count says n things: "1 node", "3 nodes".
func Count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

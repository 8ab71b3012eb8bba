package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
)

func (a *app) clusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect the cluster",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	var (
		server string
		asJSON bool
	)
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster's nodes and shards",
		Long: `Show the cluster's nodes and shards as the node at --server (or $SHOAL_SERVER) sees
them, merged with the views of the other nodes it reaches; the first line names the
node that answered. Only that node is asked: during a partition, ask a node on each
side for its view. A node that cannot be reached fails the command (exit code 1).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var st *shoalv1.StatusResponse
			err := a.call(cmd, server, func(ctx context.Context, c *client.Client) (err error) {
				if st, err = c.NodeStatus(ctx, server); err != nil { // that node's view, not any node's
					return a.unreachable(err, server)
				}
				return nil
			})
			if err != nil {
				return err
			}
			s := newClusterStatus(st)
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			return s.writeTables(a.stdout)
		},
	}
	a.serverFlag(status, &server)
	status.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	cmd.AddCommand(status, a.clusterBackupCmd())
	return cmd
}

func (a *app) nodeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Manage nodes",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	var server string
	decom := &cobra.Command{
		Use:   "decommission NAME",
		Short: "Drain a node: move its replicas and leaderships to other nodes, for it to be stopped",
		Long: `Drain a node before stopping it for good: placement moves its replicas and
leaderships to other nodes (a replica moves only to a node that can take it, so a
cluster with no more nodes than the replication factor keeps them, and says so).
The node stays a member: watch 'shoal cluster status' until it holds 0 replicas,
then stop it. 'shoal node recommission NAME' cancels the drain.`,
		Args: exactArgs("name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.nodeOp(cmd, server, args[0], func(ctx context.Context, c *client.Client) error {
				if err := c.Decommission(ctx, args[0]); err != nil {
					return err
				}
				if _, err := fmt.Fprintf(a.stdout, "decommissioning %s: its replicas are moving away; follow with 'shoal cluster status'\n", args[0]); err != nil {
					return err
				}
				// Best effort: say at once when the drain cannot finish yet.
				st, err := c.Status(ctx)
				if err != nil {
					return nil
				}
				cs := newClusterStatus(st)
				for i := range cs.Nodes {
					if cs.Nodes[i].Name == args[0] {
						cs.Nodes[i].Decommissioning = true // the flag may not have been gossiped yet
					}
				}
				for _, note := range cs.stalledDrains() {
					fmt.Fprintf(a.stdout, "note: %s\n", note)
				}
				return nil
			})
		},
	}
	a.serverFlag(decom, &server)
	recom := &cobra.Command{
		Use:   "recommission NAME",
		Short: "Cancel a node's decommission: it may hold replicas and lead shards again",
		Args:  exactArgs("name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.nodeOp(cmd, server, args[0], func(ctx context.Context, c *client.Client) error {
				found, err := c.Recommission(ctx, args[0])
				if status.Code(err) == codes.Unimplemented {
					return &explainedError{code: exitError, msg: fmt.Sprintf("a node on the way to %s runs a version without "+
						"recommission: upgrade it, or stop %s, delete the file 'decommissioning' in its data directory and start it again",
						args[0], args[0])}
				}
				if err != nil {
					return err
				}
				msg := "%s is no longer decommissioning: placement may give it replicas and leaderships again\n"
				switch found {
				case client.NotDecommissioning:
					msg = "%s was not decommissioning: nothing changed\n"
				case client.MaybeRecommissioned:
					msg = "%s is not decommissioning (an attempt whose answer was lost may have cancelled its drain): " +
						"placement may give it replicas and leaderships\n"
				}
				_, err = fmt.Fprintf(a.stdout, msg, args[0])
				return err
			})
		},
	}
	a.serverFlag(recom, &server)
	cmd.AddCommand(decom, recom, a.nodeBackupCmd())
	return cmd
}

// nodeOp dials server and runs op, a request about the node named name, explaining the
// failures the node commands share: no such node, the server's refusal, no server.
func (a *app) nodeOp(cmd *cobra.Command, server, name string, op func(context.Context, *client.Client) error) error {
	return a.call(cmd, server, func(ctx context.Context, c *client.Client) error {
		err := op(ctx, c)
		var explained *explainedError
		switch {
		case err == nil, errors.As(err, &explained):
			return err
		case status.Code(err) == codes.NotFound:
			return usagef("there is no node named %q in the cluster; 'shoal cluster status' lists the names", name)
		case status.Code(err) == codes.FailedPrecondition: // the server answered: say what it said
			return errors.New(sentence(status.Convert(err).Message()))
		case strings.Contains(lastMessage(err), "alive in gossip, did not answer at"):
			// The server answered, but the named node, which runs the operation, did not.
			return fmt.Errorf("the cluster at %s answered, but %s; try again once it answers", server, lastMessage(err))
		case errors.Is(err, client.ErrUnavailable) && strings.Contains(lastMessage(err), "while dialing"):
			// The dial reached server (the call runs once it did), and the client's last
			// attempt went to another node it learnt of, maybe the named node itself.
			return fmt.Errorf("the cluster at %s answered, but the request about %q did not go through: %s; "+
				"'shoal cluster status' shows which node listens where; try again once %s answers", server, name, lastMessage(err), name)
		}
		return a.unreachable(err, server)
	})
}

// lastMessage returns the message of the status err carries (the last attempt's, under the
// client's retry error), or err's text when it carries none.
func lastMessage(err error) string {
	if st, ok := lastStatus(err); ok {
		return st.Message()
	}
	return err.Error()
}

// lastStatus returns the status err wraps: under the client's retry error, the last
// attempt's, with its own message (status.Convert would give the whole error's text).
func lastStatus(err error) (*status.Status, bool) {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return nil, false
	}
	return se.GRPCStatus(), true
}

// call dials server and runs fn with the client, both within callTimeout, and closes the
// client. A failure to dial is returned as is; fn explains its own.
func (a *app) call(cmd *cobra.Command, server string, fn func(context.Context, *client.Client) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
	defer cancel()
	c, err := a.dial(ctx, server)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c)
}

// clusterStatus is what `cluster status` prints, as tables or JSON. Node IDs
// are strings in JSON: they are 64-bit and would lose precision as numbers
// in JavaScript tools.
type clusterStatus struct {
	ClusterID   string `json:"cluster_id"`
	ShardCount  uint32 `json:"shard_count"`
	Replication uint32 `json:"replication"`
	AnsweredBy  string `json:"answered_by"`
	// ViewsFrom names the nodes whose own views the answer merges (empty from servers before
	// it was reported), Unanswered the alive nodes whose views it lacks: Partial when any.
	ViewsFrom  []string      `json:"views_from"`
	Unanswered []string      `json:"unanswered"`
	Partial    bool          `json:"partial"`
	Nodes      []nodeStatus  `json:"nodes"`
	Shards     []shardStatus `json:"shards"`
	// Notes explain states an operator may wait on, such as a drain that cannot finish.
	Notes []string `json:"notes,omitempty"`
}

type nodeStatus struct {
	Name            string `json:"name"`
	ID              string `json:"id"`
	Zone            string `json:"zone"`
	GRPC            string `json:"grpc"`
	HTTP            string `json:"http"`
	State           string `json:"state"` // alive, dead
	Decommissioning bool   `json:"decommissioning"`
	Stopping        bool   `json:"stopping"` // handing off its leaderships before it exits
	Version         string `json:"version"`
	Leads           uint32 `json:"leads"`
	Replicas        uint32 `json:"replicas"`
}

type shardStatus struct {
	Shard        uint32   `json:"shard"`
	Leader       string   `json:"leader"` // node name, "" when none
	Term         uint64   `json:"term"`
	Voters       []string `json:"voters"`
	Learners     []string `json:"learners"`
	DeadVoters   []string `json:"dead_voters,omitempty"` // voters on nodes not alive
	State        string   `json:"state"`                 // ok, degraded, under-replicated, unavailable, unknown
	Applied      uint64   `json:"applied"`
	LastPosition uint64   `json:"last_position"` // the next position the shard's log assigns (0: empty), as ShardInfo has it
	Format       uint64   `json:"format"`        // state-machine format (0: not reported by the leader's version)
	// LeaderlessMS: how long the replica whose view was shown has known no leader (0 while
	// one is known, and from servers before the field).
	LeaderlessMS uint64 `json:"leaderless_ms,omitempty"`
}

func newClusterStatus(st *shoalv1.StatusResponse) *clusterStatus {
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
	s := &clusterStatus{
		ClusterID:   topo.GetSettings().GetClusterId(),
		ShardCount:  topo.GetSettings().GetShards(),
		Replication: topo.GetSettings().GetReplication(),
		AnsweredBy:  name(st.GetNodeId()),
		ViewsFrom:   []string{},
		Unanswered:  []string{},
		Partial:     len(topo.GetUnanswered()) > 0,
		Nodes:       []nodeStatus{},
		Shards:      []shardStatus{},
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
		s.Nodes = append(s.Nodes, nodeStatus{
			Name: n.GetName(), ID: strconv.FormatUint(n.GetId(), 10), Zone: n.GetZone(),
			GRPC: n.GetGrpcAddr(), HTTP: n.GetHttpAddr(), State: state,
			Decommissioning: n.GetDecommissioning(), Stopping: n.GetStopping(), Version: n.GetVersion(),
			Leads: n.GetShardsLed(), Replicas: n.GetReplicas(),
		})
	}
	slices.SortFunc(s.Nodes, func(a, b nodeStatus) int { return strings.Compare(a.Name, b.Name) })
	for _, sh := range topo.GetShards() {
		ss := shardStatus{
			Shard: sh.GetShard(), Term: sh.GetTerm(), State: "ok",
			Applied: sh.GetApplied(), LastPosition: sh.GetLastPosition(), Format: sh.GetFormat(),
			Voters: []string{}, Learners: []string{},
		}
		if sh.GetLeaderId() != 0 {
			ss.Leader = name(sh.GetLeaderId())
		} else {
			ss.LeaderlessMS = sh.GetLeaderlessMs()
		}
		for _, v := range sh.GetVoters() {
			ss.Voters = append(ss.Voters, name(v))
			if !alive[v] {
				ss.DeadVoters = append(ss.DeadVoters, name(v))
			}
		}
		for _, l := range sh.GetLearners() {
			ss.Learners = append(ss.Learners, name(l))
		}
		slices.Sort(ss.Voters) // raft's configuration order says nothing; sorted, they compare at a glance
		slices.Sort(ss.Learners)
		slices.Sort(ss.DeadVoters)
		// A shard with a voter down runs on the others: one failure more and it has no quorum.
		switch {
		case sh.GetUnknown(): // its leader may be where the answering node cannot see
			ss.State = "unknown"
		case sh.GetUnavailable():
			ss.State = "unavailable"
		case len(ss.DeadVoters) > 0:
			ss.State = "degraded"
		case sh.GetUnderReplicated():
			ss.State = "under-replicated"
		}
		s.Shards = append(s.Shards, ss)
	}
	s.Notes = append(s.stalledDrains(), s.mixedFormats()...)
	s.Notes = append(s.Notes, s.zonesAlike()...)
	return s
}

// zonesAlike points at zone names that differ only in case, "z1" and "Z1": placement compares
// zones byte for byte and takes them for two zones (a node alone in one gets a replica of
// every shard), which is seldom what was meant. Only live nodes that are not being drained
// count: a decommissioning node's zone no longer matters to placement, nor a dead one's once it
// is replaced (after --dead-after), and a note about a node long gone would never go away.
func (s *clusterStatus) zonesAlike() []string {
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
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1]
}

// mixedFormats explains shards at different formats, as during a rolling upgrade: a shard's
// leader raises it once every node holding a replica runs a version that applies the later
// format, and until then its deletes take no position in its log. A shard led by a version
// that does not report formats counts as format 1.
func (s *clusterStatus) mixedFormats() []string {
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
		"holding it runs a version that applies it and is alive; until then deletes in it take no position in its log",
		strings.Join(parts, ", "), formats[len(formats)-1])}
}

// stalledDrains explains why a decommissioning node that is alive keeps replicas: placement
// moves a replica only to a node that can take it, and with fewer other nodes alive than the
// replication factor there is none, so the node gives up its leaderships and waits.
func (s *clusterStatus) stalledDrains() []string {
	others := 0
	for _, n := range s.Nodes {
		if n.State == "alive" && !n.Decommissioning {
			others++
		}
	}
	if others >= int(s.Replication) {
		return nil
	}
	var notes []string
	for _, n := range s.Nodes {
		if n.State == "alive" && n.Decommissioning && n.Replicas > 0 {
			notes = append(notes, fmt.Sprintf("%s is decommissioning but still holds %s, which no other node "+
				"can take yet: %s alive for replication %d; start a node to finish the drain",
				n.Name, count(int(n.Replicas), "replica"), count(others, "other node"), s.Replication))
		}
	}
	return notes
}

func (s *clusterStatus) writeTables(w io.Writer) error {
	counts := map[string]int{}
	for _, sh := range s.Shards {
		counts[sh.State]++
	}
	fmt.Fprintf(w, "cluster %s: %s, replication %d, %s (answered by %s)\n",
		orDash(s.ClusterID), count(int(s.ShardCount), "shard"), s.Replication, count(len(s.Nodes), "node"), orDash(s.AnsweredBy))
	if s.Partial {
		fmt.Fprintf(w, "views of %d of %d nodes; %s did not answer: this view may be partial\n",
			len(s.ViewsFrom), len(s.ViewsFrom)+len(s.Unanswered), strings.Join(s.Unanswered, ", "))
	}
	fmt.Fprintf(w, "shards: %d ok, %d degraded, %d under-replicated, %d unavailable",
		counts["ok"], counts["degraded"], counts["under-replicated"], counts["unavailable"])
	if counts["unknown"] > 0 {
		fmt.Fprintf(w, ", %d unknown", counts["unknown"])
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tID\tZONE\tGRPC\tHTTP\tSTATE\tLEADS\tREPLICAS")
	for _, n := range s.Nodes {
		state := n.State
		if n.Decommissioning {
			state += ",decommissioning"
		}
		if n.Stopping {
			state += ",stopping"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n",
			orDash(n.Name), n.ID, orDash(n.Zone), orDash(n.GRPC), orDash(n.HTTP), state, n.Leads, n.Replicas)
	}
	fmt.Fprintln(tw)
	for _, note := range s.Notes {
		fmt.Fprintf(tw, "note: %s\n", note)
	}
	if len(s.Notes) > 0 {
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "SHARD\tLEADER\tTERM\tVOTERS\tLEARNERS\tSTATE")
	for _, sh := range s.Shards {
		voters := slices.Clone(sh.Voters)
		for i, v := range voters {
			if slices.Contains(sh.DeadVoters, v) {
				voters[i] += "(dead)"
			}
		}
		state := sh.State
		if sh.Leader == "" && sh.LeaderlessMS > 0 {
			state += fmt.Sprintf(" (no leader for %v)", (time.Duration(sh.LeaderlessMS) * time.Millisecond).Round(100*time.Millisecond))
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\n",
			sh.Shard, orDash(sh.Leader), sh.Term, orDash(strings.Join(voters, ",")),
			orDash(strings.Join(sh.Learners, ",")), state)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// count says n things: "1 node", "3 nodes".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/clusterstatus"
	"github.com/shoaldb/shoal/node"
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
		check  bool
	)
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster's nodes and shards",
		Long: `Show the cluster's nodes and shards as the node at --server (or $SHOAL_SERVER) sees
them, merged with the views of the other nodes it reaches; the first line names the
node that answered. Only that node is asked: during a partition, ask a node on each
side for its view. A node that cannot be reached fails the command (exit code 1).

With --check, the exit code also says how the cluster is, for a cron job or a
monitoring probe: 0 when every shard is ok, 5 when every shard serves but some run
without all their replicas (degraded: a voter on a dead node; under-replicated) or
the answer lacks some nodes' views or some node is not ready, 1 when some shard is
unavailable or unknown; on 5 or 1 a line on stderr counts the shards not ok by state
(on 0 it prints nothing there, for cron).`,
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
			s := clusterstatus.New(st)
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				err = enc.Encode(s)
			} else {
				err = writeTables(a.stdout, s)
			}
			if err != nil || !check {
				return err
			}
			return checkStatus(s)
		},
	}
	a.serverFlag(status, &server)
	status.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	status.Flags().BoolVar(&check, "check", false, "exit 0 when every shard is ok, 5 when some are degraded or under-replicated (or the view is partial, or a node not ready, below its --min-free-disk or with a slow disk), 1 when some are unavailable or unknown")
	cmd.AddCommand(status, a.clusterBackupCmd(), a.setReplicationCmd())
	return cmd
}

// checkStatus is cluster status --check's verdict on s: nil when every shard is ok and the
// view whole, else an error whose exit code says how bad it is and whose message counts the
// shards by state.
func checkStatus(s *clusterstatus.Status) error {
	counts := map[string]int{}
	notOK, refused := 0, 0
	for _, sh := range s.Shards {
		counts[sh.State]++
		if sh.AppendsRefused {
			refused++
		}
		if sh.State != "ok" || sh.AppendsRefused {
			notOK++
		}
	}
	var parts []string
	for _, state := range []string{"unavailable", "unknown", "degraded", "under-replicated"} {
		if n := counts[state]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, state))
		}
	}
	if s.Partial {
		parts = append(parts, fmt.Sprintf("no view from %s", strings.Join(s.Unanswered, ", ")))
	}
	if n := s.NotReadyNodes(); n > 0 {
		parts = append(parts, clusterstatus.Count(n, "node")+" not ready")
	}
	if n := s.DiskLowNodes(); n > 0 {
		effect := "appends go on: no shard has a majority of its voters there"
		if refused > 0 {
			effect = fmt.Sprintf("appends refused on %s", clusterstatus.Count(refused, "shard"))
		}
		parts = append(parts, fmt.Sprintf("%s below --min-free-disk (%s)", clusterstatus.Count(n, "node"), effect))
	}
	if n := s.DiskSlowNodes(); n > 0 {
		parts = append(parts, clusterstatus.Count(n, "node")+" with a slow disk")
	}
	code := exitDegraded
	switch {
	case counts["unavailable"]+counts["unknown"] > 0:
		code = exitError
	case len(parts) == 0:
		return nil
	}
	return &explainedError{code: code, msg: fmt.Sprintf("check: %d of %d shards not ok: %s", notOK,
		len(s.Shards), strings.Join(parts, ", "))}
}

func (a *app) setReplicationCmd() *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "set-replication N",
		Short: "Change the cluster's replication factor (1..7)",
		Long: `Change how many replicas every shard has. The node at --server records the new
factor and gossips it; each shard's leader then adds replicas (a learner that catches
up, then a voter) or removes extra voters, one step at a time and never below a
quorum, as far as the cluster has nodes and zones to hold them. Setting the factor the
cluster has changes nothing. Follow the moves with 'shoal cluster status'. Every node
must run a version that follows a change (the command says which one does not).`,
		Args: exactArgs("N"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := strconv.Atoi(args[0])
			if err != nil || r < 1 || r > node.MaxReplication {
				return usagef("replication factor %q out of range 1..%d", args[0], node.MaxReplication)
			}
			return a.call(cmd, server, func(ctx context.Context, c *client.Client) error {
				ch, err := c.SetReplication(ctx, r)
				switch {
				case status.Code(err) == codes.Unimplemented:
					return &explainedError{code: exitError, msg: "the node that answered runs a version that cannot change " +
						"the replication factor: upgrade every node first"}
				case status.Code(err) == codes.FailedPrecondition: // the server answered: say what it said
					return errors.New(sentence(status.Convert(err).Message()))
				case err != nil:
					return a.unreachable(err, server)
				case !ch.Changed:
					_, err = fmt.Fprintf(a.stdout, "the replication factor is %d already: nothing changed\n", ch.Replication)
					return err
				}
				if _, err := fmt.Fprintf(a.stdout, "replication factor set to %d (change %d): each shard's leader now moves its "+
					"replicas toward it, one step at a time; follow with 'shoal cluster status'\n", ch.Replication, ch.Epoch); err != nil {
					return err
				}
				// Best effort: say at once when the cluster cannot hold that many replicas yet.
				st, err := c.Status(ctx)
				if err != nil {
					return nil
				}
				if note := clusterstatus.New(st).ReplicaRoom(int(ch.Replication)); note != "" {
					fmt.Fprintf(a.stdout, "note: %s\n", note)
				}
				return nil
			})
		},
	}
	a.serverFlag(cmd, &server)
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
The node stays a member: watch 'shoal cluster status' until it holds 0 replicas
(its state reads alive,drained), then stop it. 'shoal node recommission NAME' cancels the drain.`,
		Args: exactArgs("name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.nodeOp(cmd, server, args[0], func(ctx context.Context, c *client.Client) error {
				// Best effort, one view of the cluster from before the request: whether the drain
				// was asked before (the request answers nothing of it), and whether it cannot
				// finish yet or leaves a zone empty, with the node marked as draining.
				already := false
				var stalled, notes []string
				if st, err := c.Status(ctx); err == nil {
					cs := clusterstatus.New(st)
					for i := range cs.Nodes {
						if cs.Nodes[i].Name == args[0] {
							already = already || cs.Nodes[i].Decommissioning
							cs.Nodes[i].Decommissioning = true
						}
					}
					stalled = cs.StalledDrains()
					notes = stalled
					if note := cs.DrainZone(args[0]); note != "" {
						notes = append(notes, note)
					}
				}
				if err := c.Decommission(ctx, args[0]); err != nil {
					return err
				}
				moving := "its replicas are moving away"
				if len(stalled) > 0 {
					moving = "its leaderships are moving away, its replicas stay for now (below)"
				}
				was := ""
				if already {
					was = " (already, as cluster status showed it)"
				}
				if _, err := fmt.Fprintf(a.stdout, "decommissioning %s%s: %s; follow with 'shoal cluster status'\n", args[0], was, moving); err != nil {
					return err
				}
				for _, note := range notes {
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
	cmd.AddCommand(decom, recom, a.nodeBackupCmd(), a.nodeInspectCmd(), a.nodeReadyCmd())
	return cmd
}

// nodeOp dials server and runs op, a request about the node named name, explaining the
// failures the node commands share: no such node, the server's refusal, no server.
func (a *app) nodeOp(cmd *cobra.Command, server, name string, op func(context.Context, *client.Client) error) error {
	return a.nodeOpWith(a.call, cmd, server, name, op)
}

// nodeOpWith is nodeOp through call (app.call, or app.callWithin for an operation that may run
// longer than callTimeout).
func (a *app) nodeOpWith(call func(*cobra.Command, string, func(context.Context, *client.Client) error) error,
	cmd *cobra.Command, server, name string, op func(context.Context, *client.Client) error) error {
	return call(cmd, server, func(ctx context.Context, c *client.Client) error {
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

// callWithin returns call for an operation whose work may take longer than callTimeout (a
// backup copying a large store to another file system): the dial is bounded by callTimeout,
// fn by timeout.
func (a *app) callWithin(timeout time.Duration) func(*cobra.Command, string, func(context.Context, *client.Client) error) error {
	return func(cmd *cobra.Command, server string, fn func(context.Context, *client.Client) error) error {
		dctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
		c, err := a.dial(dctx, server)
		cancel()
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
		defer cancel()
		return fn(ctx, c)
	}
}

// writeTables prints s as `cluster status` does without --json.
func writeTables(w io.Writer, s *clusterstatus.Status) error {
	counts := s.StateCounts()
	fmt.Fprintf(w, "cluster %s: %s, replication %d, %s (answered by %s)\n",
		orDash(s.ClusterID), clusterstatus.Count(int(s.ShardCount), "shard"), s.Replication, clusterstatus.Count(len(s.Nodes), "node"), orDash(s.AnsweredBy))
	if s.Partial {
		fmt.Fprintf(w, "views of %d of %d nodes; %s did not answer: this view may be partial\n",
			len(s.ViewsFrom), len(s.ViewsFrom)+len(s.Unanswered), strings.Join(s.Unanswered, ", "))
	}
	fmt.Fprintf(w, "shards: %d ok, %d degraded, %d under-replicated, %d unavailable",
		counts["ok"], counts["degraded"], counts["under-replicated"], counts["unavailable"])
	if counts["unknown"] > 0 {
		fmt.Fprintf(w, ", %d unknown", counts["unknown"])
	}
	if refused := s.AppendsRefused(); len(refused) > 0 {
		fmt.Fprintf(w, "; %d refusing appends (disks below --min-free-disk)", len(refused))
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tID\tZONE\tGRPC\tHTTP\tSTATE\tLEADS\tREPLICAS\tVERSION\tSYNC")
	for _, n := range s.Nodes {
		state := n.State
		switch {
		case n.Drained:
			state += ",drained" // decommissioned and empty: it may be stopped
		case n.Decommissioning:
			state += ",decommissioning"
		}
		if n.Stopping {
			state += ",stopping"
		}
		sync := "-" // a dead node's last word is no measure of its disk now
		if n.State == "alive" {
			sync = clusterstatus.SyncString(n.SyncMicros)
		}
		if n.SlowDisk() {
			state += ",disk-slow"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n",
			orDash(n.Name), n.ID, orDash(n.Zone), orDash(n.GRPC), orDash(n.HTTP), state, n.Leads, n.Replicas, orDash(n.Version), sync)
	}
	fmt.Fprintln(tw)
	for _, note := range s.Notes {
		fmt.Fprintf(tw, "note: %s\n", note)
	}
	if len(s.Notes) > 0 {
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "SHARD\tLEADER\tTERM\tVOTERS\tLEARNERS\tFORMAT\tSTATE")
	for _, sh := range s.Shards {
		// Marked by ID (Members), not by name: two voters may share a name (a wiped node
		// that came back as a new member beside its old ID), one of them alive.
		voters := make([]string, 0, len(sh.Members))
		for _, m := range sh.Members {
			switch {
			case m.Dead:
				m.Name += "(dead)"
			case m.Unheard:
				m.Name += "(unheard)"
			}
			voters = append(voters, m.Name)
		}
		state := sh.State
		if sh.Leader == "" && sh.LeaderlessMS > 0 {
			state += fmt.Sprintf(" (no leader for %v)", (time.Duration(sh.LeaderlessMS) * time.Millisecond).Round(100*time.Millisecond))
		}
		if sh.AppendsRefused {
			state += " (appends refused: disks low)"
		}
		format := "-" // not reported by the leader's version, or no leader
		if sh.Format > 0 {
			format = strconv.FormatUint(sh.Format, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n",
			sh.Shard, orDash(sh.Leader), sh.Term, orDash(strings.Join(voters, ",")),
			orDash(strings.Join(sh.Learners, ",")), format, state)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

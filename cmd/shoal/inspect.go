package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoaldb/shoal/internal/clusterstatus"
	"github.com/shoaldb/shoal/node"
)

// nodeInspectCmd is shoal node inspect: an offline look at stopped nodes' data directories.
func (a *app) nodeInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect DIR...",
		Short: "Show what stopped nodes' data directories hold: each replica's raft state and how far it applied",
		Long: `Read the data directories of nodes that are not running (or backups of them),
changing nothing, and show each one's node, cluster, and replicas: a replica's role
in its shard's stored configuration (voter, learner, removed, or empty), its raft term and
commit index, the index its state machine applied, the log it holds, its shard's
next log position and format, and the shard's voters.

It then says, for each cluster, which directory applied the most of each shard, as
--new-cluster would keep it (a voter's or learner's replica that applied something),
and why --new-cluster would refuse a directory: after losing a cluster, start the one
that is furthest in every shard with --new-cluster (docs/operations.md, "Backups").
A directory a running node holds is refused: ask the node with 'shoal cluster status'
instead. A directory that cannot be read is reported and the others still shown; the
command then exits with 1.`,
		Example: `  shoal node inspect ./data
  shoal node inspect /srv/n1/data /srv/n2/data /srv/n3/data
  shoal node inspect ./data --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("node inspect needs at least one data directory (DIR...)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			// A directory that cannot be read is reported, and the others still compared: in a
			// disaster, one damaged survivor must not hide the rest.
			var ins []*node.Inspection
			var failed []string
			for _, dir := range args {
				in, err := node.Inspect(dir)
				if err != nil {
					failed = append(failed, fmt.Sprintf("%s: %s", dir, strings.TrimPrefix(err.Error(), "node: ")))
					continue
				}
				ins = append(ins, in)
			}
			var err error
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				err = enc.Encode(inspectionsJSON(ins, failed))
			} else {
				err = writeInspections(a.stdout, ins)
			}
			if err != nil {
				return err
			}
			if len(failed) > 0 {
				return &explainedError{code: exitError, msg: "cannot inspect " + strings.Join(failed, "; ")}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the directories' states as JSON")
	return cmd
}

// writeInspections prints each directory's table, then, for several directories of one
// cluster, which applied most of each shard.
func writeInspections(w io.Writer, ins []*node.Inspection) error {
	for i, in := range ins {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s: node %s (%d)", in.Dir, in.Name, in.NodeID)
		if in.ClusterID == "" {
			fmt.Fprint(w, ", in no cluster\n")
		} else {
			fmt.Fprintf(w, ", cluster %s: %s, replication %d\n", in.ClusterID, clusterstatus.Count(int(in.Shards), "shard"), in.Replication)
		}
		for _, note := range inspectionNotes(in) {
			fmt.Fprintf(w, "note: %s\n", note)
		}
		if len(in.Replicas) == 0 {
			fmt.Fprintln(w, "no replicas")
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SHARD\tROLE\tTERM\tCOMMIT\tAPPLIED\tLOG\tNEXT POSITION\tFORMAT\tVOTERS\tLEARNERS")
		for _, r := range in.Replicas {
			log := fmt.Sprintf("%d..%d", r.FirstIndex, r.LastIndex)
			if r.FirstIndex > r.LastIndex {
				log = "none"
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%s\t%d\t%d\t%s\t%s\n", r.Shard, r.Role(in.NodeID), r.Term, r.Commit, r.Applied,
				log, r.LastPosition, r.Format, orDash(names(in, r.Voters)), orDash(names(in, r.Learners)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, group := range byCluster(ins) {
		fmt.Fprintf(w, "\nfor --new-cluster (cluster %s), the shards in which each directory applied the most:\n", group[0].ClusterID)
		// whole: the first directory that --new-cluster takes and that is furthest in every
		// shard (CompareApplied answers in group's order).
		var whole *node.Inspection
		for i, sv := range node.CompareApplied(group) {
			fmt.Fprintf(w, "  %s: %s\n", sv.Dir, survivorSummary(sv, group[0].Shards))
			if sv.Refused == "" && len(sv.Behind) == 0 && whole == nil {
				whole = group[i]
			}
		}
		switch {
		case len(group) > 1 && node.SameLogs(group):
			fmt.Fprintf(w, "  all %d directories hold the same raft log in every shard, and every shard's voters are among them: "+
				"restore them together, each node started on its own with --restore (or start one with %s--new-cluster)\n",
				len(group), restoring(group[0]))
		case whole != nil && node.SameLogs([]*node.Inspection{whole}):
			// A one-node cluster's directory: started as it is (restored, for a backup), it
			// keeps its cluster.
			how := "start it as it is"
			if whole.Backup {
				how = "restore it: start it with --restore"
			}
			fmt.Fprintf(w, "  %s is furthest in every shard and holds every voter of every shard, the whole cluster: %s "+
				"(or with %s--new-cluster, as a new cluster)\n", whole.Dir, how, restoring(whole))
		case whole != nil:
			fmt.Fprintf(w, "  %s is furthest in every shard: start it with %s--new-cluster\n", whole.Dir, restoring(whole))
		default:
			fmt.Fprintln(w, "  none that --new-cluster accepts is furthest in every shard: the one started loses, in the shards it is behind in, the entries the others applied beyond it")
		}
	}
	return nil
}

// restoring is the flag a start on in's directory adds to --new-cluster: "--restore " when it
// is a backup, which a start refuses without it.
func restoring(in *node.Inspection) string {
	if in.Backup {
		return "--restore "
	}
	return ""
}

// byCluster groups the directories that hold a cluster by its ID, in the order given.
func byCluster(ins []*node.Inspection) [][]*node.Inspection {
	var groups [][]*node.Inspection
	at := map[string]int{}
	for _, in := range ins {
		if in.ClusterID == "" {
			continue
		}
		i, ok := at[in.ClusterID]
		if !ok {
			i, at[in.ClusterID] = len(groups), len(groups)
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], in)
	}
	return groups
}

// survivorSummary says in a line how a directory compares, and whether --new-cluster takes it.
func survivorSummary(sv node.Survivor, shards uint32) string {
	if sv.Refused != "" {
		return "--new-cluster refuses it: " + sv.Refused
	}
	s := fmt.Sprintf("furthest in %d of %d", len(sv.Furthest), shards)
	if len(sv.Behind) > 0 {
		var gaps []string
		for _, g := range sv.Behind {
			gaps = append(gaps, fmt.Sprintf("%d (by %s)", g.Shard, entriesText(g.Entries)))
		}
		s += "; behind in " + strings.Join(gaps, ", ")
	}
	return s
}

// inspectionNotes says what an operator should know of a directory before starting it.
func inspectionNotes(in *node.Inspection) []string {
	var notes []string
	if in.Backup {
		notes = append(notes, "a backup (backup.json): a server starts on it only with --restore")
	}
	if in.NewCluster != "" {
		notes = append(notes, fmt.Sprintf("cluster %s was made of it with --new-cluster", in.NewCluster))
	}
	if in.Decommissioning {
		notes = append(notes, "the node was decommissioning")
	}
	return notes
}

// names lists ids by the names the directory knows, IDs otherwise.
func names(in *node.Inspection, ids []uint64) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = strconv.FormatUint(id, 10)
		if n, ok := in.Names[id]; ok && n != "" {
			out[i] = n
		}
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// inspectionsJSON is --json's document: the directories, their comparison for --new-cluster
// by cluster, and the directories that could not be read.
func inspectionsJSON(ins []*node.Inspection, failed []string) any {
	type replicaJSON struct {
		Shard        uint32   `json:"shard"`
		Role         string   `json:"role"`
		Term         uint64   `json:"term"`
		Vote         string   `json:"vote"`
		Commit       uint64   `json:"commit"`
		Applied      uint64   `json:"applied"`
		FirstIndex   uint64   `json:"first_index"`
		LastIndex    uint64   `json:"last_index"`
		LastPosition uint64   `json:"last_position"`
		Format       uint64   `json:"format"`
		Voters       []string `json:"voters"`
		Learners     []string `json:"learners"`
	}
	type dirJSON struct {
		Dir             string        `json:"dir"`
		NodeID          string        `json:"node_id"` // a string: 64-bit IDs lose precision as JSON numbers
		Name            string        `json:"name"`
		ClusterID       string        `json:"cluster_id"`
		Shards          uint32        `json:"shards"`
		Replication     uint32        `json:"replication"`
		Backup          bool          `json:"backup"`      // backup.json: a start needs --restore
		NewCluster      string        `json:"new_cluster"` // the cluster --new-cluster made of it, if any
		Decommissioning bool          `json:"decommissioning"`
		Replicas        []replicaJSON `json:"replicas"`
	}
	type clusterJSON struct {
		ClusterID string          `json:"cluster_id"`
		Survivors []node.Survivor `json:"survivors"`
	}
	ids := func(in []uint64) []string {
		out := []string{}
		for _, id := range in {
			out = append(out, strconv.FormatUint(id, 10))
		}
		return out
	}
	doc := struct {
		Dirs     []dirJSON     `json:"dirs"`
		Clusters []clusterJSON `json:"clusters"` // for --new-cluster: how each directory compares
		Failed   []string      `json:"failed"`   // directories that could not be read, and why
	}{Dirs: []dirJSON{}, Clusters: []clusterJSON{}, Failed: append([]string{}, failed...)}
	for _, in := range ins {
		d := dirJSON{Dir: in.Dir, NodeID: strconv.FormatUint(in.NodeID, 10), Name: in.Name, ClusterID: in.ClusterID,
			Shards: in.Shards, Replication: in.Replication, Backup: in.Backup, NewCluster: in.NewCluster,
			Decommissioning: in.Decommissioning, Replicas: []replicaJSON{}}
		for _, r := range in.Replicas {
			d.Replicas = append(d.Replicas, replicaJSON{Shard: r.Shard, Role: r.Role(in.NodeID), Term: r.Term,
				Vote: strconv.FormatUint(r.Vote, 10), Commit: r.Commit, Applied: r.Applied, FirstIndex: r.FirstIndex,
				LastIndex: r.LastIndex, LastPosition: r.LastPosition, Format: r.Format, Voters: ids(r.Voters), Learners: ids(r.Learners)})
		}
		doc.Dirs = append(doc.Dirs, d)
	}
	for _, group := range byCluster(ins) {
		doc.Clusters = append(doc.Clusters, clusterJSON{ClusterID: group[0].ClusterID, Survivors: node.CompareApplied(group)})
	}
	return doc
}

// entriesText says n raft entries: "1 entry", "120 entries".
func entriesText(n uint64) string {
	if n == 1 {
		return "1 entry"
	}
	return fmt.Sprintf("%d entries", n)
}

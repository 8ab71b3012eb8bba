package main

import (
	"encoding/json"
	"errors"
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
in its shard's stored configuration (voter, learner, or removed), its raft term and
commit index, the index its state machine applied, the log it holds, its shard's
next log position and format, and the shard's voters.

Given several directories of one cluster, it also says which of them applied the
most of each shard: after losing a cluster, start the one that is furthest in every
shard with --new-cluster (docs/operations.md, "Backups"). A directory a running node
holds is refused: ask the node with 'shoal cluster status' instead.`,
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
			var ins []*node.Inspection
			for _, dir := range args {
				in, err := node.Inspect(dir)
				if errors.Is(err, node.ErrDataDirLocked) {
					return &explainedError{code: exitError, msg: strings.TrimPrefix(err.Error(), "node: ")}
				}
				if err != nil {
					return fmt.Errorf("%s: %w", dir, err)
				}
				ins = append(ins, in)
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(inspectionsJSON(ins))
			}
			return writeInspections(a.stdout, ins)
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
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%s\t%d\t%d\t%s\t%s\n", r.Shard, role(in.NodeID, r), r.Term, r.Commit, r.Applied,
				log, r.LastPosition, r.Format, orDash(names(in, r.Voters)), orDash(names(in, r.Learners)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(ins) < 2 {
		return nil
	}
	fmt.Fprintln(w)
	for _, in := range ins[1:] {
		if in.ClusterID != ins[0].ClusterID {
			_, err := fmt.Fprintf(w, "the directories belong to different clusters (%s and %s): their replicas are not compared\n",
				orDash(ins[0].ClusterID), orDash(in.ClusterID))
			return err
		}
	}
	fmt.Fprintln(w, "furthest applied, shard by shard (a voter's replica only):")
	for _, c := range compareApplied(ins) {
		fmt.Fprintf(w, "  %s: %s\n", c.Dir, c.summary(ins[0].Shards))
	}
	return nil
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

// role is the node's place in r's stored configuration.
func role(self uint64, r node.ReplicaState) string {
	switch {
	case slices.Contains(r.Voters, self):
		return "voter"
	case slices.Contains(r.Learners, self):
		return "learner"
	}
	return "removed"
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

// appliedComparison is how one directory's replicas compare with the others'.
type appliedComparison struct {
	Dir     string   `json:"dir"`
	Highest []uint32 `json:"highest"` // shards where its voter applied the most of all directories
	Behind  []uint32 `json:"behind"`  // shards where another directory applied more
	Missing []uint32 `json:"missing"` // shards it holds no voter of
}

func (c appliedComparison) summary(shards uint32) string {
	s := fmt.Sprintf("furthest in %d of %d", len(c.Highest), shards)
	if len(c.Behind) > 0 {
		s += fmt.Sprintf("; behind in %v", c.Behind)
	}
	if len(c.Missing) > 0 {
		s += fmt.Sprintf("; no voter of %v", c.Missing)
	}
	return s
}

// compareApplied compares the directories' voters shard by shard. A learner or a removed
// replica does not count: --new-cluster refuses a removed one, and a learner may lack
// entries it never received.
func compareApplied(ins []*node.Inspection) []appliedComparison {
	applied := make([]map[uint32]uint64, len(ins))
	best := map[uint32]uint64{}
	for i, in := range ins {
		applied[i] = map[uint32]uint64{}
		for _, r := range in.Replicas {
			if role(in.NodeID, r) == "voter" && r.Shard < in.Shards {
				applied[i][r.Shard] = r.Applied
				best[r.Shard] = max(best[r.Shard], r.Applied)
			}
		}
	}
	out := make([]appliedComparison, len(ins))
	for i, in := range ins {
		out[i].Dir = in.Dir
		for id := range ins[0].Shards {
			a, ok := applied[i][id]
			switch {
			case !ok:
				out[i].Missing = append(out[i].Missing, id)
			case a == best[id]:
				out[i].Highest = append(out[i].Highest, id)
			default:
				out[i].Behind = append(out[i].Behind, id)
			}
		}
	}
	return out
}

// inspectionsJSON is --json's document: the directories, and their comparison when there are
// several of one cluster.
func inspectionsJSON(ins []*node.Inspection) any {
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
		Dir         string        `json:"dir"`
		NodeID      string        `json:"node_id"` // a string: 64-bit IDs lose precision as JSON numbers
		Name        string        `json:"name"`
		ClusterID   string        `json:"cluster_id"`
		Shards      uint32        `json:"shards"`
		Replication uint32        `json:"replication"`
		Notes       []string      `json:"notes"`
		Replicas    []replicaJSON `json:"replicas"`
	}
	ids := func(in []uint64) []string {
		out := []string{}
		for _, id := range in {
			out = append(out, strconv.FormatUint(id, 10))
		}
		return out
	}
	doc := struct {
		Dirs       []dirJSON           `json:"dirs"`
		Comparison []appliedComparison `json:"comparison,omitempty"`
	}{Dirs: []dirJSON{}}
	for _, in := range ins {
		d := dirJSON{Dir: in.Dir, NodeID: strconv.FormatUint(in.NodeID, 10), Name: in.Name, ClusterID: in.ClusterID,
			Shards: in.Shards, Replication: in.Replication, Notes: append([]string{}, inspectionNotes(in)...), Replicas: []replicaJSON{}}
		for _, r := range in.Replicas {
			d.Replicas = append(d.Replicas, replicaJSON{Shard: r.Shard, Role: role(in.NodeID, r), Term: r.Term,
				Vote: strconv.FormatUint(r.Vote, 10), Commit: r.Commit, Applied: r.Applied, FirstIndex: r.FirstIndex,
				LastIndex: r.LastIndex, LastPosition: r.LastPosition, Format: r.Format, Voters: ids(r.Voters), Learners: ids(r.Learners)})
		}
		doc.Dirs = append(doc.Dirs, d)
	}
	sameCluster := len(ins) > 1
	for _, in := range ins[1:] {
		sameCluster = sameCluster && in.ClusterID == ins[0].ClusterID
	}
	if sameCluster {
		doc.Comparison = compareApplied(ins)
	}
	return doc
}

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoaldb/shoal/client"
)

const restoreHelp = `Restoring one (a server started with --data on a copy of it, and --restore) is
safe for a one-node cluster, for a whole cluster whose nodes were all backed up
while no writes ran, or as a new cluster from one node's backup (--restore
--new-cluster, then join new nodes to it); see docs/operations.md, "Backups".
A server started with --restore alone checks it: it keeps its shards closed until
the members show the cluster did not go on after the backup, and exits if one did.`

// nodeBackupCmd is shoal node backup: one node's backup.
func (a *app) nodeBackupCmd() *cobra.Command {
	var (
		server, name string
		timeout      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "backup NAME [--name BACKUP]",
		Short: "Write a consistent copy of a node's data directory, while it serves",
		Long: `Write a consistent copy of a node's data directory into a new directory under
its --backup-dir (default DATA/backups), on that node's machine, while it serves:
a checkpoint of its Pebble store (tables hard-linked where the file system allows)
and its identity, cluster and groups files. The copy is what a crash of the node at
that moment would leave. Copy it off the machine to keep it. --name names the
directory (default: the node's name and the UTC time); a taken name is refused.

` + restoreHelp,
		Example: `  shoal node backup n1
  shoal node backup n1 --name before-upgrade --server 127.0.0.1:7400`,
		Args: exactArgs("name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usagef("--timeout must be positive, got %v", timeout)
			}
			return a.nodeOpWith(a.callWithin(timeout), cmd, server, args[0], func(ctx context.Context, c *client.Client) error {
				info, err := c.Backup(ctx, args[0], name)
				if err != nil {
					return backupErr(err, args[0])
				}
				return a.printBackup(info)
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the backup's directory name under the node's --backup-dir (default NODE-UTCTIME)")
	cmd.Flags().DurationVar(&timeout, "timeout", defaultBackupTimeout, "give up waiting for the backup's answer after this long (the node may still finish it)")
	a.serverFlag(cmd, &server)
	return cmd
}

// defaultBackupTimeout is the backup commands' --timeout: long enough for a store copied table by
// table to another file system, short of a hung node holding a scheduled job for good.
const defaultBackupTimeout = time.Hour

// clusterBackupCmd is shoal cluster backup: every node's backup, under one name.
func (a *app) clusterBackupCmd() *cobra.Command {
	var (
		server, name string
		timeout      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "backup [--name BACKUP]",
		Short: "Back up every node of the cluster, one after another, under one name",
		Long: `Run 'shoal node backup' on every node of the cluster, one after another, under one
--name (default cluster- and the UTC time), each into its own --backup-dir. A node
that is down and holds replicas, or whose backup fails, is reported and the others
go on; the command then exits with 1. A node down that holds none (one that was
drained and stopped) has nothing to back up.

` + restoreHelp,
		Example: `  shoal cluster backup --name before-upgrade`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usagef("--timeout must be positive, got %v", timeout)
			}
			if name == "" {
				name = "cluster-" + time.Now().UTC().Format("20060102T150405Z")
			}
			return a.callWithin(timeout)(cmd, server, func(ctx context.Context, c *client.Client) error {
				sctx, cancel := context.WithTimeout(ctx, callTimeout)
				st, err := c.Status(sctx)
				cancel()
				if err != nil {
					return err
				}
				topo := st.GetTopology()
				var failed []string
				for _, n := range topo.GetNodes() {
					who := n.GetName()
					if who == "" { // a member known by its ID only (gossip has not brought it back)
						who = fmt.Sprintf("node %d", n.GetId())
					}
					switch {
					case !n.GetAlive() && n.GetReplicas() == 0: // replicas: the shards' configurations name it
						fmt.Fprintf(a.stdout, "%s is down and holds no replica: nothing to back up\n", who)
						continue
					case !n.GetAlive():
						fmt.Fprintf(a.stdout, "%s is down: no backup\n", who)
						failed = append(failed, who)
						continue
					}
					info, err := c.Backup(ctx, n.GetName(), name)
					if err != nil {
						fmt.Fprintf(a.stdout, "%s: %v\n", who, backupErr(err, who))
						failed = append(failed, who)
						continue
					}
					if err := a.printBackup(info); err != nil {
						return err
					}
				}
				if len(failed) > 0 {
					return fmt.Errorf("backup %q is missing on %s (above): not a whole cluster's; a node's backup restores it alone, "+
						"a whole-cluster restore needs every node's", name, strings.Join(failed, ", "))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the backups' directory name under each node's --backup-dir (default cluster-UTCTIME)")
	cmd.Flags().DurationVar(&timeout, "timeout", defaultBackupTimeout, "give up waiting for the nodes' backups after this long in all (a node may still finish its own)")
	a.serverFlag(cmd, &server)
	return cmd
}

// backupErr explains a backup's failure on node name.
func backupErr(err error, name string) error {
	switch {
	case status.Code(err) == codes.Unimplemented:
		return &explainedError{code: exitError, msg: fmt.Sprintf("a node on the way to %s runs a version without "+
			"backups: upgrade it, or stop %s and copy its data directory", name, name)}
	case status.Code(err) == codes.AlreadyExists:
		return usagef("%s; choose another --name", sentence(status.Convert(err).Message()))
	case errors.Is(err, client.ErrOutcomeUnknown):
		return &explainedError{code: exitError, msg: fmt.Sprintf("%v; the backup may have been written: look in %s's --backup-dir", err, name)}
	}
	return err
}

func (a *app) printBackup(info client.BackupInfo) error {
	_, err := fmt.Fprintf(a.stdout, "backup of %s written to %s on its machine (%s, taken %s)\n",
		info.Node, info.Path, humanize.IBytes(info.Bytes), info.Created.UTC().Format(time.RFC3339))
	return err
}

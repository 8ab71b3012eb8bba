package client

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// Topology fetches the cluster's current topology (settings, nodes, shard
// leaders and replicas) from any live node and refreshes the client's
// routing cache with it. The result is the caller's to keep.
func (c *Client) Topology(ctx context.Context) (*shoalv1.TopologyResponse, error) {
	var out *shoalv1.TopologyResponse
	err := c.run(ctx, target{kind: anyNode}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		resp, err := c.fetchTopology(ctx, n)
		if err != nil {
			return false, err
		}
		out = proto.CloneOf(resp)
		return false, nil
	})
	return out, err
}

// Shards returns the cluster's shard count (fixed when the cluster was
// created), from the cached topology when there is one.
func (c *Client) Shards(ctx context.Context) (uint32, error) {
	if t := c.topo.Load(); t != nil {
		return t.shards, nil
	}
	if _, err := c.Topology(ctx); err != nil {
		return 0, err
	}
	return c.topo.Load().shards, nil
}

// Status returns the status as seen by one live node, any of them (the
// answering node's ID and its topology view); NodeStatus asks a given node.
func (c *Client) Status(ctx context.Context) (*shoalv1.StatusResponse, error) {
	var out *shoalv1.StatusResponse
	err := c.run(ctx, target{kind: anyNode}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		r, err := c.askStatus(ctx, n)
		out = r
		return false, err
	})
	return out, err
}

// NodeStatus returns the status as seen by the node at addr (its gRPC
// address, such as a seed given to Dial), asking that node only: where Status
// moves to another node when one fails, NodeStatus retries addr within the
// retry policy and then returns the failure (ErrUnavailable, or the
// context's error). During a partition each side answers with its own view.
func (c *Client) NodeStatus(ctx context.Context, addr string) (*shoalv1.StatusResponse, error) {
	if addr == "" {
		return nil, &InvalidArgumentError{Field: "addr", Limit: "a node's gRPC address (host:port)", Reason: "the address is empty"}
	}
	var out *shoalv1.StatusResponse
	err := c.run(ctx, target{kind: oneNode, addr: addr}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		r, err := c.askStatus(ctx, n)
		out = r
		return false, err
	})
	return out, err
}

// askStatus asks n for its status. A node of another cluster than the client dialled refuses
// the call; one of an earlier version, which does not, is refused here on its answer, as
// askTopology refuses its topology.
func (c *Client) askStatus(ctx context.Context, n *node) (*shoalv1.StatusResponse, error) {
	r, err := n.cluster.Status(ctx, &shoalv1.StatusRequest{})
	if err != nil {
		return nil, err
	}
	if want, got := c.dialledCluster(), r.GetTopology().GetSettings().GetClusterId(); want != "" && got != "" && got != want {
		return nil, errWrongCluster(n, got, want)
	}
	return r, nil
}

// Decommission asks the cluster to drain the node named name: placement
// moves its replicas and leaderships to other nodes (as far as other nodes
// can take them), and the node stays a member until its operator stops it
// once it holds no replica; Recommission cancels the drain. It returns once
// the request is accepted; follow progress with Topology. Safe to repeat.
func (c *Client) Decommission(ctx context.Context, name string) error {
	if name == "" {
		return &InvalidArgumentError{Field: "name", Limit: "a node name", Reason: "the node name is empty"}
	}
	return c.run(ctx, target{kind: anyNode}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		_, err := n.cluster.Decommission(ctx, &shoalv1.DecommissionRequest{Node: name})
		return false, err
	})
}

// ReplicationChange is what SetReplication did.
type ReplicationChange struct {
	Replication uint32 // the cluster's replication factor now
	Epoch       uint64 // the number of changes made to the factor since the cluster was created
	// Changed is false when the cluster already had the factor (as the node that answered
	// knew it): nothing changed.
	Changed bool
}

// SetReplication changes the cluster's replication factor to replication (1..7). The node that
// answers records it and gossips it; each shard's leader then adds replicas (as learners that
// catch up, then voters) or removes extra voters, one step at a time and never below a quorum,
// as far as there are nodes and zones to hold them (follow with Topology or Status). Safe to
// repeat: setting the factor the cluster has changes nothing. Refused with
// codes.FailedPrecondition while a live node runs a version that cannot follow the change, or
// does not answer the answering node's gossip sync (which orders changes); a node of an earlier
// version answers codes.Unimplemented. A factor outside 1..7 is refused here
// (*InvalidArgumentError), sending nothing.
func (c *Client) SetReplication(ctx context.Context, replication int) (ReplicationChange, error) {
	if replication < 1 || replication > maxReplication {
		return ReplicationChange{}, &InvalidArgumentError{Field: "replication", Limit: fmt.Sprintf("1..%d", maxReplication),
			Reason: fmt.Sprintf("replication factor %d out of range", replication)}
	}
	var out ReplicationChange
	err := c.run(ctx, target{kind: anyNode}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		r, err := n.cluster.SetReplication(ctx, &shoalv1.SetReplicationRequest{Replication: uint32(replication)})
		if err != nil {
			return false, err
		}
		out = ReplicationChange{Replication: r.GetSettings().GetReplication(), Epoch: r.GetEpoch(), Changed: r.GetChanged()}
		return false, nil
	})
	return out, err
}

// maxReplication is the largest replication factor a cluster takes (node.MaxReplication).
const maxReplication = 7

// BackupInfo describes a backup a node wrote (Backup).
type BackupInfo struct {
	Node    string    // the node whose data directory it copies
	Path    string    // its directory, on that node's machine
	Bytes   uint64    // the size of its files
	Created time.Time // when the node's store was checkpointed
}

// Backup asks the node named nodeName to write a consistent copy of its data directory into a
// new directory, name, under its --backup-dir, while it serves (name "": the node's name
// and the UTC time). The copy is what a crash of the node at that moment would leave; see
// docs/operations.md, "Backups", for how and when to restore one. A name already taken is
// refused with codes.AlreadyExists. An attempt that may have run but whose answer was lost
// is not repeated: the call then ends with ErrOutcomeUnknown (look in the backup directory).
// A node of an earlier version answers codes.Unimplemented.
func (c *Client) Backup(ctx context.Context, nodeName, name string) (BackupInfo, error) {
	if nodeName == "" {
		return BackupInfo{}, &InvalidArgumentError{Field: "node", Limit: "a node name", Reason: "the node name is empty"}
	}
	var info BackupInfo
	err := c.run(ctx, target{kind: anyNode, once: true}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		r, err := n.cluster.Backup(ctx, &shoalv1.BackupRequest{Node: nodeName, Name: name})
		if err != nil {
			return false, err
		}
		info = BackupInfo{Node: r.GetNode(), Path: r.GetPath(), Bytes: r.GetBytes(), Created: time.Unix(0, r.GetCreatedUnixNano())}
		return false, nil
	})
	return info, err
}

// RecommissionOutcome is what Recommission found.
type RecommissionOutcome uint8

const (
	// Recommissioned: the node was decommissioning and no longer is.
	Recommissioned RecommissionOutcome = iota + 1
	// NotDecommissioning: the node was not decommissioning; nothing changed.
	NotDecommissioning
	// MaybeRecommissioned: the node is not decommissioning now. An attempt whose answer was
	// lost may have cancelled its drain before the attempt that answered found nothing to
	// cancel, so whether it was decommissioning is unknown.
	MaybeRecommissioned
)

// Recommission cancels a decommission of the node named name: the cluster may place replicas
// and leaderships on it again. It reports what it found. Safe to repeat. A node of an earlier
// version answers codes.Unimplemented.
func (c *Client) Recommission(ctx context.Context, name string) (RecommissionOutcome, error) {
	if name == "" {
		return 0, &InvalidArgumentError{Field: "name", Limit: "a node name", Reason: "the node name is empty"}
	}
	var was, lost bool
	err := c.run(ctx, target{kind: anyNode}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		r, err := n.cluster.Recommission(ctx, &shoalv1.RecommissionRequest{Node: name})
		was = r.GetWasDecommissioning()
		lost = lost || err != nil && mayHaveApplied(err)
		return false, err
	})
	switch {
	case err != nil:
		return 0, err
	case was:
		return Recommissioned, nil
	case lost:
		return MaybeRecommissioned, nil
	}
	return NotDecommissioning, nil
}

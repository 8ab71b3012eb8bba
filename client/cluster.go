package client

import (
	"context"

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

// Status returns the status as seen by one live node (the answering node's
// ID and its topology view).
func (c *Client) Status(ctx context.Context) (*shoalv1.StatusResponse, error) {
	var out *shoalv1.StatusResponse
	err := c.run(ctx, target{kind: anyNode}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		r, err := n.cluster.Status(ctx, &shoalv1.StatusRequest{})
		out = r
		return false, err
	})
	return out, err
}

// Decommission asks the cluster to move every replica off the node named
// name and then remove it. It returns once the request is accepted; follow
// progress with Topology. Safe to repeat.
func (c *Client) Decommission(ctx context.Context, name string) error {
	if name == "" {
		return &InvalidArgumentError{Field: "name", Limit: "a node name", Reason: "the node name is empty"}
	}
	return c.run(ctx, target{kind: anyNode}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		_, err := n.cluster.Decommission(ctx, &shoalv1.DecommissionRequest{Node: name})
		return false, err
	})
}

// Recommission cancels a decommission of the node named name: the cluster may place replicas
// and leaderships on it again. It reports whether the node was decommissioning (false: nothing
// changed). Safe to repeat. A node of an earlier version answers codes.Unimplemented.
func (c *Client) Recommission(ctx context.Context, name string) (bool, error) {
	if name == "" {
		return false, &InvalidArgumentError{Field: "name", Limit: "a node name", Reason: "the node name is empty"}
	}
	var was bool
	err := c.run(ctx, target{kind: anyNode}, true, func(ctx context.Context, n *node, _ *leaderWatch) (bool, error) {
		r, err := n.cluster.Recommission(ctx, &shoalv1.RecommissionRequest{Node: name})
		was = r.GetWasDecommissioning()
		return false, err
	})
	return was, err
}

package bench

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/shoaldb/shoal/node"
)

// Embedded is a single-node shoal server in a temporary directory, started
// for one benchmark run (shoal bench --embedded).
type Embedded struct {
	n   *node.Node
	dir string
}

// StartEmbedded starts a one-node cluster (replication 1) on 127.0.0.1 with
// free ports and its data in a new temporary directory. logger may be nil.
func StartEmbedded(ctx context.Context, logger *slog.Logger) (*Embedded, error) {
	dir, err := os.MkdirTemp("", "shoal-bench-")
	if err != nil {
		return nil, err
	}
	cfg := node.DefaultConfig()
	cfg.DataDir = dir
	cfg.Listen = "127.0.0.1:0"
	cfg.Gossip = "127.0.0.1:0"
	cfg.DisableHTTP = true
	cfg.Name = "bench"
	cfg.Zone = "z1"
	cfg.Replication = 1
	cfg.Logger = logger
	n, err := node.Start(ctx, cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &Embedded{n: n, dir: dir}, nil
}

// Addr is the server's gRPC address.
func (e *Embedded) Addr() string { return e.n.Addr() }

// Close stops the server and removes its directory.
func (e *Embedded) Close() error {
	return errors.Join(e.n.Close(), os.RemoveAll(e.dir))
}

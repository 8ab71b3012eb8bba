package peers

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/shoaldb/shoal/bench"
)

// natsChildEnv names the environment variable that turns this executable into one NATS
// server of a NATSConfig.Processes deployment; its value is the natsServerSpec as JSON.
const natsChildEnv = "SHOAL_PEERBENCH_NATS_SERVER"

// maxBatchesInflight bounds the atomic batches a NATS server holds open at once: above any
// concurrency a benchmark runs with.
const maxBatchesInflight = 10000

// natsServerSpec is one server of a deployment.
type natsServerSpec struct {
	Name        string
	Port        int      // client port
	ClusterPort int      // 0: not clustered
	Routes      []string // the other servers' cluster URLs
	StoreDir    string
	SyncAlways  bool
}

func (s natsServerSpec) options() *server.Options {
	opts := &server.Options{
		ServerName: s.Name,
		Host:       "127.0.0.1",
		Port:       s.Port,
		JetStream:  true,
		StoreDir:   s.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		SyncAlways: s.SyncAlways,
		// Atomic batches (NATS.publishBatch): one in flight per caller, all on the one
		// stream (the defaults allow 50 per stream), of up to bench.MaxBatch events (the
		// default allows 1,000).
		JetStreamLimits: server.JSLimitOpts{
			MaxBatchInflightPerStream: maxBatchesInflight,
			MaxBatchInflightTotal:     maxBatchesInflight,
			MaxBatchSize:              bench.MaxBatch,
		},
	}
	if s.ClusterPort != 0 {
		opts.Cluster = server.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: s.ClusterPort}
		for _, r := range s.Routes {
			opts.Routes = append(opts.Routes, server.RoutesFromStr(r)...)
		}
	}
	return opts
}

// ServeNATSChild runs the NATS server described by the environment and returns true once it
// has shut down (on SIGTERM or SIGINT), or returns false at once when this process is not
// such a child. Commands that start NATSConfig.Processes deployments call it first in main.
func ServeNATSChild() (bool, error) {
	raw, ok := os.LookupEnv(natsChildEnv)
	if !ok {
		return false, nil
	}
	var spec natsServerSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return true, fmt.Errorf("peers: bad %s: %w", natsChildEnv, err)
	}
	s, err := server.NewServer(spec.options())
	if err != nil {
		return true, fmt.Errorf("peers: starting NATS %s: %w", spec.Name, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go s.Start()
	<-ctx.Done()
	s.Shutdown()
	s.WaitForShutdown()
	return true, nil
}

// startNATSChild starts this executable again as the server spec, its output going to
// server.log in the server's store directory.
func startNATSChild(spec natsServerSpec) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(spec.StoreDir, "server.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), natsChildEnv+"="+string(raw))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Not killed with this process's process group on ^C: Close stops it, or, where the
	// system has it, the signal a child gets when its parent dies (killed before its Close).
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("peers: starting NATS server process %s: %w", spec.Name, err)
	}
	return cmd, nil
}

// waitConnectable waits until a client can connect to url.
func waitConnectable(ctx context.Context, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err == nil {
			nc.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("peers: NATS at %s not ready after %s: %w", url, limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stopChild asks the server process to stop, and kills it after 10s.
func stopChild(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

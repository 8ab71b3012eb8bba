package peers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/shoaldb/shoal/bench"
)

// NATSConfig describes the JetStream deployment to start.
type NATSConfig struct {
	Dir        string // storage root; one subdirectory per server
	Replicas   int    // 1 or 3 (three clustered servers)
	SyncAlways bool   // sync_interval: always (fsync before ack); false = the default 2m interval
	// Processes runs every server in a process of its own (this executable run again, see
	// ServeNATSChild) instead of all of them in this one, as `shoal server` nodes are run.
	Processes bool
}

// NATS is a running JetStream deployment and the bench.Target over it.
type NATS struct {
	cfg     NATSConfig
	servers []*server.Server // in this process
	procs   []*exec.Cmd      // or each in its own (Processes)
	urls    []string         // client URL of every server
	nc      *nats.Conn
	js      jetstream.JetStream

	mu      sync.Mutex
	lastSeq map[string]uint64 // stream -> stream sequence of its last message
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartNATS starts the servers on loopback and creates the EVENTS stream
// (subjects ev.>, file storage).
func StartNATS(ctx context.Context, cfg NATSConfig) (*NATS, error) {
	if cfg.Replicas != 1 && cfg.Replicas != 3 {
		return nil, fmt.Errorf("peers: NATS replicas must be 1 or 3, not %d", cfg.Replicas)
	}
	n := &NATS{cfg: cfg, lastSeq: map[string]uint64{}}
	clientPorts := make([]int, cfg.Replicas)
	routePorts := make([]int, cfg.Replicas)
	for i := range cfg.Replicas {
		var err error
		if clientPorts[i], err = freePort(); err != nil {
			return nil, err
		}
		if routePorts[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Replicas {
		spec := natsServerSpec{
			Name:       fmt.Sprintf("n%d", i),
			Port:       clientPorts[i],
			StoreDir:   filepath.Join(cfg.Dir, fmt.Sprintf("n%d", i)),
			SyncAlways: cfg.SyncAlways,
		}
		if cfg.Replicas > 1 {
			spec.ClusterPort = routePorts[i]
			for j := range cfg.Replicas {
				if j != i {
					spec.Routes = append(spec.Routes, fmt.Sprintf("nats://127.0.0.1:%d", routePorts[j]))
				}
			}
		}
		if err := os.MkdirAll(spec.StoreDir, 0o755); err != nil {
			n.Close()
			return nil, err
		}
		n.urls = append(n.urls, fmt.Sprintf("nats://127.0.0.1:%d", spec.Port))
		if cfg.Processes {
			cmd, err := startNATSChild(spec)
			if err != nil {
				n.Close()
				return nil, err
			}
			n.procs = append(n.procs, cmd)
			continue
		}
		s, err := server.NewServer(spec.options())
		if err != nil {
			n.Close()
			return nil, fmt.Errorf("peers: starting NATS: %w", err)
		}
		go s.Start()
		n.servers = append(n.servers, s)
	}
	for _, s := range n.servers {
		if !s.ReadyForConnections(30 * time.Second) {
			n.Close()
			return nil, errors.New("peers: NATS not ready after 30s")
		}
	}
	if cfg.Processes {
		for _, u := range n.urls {
			if err := waitConnectable(ctx, u, 30*time.Second); err != nil {
				n.Close()
				return nil, err
			}
		}
	}
	nc, err := nats.Connect(n.urls[0], nats.MaxReconnects(-1))
	if err != nil {
		n.Close()
		return nil, err
	}
	n.nc = nc
	if n.js, err = jetstream.New(nc); err != nil {
		n.Close()
		return nil, err
	}
	// In a cluster the meta leader takes a moment to be elected.
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = n.js.CreateStream(cctx, jetstream.StreamConfig{
			Name: "EVENTS", Subjects: []string{"ev.>"}, Storage: jetstream.FileStorage,
			Replicas: cfg.Replicas, MaxMsgsPerSubject: -1,
			AllowAtomicPublish: true, // batches (NATS.publishBatch)
		})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			n.Close()
			return nil, fmt.Errorf("peers: creating the JetStream stream: %w", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return n, nil
}

// Close stops the client and the servers.
func (n *NATS) Close() error {
	if n.nc != nil {
		n.nc.Close()
	}
	for _, s := range n.servers {
		s.Shutdown()
		s.WaitForShutdown()
	}
	for _, cmd := range n.procs {
		stopChild(cmd)
	}
	return nil
}

// Describe implements bench.Describer.
func (n *NATS) Describe(context.Context) bench.System {
	name := "nats"
	if n.cfg.Replicas > 1 {
		name = fmt.Sprintf("nats-r%d", n.cfg.Replicas)
	}
	d := "not durable at ack (fsync every 2m)"
	if n.cfg.SyncAlways {
		d = "fsync before ack"
		if n.cfg.Replicas > 1 {
			// JetStream acknowledges once its raft quorum has the message, as shoal does.
			d = fmt.Sprintf("fsync on a raft quorum (replication %d)", n.cfg.Replicas)
		}
	}
	return bench.System{Name: name, Version: server.VERSION, Durability: d}
}

// Append stores events in the stream's subject, all or nothing, with the expected last
// subject sequence on the first: one event as one publish, a batch as one JetStream atomic
// batch (publishBatch).
func (n *NATS) Append(ctx context.Context, stream string, expected int64, events [][]byte) (int64, error) {
	subj := "ev." + stream
	n.mu.Lock()
	seq := n.lastSeq[stream]
	n.mu.Unlock()
	m := nats.NewMsg(subj)
	switch {
	case expected == bench.ExpectNoStream:
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	case expected >= 0:
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(seq, 10))
	}
	var ack *jetstream.PubAck
	var err error
	if len(events) == 1 {
		m.Data = events[0]
		ack, err = n.js.PublishMsg(ctx, m)
	} else {
		ack, err = n.publishBatch(ctx, m, events)
	}
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, &bench.ConflictError{Stream: stream, Actual: bench.ActualUnknown}
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, bench.Classified(bench.KindTimeout, err)
		}
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
			return 0, bench.Classified(bench.KindUnavailable, err)
		}
		return 0, err
	}
	n.mu.Lock()
	n.lastSeq[stream] = ack.Sequence
	n.mu.Unlock()
	if expected >= 0 {
		return expected + int64(len(events)), nil
	}
	// NoStream: the stream now ends at len-1. Any: the version is not
	// tracked, and the benchmark does not use it.
	return int64(len(events)) - 1, nil
}

// Headers of JetStream's atomic batch publish (nats-server 2.12 and later; nats.go has no API
// for it yet).
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// publishBatch publishes events as one JetStream atomic batch, first's subject and headers
// (the expected last subject sequence) on the first event: every event carries the batch's
// ID and its place in it; all but the last are sent without waiting (the server stages
// them), and the last commits the batch and waits for its acknowledgement. At the commit the
// server checks the whole batch and stores all of it or, refusing it, none.
func (n *NATS) publishBatch(ctx context.Context, first *nats.Msg, events [][]byte) (*jetstream.PubAck, error) {
	id := nuid.Next()
	for i, ev := range events {
		m := first
		if i > 0 {
			m = nats.NewMsg(first.Subject)
		}
		m.Data = ev
		m.Header.Set(batchIDHeader, id)
		m.Header.Set(batchSeqHeader, strconv.Itoa(i+1))
		if i == len(events)-1 {
			m.Header.Set(batchCommitHeader, "1")
			return n.js.PublishMsg(ctx, m)
		}
		if err := n.nc.PublishMsg(m); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("peers: an empty batch")
}

// ReadStream replays the subject with an ordered consumer.
func (n *NATS) ReadStream(ctx context.Context, stream string) (int64, error) {
	cons, err := n.js.OrderedConsumer(ctx, "EVENTS", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"ev." + stream},
	})
	if err != nil {
		return 0, err
	}
	var count int64
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return count, err
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			count++
			md, err := msg.Metadata()
			if err == nil && md.NumPending == 0 {
				return count, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return count, err
		}
		if got == 0 {
			return count, nil
		}
	}
}

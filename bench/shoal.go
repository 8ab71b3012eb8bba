package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoaldb/shoal/client"
)

// ShoalEventType is the type of the events ShoalTarget appends.
const ShoalEventType = "bench"

// ShoalTarget drives a shoal cluster through the Go client. Safe for
// concurrent use.
type ShoalTarget struct {
	c     *client.Client
	owned bool // Close closes c
}

var (
	_ Target     = (*ShoalTarget)(nil)
	_ Describer  = (*ShoalTarget)(nil)
	_ Subscriber = (*ShoalTarget)(nil)
)

// NewShoalTarget wraps a client the caller keeps ownership of.
func NewShoalTarget(c *client.Client) *ShoalTarget { return &ShoalTarget{c: c} }

// DialShoal dials the cluster at addrs; Close closes the client.
func DialShoal(ctx context.Context, addrs []string, opts ...client.Option) (*ShoalTarget, error) {
	c, err := client.Dial(ctx, addrs, opts...)
	if err != nil {
		return nil, err
	}
	return &ShoalTarget{c: c, owned: true}, nil
}

// Close closes the client if DialShoal opened it.
func (t *ShoalTarget) Close() error {
	if t.owned {
		return t.c.Close()
	}
	return nil
}

// Append implements Target.
func (t *ShoalTarget) Append(ctx context.Context, stream string, expected int64, payloads [][]byte) (int64, error) {
	evs := make([]client.Event, len(payloads))
	for i, p := range payloads {
		evs[i] = client.Event{Type: ShoalEventType, Data: p}
	}
	res, err := t.c.Append(ctx, stream, shoalExpected(expected), evs...)
	if err != nil {
		return 0, shoalError(err)
	}
	return int64(res.LastVersion), nil
}

// ReadStream implements Target.
func (t *ShoalTarget) ReadStream(ctx context.Context, stream string) (int64, error) {
	var n int64
	for _, err := range t.c.Read(ctx, stream) {
		if err != nil {
			return n, shoalError(err)
		}
		n++
	}
	return n, nil
}

// Subscribe implements Subscriber: a subscription to every shard's log from its end
// (client.ReadAll with Follow and FromEnd), served by the shards' leaders.
func (t *ShoalTarget) Subscribe(ctx context.Context, fn func(stamped time.Time)) error {
	for ev, err := range t.c.ReadAll(ctx, nil, client.Follow(), client.FromEnd()) {
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("bench: subscription: %w", shoalError(err))
		}
		fn(ev.Created)
	}
	return nil
}

// Describe implements Describer from the cluster's topology.
func (t *ShoalTarget) Describe(ctx context.Context) System {
	sys := System{Name: "shoal"}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	topo, err := t.c.Topology(ctx)
	if err != nil {
		return sys
	}
	alive := 0
	for _, n := range topo.GetNodes() {
		if n.GetAlive() {
			alive++
			if sys.Version == "" {
				sys.Version = n.GetVersion()
			}
		}
	}
	repl := topo.GetSettings().GetReplication()
	if alive == 1 || repl == 1 {
		sys.Durability = fmt.Sprintf("fsync on 1 node (replication %d, %d alive node(s))", repl, alive)
	} else {
		sys.Durability = fmt.Sprintf("fsync on a raft quorum (replication %d, %d alive nodes)", repl, alive)
	}
	return sys
}

func shoalExpected(v int64) client.ExpectedVersion {
	switch {
	case v >= 0:
		return client.Exact(uint64(v))
	case v == ExpectNoStream:
		return client.NoStream
	}
	return client.Any
}

// shoalError maps the client's errors to the benchmark's kinds.
func shoalError(err error) error {
	var we *client.WrongExpectedVersionError
	if errors.As(err, &we) {
		actual := int64(-1)
		if we.StreamExists {
			actual = int64(we.Actual)
		}
		return &ConflictError{Stream: we.Stream, Actual: actual}
	}
	switch {
	case errors.Is(err, client.ErrWrongExpectedVersion):
		return &ConflictError{Actual: ActualUnknown}
	case errors.Is(err, context.DeadlineExceeded):
		return Classified(KindTimeout, err)
	case errors.Is(err, client.ErrUnavailable):
		return Classified(KindUnavailable, err)
	case errors.Is(err, client.ErrInvalidArgument):
		return Classified(KindInvalid, err)
	case errors.Is(err, client.ErrStreamNotFound), errors.Is(err, client.ErrStreamDeleted):
		return Classified(KindNotFound, err)
	case errors.Is(err, client.ErrIDConflict):
		return Classified("id_conflict", err)
	case errors.Is(err, client.ErrDiskLow):
		return Classified("disk_low", err) // a replica's disk below its --min-free-disk
	}
	return err
}

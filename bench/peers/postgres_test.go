package peers

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/shoaldb/shoal/bench"
)

// statements counts the statements a pool sends, each one round trip to the server.
type statements struct{ n atomic.Int64 }

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	s.n.Add(1)
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestPostgresRoundTrips: a single-event append is one statement, as it is one request to
// shoal and one publish to NATS; a BEGIN and a COMMIT around it made it three round trips and
// cost PostgreSQL a third of its throughput in make bench's single-event row. A batch is one
// transaction: BEGIN, a write_message per event, COMMIT.
func TestPostgresRoundTrips(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "peers-pg-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil { // the server may run as another user
		t.Fatal(err)
	}
	p, err := StartPostgres(ctx, dir, 4)
	if errors.Is(err, ErrPostgresNotInstalled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cfg := p.pool.Config()
	var st statements
	cfg.ConnConfig.Tracer = &st
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.pool.Close()
	p.pool = pool
	if err := pool.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	st.n.Store(0)
	if last, err := p.Append(ctx, "s", bench.ExpectNoStream, [][]byte{[]byte("a")}); err != nil || last != 0 {
		t.Fatalf("single event: last %d, %v; want 0", last, err)
	}
	if n := st.n.Load(); n != 1 {
		t.Errorf("a single-event append sent %d statements, want 1", n)
	}
	st.n.Store(0)
	if last, err := p.Append(ctx, "s", 0, [][]byte{[]byte("b"), []byte("c"), []byte("d")}); err != nil || last != 3 {
		t.Fatalf("batch: last %d, %v; want 3", last, err)
	}
	if n := st.n.Load(); n != 5 {
		t.Errorf("a 3-event append sent %d statements, want 5 (BEGIN, 3 write_message, COMMIT)", n)
	}
	if _, err := p.Append(ctx, "s", 0, [][]byte{[]byte("e")}); !errors.Is(err, bench.ErrConflict) {
		t.Fatalf("single event expecting version 0 of a stream at 3: %v, want a conflict", err)
	}
}

package peers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/shoaldb/shoal/bench"
)

// ErrPostgresNotInstalled is returned by StartPostgres when initdb and pg_ctl
// cannot be found.
var ErrPostgresNotInstalled = errors.New("skipped: PostgreSQL not installed")

// schema is a message-db style store: one messages table with a unique
// (stream_name, position) index and a write_message function that checks the
// expected version under a per-stream advisory lock.
const schema = `
CREATE TABLE IF NOT EXISTS messages (
  global_position bigserial PRIMARY KEY,
  position        bigint      NOT NULL,
  time            timestamptz NOT NULL DEFAULT now(),
  stream_name     text        NOT NULL,
  type            text        NOT NULL,
  data            bytea,
  metadata        bytea,
  id              uuid        NOT NULL UNIQUE
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_stream ON messages (stream_name, position);

CREATE OR REPLACE FUNCTION write_message(
  _id uuid, _stream_name text, _type text, _data bytea, _metadata bytea, _expected_version bigint
) RETURNS bigint AS $$
DECLARE
  _stream_version bigint;
  _next_position bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(_stream_name, 0));
  SELECT max(position) INTO _stream_version FROM messages WHERE stream_name = _stream_name;
  IF _stream_version IS NULL THEN _stream_version := -1; END IF;
  IF _expected_version IS NOT NULL AND _expected_version <> _stream_version THEN
    RAISE EXCEPTION 'Wrong expected version: % (Stream: %, Stream Version: %)',
      _expected_version, _stream_name, _stream_version USING ERRCODE = 'P0001';
  END IF;
  _next_position := _stream_version + 1;
  INSERT INTO messages (id, stream_name, position, type, data, metadata)
    VALUES (_id, _stream_name, _next_position, _type, _data, _metadata);
  RETURN _next_position;
END;
$$ LANGUAGE plpgsql;
`

// Postgres is a throwaway PostgreSQL cluster started with initdb and pg_ctl,
// or an existing server given by DSN.
type Postgres struct {
	dir     string // empty when the server is not ours
	pgCtl   string
	pool    *pgxpool.Pool
	version string
}

func findPGBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) == 0 {
		return "", ErrPostgresNotInstalled
	}
	return matches[len(matches)-1], nil
}

// StartPostgres creates a cluster in dir (fsync on, synchronous_commit on),
// starts it on a free loopback port and loads the schema. As root it runs
// the server as the "postgres" user, which the Debian package creates.
func StartPostgres(ctx context.Context, dir string, maxConns int) (*Postgres, error) {
	initdb, err := findPGBin("initdb")
	if err != nil {
		return nil, err
	}
	pgCtl, err := findPGBin("pg_ctl")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "pgdata")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	run := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		if os.Geteuid() == 0 {
			// PostgreSQL refuses to run as root.
			if err := exec.Command("chown", "-R", "postgres:postgres", dir).Run(); err != nil {
				return fmt.Errorf("chown %s to postgres: %w", dir, err)
			}
			cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w: %s", filepath.Base(name), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := run(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"); err != nil {
		return nil, err
	}
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s -c fsync=on -c synchronous_commit=on -c max_connections=%d -c shared_buffers=256MB",
		port, data, maxConns+20)
	if err := run(pgCtl, "-D", data, "-o", opts, "-l", filepath.Join(dir, "postgres.log"), "-w", "start"); err != nil {
		return nil, err
	}
	p := &Postgres{dir: data, pgCtl: pgCtl}
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&pool_max_conns=%d", port, maxConns)
	if err := p.connect(ctx, dsn); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// ConnectPostgres uses an existing server and loads the schema into it.
func ConnectPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	p := &Postgres{}
	if err := p.connect(ctx, dsn); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Postgres) connect(ctx context.Context, dsn string) error {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	p.pool = pool
	if _, err := pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("peers: loading the schema: %w", err)
	}
	return pool.QueryRow(ctx, "SHOW server_version").Scan(&p.version)
}

// Close closes the pool and stops the server if it is ours.
func (p *Postgres) Close() error {
	if p.pool != nil {
		p.pool.Close()
	}
	if p.dir != "" {
		cmd := exec.Command(p.pgCtl, "-D", p.dir, "-m", "fast", "-w", "stop")
		if os.Geteuid() == 0 {
			cmd = exec.Command("runuser", "-u", "postgres", "--", p.pgCtl, "-D", p.dir, "-m", "fast", "-w", "stop")
		}
		return cmd.Run()
	}
	return nil
}

// Describe implements bench.Describer.
func (p *Postgres) Describe(context.Context) bench.System {
	return bench.System{Name: "postgres", Version: p.version, Durability: "fsync before ack (synchronous_commit=on)"}
}

// Append writes the events in one transaction through write_message; the
// first call checks the expected version, the others follow it. One event is
// one statement, a transaction of its own: an explicit BEGIN and COMMIT would
// add two round trips to every single-event append, which shoal's and NATS's
// do not make.
func (p *Postgres) Append(ctx context.Context, stream string, expected int64, events [][]byte) (int64, error) {
	var last int64
	write := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) error {
		for i, ev := range events {
			var exp *int64
			switch {
			case expected >= 0:
				v := expected + int64(i)
				exp = &v
			case expected == bench.ExpectNoStream:
				v := int64(i) - 1
				exp = &v
			}
			if err := q.QueryRow(ctx, "SELECT write_message(gen_random_uuid(), $1, 'bench', $2, NULL, $3)",
				stream, ev, exp).Scan(&last); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if len(events) == 1 {
		err = write(p.pool)
	} else {
		err = pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error { return write(tx) })
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "P0001" && strings.HasPrefix(pgErr.Message, "Wrong expected version") {
			return 0, &bench.ConflictError{Stream: stream, Actual: bench.ActualUnknown}
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, bench.Classified(bench.KindTimeout, err)
		}
		return 0, err
	}
	return last, nil
}

// ReadStream reads the stream in position order, in pages of 1,000.
func (p *Postgres) ReadStream(ctx context.Context, stream string) (int64, error) {
	var n int64
	from := int64(0)
	for {
		rows, err := p.pool.Query(ctx,
			"SELECT position, data FROM messages WHERE stream_name = $1 AND position >= $2 ORDER BY position LIMIT 1000",
			stream, from)
		if err != nil {
			return n, err
		}
		got := 0
		for rows.Next() {
			var pos int64
			var data []byte
			if err := rows.Scan(&pos, &data); err != nil {
				rows.Close()
				return n, err
			}
			got++
			n++
			from = pos + 1
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return n, err
		}
		if got < 1000 {
			return n, nil
		}
	}
}

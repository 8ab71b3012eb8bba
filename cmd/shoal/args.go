package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/shoaldb/shoal/client"
)

// parseExpected parses --expected: any, no-stream, exists or a version number. noStreamRefusedBy
// names the command for which no-stream does not apply ("" when it does).
func parseExpected(s, noStreamRefusedBy string) (client.ExpectedVersion, error) {
	allowNoStream := noStreamRefusedBy == ""
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "any":
		return client.Any, nil
	case "no-stream":
		if !allowNoStream {
			return client.Any, usagef("--expected no-stream does not apply to %s; use any, exists or a version number", noStreamRefusedBy)
		}
		return client.NoStream, nil
	case "exists":
		return client.StreamExists, nil
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		if allowNoStream {
			return client.Any, usagef("--expected must be any, no-stream, exists or a version number (0 or more), got %q", s)
		}
		return client.Any, usagef("--expected must be any, exists or a version number (0 or more), got %q", s)
	}
	return client.Exact(v), nil
}

// payload is event data or metadata as given on the command line.
type payload struct {
	bytes []byte
	json  bool // bytes is a valid JSON document
}

// parseData reads --data or --metadata: inline JSON (validated), @FILE or - (stdin; not
// when stdin is nil, as only one flag can read it). Files and stdin may hold any bytes; they
// are flagged as JSON when valid.
func parseData(flag, arg string, stdin io.Reader) (payload, error) {
	switch {
	case arg == "":
		return payload{}, nil
	case arg == "-" && stdin == nil:
		return payload{}, usagef("%s cannot be read from stdin (only --data can); use %s @FILE", flag, flag)
	case arg == "-":
		b, err := io.ReadAll(stdin)
		if err != nil {
			return payload{}, usagef("cannot read %s from stdin: %v", flag, err)
		}
		return payload{bytes: b, json: len(b) > 0 && json.Valid(b)}, nil
	case strings.HasPrefix(arg, "@"):
		name := arg[1:]
		if name == "" {
			return payload{}, usagef("%s @FILE needs a file name after @", flag)
		}
		b, err := os.ReadFile(name)
		if err != nil {
			return payload{}, usagef("cannot read %s file %q: %v", flag, name, unwrapPathError(err))
		}
		return payload{bytes: b, json: len(b) > 0 && json.Valid(b)}, nil
	}
	return parseJSON(flag, arg)
}

// parseJSON validates an inline JSON argument.
func parseJSON(flag, arg string) (payload, error) {
	if arg == "" {
		return payload{}, nil
	}
	b := []byte(arg)
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		return payload{}, usagef("%s is not valid JSON (%v); quote it for the shell, e.g. %s '{\"k\":1}', or use %s @FILE for other content",
			flag, err, flag, flag)
	}
	return payload{bytes: b, json: true}, nil
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// readFrom is a parsed --from: start, end or a version.
type readFrom struct {
	end     bool
	version uint64
}

// parseFrom parses --from; "" means start, or end when reading backward.
func parseFrom(s string, backward bool) (readFrom, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return readFrom{end: backward}, nil
	case "start":
		return readFrom{}, nil
	case "end":
		return readFrom{end: true}, nil
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return readFrom{}, usagef("--from must be start, end or a version number (0 or more), got %q", s)
	}
	return readFrom{version: v}, nil
}

func (f readFrom) options() []client.ReadOption {
	if f.end {
		return []client.ReadOption{client.FromEnd()}
	}
	return []client.ReadOption{client.FromVersion(f.version)}
}

func (f readFrom) String() string {
	if f.end {
		return "end"
	}
	return fmt.Sprint(f.version)
}

// sizeFlag is a flag of a byte count: a number with an optional unit, as 512MiB, 10GB or
// 1048576, of at least min bytes.
type sizeFlag struct {
	v   *uint64
	min uint64
}

func (f *sizeFlag) String() string {
	if f.v == nil {
		return "0"
	}
	return humanize.IBytes(*f.v)
}

func (f *sizeFlag) Set(s string) error {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return fmt.Errorf("want a size such as 512MiB, 10GB or 1048576, got %q", s)
	}
	if n < f.min {
		return fmt.Errorf("%s is below the minimum of %s", humanize.IBytes(n), humanize.IBytes(f.min))
	}
	*f.v = n
	return nil
}

func (f *sizeFlag) Type() string { return "size" }

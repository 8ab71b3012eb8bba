package shard

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble/v2"
)

// TestDataDriven runs the scripts in testdata/*.txt (rewrite with -rewrite).
//
//	append stream=S expected=any|nostream|exists|<N>|kind<K> [time=T] [gen=N idbase=B] [stream-repeat=N]
//	id=<n> type=<t> [data=..] [meta=..] [ctype=..] [datasize=N] [metasize=N] [type-repeat=N] [ctype-repeat=N]
//	delete stream=S expected=... [tombstone]
//	truncate stream=S before=N|max expected=... [policy=P set=T] (a retention policy's)
//	stored stream=S: the versions of S's event keys on disk (hidden ones too)
//	read stream=S [from=N] [from-end] [backward] [count=N] [whole]   (whole: ReadStreamWhole, forwards)
//	readlog [from=N] [count=N]
//	info stream=S | applied | begin | commit | reload | reopen | raw hex=..
//	records: the stored stream records ('N'), applied index ('X') and shard meta ('Z')
//	set-retention prefix=P [keep-last=N] [max-age=NS] [deleted] [remove] [time=T]
//	retention: the stored policies; retention-cuts prefix=P now=T [after=S] [count=N]
//
// Values are Go-unescaped (\x01, \xff, \u00e9 ...).
func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		var ts *testShard
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			if ts == nil {
				ts = newTestShard(t, nil, 7)
			}
			return runCmd(t, ts, td)
		})
	})
}

func unescape(t testing.TB, v string) string {
	s, err := strconv.Unquote(`"` + strings.ReplaceAll(v, `"`, `\"`) + `"`)
	if err != nil {
		t.Fatalf("bad value %q: %v", v, err)
	}
	return s
}

type args map[string]string

func parseArgs(t testing.TB, td *datadriven.TestData) args {
	a := args{}
	for _, ca := range td.CmdArgs {
		a[ca.Key] = unescape(t, strings.Join(ca.Vals, ","))
	}
	return a
}

func parseFields(t testing.TB, line string) args {
	a := args{}
	for _, f := range strings.Fields(line) {
		k, v, _ := strings.Cut(f, "=")
		a[k] = unescape(t, v)
	}
	return a
}

func (a args) has(k string) bool { _, ok := a[k]; return ok }

func (a args) uint(t testing.TB, k string, def uint64) uint64 {
	v, ok := a[k]
	if !ok {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", k, v, err)
	}
	return n
}

// str returns a[k], repeated a[k+"-repeat"] times if given.
func (a args) str(t testing.TB, k string) string {
	return strings.Repeat(a[k], int(a.uint(t, k+"-repeat", 1)))
}

func parseExpected(t testing.TB, v string) Expected {
	switch v {
	case "", "any":
		return Expected{Kind: ExpectAny}
	case "nostream":
		return Expected{Kind: ExpectNoStream}
	case "exists":
		return Expected{Kind: ExpectExists}
	}
	if k, ok := strings.CutPrefix(v, "kind"); ok {
		n, err := strconv.ParseUint(k, 10, 8)
		if err != nil {
			t.Fatal(err)
		}
		return Expected{Kind: ExpectedKind(n)}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("expected=%q: %v", v, err)
	}
	return Expected{Kind: ExpectExact, Version: n}
}

func parseEvent(t testing.TB, a args) Event {
	e := Event{
		ID:          testID(a.uint(t, "id", 0)),
		Type:        a.str(t, "type"),
		ContentType: a.str(t, "ctype"),
	}
	if a.has("data") {
		e.Data = []byte(a["data"])
	}
	if a.has("meta") {
		e.Metadata = []byte(a["meta"])
	}
	if n := a.uint(t, "datasize", 0); n > 0 {
		e.Data = bytes.Repeat([]byte("d"), int(n))
	}
	if n := a.uint(t, "metasize", 0); n > 0 {
		e.Metadata = bytes.Repeat([]byte("m"), int(n))
	}
	return e
}

func runCmd(t *testing.T, ts *testShard, td *datadriven.TestData) string {
	a := parseArgs(t, td)
	switch td.Cmd {
	case "append":
		c := &AppendCommand{
			Stream:   a.str(t, "stream"),
			Expected: parseExpected(t, a["expected"]),
			Time:     int64(a.uint(t, "time", 1000)),
		}
		for _, line := range strings.Split(td.Input, "\n") {
			if strings.TrimSpace(line) != "" {
				c.Events = append(c.Events, parseEvent(t, parseFields(t, line)))
			}
		}
		base := a.uint(t, "idbase", 1)
		for i := uint64(0); i < a.uint(t, "gen", 0); i++ {
			c.Events = append(c.Events, Event{ID: testID(base + i), Type: "Gen"})
		}
		return fmtResult(ts.apply(EncodeAppend(c))) + "\n"
	case "delete":
		c := &DeleteCommand{
			Stream:    a.str(t, "stream"),
			Expected:  parseExpected(t, a["expected"]),
			Tombstone: a.has("tombstone"),
			Time:      int64(a.uint(t, "time", 1000)),
		}
		return fmtResult(ts.apply(EncodeDelete(c))) + "\n"
	case "truncate":
		before := uint64(math.MaxUint64)
		if a["before"] != "max" {
			before = a.uint(t, "before", 0)
		}
		c := &TruncateCommand{Stream: a.str(t, "stream"), Before: before, Expected: parseExpected(t, a["expected"])}
		if a.has("policy") {
			c.Policy = &RetentionRef{Prefix: a["policy"], Set: int64(a.uint(t, "set", 0))}
		}
		return fmtResult(ts.apply(EncodeTruncate(c))) + "\n"
	case "set-retention":
		c := &SetRetentionCommand{Remove: a.has("remove"), Policy: RetentionPolicy{
			Prefix: a.str(t, "prefix"), KeepLast: a.uint(t, "keep-last", 0), Deleted: a.has("deleted"),
			MaxAge: time.Duration(a.uint(t, "max-age", 0)), Set: int64(a.uint(t, "time", 1000))}}
		return fmtResult(ts.apply(EncodeSetRetention(c))) + "\n"
	case "retention":
		ps, err := ts.s.RetentionPolicies()
		if err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		var sb strings.Builder
		for _, p := range ps {
			fmt.Fprintf(&sb, "%v set=%d\n", p, p.Set)
		}
		if sb.Len() == 0 {
			return "<none>\n"
		}
		return sb.String()
	case "retention-cuts":
		ts.commit(pebble.NoSync)
		ps, err := ts.s.RetentionPolicies()
		if err != nil {
			t.Fatal(err)
		}
		var p RetentionPolicy
		for _, q := range ps {
			if q.Prefix == a.str(t, "prefix") {
				p = q
			}
		}
		var enough func() bool // budget=N: enough after N streams worked out
		if n := a.uint(t, "budget", 0); n > 0 {
			enough = func() bool { n--; return n == 0 }
		}
		cuts, last, err := ts.s.RetentionCuts(p, ps, CutOptions{Now: int64(a.uint(t, "now", 0)), After: a.str(t, "after"),
			Count: a.uint(t, "count", 0), MinAge: time.Duration(a.uint(t, "min-age", 0)), Enough: enough})
		if err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		var sb strings.Builder
		for _, c := range cuts {
			fmt.Fprintf(&sb, "%s %v from=%d before=%d hidden=%d events=%d\n", c.Stream, c.State, c.From, c.Before, c.Hidden, c.Events())
		}
		fmt.Fprintf(&sb, "last=%q\n", last)
		return sb.String()
	case "stored":
		ts.commit(pebble.NoSync)
		return storedVersions(t, ts, a.str(t, "stream"))
	case "set-format":
		return fmtResult(ts.apply(EncodeSetFormat(&SetFormatCommand{Format: a.uint(t, "format", 0)}))) + "\n"
	case "format":
		return fmt.Sprintf("format=%d\n", ts.s.Format())
	case "raw":
		data, err := hex.DecodeString(strings.ReplaceAll(a["hex"], "_", ""))
		if err != nil {
			t.Fatal(err)
		}
		return fmtResult(ts.apply(data)) + "\n"
	case "read":
		var sb strings.Builder
		print := func(ev *RecordedEvent) error {
			fmt.Fprintln(&sb, fmtEvent(ev, false))
			return nil
		}
		var err error
		if a.has("whole") {
			err = ts.s.ReadStreamWhole(a.str(t, "stream"), a.uint(t, "from", 0), a.uint(t, "count", 0), print)
		} else {
			err = ts.s.ReadStream(a.str(t, "stream"), a.uint(t, "from", 0), a.has("from-end"),
				a.has("backward"), a.uint(t, "count", 0), print)
		}
		if err != nil {
			fmt.Fprintf(&sb, "error: %v\n", err)
		}
		if sb.Len() == 0 {
			return "<empty>\n"
		}
		return sb.String()
	case "readlog":
		var sb strings.Builder
		next, err := ts.s.ReadLog(a.uint(t, "from", 0), a.uint(t, "count", 0), func(ev *RecordedEvent) error {
			fmt.Fprintln(&sb, fmtEvent(ev, true))
			return nil
		})
		if err != nil {
			fmt.Fprintf(&sb, "error: %v\n", err)
		}
		fmt.Fprintf(&sb, "next=%d\n", next)
		return sb.String()
	case "info":
		exists, last, deleted, tomb, err := ts.s.StreamInfo(a.str(t, "stream"))
		if err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		return fmt.Sprintf("exists=%t last=%d deleted=%t tombstoned=%t\n", exists, last, deleted, tomb)
	case "list":
		var sb strings.Builder
		resume, err := ts.s.ListStreams(a.str(t, "prefix"), a.str(t, "after"), a.has("deleted"), a.uint(t, "count", 0),
			func(m *StreamSummary) error {
				fmt.Fprintf(&sb, "%s %s first=%d last=%d", m.Name, m.State, m.First, m.Last)
				if m.Truncated {
					sb.WriteString(" truncated")
				}
				if m.Hidden > 0 {
					fmt.Fprintf(&sb, " hidden=%d", m.Hidden)
				}
				if m.State == StreamLive {
					fmt.Fprintf(&sb, " pos=%d time=%d", m.LastPosition, m.LastCreated)
				}
				sb.WriteString("\n")
				return nil
			})
		if err != nil {
			fmt.Fprintf(&sb, "error: %v\n", err)
		}
		if resume != "" {
			fmt.Fprintf(&sb, "resume after %s\n", resume)
		}
		if sb.Len() == 0 {
			return "<empty>\n"
		}
		return sb.String()
	case "applied":
		return fmt.Sprintf("applied=%d last-position=%d\n", ts.s.Applied(), ts.s.LastPosition())
	case "records":
		ts.commit(pebble.NoSync)
		return dumpRecords(t, ts)
	case "ids":
		ts.commit(pebble.NoSync)
		return dumpIDs(t, ts)
	case "begin":
		ts.begin()
		return "ok\n"
	case "commit":
		ts.commit(pebble.NoSync)
		return "ok\n"
	case "reload":
		if err := ts.s.Reload(); err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		return "ok\n"
	case "reopen":
		ts.commit(pebble.Sync)
		ts.s.Close()
		if err := ts.db.Close(); err != nil {
			t.Fatal(err)
		}
		db, err := pebble.Open("db", &pebble.Options{FS: ts.fs, Logger: quietLogger{}})
		if err != nil {
			t.Fatal(err)
		}
		ts.db = db
		if ts.s, err = Open(db, ts.s.ID(), Options{}); err != nil {
			t.Fatal(err)
		}
		return "ok\n"
	}
	t.Fatalf("unknown command %q", td.Cmd)
	return ""
}

// storedVersions prints the versions of stream's event keys in ts's DB, hidden or not.
func storedVersions(t *testing.T, ts *testShard, stream string) string {
	v, closer, err := ts.db.Get(ts.s.keys.stream(nil, stream))
	if err != nil {
		return fmt.Sprintf("error: %v\n", err)
	}
	var m streamMeta
	err = m.decode(v)
	closer.Close()
	if err != nil {
		t.Fatal(err)
	}
	it, err := ts.db.NewIter(&pebble.IterOptions{LowerBound: ts.s.keys.eventStream(nil, m.id), UpperBound: ts.s.keys.eventStreamEnd(nil, m.id)})
	if err != nil {
		t.Fatal(err)
	}
	var vs []string
	for valid := it.First(); valid; valid = it.Next() {
		ver, err := eventVersion(it.Key())
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, strconv.FormatUint(ver, 10))
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		return "<none>\n"
	}
	return strings.Join(vs, " ") + "\n"
}

// dumpIDs prints the committed ID index: each entry's ID (as testID numbers them), stream ID
// and version.
func dumpIDs(t *testing.T, ts *testShard) string {
	var sb strings.Builder
	lo, hi := ts.s.keys.tagSpan(tagID)
	it, err := ts.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		var e idEntry
		if err := e.decode(it.Value()); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "id=%d stream=%d version=%d\n", binary.BigEndian.Uint64(it.Key()[len(it.Key())-8:]), e.stream, e.version)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

// dumpRecords prints the committed stream records, 'X' and 'Z' of ts's shard.
func dumpRecords(t *testing.T, ts *testShard) string {
	var sb strings.Builder
	lo, hi := ts.s.keys.tagSpan(tagStream)
	it, err := ts.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		var m streamMeta
		if err := m.decode(it.Value()); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "stream %s: state=%d id=%d last=%d start=%d\n", it.Key()[prefixLen+1:], m.state, m.id, m.last, m.start)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if v, closer, err := ts.db.Get(ts.s.keys.applied(nil)); err == nil {
		fmt.Fprintf(&sb, "X: applied=%d\n", binary.BigEndian.Uint64(v))
		closer.Close()
	} else {
		fmt.Fprintf(&sb, "X: %v\n", err)
	}
	if v, closer, err := ts.db.Get(ts.s.keys.meta(nil)); err == nil {
		var m shardMeta
		applied, has, err := m.decode(v)
		closer.Close()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "Z: next-position=%d next-stream=%d", m.nextPosition, m.nextStreamID)
		if has {
			fmt.Fprintf(&sb, " applied=%d", applied)
		}
		sb.WriteString("\n")
	} else {
		fmt.Fprintf(&sb, "Z: %v\n", err)
	}
	return sb.String()
}

package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/ring"
	"github.com/shoaldb/shoal/shard"
)

// consoleGet fetches path from n's HTTP port without following redirects.
func consoleGet(t *testing.T, n *Node, path string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := c.Get("http://" + n.HTTPAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// startConsoleNode starts a single node whose console shows events; configure, if not nil,
// adjusts its config first.
func startConsoleNode(t *testing.T, configure func(*Config)) *Node {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	cfg.ConsoleData = true
	if configure != nil {
		configure(&cfg)
	}
	return startNode(t, cfg)
}

// pageMain is a page's content, without the layout around it.
func pageMain(page string) string {
	if _, after, ok := strings.Cut(page, "<main>"); ok {
		page, _, _ = strings.Cut(after, "</main>")
	}
	return page
}

// TestConsole reads a node's console: the overview, a stream's pages forward, backward and
// from its end, an event's page for JSON, text, binary and oversized data, a shard's log with
// its deletes, and the refusals of bad requests; data that is HTML is shown as text.
func TestConsole(t *testing.T) {
	n := startConsoleNode(t, nil)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitFormat(ctx, t, n)                       // deletes take positions in the shard's log
	big := strings.Repeat("é", consoleMaxShown) // 2 bytes each: past the limit, cut inside none
	data := []*shoalv1.EventData{
		{Type: "Opened", Data: []byte(`{"owner":"ann","limit":100}`), ContentType: "application/json"},
		{Type: "Noted", Data: []byte(`<script>alert(1)</script> & "x"`), Metadata: []byte(`{"by":"ops"}`)},
		{Type: "Raw", Data: []byte{0, 1, 2, 0xff, 'b', 'i', 'n'}},
		{Type: "Big", Data: []byte(big)},
	}
	for i, d := range data {
		d.Id = events("x")[0].Id
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "acct-1", Events: []*shoalv1.EventData{d}}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "gone", Events: events("A")}); err != nil {
		t.Fatal(err)
	}
	del, err := c.Delete(ctx, &shoalv1.DeleteRequest{Stream: "gone"})
	if err != nil {
		t.Fatal(err)
	}

	if !del.Logged {
		t.Fatalf("delete %v not logged", del)
	}
	resp, _ := consoleGet(t, n, "/")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/console/" {
		t.Fatalf("/: %d to %q, want 302 to /console/", resp.StatusCode, resp.Header.Get("Location"))
	}
	page := func(path string, code int, wants ...string) string {
		t.Helper()
		resp, body := consoleGet(t, n, path)
		if resp.StatusCode != code {
			t.Fatalf("%s: %d, want %d:\n%s", path, resp.StatusCode, code, pageMain(body))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
		for _, w := range wants {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %q:\n%s", path, w, pageMain(body))
			}
		}
		if strings.Contains(body, "<script>") {
			t.Errorf("%s holds an unescaped <script>", path)
		}
		return body
	}

	page("/console/", 200, n.Settings().ClusterID, "4 shards, replication 1, 1 node", "4 ok", ">solo<", "read stream")
	page("/console/?refresh=5", 200, `<meta http-equiv="refresh" content="5">`)
	page("/console/stream?name=acct-1", 200, "4 events", `{&#34;owner&#34;:&#34;ann&#34;,&#34;limit&#34;:100}`,
		"&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;x&#34;", "binary: 000102ff62696e", "Big", "éééé…")
	body := page("/console/stream?name=acct-1&limit=2", 200, "2 events", "next 2", "from=2&amp;limit=2&amp;name=acct-1")
	if strings.Contains(body, ">Raw<") {
		t.Errorf("a page of 2 shows a third event:\n%s", body)
	}
	body = page("/console/stream?name=acct-1&end=1&limit=2", 200, "2 events", ">Big<", ">Raw<", "older 2",
		"backward=1&amp;from=1&amp;limit=2&amp;name=acct-1")
	if strings.Index(body, ">Big<") > strings.Index(body, ">Raw<") {
		t.Error("the latest events are not shown newest first")
	}
	page("/console/stream?name=acct-1&from=1&backward=1", 200, "2 events", ">Opened<", ">Noted<")

	page("/console/event?stream=acct-1&version=0", 200, "data: JSON, 27 bytes", "  &#34;owner&#34;: &#34;ann&#34;,",
		"application/json", "metadata: empty")
	page("/console/event?stream=acct-1&version=1", 200, "data: text", "&lt;script&gt;", "metadata: JSON, 12 bytes")
	page("/console/event?stream=acct-1&version=2", 200, "data: binary (hex), 7 bytes", "00 01 02 ff 62 69 6e")
	page("/console/event?stream=acct-1&version=3", 200, "data: text, 131072 bytes (the first 65536 shown)",
		`href="/console/event?stream=acct-1&amp;version=2">version 2<`, "the stream's last event")
	if body := page("/console/event?stream=acct-1&version=0", 200, `version=1">version 1<`); strings.Contains(body, "version=-") ||
		strings.Count(body, "/console/event?") != 1 {
		t.Errorf("the first event's page links to anything but the next event:\n%s", pageMain(body))
	}

	page("/console/shard?shard="+strconv.Itoa(int(del.Shard))+"&deletes=1", 200, "soft delete: versions up to 0 hidden", ">gone<")
	page("/console/shard?shard="+strconv.Itoa(int(del.Shard)), 200, ">gone<")
	if body := page("/console/shard?shard="+strconv.Itoa(int(del.Shard)), 200); strings.Contains(body, "soft delete") {
		t.Error("a shard's page shows deletes without deletes=1")
	}
	page("/console/shard?shard="+strconv.Itoa(int(del.Shard))+"&end=1&limit=1&deletes=1", 200, "soft delete")

	for _, bad := range []struct {
		path string
		code int
		want string
	}{
		{"/console/stream?name=", 400, "name: a stream name is required"},
		{"/console/stream?name=a&limit=0", 400, "limit: a whole number from 1 to 1000, not &#34;0&#34;"},
		{"/console/stream?name=a&limit=1001", 400, "limit: a whole number from 1 to 1000"},
		{"/console/stream?name=a&from=-1", 400, "from: a whole number"},
		{"/console/stream?name=$bad", 400, "not starting with &#39;$&#39;"},
		{"/console/stream?name=nope", 404, "stream nope: not found"},
		{"/console/stream?name=gone", 404, "not found"},
		{"/console/event?stream=acct-1", 400, "version: an event&#39;s version is required"},
		{"/console/event?stream=acct-1&version=4", 404, "stream &#34;acct-1&#34; has no event at version 4"},
		{"/console/shard?shard=4", 400, "shard 4 does not exist"},
		{"/console/shard?shard=x", 400, "shard: a whole number from 0 to 4294967295"},
		{"/console/shard", 400, "shard: a shard number is required"},
		{"/console/?refresh=3601", 400, "refresh: a whole number from 0 to 3600"},
		{"/console/?refresh=1", 400, "refresh: 0 (none) or 5 to 3600 seconds, not 1"},
	} {
		page(bad.path, bad.code, bad.want)
	}
}

// waitFormat waits for n's shards to reach shard.MaxFormat, which a new cluster's leaders
// raise them to once they started.
func waitFormat(ctx context.Context, t *testing.T, n *Node) {
	t.Helper()
	for {
		low := 0
		for _, s := range n.Topology(ctx).Shards {
			if s.Format != shard.MaxFormat {
				low++
			}
		}
		if low == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%d shards below format %d", low, shard.MaxFormat)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConsoleDataOff: without ConsoleData the console shows the cluster, and refuses every
// page that would show events, saying how to allow them.
func TestConsoleDataOff(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	resp, body := consoleGet(t, n, "/console/")
	if resp.StatusCode != 200 || !strings.Contains(body, "4 ok") || strings.Contains(body, "read stream") {
		t.Fatalf("overview: %d (want 200, shards shown, no stream form):\n%s", resp.StatusCode, body)
	}
	for _, p := range []string{"/console/stream?name=a", "/console/event?stream=a&version=0", "/console/shard?shard=0", "/console/streams"} {
		resp, body := consoleGet(t, n, p)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "--console-data") {
			t.Errorf("%s: %d, want 403 naming --console-data:\n%s", p, resp.StatusCode, body)
		}
	}
}

// TestConsoleStreams lists a node's streams on the console: in name order over every shard,
// by prefix, in pages that link to the next, with the deleted ones when asked; names that are
// HTML are shown as text; bad requests are refused naming the parameter.
func TestConsoleStreams(t *testing.T) {
	n := startConsoleNode(t, nil)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := []string{"order-3", "order-1", "order-2", "cart-<b>1</b>", "order-10"}
	for _, name := range names {
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: name, Events: events("Opened", "Paid")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Delete(ctx, &shoalv1.DeleteRequest{Stream: "order-2"}); err != nil {
		t.Fatal(err)
	}
	rows := func(page string) []string {
		var out []string
		for _, row := range strings.Split(pageMain(page), "<tr>")[2:] {
			name, _, _ := strings.Cut(row[strings.Index(row, `">`)+2:], "</a>")
			out = append(out, name)
		}
		return out
	}
	resp, body := consoleGet(t, n, "/console/streams")
	if got := rows(body); resp.StatusCode != 200 || fmt.Sprint(got) != "[cart-&lt;b&gt;1&lt;/b&gt; order-1 order-10 order-3]" ||
		!strings.Contains(body, "0..1") {
		t.Fatalf("streams: %d %q:\n%s", resp.StatusCode, got, pageMain(body))
	}
	resp, body = consoleGet(t, n, "/console/streams?prefix=order-&limit=2&deleted=1")
	if got := rows(body); resp.StatusCode != 200 || fmt.Sprint(got) != "[order-1 order-10]" ||
		!strings.Contains(body, `href="/console/streams?after=order-10&amp;deleted=1&amp;limit=2&amp;prefix=order-"`) {
		t.Fatalf("2 streams starting with order-: %d %q:\n%s", resp.StatusCode, got, pageMain(body))
	}
	resp, body = consoleGet(t, n, "/console/streams?after=order-10&deleted=1&limit=2&prefix=order-")
	if got := rows(body); resp.StatusCode != 200 || fmt.Sprint(got) != "[order-2 order-3]" || !strings.Contains(body, "deleted") ||
		!strings.Contains(body, "none (at version 1)") || strings.Contains(body, "next 2") {
		t.Fatalf("the next 2: %d %q:\n%s", resp.StatusCode, got, pageMain(body))
	}
	if _, body := consoleGet(t, n, "/console/streams?prefix=zzz"); !strings.Contains(body, "No live stream starting with zzz.") {
		t.Fatalf("no stream: %s", pageMain(body))
	}
	// A stream's page says its state; a deleted stream's page says so, with the events its
	// delete hid, where a read says not found; a stream never written is not found.
	if resp, body := consoleGet(t, n, "/console/stream?name=order-1"); resp.StatusCode != 200 ||
		!strings.Contains(body, "<p>live, versions 0..1, 2 events;") {
		t.Fatalf("a live stream's page: %d\n%s", resp.StatusCode, pageMain(body))
	}
	if resp, body := consoleGet(t, n, "/console/stream?name=order-2"); resp.StatusCode != http.StatusNotFound ||
		!strings.Contains(body, `<span class="warn">deleted</span>, versions none (at version 1), 0 events`) ||
		!strings.Contains(body, "2 events a delete hid, still on disk") || !strings.Contains(body, "Reads of this stream answer not found: it is deleted.") {
		t.Fatalf("a deleted stream's page: %d\n%s", resp.StatusCode, pageMain(body))
	}
	if resp, body := consoleGet(t, n, "/console/stream?name=order-"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the page of a stream never written: %d, want 404\n%s", resp.StatusCode, pageMain(body))
	}
	// Three streams of one shard, two to a page: the first page links to the third.
	var one []string
	for i := 0; len(one) < 3; i++ {
		if name := fmt.Sprintf("q-%d", i); ring.ShardOf(name, 4) == 0 {
			if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: name, Events: events("Opened")}); err != nil {
				t.Fatal(err)
			}
			one = append(one, name)
		}
	}
	slices.Sort(one)
	_, body = consoleGet(t, n, "/console/streams?prefix=q-&limit=2")
	if got := rows(body); fmt.Sprint(got) != fmt.Sprint(one[:2]) || !strings.Contains(body, "after="+one[1]) {
		t.Fatalf("two of three streams of shard 0: %q, want %q and a link to the next:\n%s", got, one[:2], pageMain(body))
	}
	// Pages longer than the chunk a shard is asked for at a time (64): every shard's names are
	// read chunk after chunk, merged in order, page after page.
	var many []string
	for i := range 300 {
		name := fmt.Sprintf("r-%03d", i)
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: name, Events: events("Opened")}); err != nil {
			t.Fatal(err)
		}
		many = append(many, name)
	}
	for page, after := 0, ""; page < 3; page++ {
		path := "/console/streams?prefix=r-&limit=100"
		if after != "" {
			path += "&after=" + after
		}
		_, body := consoleGet(t, n, path)
		want := many[100*page : 100*page+100]
		if got := rows(body); fmt.Sprint(got) != fmt.Sprint(want) || (page < 2) != strings.Contains(body, "after="+want[99]) {
			t.Fatalf("page %d of 300 streams: %d rows, %q..., want %q..%q and a link on when more follow", page, len(got), got[:min(3, len(got))], want[0], want[99])
		}
		after = want[99]
	}
	for _, tc := range []struct{ path, want string }{
		{"/console/streams?limit=0", "limit: a whole number from 1 to 1000"},
		{"/console/streams?prefix=" + strings.Repeat("p", 513), "prefix: 513 bytes given (limit: at most 512 bytes)"},
		{"/console/streams?after=" + strings.Repeat("p", 513), "after: 513 bytes given"},
		{"/console/streams?prefix=%FF", "prefix: not UTF-8 (limit: valid UTF-8)"},
	} {
		resp, body := consoleGet(t, n, tc.path)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d, want 400 saying %q:\n%s", tc.path[:min(len(tc.path), 40)], resp.StatusCode, tc.want, pageMain(body))
		}
	}

	// The retention policies, and one held by some shards only.
	if _, body := consoleGet(t, n, "/console/streams"); strings.Contains(body, "retention policies") {
		t.Fatalf("retention policies shown before any was set:\n%s", pageMain(body))
	}
	waitFormat(ctx, t, n)
	shards := uint32(len(n.Topology(ctx).Shards))
	for id := range shards {
		policies := []*shoalv1.RetentionPolicy{{Prefix: "order-", KeepLast: 1000, MaxAgeMs: 3600_000}}
		if id > 0 {
			policies = append(policies, &shoalv1.RetentionPolicy{Prefix: "", Deleted: true})
		}
		for _, p := range policies {
			if _, err := c.SetRetention(ctx, &shoalv1.SetRetentionRequest{Shard: id, Policy: p}); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, body = consoleGet(t, n, "/console/streams")
	for _, want := range []string{
		"retention policies (applied by the shards' leaders):",
		"<br>&#34;order-&#34;: keep the last 1000, remove older than 1h0m0s",
		fmt.Sprintf("<br>every stream: remove what deletes hid (held by %d of %d shards: set or remove it again)", shards-1, shards),
	} {
		if !strings.Contains(body, want) {
			t.Fatalf("streams page with retention policies: no %q in\n%s", want, pageMain(body))
		}
	}
}

// TestConsoleDataRefused: ConsoleData goes neither with TLS nor without the HTTP port.
func TestConsoleDataRefused(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.ConsoleData = true
	cfg.ServerTLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}
	cfg.PeerTLS = &tls.Config{}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "ConsoleData with ServerTLS") {
		t.Fatalf("Validate: %v, want ConsoleData with ServerTLS refused", err)
	}
	cfg = testConfig(t, t.TempDir())
	cfg.ConsoleData, cfg.HTTP, cfg.DisableHTTP = true, "", true
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "ConsoleData needs the HTTP port") {
		t.Fatalf("Validate: %v, want ConsoleData without HTTP refused", err)
	}
}

func TestPreview(t *testing.T) {
	long := strings.Repeat("ab ", 100)
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"{\"a\":\n  1}", `{"a": 1}`},
		{long, strings.Repeat("ab ", 32)[:consolePreviewRunes] + "…"},
		{"\x00\x01", "binary: 0001"},
		{strings.Repeat("\x00", 20), "binary: " + strings.Repeat("00", 16) + "…"},
		{"\xff text", "binary: ff2074657874"},
	} {
		if got := preview([]byte(tc.in)); got != tc.want {
			t.Errorf("preview(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestConsoleDialsItsListener: the console reads through the port the node listens on, not
// the advertised address, which may be reachable only from elsewhere (here: from nowhere).
func TestConsoleDialsItsListener(t *testing.T) {
	n := startConsoleNode(t, func(cfg *Config) { cfg.Advertise = "127.0.0.1:1" }) // nothing listens there
	resp, body := consoleGet(t, n, "/console/stream?name=nope")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "stream &#34;nope&#34; not found") {
		t.Fatalf("%d, want 404 (the stream does not exist):\n%s", resp.StatusCode, pageMain(body))
	}
}

// TestConsolePageBytes: a page of large events ends at consolePageBytes, before its limit,
// and links to the rest.
func TestConsolePageBytes(t *testing.T) {
	n := startConsoleNode(t, nil)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const each = shard.MaxEventSize
	for range consolePageBytes/each + 1 {
		e := events("Big")
		e[0].Data, e[0].ContentType = bytes.Repeat([]byte{'x'}, each), ""
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "big", Events: e}); err != nil {
			t.Fatal(err)
		}
	}
	want := consolePageBytes / each
	resp, body := consoleGet(t, n, "/console/stream?name=big")
	if resp.StatusCode != 200 || !strings.Contains(body, fmt.Sprintf("%d events", want)) ||
		!strings.Contains(body, fmt.Sprintf("from=%d&amp;name=big", want)) {
		t.Fatalf("%d, want %d events and a link to the next page:\n%s", resp.StatusCode, want, pageMain(body))
	}
	resp, body = consoleGet(t, n, fmt.Sprintf("/console/shard?shard=%d", ring.ShardOf("big", 4)))
	if resp.StatusCode != 200 || strings.Count(body, ">big<") != want || !strings.Contains(body, "next 100") {
		t.Fatalf("shard: %d, want %d events and a link to the next page:\n%s", resp.StatusCode, want, pageMain(body))
	}
}

// TestConsoleGuards: a request addressed to a host name that is not the node's is refused (a
// web page that rebinds its name to the node's address reads nothing, the profiler's pages
// included), and data nested too deep
// to indent, or holding characters that reorder text, is shown as text with those escaped.
func TestConsoleGuards(t *testing.T) {
	n := startConsoleNode(t, nil)
	c := shoalv1.NewStreamsClient(dial(t, n.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deep := strings.Repeat("[", consoleMaxJSONDepth+1) + strings.Repeat("]", consoleMaxJSONDepth+1)
	for _, data := range []string{deep, "abc\u202edef", `{"s":"[[[[\"]]"}`} {
		e := events("T")
		e[0].Data = []byte(data)
		if _, err := c.Append(ctx, &shoalv1.AppendRequest{Stream: "g", Events: e}); err != nil {
			t.Fatal(err)
		}
	}
	_, port, _ := net.SplitHostPort(n.HTTPAddr())
	for _, tc := range []struct {
		host string
		code int
	}{
		{"attacker.example:" + port, http.StatusMisdirectedRequest},
		{"attacker.example", http.StatusMisdirectedRequest},
		{"localhost:" + port, 200},
		{"LOCALHOST", 200},
		{"127.0.0.1:" + port, 200},
		{"[::1]:" + port, 200},
	} {
		for _, p := range []string{"/console/", "/console/stream?name=g", "/debug/pprof/cmdline"} {
			req, err := http.NewRequest("GET", "http://"+n.HTTPAddr()+p, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Errorf("Host %q, %s: %d, want %d", tc.host, p, resp.StatusCode, tc.code)
			}
		}
	}
	for _, tc := range []struct{ path, want string }{
		{"/console/event?stream=g&version=0", "data: text, " + strconv.Itoa(len(deep)) + " bytes"},
		{"/console/event?stream=g&version=1", `abc\u202edef`},
		{"/console/stream?name=g", `abc\u202edef`},
		{"/console/event?stream=g&version=2", "data: JSON"},
	} {
		resp, body := consoleGet(t, n, tc.path)
		if resp.StatusCode != 200 || !strings.Contains(body, tc.want) || strings.Contains(body, "\u202e") {
			t.Errorf("%s: %d, want %q and no U+202E:\n%s", tc.path, resp.StatusCode, tc.want, pageMain(body))
		}
	}
}

func TestJSONDepth(t *testing.T) {
	for in, want := range map[string]int{`1`: 0, `[]`: 1, `{"a":[{}]}`: 3, `["[[[", "\"[["]`: 1, `[[1],[2,[3]]]`: 3} {
		if got := jsonDepth([]byte(in)); got != want {
			t.Errorf("jsonDepth(%s) = %d, want %d", in, got, want)
		}
	}
}

// TestStreamRowTruncated: the console marks a stream truncated when versions before the first
// one it stores were removed, also where a truncation of a deleted stream's hidden events left
// no mark (Truncated false), and not when a delete only hid them.
func TestStreamRowTruncated(t *testing.T) {
	const live, deleted = shoalv1.StreamState_STREAM_STATE_LIVE, shoalv1.StreamState_STREAM_STATE_DELETED
	for _, tc := range []struct {
		name string
		sum  *shoalv1.StreamSummary
		want bool
	}{
		{"live, never truncated", &shoalv1.StreamSummary{State: live, FirstVersion: 0, LastVersion: 3}, false},
		{"live, truncated", &shoalv1.StreamSummary{State: live, FirstVersion: 2, LastVersion: 3, Truncated: true}, true},
		{"live after a delete", &shoalv1.StreamSummary{State: live, FirstVersion: 4, LastVersion: 5, HiddenEvents: 4}, false},
		{"deleted", &shoalv1.StreamSummary{State: deleted, FirstVersion: 4, LastVersion: 3, HiddenEvents: 4}, false},
		{"deleted, hidden events truncated", &shoalv1.StreamSummary{State: deleted, FirstVersion: 4, LastVersion: 3, HiddenEvents: 2}, true},
		{"deleted, every event truncated", &shoalv1.StreamSummary{State: deleted, FirstVersion: 4, LastVersion: 3}, true},
	} {
		if got := streamRow(tc.sum, false).Truncated; got != tc.want {
			t.Errorf("%s: truncated %v, want %v", tc.name, got, tc.want)
		}
		if row := streamRow(tc.sum, false); row.Truncated && row.StoredFrom != tc.sum.FirstVersion-tc.sum.HiddenEvents {
			t.Errorf("%s: stored from %d, want %d", tc.name, row.StoredFrom, tc.sum.FirstVersion-tc.sum.HiddenEvents)
		}
	}
}

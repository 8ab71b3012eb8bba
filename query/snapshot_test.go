package query

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoaldb/shoal/client"
)

// TestSnapshotRestore: a snapshot written while Run commits restores a projection whose model
// and checkpoint are one moment's, and which goes on from that checkpoint to every event
// exactly once; the restored directory is bound to the same cluster.
func TestSnapshotRestore(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	src := newFakeSource(5, seed)
	fs := vfs.NewMem()
	cfg := testConfig(fs, HandlerFunc(countingHandler))
	p, err := open(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	want := src.add(400)
	runUntil(t, p, want)

	// A snapshot taken while Run commits more pages.
	merge(want, src.add(400))
	var snap bytes.Buffer
	var cp Checkpoint
	var wg sync.WaitGroup
	wg.Go(func() { runUntil(t, p, want) })
	cp, err = p.WriteSnapshot(&snap)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	got, err := Restore(bytes.NewReader(snap.Bytes()), "restored", fs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, cp) {
		t.Fatalf("restored checkpoint %v, the snapshot's was %v", got, cp)
	}
	cfg2 := cfg
	cfg2.Dir = "restored"
	cfg2.Registerer = prometheus.NewRegistry()
	other := cfg2 // the filters were restored with the checkpoint built under them
	other.EventTypes = []string{"Noise"}
	if o, err := open(other, src); !errors.Is(err, ErrFilterMismatch) {
		if err == nil {
			o.Close()
		}
		t.Fatalf("open of the restored Dir under other filters = %v, want ErrFilterMismatch", err)
	}
	q, err := open(cfg2, src)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if !slices.Equal(q.Checkpoint(), cp) {
		t.Fatalf("opened checkpoint %v, want %v", q.Checkpoint(), cp)
	}
	// The model is the checkpoint's: every event below it counted once, none at or past it.
	src.mu.Lock()
	for s, log := range src.shards {
		for _, ev := range log {
			_, err := q.Get([]byte("n/" + ev.ID.String()))
			if covered := cp.Covers(uint32(s), ev.Position); covered != (err == nil) {
				src.mu.Unlock()
				t.Fatalf("shard %d position %d: in the model %v, covered by the checkpoint %v", s, ev.Position, err == nil, covered)
			}
		}
	}
	src.mu.Unlock()
	merge(want, src.add(100))
	runUntil(t, q, want)
	checkExactlyOnce(t, q, src, func(client.RecordedEvent) bool { return true })
}

// TestRestoreRefusesBadInput: a snapshot cut short, damaged, or not a snapshot at all is
// refused with ErrBadSnapshot and leaves no directory; a directory in use is refused as such.
func TestRestoreRefusesBadInput(t *testing.T) {
	src := newFakeSource(3, 1)
	fs := vfs.NewMem()
	p, err := open(testConfig(fs, HandlerFunc(countingHandler)), src)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, p, src.add(200))
	var snap bytes.Buffer
	if _, err := p.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	good := snap.Bytes()

	// The same records, their stream rewritten: cut before the trailer, a flipped byte, a
	// trailer counting one record more.
	body := decompress(t, good[len(snapshotMagic):])
	flipped := slices.Clone(body)
	flipped[len(flipped)/2] ^= 0x40
	miscounted := slices.Clone(body)
	miscounted[len(miscounted)-9]++
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"another format", []byte("PK\x03\x04 not a snapshot at all")},
		{"cut short", good[:len(good)/2]},
		{"records cut before the trailer", recompress(t, body[:len(body)-17])},
		{"a flipped byte", recompress(t, flipped)},
		{"a wrong count", recompress(t, miscounted)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Restore(bytes.NewReader(tc.in), "bad", fs)
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("Restore = %v, want ErrBadSnapshot", err)
			}
			for _, d := range []string{"bad", "bad" + restoringSuffix} {
				if _, err := fs.Stat(d); err == nil {
					t.Fatalf("a refused restore left %s", d)
				}
			}
		})
	}
	if _, err := Restore(bytes.NewReader(good), "proj", fs); err == nil || errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("restore into the projection's own directory: %v, want a refusal of a directory in use", err)
	}
	if _, err := Restore(bytes.NewReader(good), "fresh", fs); err != nil {
		t.Fatalf("the good snapshot: %v", err)
	}
	// Into an empty directory, past what a restore cut short left beside it.
	if err := fs.MkdirAll("empty", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fs.MkdirAll("empty"+restoringSuffix, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := fs.Create("empty"+restoringSuffix+"/MANIFEST-000001", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Restore(bytes.NewReader(good), "empty", fs); err != nil {
		t.Fatalf("the good snapshot into an empty directory: %v", err)
	}
	if _, err := fs.Stat("empty" + restoringSuffix); err == nil {
		t.Fatal("the restore's own directory is left beside its target")
	}
	q, err := open(testConfig(fs, HandlerFunc(countingHandler)), src)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	p2cfg := testConfig(fs, HandlerFunc(countingHandler))
	p2cfg.Dir = "empty"
	p2, err := open(p2cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if !slices.Equal(p2.Checkpoint(), q.Checkpoint()) {
		t.Fatalf("restored checkpoint %v, the projection's %v", p2.Checkpoint(), q.Checkpoint())
	}
}

func decompress(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func recompress(t *testing.T, body []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	out.WriteString(snapshotMagic)
	zw, err := zstd.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

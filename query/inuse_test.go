package query

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestOpenInUse: a Dir open already, in this process or in another, is refused with ErrInUse,
// which says so, instead of the file lock's bare "resource temporarily unavailable".
func TestOpenInUse(t *testing.T) {
	if dir := os.Getenv("SHOAL_QUERY_TEST_HOLD"); dir != "" {
		// The other process: hold the database open until stdin closes.
		db, err := pebble.Open(dir, &pebble.Options{})
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("held\n")
		bufio.NewReader(os.Stdin).ReadString('\n')
		db.Close()
		return
	}
	src := newFakeSource(2, 1)
	cfg := testConfig(nil, HandlerFunc(countingHandler))
	cfg.Dir = filepath.Join(t.TempDir(), "proj")
	p, err := open(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(cfg, src); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), cfg.Dir) {
		t.Errorf("a second Open in this process: %v, want ErrInUse naming the directory", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	holder := exec.Command(os.Args[0], "-test.run=^TestOpenInUse$")
	holder.Env = append(os.Environ(), "SHOAL_QUERY_TEST_HOLD="+cfg.Dir)
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		holder.Wait()
	}()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "held\n" {
		t.Fatalf("the holding process: %q, %v", line, err)
	}
	if _, err := open(cfg, src); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "another process") {
		t.Errorf("Open while another process holds the Dir: %v, want ErrInUse", err)
	}
}

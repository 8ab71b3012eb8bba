package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoaldb/shoal/internal/testaddr"
)

// binPath is the shoal binary built once for the package by TestMain.
var binPath string

func TestMain(m *testing.M) {
	if os.Getenv("SHOAL_E2E_SKIP") != "" {
		fmt.Println("SHOAL_E2E_SKIP set: skipping end-to-end tests")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "shoal-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "shoal")
	build := exec.Command("go", "build", "-o", binPath, "github.com/shoaldb/shoal/cmd/shoal")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building shoal:", err)
		os.Exit(1)
	}
	code := m.Run()
	removeImage()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestSourcesStamp stats every Go source of the module. The binary is built
// by a subprocess in TestMain, whose reads go test's result cache cannot see;
// the stats a test makes are seen, so a cached pass of this package is not
// reused once any source of the server changes.
func TestSourcesStamp(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("finding the module root: %v", err)
	}
	root := strings.TrimSpace(string(out))
	n := 0
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin" || d.Name() == "data") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			if _, err := os.Stat(path); err == nil {
				n++
			}
		}
		return nil
	})
	if n == 0 {
		t.Fatalf("no Go sources under %s: the binary under test cannot be current", root)
	}
}

// server is one real `shoal server` process.
type server struct {
	t        *testing.T
	name     string
	zone     string
	dataDir  string
	grpcAddr string
	httpAddr string
	gossip   string
	join     []string
	extra    []string
	bin      string // the binary started; "" means binPath

	mu   sync.Mutex
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

func newServer(t *testing.T, name, zone string, join []string, extra ...string) *server {
	p := testaddr.Ports(t, 3)
	s := &server{
		t: t, name: name, zone: zone,
		dataDir:  filepath.Join(t.TempDir(), name),
		grpcAddr: fmt.Sprintf("127.0.0.1:%d", p[0]),
		gossip:   fmt.Sprintf("127.0.0.1:%d", p[1]),
		httpAddr: fmt.Sprintf("127.0.0.1:%d", p[2]),
		join:     join, extra: extra,
	}
	t.Cleanup(s.stop)
	return s
}

func (s *server) start() {
	s.t.Helper()
	args := []string{"server", "--data", s.dataDir, "--listen", s.grpcAddr, "--http", s.httpAddr,
		"--gossip", s.gossip, "--node", s.name, "--zone", s.zone}
	if len(s.join) > 0 {
		args = append(args, "--join", strings.Join(s.join, ","))
	}
	args = append(args, s.extra...)
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	bin := binPath
	if s.bin != "" {
		bin = s.bin
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	killWithTest(cmd)
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.log, s.done = cmd, logf, done
	s.mu.Unlock()
}

// kill sends SIGKILL and waits for the process to exit.
func (s *server) kill() {
	s.mu.Lock()
	cmd, done, logf := s.cmd, s.done, s.log
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
	logf.Close()
}

// pause sends SIGSTOP: the process stops running with its connections open, as a hung
// process or a paused machine does.
func (s *server) pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// resume sends SIGCONT to a paused process.
func (s *server) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Signal(syscall.SIGCONT)
	}
}

func (s *server) stop() {
	s.mu.Lock()
	cmd, done, logf := s.cmd, s.done, s.log
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Process.Signal(syscall.SIGCONT) // if paused
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
	logf.Close()
}

// waitReady polls /readyz until it answers 200 or the timeout passes.
func (s *server) waitReady(timeout time.Duration) {
	s.t.Helper()
	if last, ok := pollReady(s.httpAddr, timeout); !ok {
		s.t.Fatalf("%s not ready after %v: %s\n%s", s.name, timeout, last, s.tail())
	}
}

// pollReady polls http://httpAddr/readyz every 100 ms until it answers 200 (true) or timeout
// passes (false, with the last answer or error).
func pollReady(httpAddr string, timeout time.Duration) (last string, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return "", true
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last, false
}

// logPath is where the server's output goes: beside its data directory, or
// under $SHOAL_E2E_LOGDIR (kept after the test) when that is set.
func (s *server) logPath() string {
	if dir := os.Getenv("SHOAL_E2E_LOGDIR"); dir != "" {
		name := strings.NewReplacer("/", "_", " ", "_").Replace(s.t.Name())
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		return filepath.Join(dir, name, s.name+".log")
	}
	return filepath.Join(filepath.Dir(s.dataDir), s.name+".log")
}

// tail returns the end of the server's log, for failure messages.
func (s *server) tail() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

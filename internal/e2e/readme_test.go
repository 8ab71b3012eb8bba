package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestReadmeTour runs the README's five-minute tour as a reader would: its commands, in order,
// in one shell, as bin/shoal, against a server started as `make run` starts it (data in
// ./data, --console-data), on ports of the test's own. Every command must exit as its line
// says ("# exits with N", else 0), and a command followed by a "# -> " line must print that
// line first (up to the word an ellipsis cuts). A tour that has drifted from the CLI fails
// here, not in a newcomer's first five minutes.
func TestReadmeTour(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the tour is written for Linux (/proc, GNU timeout)")
	}
	for _, tool := range []string{"bash", "curl", "grep", "timeout", "hostname"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the tour needs %s: %v", tool, err)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	steps, err := tourSteps(string(readme))
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binPath, filepath.Join(dir, "bin", "shoal")); err != nil {
		t.Fatal(err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	// The tour backs up the node named "$(hostname)", the name a server takes by default.
	s := newServer(t, host, "z1", nil, "--console-data")
	s.dataDir = filepath.Join(dir, "data")
	s.start()
	s.waitReady(30 * time.Second)

	var script strings.Builder
	script.WriteString("cd " + strconv.Quote(dir) + "\n")
	for i, st := range steps {
		// The tour's ports are make run's: this test's server has its own, and must not reach a
		// developer's running server.
		line := strings.NewReplacer("127.0.0.1:7480", s.httpAddr, "127.0.0.1:7400", s.grpcAddr).Replace(st.line)
		if strings.Contains(line, "--follow") {
			// A subscription runs until Ctrl-C, which ends it with 0.
			line = "timeout -s INT --preserve-status 3 " + line
		}
		fmt.Fprintf(&script, "%s\necho \"@@tour %d $?\"\n", line, i)
	}
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Env = append(os.Environ(), "SHOAL_SERVER="+s.grpcAddr, "SHOAL_TLS_CA=", "SHOAL_TLS_CERT=",
		"SHOAL_TLS_KEY=", "SHOAL_ZONE=")
	killWithTest(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the tour's shell: %v\n%s", err, out)
	}

	outputs, codes := map[int]string{}, map[int]int{}
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var i, code int
		if n, _ := fmt.Sscanf(sc.Text(), "@@tour %d %d", &i, &code); n == 2 {
			outputs[i], codes[i] = cur.String(), code
			cur.Reset()
			continue
		}
		cur.WriteString(sc.Text() + "\n")
	}
	for i, st := range steps {
		code, ran := codes[i]
		switch {
		case !ran:
			t.Errorf("README line %d never finished: %s\n%s", st.readmeLine, st.line, out)
		case code != st.exit:
			t.Errorf("README line %d exited with %d, its comment says %d: %s\n%s", st.readmeLine, code, st.exit, st.line, outputs[i])
		case st.prints != "" && !strings.HasPrefix(outputs[i], st.prints):
			t.Errorf("README line %d printed\n%s\nthe README shows\n%s…", st.readmeLine, outputs[i], st.prints)
		}
	}
	if t.Failed() {
		t.Log(s.tail())
	}
}

// tourStep is one command of the README's tour.
type tourStep struct {
	line       string // the command, as the README has it
	readmeLine int    // 1-based
	exit       int    // the exit status its comment promises
	prints     string // what a "# -> " line after it shows it printing first, up to a cut word
}

var exitsWith = regexp.MustCompile(`#.*\bexits with (\d+)`)

// tourSteps finds the commands of the first sh block after "## A five-minute tour".
func tourSteps(readme string) ([]tourStep, error) {
	var steps []tourStep
	inTour, inBlock := false, false
	for n, line := range strings.Split(readme, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "## "):
			if inTour {
				return nil, fmt.Errorf("README.md: the tour's section ends before its sh block does (line %d)", n+1)
			}
			inTour = line == "## A five-minute tour"
		case !inTour:
		case !inBlock:
			inBlock = line == "```sh"
		case line == "```":
			if len(steps) == 0 {
				return nil, fmt.Errorf("README.md: the tour's sh block holds no command")
			}
			return steps, nil
		case strings.HasPrefix(trimmed, "# -> "):
			if len(steps) == 0 {
				return nil, fmt.Errorf("README.md line %d: a \"# -> \" line before any command", n+1)
			}
			prints, _, cut := strings.Cut(strings.TrimPrefix(trimmed, "# -> "), "…")
			if cut {
				// "id 5f0c…" stands for any ID: keep the words before the one it cuts.
				prints = prints[:strings.LastIndex(prints, " ")+1]
			}
			if prints == "" {
				return nil, fmt.Errorf("README.md line %d: a \"# -> \" line that shows nothing to check", n+1)
			}
			steps[len(steps)-1].prints = prints
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
		case strings.HasSuffix(trimmed, "\\") || strings.Contains(line, "<<"):
			return nil, fmt.Errorf("README.md line %d: the tour's test runs one command a line: no continuations or here-documents", n+1)
		default:
			st := tourStep{line: line, readmeLine: n + 1}
			if m := exitsWith.FindStringSubmatch(line); m != nil {
				st.exit, _ = strconv.Atoi(m[1])
			}
			steps = append(steps, st)
		}
	}
	return nil, fmt.Errorf("README.md: no \"## A five-minute tour\" with an sh block")
}

package node

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestPprofGuard: the profiler answers requests from this machine only unless Config.Pprof is
// on, and with it on still only requests addressed to the node (hostGuard).
func TestPprofGuard(t *testing.T) {
	for _, tc := range []struct {
		mode, remote, host string
		want               int
	}{
		{"", "127.0.0.1:5000", "127.0.0.1:7480", http.StatusOK},
		{PprofLoopback, "[::1]:5000", "localhost:7480", http.StatusOK},
		{"", "10.1.2.3:5000", "10.0.0.9:7480", http.StatusForbidden},
		{PprofLoopback, "10.1.2.3:5000", "10.0.0.9:7480", http.StatusForbidden},
		{PprofOn, "10.1.2.3:5000", "10.0.0.9:7480", http.StatusOK},
		{PprofOn, "10.1.2.3:5000", "evil.example", http.StatusMisdirectedRequest},
	} {
		n := &Node{cfg: Config{Pprof: tc.mode}}
		h := n.pprofGuard(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
		r := httptest.NewRequest(http.MethodGet, "/debug/pprof/cmdline", nil)
		r.RemoteAddr, r.Host = tc.remote, tc.host
		w := httptest.NewRecorder()
		h(w, r)
		if w.Code != tc.want {
			t.Errorf("Pprof %q, from %s to %s: %d, want %d (%s)", tc.mode, tc.remote, tc.host, w.Code, tc.want, w.Body)
		}
	}
}

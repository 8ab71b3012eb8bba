package node

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/shoaldb/shoal/replica"
)

// metricsTimeout bounds a /metrics answer (Prometheus's default scrape timeout): a collector
// that hangs gets the scrape a 503 rather than an answer that never comes. The node's own
// collectors bound themselves (scrapeStatusWait); this guards against the others (Pebble's,
// an embedder's on Config.Registry).
const metricsTimeout = 10 * time.Second

// httpHandler serves /healthz, /readyz, /metrics, /debug/pprof/ and the console (console.go).
func (n *Node) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if reason := n.notReady(); reason != "" {
			http.Error(w, reason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.regs, Timeout: metricsTimeout}))
	if n.cfg.Pprof != PprofOff {
		mux.HandleFunc("/debug/pprof/", n.pprofGuard(pprof.Index))
		mux.HandleFunc("/debug/pprof/cmdline", n.pprofGuard(pprof.Cmdline))
		mux.HandleFunc("/debug/pprof/profile", n.pprofGuard(pprof.Profile))
		mux.HandleFunc("/debug/pprof/symbol", n.pprofGuard(pprof.Symbol))
		mux.HandleFunc("/debug/pprof/trace", n.pprofGuard(pprof.Trace))
	}
	n.consoleRoutes(mux)
	return mux
}

// pprofGuard serves h as hostGuard does and, unless Config.Pprof is PprofOn, only to requests
// from this machine (a loopback address).
func (n *Node) pprofGuard(h http.HandlerFunc) http.HandlerFunc {
	guarded := n.hostGuard(h)
	return func(w http.ResponseWriter, r *http.Request) {
		if n.cfg.Pprof != PprofOn {
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
				http.Error(w, "the profiler answers requests from this machine only; start the server with --pprof on to serve it to others",
					http.StatusForbidden)
				return
			}
		}
		guarded(w, r)
	}
}

// hostGuard serves h only to requests addressed to this node (consoleHostAllowed): a web page
// that rebinds its name to the node's address must not read its command line and goroutines,
// or start profiles.
func (n *Node) hostGuard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !n.consoleHostAllowed(r.Host) {
			http.Error(w, fmt.Sprintf("this node answers requests addressed to an IP address, localhost or its own host names, not %q", r.Host),
				http.StatusMisdirectedRequest)
			return
		}
		h(w, r)
	}
}

// notReady returns why the node should not receive traffic, or "" when it is
// ready: it is not stopping, it knows the cluster's settings, its disk is not slow, and every local
// group knows its leader but for those that lost their quorum (below).
func (n *Node) notReady() string {
	select {
	case <-n.done:
		return "shutting down"
	default:
	}
	if n.stopping.Load() {
		return "stopping (handing off its leaderships)"
	}
	if n.settings.Load() == nil {
		return "cluster settings unknown (still joining)"
	}
	if !n.started.Load() && n.restore.hold.Load() != nil {
		return "starting on a restored backup: the restore check holds the shards closed until the members answer (see the log)"
	}
	if !n.started.Load() {
		return "starting"
	}
	if s, slow := n.disk.slowNow(); slow {
		return "disk slow: " + s.String()
	}
	if d, stalled := n.disk.writesStalled(); stalled && d >= slowReportFresh {
		return fmt.Sprintf("writes stalled for %v: the store's memtables or level 0 are full (flushes or compactions behind, or failing)",
			d.Round(time.Second))
	}
	// A local shard without a leader holds the node back while an election may still end
	// (starting, a leader just lost). One leaderless for longer has lost its quorum, or this
	// replica is cut off from it (shoal_shard_leaderless): it does not take the node's other
	// shards out of service, unless every local shard is in that state (the node is cut off).
	// Learners do not count while the node holds voters: one never campaigns, and goes on
	// naming the leader it last knew when its shard lost its quorum or this node is cut off.
	// (A node that holds learners only, one that just joined, goes by them.)
	groups := n.host.Groups()
	anyVoter := slices.ContainsFunc(groups, (*replica.Group).Voter)
	after := leaderlessAfter(n.host.ElectionTimeout())
	var electing, lost []uint32
	voters := 0
	for _, g := range groups {
		if g.Removed() || anyVoter && !g.Voter() {
			continue // a removed replica's configuration, and leader, are stale
		}
		voters++
		if g.Leader() != 0 {
			continue
		}
		if d, ok := g.Leaderless(); ok && d >= after {
			lost = append(lost, g.Shard())
		} else {
			electing = append(electing, g.Shard())
		}
	}
	if len(electing) > 0 {
		return fmt.Sprintf("%d local shard(s) without a known leader: %v", len(electing), electing)
	}
	if len(lost) > 0 && len(lost) == voters {
		return fmt.Sprintf("no local shard has known a leader for %v or more (this node is cut off, every shard it holds lost its quorum, or its replicas were moved away while it was down and it has not heard yet): %v", after, lost)
	}
	return ""
}

// Ready returns nil when the node is ready for traffic (the /readyz
// condition), else an error saying what is missing.
func (n *Node) Ready() error {
	if r := n.notReady(); r != "" {
		return fmt.Errorf("node: not ready: %s", r)
	}
	return nil
}

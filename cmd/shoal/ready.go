package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// nodeReadyCmd asks one node's /readyz, for container health checks: the image has no other
// program to ask it with.
func (a *app) nodeReadyCmd() *cobra.Command {
	var addr string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "ready [--http ADDR]",
		Short: "Exit 0 if the node at --http is ready for traffic (its /readyz), 1 with its reason if not",
		Long: `Ask one node's HTTP port whether it is ready for traffic (GET /readyz: cluster settings
known, its disk not slow, every local shard with a leader but those that lost their quorum)
and exit 0 if it is, 1 with the node's reason if it is not or does not answer: a container
health check, as the image's HEALTHCHECK runs it.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usagef("--timeout must be positive, got %v", timeout)
			}
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return usagef("--http %q is not host:port (the node's HTTP address)", addr)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
			if err != nil {
				return usagef("--http %q: %v", addr, err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				msg := fmt.Sprintf("not ready: the node at %s did not answer: %v", addr, err)
				if strings.Contains(err.Error(), "malformed HTTP response") || sendsHTTP2Settings(addr) {
					// A gRPC port answers HTTP/1 with an HTTP/2 frame: read as a malformed
					// response, or, when the frame came before the request was written, as
					// bytes on an idle connection, which ends the request with another error.
					msg = fmt.Sprintf("not ready: %s did not answer with HTTP (its gRPC port?): --http takes the node's HTTP address (its --http, 127.0.0.1:7480 by default)", addr)
				}
				return &explainedError{code: exitError, msg: msg}
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			reason := strings.TrimSpace(string(body))
			if resp.StatusCode != http.StatusOK {
				return &explainedError{code: exitError, msg: fmt.Sprintf("not ready: %s (%s)", reason, resp.Status)}
			}
			_, err = fmt.Fprintln(a.stdout, reason)
			return err
		},
	}
	cmd.Flags().StringVar(&addr, "http", "127.0.0.1:7480", "the node's HTTP address (its --http)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "how long to wait for the answer")
	return cmd
}

// sendsHTTP2Settings reports whether the server at addr starts a connection with an HTTP/2
// SETTINGS frame of its own, unasked, as a gRPC server does.
func sendsHTTP2Settings(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	var hdr [9]byte // a frame header: length (3 bytes), type, flags, stream (4 bytes)
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return false
	}
	const frameSettings = 0x4
	return hdr[3] == frameSettings
}

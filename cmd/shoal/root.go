package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
	"github.com/shoaldb/shoal/bench"
	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/internal/tlsfiles"
	"github.com/shoaldb/shoal/node"
)

// Exit codes.
const (
	exitOK       = 0
	exitError    = 1 // any other failure
	exitUsage    = 2 // invalid usage or argument, the server's invalid-argument verdict included
	exitConflict = 3 // wrong expected version
	exitNotFound = 4 // stream not found or deleted
	exitDegraded = 5 // cluster status --check: every shard serves, but not every one with all its replicas
)

// defaultServer is used when neither --server nor $SHOAL_SERVER is set.
const defaultServer = "127.0.0.1:7400"

// callTimeout bounds one unary command (append, delete, cluster calls),
// retries included.
const callTimeout = 30 * time.Second

// dialRetry is how long a command keeps trying to reach a server that does
// not answer, so a mistyped --server fails in seconds rather than minutes.
const dialRetry = 5 * time.Second

// app holds what a command may touch of the process: no globals, so tests
// run the command tree in-process.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	tls tlsfiles.Files // --tls-ca, --tls-cert, --tls-key
}

func newApp(stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) *app {
	return &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
}

// run executes args and returns the exit code; errors are printed to stderr
// as one sentence.
func (a *app) run(ctx context.Context, args []string) int {
	root := a.newRoot()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code, msg := explain(err)
	fmt.Fprintf(a.stderr, "shoal: %s\n", msg)
	return code
}

func (a *app) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "shoal",
		Short:         "shoal is a sharded, replicated event store",
		Long:          "shoal is a sharded, replicated event store: run a server, append and read events, inspect the cluster, benchmark it.",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Without Run, cobra treats an unknown subcommand as help; this
		// makes it an error (exit 2) instead.
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		// A negative number among the arguments reads as a cluster of short flags.
		if m := negativeArg.FindStringSubmatch(err.Error()); m != nil {
			return usagef("%s is not valid here: shard numbers, counts and versions are 0 or more; see 'shoal %s--help'",
				m[1], commandPath(cmd))
		}
		// An unsigned flag given something else: pflag's error ends in strconv's.
		if m := badUintFlag.FindStringSubmatch(err.Error()); m != nil {
			return usagef("%s takes a whole number, 0 or more, got %q; see 'shoal %s--help'", m[2], m[1], commandPath(cmd))
		}
		return usagef("%v; see 'shoal %s--help'", err, commandPath(cmd))
	})
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(
		a.serverCmd(), a.devCmd(),
		a.appendCmd(), a.readCmd(), a.readShardCmd(), a.readAllCmd(), a.deleteCmd(), a.truncateCmd(),
		a.listStreamsCmd(), a.streamInfoCmd(), a.retainCmd(), a.retentionCmd(),
		a.clusterCmd(), a.nodeCmd(),
		a.benchCmd(), a.versionCmd(),
	)
	return root
}

// badUintFlag matches pflag's error for an unsigned flag's value that is not a whole number of 0
// or more: the value, and the flag as pflag names it ("--count", or "-n, --count").
var badUintFlag = regexp.MustCompile(`^invalid argument "(.*)" for "(.+)" flag: strconv\.ParseUint: `)

// negativeArg matches pflag's error for a negative number among a command's arguments.
var negativeArg = regexp.MustCompile(`^unknown shorthand flag: '\d' in (-\d+)$`)

// commandPath is the command's path without the root's name.
func commandPath(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath()+" ", "shoal ")
}

// usageError is an invalid command line or argument: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// explainedError is an error already explained for the user, with its code.
type explainedError struct {
	code int
	msg  string
}

func (e *explainedError) Error() string { return e.msg }

// noArgs and exactArgs are cobra argument validators whose errors are usage
// errors.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.HasSubCommands() {
			return usagef("unknown command %q; see 'shoal %s--help'", args[0], commandPath(cmd))
		}
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		want := strings.ToUpper(strings.Join(names, " "))
		switch {
		case len(args) < len(names):
			return usagef("%s needs %s; see 'shoal %s--help'", cmd.CommandPath(), want, commandPath(cmd))
		case len(args) > len(names):
			// Most often a flag's value with spaces left unquoted (--data {"a": 1}), which the
			// shell split into arguments.
			got := make([]string, len(args))
			for i, a := range args {
				got[i] = strconv.Quote(a)
			}
			return usagef("%s takes %s; got %d arguments: %s (quote a flag's value that holds spaces, as in --data '{\"a\": 1}'); see 'shoal %s--help'",
				cmd.CommandPath(), want, len(args), strings.Join(got, " "), commandPath(cmd))
		}
		return nil
	}
}

// explain maps an error to its exit code and the sentence printed for it.
func explain(err error) (int, string) {
	var ue *usageError
	var ee *explainedError
	var we *client.WrongExpectedVersionError
	var ie *client.InvalidArgumentError
	var ce *client.IDConflictError
	var pa *client.PositionAheadError
	switch {
	case errors.As(err, &ee):
		return ee.code, ee.msg
	case errors.As(err, &ue):
		return exitUsage, ue.msg
	case errors.Is(err, node.ErrCorruptData):
		return node.ExitCorrupt, sentence(trimPrefixes(err.Error()))
	case errors.Is(err, node.ErrConfigConflict):
		// A flag that contradicts the node or cluster stored in --data: an invalid argument.
		return exitUsage, sentence(trimPrefixes(err.Error()))
	case errors.Is(err, bench.ErrInvalidConfig):
		return exitUsage, strings.TrimPrefix(err.Error(), "bench: invalid config: ")
	case errors.As(err, &we):
		return exitConflict, wrongVersionMessage(we)
	case errors.Is(err, client.ErrWrongExpectedVersion):
		return exitConflict, "the stream is not at the expected version; read it again and retry with the right --expected"
	case errors.Is(err, client.ErrStreamDeleted):
		return exitNotFound, fmt.Sprintf("%s was deleted permanently (tombstoned); use another stream name",
			streamIn(err, client.ErrStreamDeleted))
	case errors.Is(err, client.ErrStreamNotFound):
		// The server answers the same for a stream that never existed and a soft-deleted one.
		return exitNotFound, fmt.Sprintf("%s was not found: it does not exist or was deleted (appending to it creates it, "+
			"or continues it after a soft delete)", streamIn(err, client.ErrStreamNotFound))
	case errors.As(err, &ie):
		return exitUsage, invalidMessage(ie)
	case errors.Is(err, client.ErrInvalidArgument):
		return exitUsage, trimPrefixes(err.Error())
	case errors.As(err, &ce):
		if ce.ExistingStream != "" {
			return exitError, fmt.Sprintf("event ID %s is already stored as version %d of stream %q; pass a new --id or leave it out",
				ce.ID, ce.ExistingVersion, ce.ExistingStream)
		}
		return exitError, fmt.Sprintf("event ID %s is already stored in stream %q; pass a new --id or leave it out", ce.ID, ce.Stream)
	case errors.Is(err, context.Canceled):
		return exitError, "interrupted"
	case errors.As(err, &pa):
		// From the CLI, most often a position typed past the end rather than a checkpoint kept
		// across a restore, which the client's message puts first.
		return exitError, fmt.Sprintf("shard %d ends before position %d (its next entry takes position %d): read from %d "+
			"or before, or --from end (with --follow, to wait for what comes next); a position this shard handed out "+
			"before means that it lost that history (a restore from an older backup?) or that it is another cluster's",
			pa.Shard, pa.From, pa.End, pa.End)
	case strings.HasPrefix(err.Error(), "unknown command"), strings.HasPrefix(err.Error(), "unknown flag"):
		return exitUsage, err.Error()
	}
	if st, ok := status.FromError(err); ok {
		code := exitError
		if st.Code() == codes.InvalidArgument {
			code = exitUsage
		}
		return code, sentence(st.Message())
	}
	return exitError, sentence(trimPrefixes(err.Error()))
}

// lastCause is the message of err's last attempt's gRPC status, the cause without the layers
// of retries wrapped around it (err's own text when it carries none).
func lastCause(err error) string {
	if st, ok := lastStatus(err); ok {
		return st.Message()
	}
	return err.Error()
}

// leaderless reports whether err's last attempt reached a server that answered that the
// shard has no leader, and which shard.
func leaderless(err error) (uint32, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return 0, false
	}
	for _, d := range st.Details() {
		if nl, ok := d.(*shoalv1.NotLeader); ok && nl.GetLeaderId() == 0 && strings.Contains(st.Message(), "no leader") {
			return nl.GetShard(), true
		}
	}
	return 0, false
}

// refusedAtLimit returns the server's message when the last attempt of a call was refused at a
// limit (RESOURCE_EXHAUSTED: a subscription past a node's --max-subscriptions, a long poll past
// its --max-long-polls, a shard's leader with too many pending requests), which the client
// retries until its budget runs out: the server answered, and its message names the limit.
func refusedAtLimit(err error) (string, bool) {
	if !errors.Is(err, client.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		return "", false
	}
	st, ok := lastStatus(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		return "", false
	}
	return st.Message(), true
}

// knownNoLeaderFor matches a server's answer for a shard whose replicas have known no leader
// for longer than an election takes (node's leaderlessError), and captures for how long: the
// whole duration as time.Duration prints it, every unit of it ("1m5.2s", "2h0m0s", not "1m").
var knownNoLeaderFor = regexp.MustCompile(`known no leader for ((?:[0-9.]+(?:ms|µs|us|ns|h|m|s))+)`)

// unreachable explains an error of a call to server that found no server, a shard without a
// leader, or a refusal at a limit.
func (a *app) unreachable(err error, server string) error {
	if shard, ok := leaderless(err); ok {
		why := "most of its replicas are down or cut off, an election did not end in time, or its leader is overloaded"
		if m := knownNoLeaderFor.FindStringSubmatch(status.Convert(err).Message()); m != nil {
			// What the server checked: the replicas it reached (its own, or those that answered
			// its topology request) know no leader. So does a node cut off from the shard's
			// other replicas, which may well be led on the other side of the cut.
			why = fmt.Sprintf("the replicas the server reached have known no leader for %s: the shard lost its quorum "+
				"(most of its voters are down or cut off), or those replicas are cut off from the others", m[1])
		}
		return &explainedError{code: exitError, msg: fmt.Sprintf(
			"shard %d has no leader that answers: %s (the cluster at %s answered); 'shoal cluster status' shows which nodes are down",
			shard, why, server)}
	}
	if msg, ok := refusedAtLimit(err); ok {
		return &explainedError{code: exitError, msg: fmt.Sprintf(
			"the cluster at %s answered, but refused the request at a limit until the retries gave up: %s", server, sentence(msg))}
	}
	if errors.Is(err, client.ErrNotGRPC) {
		return &explainedError{code: exitError, msg: fmt.Sprintf(
			"%s answers HTTP/1.1, not gRPC: --server (or $SHOAL_SERVER) takes a node's gRPC address (its --listen, "+
				"127.0.0.1:7400 by default), not its HTTP one", server)}
	}
	if errors.Is(err, client.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, client.ErrTLSHandshake) {
		if msg := a.tlsTrouble(err, server); msg != "" {
			return &explainedError{code: exitError, msg: msg}
		}
		// A node answers this while it joins its cluster and reopens its shards
		// (node.startingErr); it is running, just not serving yet.
		if st, ok := status.FromError(err); ok && strings.Contains(st.Message(), "is starting") {
			return &explainedError{code: exitError, msg: fmt.Sprintf(
				"the shoal server at %s is starting (joining its cluster, reopening its shards) and does not serve yet; "+
					"try again shortly, or point --server at another node", server)}
		}
		msg := err.Error()
		switch {
		case strings.Contains(msg, "produced zero addresses") || strings.Contains(msg, "no such host"):
			return &explainedError{code: exitError, msg: fmt.Sprintf(
				"cannot reach a shoal server at %s: its host name resolves to no address; check --server (or $SHOAL_SERVER)", server)}
		case strings.Contains(msg, "name resolver error") || strings.Contains(msg, "lookup "):
			// The resolver failed (a DNS server down, say), which says nothing of the name.
			return &explainedError{code: exitError, msg: fmt.Sprintf(
				"cannot reach a shoal server at %s: its host name could not be resolved: %s", server, lastCause(err))}
		}
		why := ""
		if strings.Contains(msg, "connection refused") {
			why = " (connection refused: nothing listens there)"
		}
		return &explainedError{code: exitError, msg: fmt.Sprintf(
			"cannot reach a shoal server at %s%s; start one with 'shoal server' or point --server (or $SHOAL_SERVER) at a running node", server, why)}
	}
	return err
}

// unknownOutcome says why a write (an append, a delete) that failed after the command had
// connected to server may or may not have been applied, and reports whether it is such a
// failure: the client said that an attempt may have been applied (client.ErrOutcomeUnknown:
// its answer was lost, it timed out, the command was interrupted while it was under way, the
// server said the outcome is unknown). A failure of which the client says nothing of the
// kind was refused before anything was proposed (writeRefused); a failure to connect in the
// first place is a.dial's, explained by unreachable: nothing was sent.
func unknownOutcome(err error, server string) (cause string, ok bool) {
	if !errors.Is(err, client.ErrOutcomeUnknown) {
		return "", false
	}
	if shard, ok := leaderless(err); ok {
		return fmt.Sprintf("shard %d has no leader that answers (most of its replicas are down or cut off, or an election "+
			"did not end in time; 'shoal cluster status' shows which nodes are down), and an earlier attempt may have reached it", shard), true
	}
	switch {
	case errors.Is(err, context.Canceled):
		return "the command was interrupted while the request was under way", true
	case errors.Is(err, client.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("the cluster at %s did not answer in time (a node stopped answering, or the connection was cut) "+
			"after the request may have reached it", server), true
	}
	return "an attempt failed after it may have reached the cluster (the connection was cut, it timed out, " +
		"or the shard's leader changed while it waited to commit)", true
}

// writeRefused explains a write's failure that is not an unknown outcome (unknownOutcome): a
// verdict passes unchanged; a shard without a leader, a cluster that could not be reached or
// an interrupt, which the client reports only when every attempt was refused before anything
// was proposed, are explained as such, saying that nothing was written.
func (a *app) writeRefused(err error, server string) error {
	if errors.Is(err, context.Canceled) {
		return &explainedError{code: exitError, msg: "interrupted before the request reached the cluster; nothing was written"}
	}
	if errors.Is(err, client.ErrDiskLow) && !errors.Is(err, client.ErrOutcomeUnknown) {
		return &explainedError{code: exitError, msg: strings.TrimPrefix(err.Error(), client.ErrDiskLow.Error()+": ") + "; nothing was written"}
	}
	var ee *explainedError
	if e := a.unreachable(err, server); errors.As(e, &ee) {
		return &explainedError{code: ee.code, msg: ee.msg + "; nothing was written"}
	}
	return err
}

func wrongVersionMessage(e *client.WrongExpectedVersionError) string {
	if e.StreamDeleted {
		return fmt.Sprintf("stream %q is soft-deleted (its last version was %d), but --expected was %s; "+
			"continue it with --expected %d, no-stream or any", e.Stream, e.Actual, e.Expected, e.Actual)
	}
	if !e.StreamExists {
		return fmt.Sprintf("stream %q does not exist, but --expected was %s; use --expected no-stream or any", e.Stream, e.Expected)
	}
	if e.Expected == client.NoStream {
		return fmt.Sprintf("stream %q already exists (at version %d), but --expected was no-stream; use --expected %d or any",
			e.Stream, e.Actual, e.Actual)
	}
	return fmt.Sprintf("stream %q is at version %d, not %s; read it again and retry with --expected %d",
		e.Stream, e.Actual, e.Expected, e.Actual)
}

func invalidMessage(e *client.InvalidArgumentError) string {
	var b strings.Builder
	b.WriteString("invalid ")
	if e.Field != "" {
		b.WriteString(e.Field)
	} else {
		b.WriteString("argument")
	}
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(strings.TrimSuffix(e.Reason, "."))
	}
	if e.Limit != "" {
		fmt.Fprintf(&b, " (limit: %s)", e.Limit)
	}
	b.WriteString("; fix it and retry")
	return b.String()
}

// streamIn returns `stream "x"` from the client's "<sentinel>: "x"" errors.
func streamIn(err, sentinel error) string {
	s := err.Error()
	if i := strings.Index(s, sentinel.Error()+": "); i >= 0 {
		return "stream " + strings.TrimSpace(s[i+len(sentinel.Error())+2:])
	}
	return "the stream"
}

func trimPrefixes(s string) string {
	for _, p := range []string{"client: ", "node: ", "bench: "} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}

// sentence makes s one line.
func sentence(s string) string {
	s = strings.ReplaceAll(s, "\n", "; ")
	return strings.TrimSuffix(strings.TrimSpace(s), ".")
}

// serverFlag registers --server, defaulting to $SHOAL_SERVER or
// 127.0.0.1:7400.
func (a *app) serverFlag(cmd *cobra.Command, p *string) {
	def := a.getenv("SHOAL_SERVER")
	if def == "" {
		def = defaultServer
	}
	cmd.Flags().StringVar(p, "server", def, "gRPC address of any node, from $SHOAL_SERVER when set")
	a.clientTLSFlags(cmd.Flags())
}

// clientTLSFlags registers a client command's TLS files, defaulting to
// $SHOAL_TLS_CA, $SHOAL_TLS_CERT and $SHOAL_TLS_KEY.
func (a *app) clientTLSFlags(f *pflag.FlagSet) {
	f.StringVar(&a.tls.CA, "tls-ca", a.getenv("SHOAL_TLS_CA"),
		"PEM file of the CA that signs the servers' certificates: turns on TLS; from $SHOAL_TLS_CA when set")
	f.StringVar(&a.tls.Cert, "tls-cert", a.getenv("SHOAL_TLS_CERT"),
		"PEM client certificate, for servers that require one; from $SHOAL_TLS_CERT when set")
	f.StringVar(&a.tls.Key, "tls-key", a.getenv("SHOAL_TLS_KEY"),
		"PEM private key of --tls-cert; from $SHOAL_TLS_KEY when set")
}

// tlsFromEnv names, for an error about the client's TLS files, the ones that came from the
// environment ($SHOAL_TLS_CA, $SHOAL_TLS_CERT, $SHOAL_TLS_KEY), which the error names only by
// their paths; "" when none did. (A flag given the variable's own value counts as the
// variable: the path is the same.)
func (a *app) tlsFromEnv() string {
	var from []string
	for _, f := range []struct{ val, flag, env string }{
		{a.tls.CA, "--tls-ca", "SHOAL_TLS_CA"}, {a.tls.Cert, "--tls-cert", "SHOAL_TLS_CERT"}, {a.tls.Key, "--tls-key", "SHOAL_TLS_KEY"},
	} {
		if f.val != "" && f.val == a.getenv(f.env) {
			from = append(from, fmt.Sprintf("%s is $%s (%s)", f.flag, f.env, f.val))
		}
	}
	if len(from) == 0 {
		return ""
	}
	return "; " + strings.Join(from, ", ") + ": fix or unset the variable, or pass the flag"
}

// tlsFlagsChanged reports whether any TLS flag was given on the command line.
func tlsFlagsChanged(f *pflag.FlagSet) bool {
	for _, name := range []string{"tls-ca", "tls-client-ca", "tls-cert", "tls-key"} {
		if f.Changed(name) {
			return true
		}
	}
	return false
}

// clientOptions are the client options every command dials with: TLS, and $SHOAL_ZONE, the
// zone whose replicas serve --stale and --max-staleness reads first (client.WithZone).
func (a *app) clientOptions() ([]client.Option, error) {
	var opts []client.Option
	if z := a.getenv("SHOAL_ZONE"); z != "" {
		opts = append(opts, client.WithZone(z))
	}
	if a.tls.IsZero() {
		return opts, nil
	}
	cfg, err := a.tls.Client()
	if err != nil {
		return nil, usagef("%s%s", sentence(strings.TrimPrefix(err.Error(), "tls: ")), a.tlsFromEnv())
	}
	return append(opts, client.WithTLS(cfg)), nil
}

// dial connects to server for one command.
func (a *app) dial(ctx context.Context, server string) (*client.Client, error) {
	opts, err := a.clientOptions()
	if err != nil {
		return nil, err
	}
	c, err := client.Dial(ctx, []string{server}, append(opts, client.WithRetry(client.RetryPolicy{MaxElapsed: dialRetry}))...)
	if ie := (*client.InvalidArgumentError)(nil); errors.As(err, &ie) && ie.Field == "addrs" {
		return nil, usagef("--server: %s", ie.Reason)
	}
	if err != nil {
		return nil, a.unreachable(err, server)
	}
	return c, nil
}

// tlsTrouble explains a connection that failed in or for want of a TLS
// handshake; "" when err is not such a failure.
func (a *app) tlsTrouble(err error, server string) string {
	msg := err.Error()
	flags := "--tls-ca, --tls-cert and --tls-key (or $SHOAL_TLS_CA, $SHOAL_TLS_CERT and $SHOAL_TLS_KEY)"
	// A connection cut during the handshake is not a refusal of a certificate: with TLS 1.3
	// a server refuses the client's certificate after the client's side of the handshake,
	// so the client sees the refusal (or only the connection's end) on its first use.
	inHandshake := strings.Contains(msg, "authentication handshake failed")
	cut := !inHandshake && cutOff(msg)
	switch {
	// A listener that closes the connection unanswered (a gossip port, a TLS server) cuts the
	// client off while it reads the server's preface, or while it writes its own.
	// Which of the two it is, a handshake tells.
	case a.tls.IsZero() && (strings.Contains(msg, "error reading server preface") || strings.Contains(msg, "write: broken pipe") ||
		strings.Contains(msg, "write: connection reset by peer")):
		if speaksTLS(server) {
			return fmt.Sprintf("the server at %s uses TLS: pass %s", server, flags)
		}
		return fmt.Sprintf("the server at %s closed the connection without answering gRPC: check that it is a shoal node's "+
			"gRPC address (its --listen, 127.0.0.1:7400 by default; its HTTP and gossip ports do not answer gRPC)", server)
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return fmt.Sprintf("the server at %s does not use TLS; leave out the --tls-* flags (and $SHOAL_TLS_*)", server)
	case strings.Contains(msg, "certificate required"), a.tls.Cert == "" && !a.tls.IsZero() && cut:
		return fmt.Sprintf("the server at %s requires a client certificate; pass --tls-cert and --tls-key", server)
	case strings.Contains(msg, "tls: unknown certificate authority"), strings.Contains(msg, "tls: bad certificate"),
		strings.Contains(msg, "tls: expired certificate"), a.tls.Cert != "" && cut:
		return fmt.Sprintf("the server at %s does not accept the client certificate (--tls-cert): check that a CA the cluster "+
			"trusts signed it, that it has not expired, and that it may be used by clients (extended key usage clientAuth)", server)
	case strings.Contains(msg, "x509: certificate signed by unknown authority") && a.tls.CA == "":
		return fmt.Sprintf("the certificate of the server at %s is not trusted by this system's CAs; pass the cluster's CA with --tls-ca", server)
	case strings.Contains(msg, "x509: certificate signed by unknown authority"):
		return fmt.Sprintf("the certificate of the server at %s is not signed by the CA in --tls-ca", server)
	case strings.Contains(msg, "x509: certificate is valid for"), strings.Contains(msg, "doesn't contain any IP SANs"):
		return fmt.Sprintf("the certificate of the server at %s does not name that address: %s", server, after(msg, "x509: "))
	case strings.Contains(msg, "x509: "):
		return fmt.Sprintf("the certificate of the server at %s was refused: %s", server, after(msg, "x509: "))
	case strings.Contains(msg, "tls: "):
		return fmt.Sprintf("the TLS handshake with %s failed: %s", server, after(msg, "tls: "))
	case inHandshake && (strings.Contains(msg, "context deadline exceeded") || strings.Contains(msg, "i/o timeout")):
		return fmt.Sprintf("the server at %s did not finish a TLS handshake in time: it may be hung or overloaded, or not a shoal server; "+
			"try another node with --server", server)
	case !a.tls.IsZero() && inHandshake:
		return fmt.Sprintf("the TLS handshake with %s failed (is it a shoal server?): %s", server, after(msg, "authentication handshake failed: "))
	}
	return ""
}

// speaksTLS reports whether the server at addr (host:port) answers a TLS handshake, with its
// certificate or a TLS alert (one that wants a client certificate). The probe does not verify
// the certificate: it sends nothing over the connection and only tells the user which flags
// they lack.
func speaksTLS(addr string) bool {
	if strings.Contains(addr, "/") { // a gRPC target with a scheme: not one address to probe
		return false
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // a probe: see above
	if err == nil {
		conn.Close()
		return true
	}
	var alert tls.AlertError
	return errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls:")
}

// cutOff reports a connection that ended during or right after the handshake.
func cutOff(msg string) bool {
	for _, m := range []string{"broken pipe", "connection reset by peer", "error reading server preface: EOF"} {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// after returns the part of s from sep on, without gRPC's closing quote.
func after(s, sep string) string {
	if i := strings.Index(s, sep); i >= 0 {
		s = s[i:]
	}
	return strings.TrimSuffix(s, `"`)
}

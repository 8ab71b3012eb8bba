// Package client is the Go client of shoal, a sharded, replicated event
// store.
//
//	c, err := client.Dial(ctx, []string{"127.0.0.1:7400"})
//	if err != nil { ... }
//	defer c.Close()
//	res, err := c.Append(ctx, "order-42", client.NoStream,
//		client.Event{Type: "OrderPlaced", Data: data, ContentType: "application/json"})
//	for ev, err := range c.Read(ctx, "order-42") { ... }
//
// A read with Follow is a subscription: it yields the events there are and
// then each new one as soon as it is committed and applied, until ctx ends,
// resuming on another replica after its last event when its server goes
// away (docs/guarantees.md, "Subscriptions"):
//
//	for ev, err := range c.Read(ctx, "order-42", client.Follow()) { ... }
//
// ListStreams lists the streams in name order, every shard's merged, and
// StreamInfo tells one stream's state (versions, deleted or not, last event):
//
//	for s, err := range c.ListStreams(ctx, "", client.StreamPrefix("order-")) { ... }
//
// # Routing
//
// Dial fetches the cluster topology (shard count, nodes, shard leaders) from
// one of its seed addresses and caches it; New makes a client without waiting
// for the cluster (a service that starts before it), fetching the topology in
// the background or in its first call. A stream lives in shard
// ring.ShardOf(stream, shards); its calls go to that shard's leader, or,
// when the leader is unknown or its breaker is open, to another live node,
// which forwards. A not-leader answer that names the leader is followed at
// once; the topology is refreshed in the background after not-leader and
// unavailable answers and every 10s (WithTopologyRefresh). One gRPC
// connection is kept per node address, opened on first use.
//
// Appends to a node share one AppendPipeline stream: the appends that
// concurrent callers start while the previous message is being sent leave
// together as one message, and the node answers each as it completes, in
// groups. Each append keeps its own deadline, verdict, retries and breaker
// accounting, exactly as with one call each. An append larger than 1 MiB, and
// every append to a server without AppendPipeline, is a unary Append call; so
// is every append to a node for a minute after one of its pipeline's messages
// went over a gRPC size limit (a MaxCallSendMsgSize in WithDialOptions). A
// caller that stops waiting has its append cancelled on the server, as a
// unary call is. A node shutting down answers the appends it started and ends
// the stream; a broken stream fails its appends as Unavailable (retried; they
// are idempotent) and the next append opens a new one.
//
// # What a caller can rely on
//
//  1. Appends are idempotent across retries. Every event carries a UUID;
//     Append fills zero IDs (uuid.Nil: Go cannot tell it from an ID not
//     given, so it means "make one") with time-ordered ones BEFORE the first
//     attempt and resends the same IDs on every retry, so an append whose
//     acknowledgement was lost is answered with the original versions
//     (AppendResult.Duplicate) rather than written twice. To make your own
//     retries (after Append returned an error) idempotent too, set the IDs
//     yourself.
//  2. Only transient failures are retried: Unavailable (node down, not
//     leader, no quorum), an attempt's DeadlineExceeded (per-attempt timeout,
//     RetryPolicy.AttemptTimeout), ResourceExhausted (overload; not a shard
//     refusing appends for its voters' disks low on space, ErrDiskLow), Aborted, and
//     connection errors; and for appends and deletes expecting an exact
//     version, which a repeat cannot apply twice, Internal, Cancelled (the
//     caller's context alive) and Unknown, which a stream reset after the
//     server applied the call ends with; and for reads and cluster calls, an
//     HTTP/2 stream reset on the way (gRPC's "stream terminated by
//     RST_STREAM", CANCELLED or INTERNAL), no answer of the server's: a read
//     resumes after its last event. Verdicts are never retried: wrong
//     expected version, invalid argument, stream not found, stream deleted,
//     ID conflict, and any other status.
//  3. Retries back off exponentially with full jitter (ceiling doubling from
//     50ms to 2s by default; the wait is uniform in [0, ceiling]) until the
//     call succeeds, the caller's context ends, or RetryPolicy.MaxElapsed
//     (30s) has passed; a wait that would pass it is cut short, so that the
//     last attempt comes as MaxElapsed runs out. A call never outlives its
//     context: the first wait that would pass the context's deadline is cut to
//     a quarter to a half of the time left (one attempt more), and when
//     another would, or less than 100ms is left, the call returns at once
//     with an error matching context.DeadlineExceeded that also wraps the
//     last attempt's error. When MaxElapsed passes it returns an
//     *UnavailableError (errors.Is(err, ErrUnavailable)) wrapping the last
//     attempt's error. For an append or a delete, either is wrapped in an
//     *OutcomeUnknownError (errors.Is(err, ErrOutcomeUnknown)) when an attempt
//     may have been applied, and returned as is when every attempt was
//     refused before anything was proposed: then nothing was written.
//  4. Each node address has a circuit breaker. Only transport failures count
//     (Unavailable other than not-leader, timed-out attempts, connection
//     errors); application verdicts count as successes, and so does a node's
//     answer that another node it forwarded the call to did not answer (an
//     operator's request about that node; the ErrorInfo reason
//     NODE_UNREACHABLE), which is retried. Failures of calls
//     that were in flight together (one connection drop) count once: a
//     failure of an attempt sent before the node's last counted failure is
//     not counted. After 5 consecutive failures the breaker opens and calls
//     route to other nodes, which forward; after 2s it lets one probe call
//     through (half-open) and closes on its success (for a read, its first
//     page: a long read does not hold the probe). When every candidate's
//     breaker is open, the call waits out its backoff and tries again while
//     time remains instead of failing at once; when there is one candidate
//     only (a one-node cluster), the attempt goes to it anyway, paced by the
//     same backoff.
//  5. Errors are typed at the boundary: match them with errors.Is against
//     ErrWrongExpectedVersion, ErrStreamNotFound, ErrStreamDeleted,
//     ErrInvalidArgument, ErrIDConflict, ErrUnavailable, ErrOutcomeUnknown
//     (a write that may or may not have been applied, see 3 and Delete),
//     ErrTLSHandshake, ErrNotGRPC (an HTTP port dialled), ErrWrongCluster
//     (see 8), ErrShardFormat (Truncate), ErrDiskLow (an Append refused while
//     most of the shard's voters are below their disk floor), ErrHistoryTruncated (a Read with
//     WholeHistory), ErrPositionAhead (a ReadShard past the shard's end),
//     ErrStreamChanged (a Read that resumed after a failure and found the
//     stream deleted), ErrClosed, and read their facts with errors.As
//     (*WrongExpectedVersionError, *InvalidArgumentError, *IDConflictError,
//     *HistoryTruncatedError, *PositionAheadError, *StreamChangedError,
//     *UnavailableError, *OutcomeUnknownError, whose EventIDs an append is
//     sent again with). Context
//     errors pass through. Other gRPC statuses are returned unchanged.
//  6. An append to a shard's leader that is still waiting after 300ms for
//     its answer, or a read waiting as long for its next page, watches the
//     topology (refreshing it every 300ms, from another node first). When a
//     topology fetched since the attempt started names a leader for the shard
//     other than the attempt's node (and knows of the election a not-leader
//     answer that sent the attempt there told of), the attempt is abandoned and
//     the call goes to the new leader at once (a read resumes after its last
//     event): a node that hangs without breaking its connections (a stuck
//     process, a paused machine) does not hold calls until gRPC's keepalive or
//     their deadline. An attempt also moves when a topology names its node
//     dead (gossip declares a node that stopped answering dead in about two
//     and a half seconds), as one that went through a node that forwards
//     (the leader's breaker open) must when that node hangs; a stale read,
//     which any replica may serve, moves only then, and resumes on another
//     replica. An abandoned
//     attempt does not count against the node's breaker, and counts against
//     RetryPolicy.MaxElapsed like any retry; Stats.LeaderMoves counts them. An
//     answer that arrives as the attempt is abandoned stands. A delete
//     expecting an exact version is watched too: it cannot apply twice, and
//     when the first run was applied on the old leader the second is refused,
//     so the call fails with ErrOutcomeUnknown. Other deletes (Any,
//     StreamExists), which a second run would not answer as the first, are
//     not watched: set RetryPolicy.AttemptTimeout to bound them.
//  7. Read and ReadShard yield events lazily, one server page at a time,
//     and resume after a transient error from just past the last event
//     yielded: no event is yielded twice or skipped. A read that makes
//     progress restarts its retry budget. Reads go to the shard's leader and
//     are linearizable unless Stale (or WithStaleReads) lets any replica of
//     the shard serve them; MaxStaleness lets only a replica that was current
//     with the shard's leader within its bound serve them (else the leader).
//     With WithZone, such reads go to a replica in the client's zone first.
//     ListStreams and StreamInfo read each shard's stream names the same
//     way, a page at a time.
//  8. A client keeps to the cluster it dialled: every call names the
//     cluster ID of its first topology (gRPC metadata shoal-cluster-id), and a
//     node of another cluster (the cluster re-created at the same addresses,
//     an address that now serves another one) refuses it; the client tries
//     another node and, refused twice by one, fails the call with
//     ErrWrongCluster. It never installs another cluster's topology. A node
//     of a version before this check serves such a call; the client still
//     refuses its topology.
//
// # Caller duties
//
//  1. Create one Client per process and share it; it is safe for
//     concurrent use. Close it when done.
//  2. Give every call a context with a deadline that suits the operation;
//     the retry policy is a ceiling, the context the real bound.
//  3. Handle ErrWrongExpectedVersion by re-reading the stream and deciding
//     again; the client never retries it.
//  4. Range over a Read sequence to its end or break out of it; the first
//     error ends it.
package client

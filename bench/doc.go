// Package bench is shoal's benchmark library: workloads as Config structs
// and Run functions, driving any system through the small Target interface.
// The shoal CLI binds flags to the configs (shoal bench append|read); adapters
// for other systems implement Target in their own binary.
//
// # Running a workload
//
//  1. Build a Target: DialShoal (or NewShoalTarget over your client.Client),
//     optionally on a StartEmbedded server; or your own adapter.
//  2. Fill an AppendConfig or ReadConfig; zero fields take the defaults
//     (DefaultAppendConfig and DefaultReadConfig show them) and Validate
//     reports what is wrong (a *ConfigError naming the field as the flags
//     do). Set Run.Progress to see progress.
//  3. Call RunAppend or RunRead. They return an error only for an invalid
//     config (or, for reads, a failed preload); the target's failures are
//     counted in the Result. Cancelling ctx ends the run early with
//     Result.Interrupted set.
//  4. Print Result.WriteTable, keep Result.WriteJSON.
//
// # Implementing Target
//
//  1. Be safe for concurrent use: each worker calls from its own goroutine.
//  2. Append is all or nothing and checks expected: ExpectAny, ExpectNoStream,
//     or the exact version (>= 0) of the stream's last event, versions
//     counting from 0. Return the last version after the append.
//  3. Report a failed check with an error matching ErrConflict, ideally a
//     *ConflictError with the actual version, so exact-mode workers
//     resynchronise without guessing.
//  4. Wrap other errors with Classified(kind, err) to sort them in
//     Result.Errors; context deadlines are "timeout" by default.
//  5. Do not keep the payload slices after Append returns: they are reused.
//  6. Optionally implement Describer to name the system, its version and its
//     durability (what an acknowledged append survives) in reports.
//  7. Optionally implement Subscriber for AppendConfig.Subscribe: its stamps
//     are on the system's clock and the receipts on the load generator's, so
//     the delivery latency is exact only on one machine or synchronized clocks.
//
// # Measurement
//
// Workers each keep at most one operation in flight. In a closed loop
// (Rate 0) a worker sends its next operation when the previous one ends; in
// an open loop (Rate > 0) operation k is due at start + k/Rate, workers
// claim due times in order, and latency runs from the due time, not the send
// time, so a stalled target shows in the percentiles instead of silently
// slowing the load (coordinated omission). Operations due in the measured
// window but never sent are reported as Missed, and recorded with the time
// from their due time to the end of the run, a lower bound of their wait: a
// stall that lasts to the end shows too. An operation is measured when it
// was due after the warmup. Latencies go to one HdrHistogram per worker
// (1µs..60s, 3 significant digits), merged at the end: those of successes
// and of failures (an operation that timed out waited that long), not of
// conflicts, which are counted apart. Preparing an operation (an append's
// fresh random payloads) is the generator's work: it is done before the
// operation's due time is taken, outside its latency. In a timed run,
// throughput divides the successes that ended inside the measured phase by its
// length, so that neither the drain after it nor the warmup's last operations
// bias it; in a count run, the measured successes by the time from the end of
// warmup to the last measured completion. A worker whose operation was
// refused (any failure but a conflict or a timeout: a replica's disk low, the
// target unreachable) waits before its next one, up to 100 ms with jitter,
// doubling over consecutive refusals until a success, instead of asking
// again as fast as the refusals come back; in an open loop its due times
// then run late, and that lateness counts.
//
// With Expected "exact", stream i belongs to worker i mod Concurrency, so a
// worker always knows its streams' versions and conflicts only come from
// outside (e.g. streams left by an earlier run); the distribution then
// applies within each worker's share of the streams.
package bench

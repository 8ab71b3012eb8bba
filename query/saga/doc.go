// Package saga runs sagas, sequences of steps each with a compensating
// action, with their state event-sourced in shoal.
//
// A saga with ID id lives in stream "saga-"+id. A Coordinator records every
// transition there, expecting exactly the version it folded, before acting
// on it; two coordinators driving one saga therefore cannot both record a
// transition: the loser gets a *ConflictError (ErrConflict, also matching
// client.ErrWrongExpectedVersion) and stops.
//
// # Protocol
//
//	SagaStarted                        definition name, step names, input
//	  StepStarted(i)                   before step i's action runs
//	  StepCompleted(i)                 action succeeded (with its output)   -> next step
//	  StepFailed(i)                    action failed after its retries      -> compensate
//	CompensationCompleted(j)           for step i, then completed steps j < i, in reverse
//	SagaCompleted | SagaAborted        terminal
//
// Event types (Type* constants) and Status/Kind values are append-only.
// Data is JSON. The state is rebuilt by Fold, and the next move follows from
// the folded state alone, which is what Resume relies on.
//
// # Caller duties
//
//  1. Register the same Definitions (name and step names) on every
//     coordinator that may resume a saga; changing them under a running saga
//     fails Resume with ErrDefinitionMismatch.
//  2. Make every action and compensation idempotent under
//     StepContext.IdempotencyID, a UUID v5 of (saga ID, step, kind, and the
//     saga's start version when its ID was used before by a saga whose stream
//     was soft-deleted) that is the same on every attempt and after every
//     Resume: a coordinator that
//     crashes after an action took effect but before StepCompleted was
//     recorded re-runs the action on Resume. Using the ID as the event ID of
//     a shoal append makes the re-run a no-op.
//  3. Return Permanent(err) from an action that must not be retried; other
//     errors are retried (RetryPolicy) before the step fails. A shoal append
//     refused for good (client.ErrStreamDeleted for a tombstoned stream,
//     client.ErrInvalidArgument) wrote nothing and would be refused again.
//  4. Compensations must eventually succeed; when one keeps failing the
//     saga stays compensating (ErrCompensationFailed) until Resume. The
//     failed step is compensated too, since a failure seen by the coordinator
//     does not prove its action had no effect (a reply lost, an attempt timed
//     out, another coordinator resumed the saga and ran it): its compensation
//     must succeed, doing nothing, when the action never took effect. It
//     must also keep the action from taking effect later: an attempt still
//     in flight (one that timed out, or a coordinator wrongly taken for gone)
//     may land after a compensation that found nothing to undo, and its
//     effect would never be undone. Where the action appends one event to
//     shoal under its IdempotencyID, the compensation can append a "voided"
//     event under that same ID (StepContext.ActionID gives the action's) to
//     the same stream (event IDs are checked within a stream's shard, not
//     across shards), so that the late action's append is answered as a
//     duplicate of the void and never takes effect. When the void's own
//     append is answered Duplicate, the ID was taken first: by the action,
//     which must then be undone, or by this void on an earlier run of the
//     compensation, which has nothing more to do; the event at
//     AppendResult.FirstVersion tells which (ExampleCoordinator). A void
//     refused with client.ErrStreamDeleted found the stream tombstoned:
//     no append lands there any more, the late action's neither, so the
//     void has nothing to keep out, and retrying it would leave the saga
//     compensating for good; what the action may have done before the
//     tombstone is the compensation's to judge (ExampleCoordinator gives
//     up on it). (A
//     StepFailed recorded before this rule, without its "compensate" flag,
//     compensates the completed steps only, and so does a stream an older
//     coordinator went on with during a rolling upgrade. An older coordinator
//     cannot fold a stream where this version compensated a failed step: do
//     not roll coordinators back past this version.)
//  5. After a crash, or an error from Start or Resume, call Resume with
//     the saga ID; but after ErrNotStarted from Start (nothing was
//     recorded) call Start again with the same ID and input, and do the
//     same when Resume answers ErrUnknownSaga (a Start whose recording
//     ended with client.ErrOutcomeUnknown and did not land): Resume never
//     runs a saga whose SagaStarted is not recorded, and Unfinished does
//     not list it, so the command would be dropped. Starting an ID again
//     is safe: once a saga was recorded under it, Start fails with
//     ErrExists and runs nothing (Resume it then), until its stream is
//     deleted (6). ErrInvalid and ErrUnknownDefinition from Start refuse
//     the arguments. A conflict means another coordinator owns the saga;
//     Resume it only when that one is known to be gone (resuming beside a
//     live one is safe but may run its in-flight action a second time, see
//     4).
//  6. Delete a saga's stream only once the saga ended (completed or
//     aborted). A running saga's coordinator goes on recording after a soft
//     delete (an exact expected version continues a deleted stream), but the
//     history before the delete is no longer read: the saga can then neither
//     be resumed nor compensated, and Resume answers ErrHistoryDeleted. The
//     same holds for a truncation, and for a retention policy that covers
//     the "saga-" streams (a policy for every stream, prefix "", does): one
//     that removes a running saga's SagaStarted leaves it unable to go on
//     (client.ErrHistoryTruncated). Give "saga-" a policy of its own that removes
//     only deleted streams, or none, and delete sagas once ended. A deleted
//     or truncated stream also forgets the event IDs it held: an action
//     whose event a truncation removed is no longer refused when re-run.
//     And once its stream is deleted, a saga ID is free again: Start
//     with it runs a new saga under new idempotency IDs (StartVersion), so
//     a command delivered again after the delete runs again. Keep a
//     finished saga's stream for as long as its command may be redelivered.
//  7. Resume the sagas left running or compensating (by a crash, a caller's
//     deadline, a compensation that keeps failing): Coordinator.Unfinished
//     lists them, reading every saga's stream, so call it when a coordinator
//     starts rather than per request (and delete ended sagas' streams to keep
//     it short). shoal_saga_stopped_total counts the drives that returned
//     early, and each is logged at Warn with its saga ID.
//
// Start and Resume return the saga's State: StatusCompleted, or
// StatusAborted after compensating (State.FailedStep, State.Failure say why).
package saga

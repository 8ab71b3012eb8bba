package replica

import (
	"errors"
	"fmt"
)

var (
	// ErrNotLeader is matched by *NotLeaderError, returned by Propose, ReadIndex and the
	// membership calls on a replica that is not the group's leader, and to waiters whose
	// proposal was pending when the leader lost leadership or its term changed.
	ErrNotLeader = errors.New("replica: not leader")
	// ErrStopped is returned by every call on a closed Host, and to every waiter that was
	// pending when the Host closed.
	ErrStopped = errors.New("replica: stopped")
	// ErrGroupRemoved is returned by calls on a group whose local replica was removed from the
	// group's configuration.
	ErrGroupRemoved = errors.New("replica: group removed")
	// ErrGroupExists is returned by OpenGroup when the shard's group is already open.
	ErrGroupExists = errors.New("replica: group already open")
	// ErrConfChangePending is returned by the membership calls while an earlier conf change of
	// the group has not been applied yet (including the one a new leader inherits).
	ErrConfChangePending = errors.New("replica: conf change pending")
	// ErrUnsettled is returned by the guarded changes (Guard) while entries of an earlier
	// leadership are unapplied or a configuration change or guarded proposal is pending.
	ErrUnsettled = errors.New("replica: entries of an earlier leadership, a configuration change or a guarded proposal pending")
	// ErrUnsafeConfChange is matched by *ConfChangeError, returned when a membership change
	// would be unsafe (removing the leader, the last voter, or a quorum's worth of live voters).
	ErrUnsafeConfChange = errors.New("replica: unsafe conf change")
	// ErrProposalDropped is returned by Propose when raft dropped the proposal (for example
	// during a leadership transfer); retrying is safe.
	ErrProposalDropped = errors.New("replica: proposal dropped")
	// ErrBusy is returned by Propose when the host's queue of proposals is full
	// (Config.MaxQueuedProposals, MaxQueuedProposalBytes): nothing was proposed.
	ErrBusy = errors.New("replica: too many pending requests")
	// ErrTransferAborted is returned by TransferLeadership when raft gave the transfer up: the
	// target did not take the leadership within an election timeout (it was behind, slow or
	// unreachable). This node still leads; trying again is safe.
	ErrTransferAborted = errors.New("replica: leadership transfer aborted")
	// ErrBadSnapshot is returned by ReceiveSnapshot for a malformed or corrupted stream.
	ErrBadSnapshot = errors.New("replica: bad snapshot stream")
	// ErrSnapshotTooLarge is returned by ReceiveSnapshot for a snapshot that would take more
	// room than the host gives snapshots: Config.MaxSnapshotBytes, or the disk's free space
	// above Config.SnapshotMinFreeBytes. Its files are removed.
	ErrSnapshotTooLarge = errors.New("replica: snapshot too large")
	// ErrStaleSnapshot is returned by ReceiveSnapshot for a snapshot sent at a term before
	// the local replica's: raft would drop its message, so it is refused before its data is
	// read, and in any case before it is installed.
	ErrStaleSnapshot = errors.New("replica: snapshot of an earlier term")
	// ErrRefused is matched by the errors of a Propose that refused the proposal before raft
	// saw it, which was then certainly not applied: this replica did not lead (*NotLeaderError,
	// Refused), the group was removed (ErrGroupRemoved) or the host closed (ErrStopped) before
	// the loop took the proposal, the queue was full (ErrBusy), raft dropped it
	// (ErrProposalDropped), or ctx ended while it was queued. Propose's other errors leave the
	// outcome unknown: the leadership lost, the host closed or the replica removed while the
	// proposal waited in raft, or ctx ended while it waited.
	ErrRefused = errors.New("replica: proposal refused")
)

// refusedError is a refusal of a proposal before raft saw it: it matches ErrRefused and err.
type refusedError struct{ err error }

// refused marks err, a Propose error, as a refusal before raft saw the proposal (ErrRefused).
func refused(err error) error { return &refusedError{err: err} }

func (e *refusedError) Error() string { return e.err.Error() }

// Unwrap returns the reason for the refusal.
func (e *refusedError) Unwrap() error { return e.err }

// Is reports whether target is ErrRefused.
func (e *refusedError) Is(target error) bool { return target == ErrRefused }

// NotLeaderError says which replica leads the group as far as this node knows.
type NotLeaderError struct {
	Shard  uint32
	Leader uint64 // 0 = unknown
	// Refused: the call was refused before raft saw it, as this replica did not lead; a
	// proposal so refused was certainly not applied, and the error matches ErrRefused. Unset
	// when leadership was lost while a proposal waited: its outcome is unknown.
	Refused bool
}

func (e *NotLeaderError) Error() string {
	if e.Leader == 0 {
		return fmt.Sprintf("replica: not leader of shard %d (leader unknown)", e.Shard)
	}
	return fmt.Sprintf("replica: not leader of shard %d (leader is %d)", e.Shard, e.Leader)
}

// Is reports whether target is ErrNotLeader, or ErrRefused for a refusal (Refused).
func (e *NotLeaderError) Is(target error) bool {
	return target == ErrNotLeader || target == ErrRefused && e.Refused
}

// ConfChangeError explains why a membership change was refused.
type ConfChangeError struct {
	Shard  uint32
	Node   uint64
	Reason string
	// Later: the change is refused only for now (the leader has just left quiescence and
	// does not know yet which members are active); the same change may pass after an
	// election timeout.
	Later bool
}

func (e *ConfChangeError) Error() string {
	return fmt.Sprintf("replica: unsafe conf change of node %d in shard %d: %s", e.Node, e.Shard, e.Reason)
}

// Is reports whether target is ErrUnsafeConfChange.
func (e *ConfChangeError) Is(target error) bool { return target == ErrUnsafeConfChange }

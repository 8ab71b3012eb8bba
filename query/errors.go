package query

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
)

var (
	// ErrNotFound is returned by Projection.Get for an absent key.
	ErrNotFound = errors.New("query: key not found")
	// ErrInvalidConfig is returned by Open for a bad Config (*ConfigError).
	ErrInvalidConfig = errors.New("query: invalid config")
	// ErrHandler is matched by the *HandlerError Run returns when the
	// handler failed on an event; the page was not committed.
	ErrHandler = errors.New("query: handler failed")
	// ErrRunning is returned by Run when the projection is already running.
	ErrRunning = errors.New("query: projection already running")
	// ErrClusterMismatch is returned by Run when the database was built from
	// another cluster or another shard count than the one the client reaches
	// (*ClusterMismatchError); its checkpoint would be meaningless.
	ErrClusterMismatch = errors.New("query: projection database belongs to another cluster")
	// ErrCheckpointAhead is returned by Run when a shard's checkpoint is past the shard's end
	// (client.ErrPositionAhead, which it wraps too): the cluster no longer has the history
	// the model was built from, as after a restore from a backup older than the model. The
	// model holds events the cluster lost, and would skip the ones written up to the
	// checkpoint: rebuild it from an empty Dir.
	ErrCheckpointAhead = errors.New("query: checkpoint past the shard's end")
	// ErrFilterMismatch is returned by Open when the database's checkpoint was built under
	// other filters (Config.StreamPrefix, EventTypes, Deletes) than the Config gives
	// (*FilterMismatchError): the checkpoint has passed, unhandled, the entries the old
	// filters skipped, and the model holds what they took.
	ErrFilterMismatch = errors.New("query: projection database built under other filters")
	// ErrInUse is returned by Open when the projection's Dir is open already, in another
	// process (a second instance, or one still stopping) or in this one (a Projection not
	// closed): a database has one writer, whose Get and Scan serve its read model.
	ErrInUse = errors.New("query: projection directory in use")
	// ErrClosed is returned by calls on a closed Projection.
	ErrClosed = errors.New("query: projection closed")
	// ErrNotRunning is returned by WaitFor, WaitForAppend and WaitForDelete for a position
	// not yet applied once Run has returned (and until Run is called again): no commit
	// follows to cover it. When Run failed, the error wraps Run's error too.
	ErrNotRunning = errors.New("query: projection not running")
	// ErrNoShard is returned by WaitFor for a shard the projection's cluster does not have.
	ErrNoShard = errors.New("query: no such shard")
)

// ConfigError names a bad Config field. Is(ErrInvalidConfig).
type ConfigError struct{ Field, Reason string }

func (e *ConfigError) Error() string {
	return fmt.Sprintf("query: invalid config: %s %s", e.Field, e.Reason)
}

// Is reports ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// HandlerError carries the event a handler failed on. Is(ErrHandler);
// Unwrap gives the handler's error.
type HandlerError struct {
	Projection string
	Shard      uint32
	Position   uint64
	Stream     string
	Version    uint64
	Err        error
}

func (e *HandlerError) Error() string {
	return fmt.Sprintf("query: projection %q: handler failed on %s@%d (shard %d position %d): %v",
		e.Projection, e.Stream, e.Version, e.Shard, e.Position, e.Err)
}

// Is reports ErrHandler.
func (e *HandlerError) Is(target error) bool { return target == ErrHandler }

// Unwrap returns the handler's error.
func (e *HandlerError) Unwrap() error { return e.Err }

// ClusterMismatchError says why a projection database does not fit the
// cluster. Is(ErrClusterMismatch).
type ClusterMismatchError struct {
	StoredCluster string
	StoredShards  uint32
	Cluster       string
	Shards        uint32
}

func (e *ClusterMismatchError) Error() string {
	return fmt.Sprintf("query: projection database belongs to cluster %q with %d shards, client reaches cluster %q with %d shards",
		e.StoredCluster, e.StoredShards, e.Cluster, e.Shards)
}

// Is reports ErrClusterMismatch.
func (e *ClusterMismatchError) Is(target error) bool { return target == ErrClusterMismatch }

// FilterMismatchError says how the filters a projection database's checkpoint was built
// under differ from the ones its Config gives. Is(ErrFilterMismatch).
type FilterMismatchError struct {
	Projection string
	Dir        string
	Stored     Filters // what the checkpoint was built under
	Given      Filters // what the Config gives
}

func (e *FilterMismatchError) Error() string {
	return fmt.Sprintf("query: projection %q: the database in %q was built under filters %v, the Config gives %v: "+
		"its checkpoint has passed the entries the old filters skipped, which would never reach the handler; "+
		"build the model in a new or empty Dir (delete this one to start over), or open it with the filters it was built under",
		e.Projection, e.Dir, e.Stored, e.Given)
}

// Is reports ErrFilterMismatch.
func (e *FilterMismatchError) Is(target error) bool { return target == ErrFilterMismatch }

// inUse reports whether err, from pebble.Open, says another holder has the directory's LOCK:
// Pebble's own refusal within a process, or the file lock's (fcntl: EAGAIN or EACCES) between
// processes. A LOCK file that cannot be created (a *fs.PathError) is not that.
func inUse(err error) bool {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return false
	}
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) ||
		strings.Contains(err.Error(), "lock held by current process")
}

package replica

import (
	"sync/atomic"
	"time"
)

// CommitSiblings is the siblings a server's CommitDelay is made with: one caller alone, or a
// few, wait for no one.
const CommitSiblings = 4

// CommitDelay holds back the store's WAL syncs under load, as PostgreSQL's commit_delay with
// commit_siblings does: after a sync, the next waits for the delay, so that the writes of
// several loop iterations share one fdatasync. Nothing is acknowledged before it is synced;
// what the delay trades is latency (about the delay more per write; up to twice it for a write
// the loop holds back behind maxSyncsInFlight batches waiting out the delay, as its own sync
// then waits it out again) for the CPU each fdatasync costs (100–170 µs of system time on a
// small VM), which counts where several replicas share a machine's cores. It applies only
// while the host's last synced write carried at least its siblings raft entries, so that a
// lone caller keeps its latency (but for its first write after a busy spell).
//
// Give Func to the DB (pebble.Options.WALMinSyncInterval) and the CommitDelay to the host
// (Config.CommitDelay). A nil *CommitDelay, or one of delay 0, never delays.
type CommitDelay struct {
	delay    time.Duration
	siblings int64
	last     atomic.Int64 // entries in the host's last write handed to be synced
}

// NewCommitDelay returns a CommitDelay of delay (0: none) for writes of at least siblings
// entries (at least 1).
func NewCommitDelay(delay time.Duration, siblings int) *CommitDelay {
	return &CommitDelay{delay: delay, siblings: int64(max(siblings, 1))}
}

// Func returns how long the WAL is to wait after a sync before the next: the delay while the
// last synced write carried its siblings entries or more, else 0. Pebble calls it after each
// sync.
func (c *CommitDelay) Func() time.Duration {
	if c == nil || c.last.Load() < c.siblings {
		return 0
	}
	return c.delay
}

// synced records the entries of a write the host hands to be synced.
func (c *CommitDelay) synced(entries int) {
	if c != nil && c.delay > 0 {
		c.last.Store(int64(entries))
	}
}

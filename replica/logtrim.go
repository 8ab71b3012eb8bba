package replica

import (
	"bytes"
	"encoding/binary"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Log truncation. Every replica drops applied entries of its group's log in the apply batch
// (maybeCompact), atomically with the state that covers them. How far:
//
//   - a leader drops what every follower has (their lowest match index) less a cushion of
//     logCushion entries, but keeps up to LogRetainEntries behind its applied index for a
//     follower that is further behind (down, cut off, slow): past that, the follower catches
//     up by snapshot, and the entries after a snapshot being sent are kept until it is in and
//     the follower has answered it (noteSnapshotIn);
//   - a follower drops what its leader says: the leader's truncation point rides on its
//     appends, in their Context (truncCtx), which raft ignores for an append, and so does a
//     node of an earlier version. Without word from the current leader (a new term, an older
//     leader) a follower keeps LogRetainEntries, as every replica did before;
//   - any replica trims down to its applied index when the log outgrows MaxLogBytes (a leader:
//     down to what its followers need, up to twice the limit; sizeTrimTo).
//
// A follower that becomes leader thus holds what the old leader kept for the followers that
// were behind, and the cushion for one a moment behind (or the old leader itself, back from a
// restart). With every follower current an entry lives a few hundred entries, seconds under
// load, and its deletion usually reaches Pebble's memtable before the memtable is flushed: the
// flush drops the entry, which then costs no sstable write and no compaction. (Kept for 5,000
// entries, the log was about half of what a node flushed and compacted.)

// truncCtxTag prefixes the Context of a leader's append that carries its truncation point:
// truncCtxTag | index (8B).
var truncCtxTag = []byte("shoal-trunc")

const (
	// logCushion: the entries a leader keeps below the point all its followers have (fewer
	// if LogRetainEntries is lower).
	logCushion = 256
	// logTrimChunk: the log is dropped in steps of at least this many entries (one range
	// deletion each; fewer if LogRetainEntries/8 is lower), and a leader announces a new
	// truncation point when it moved this far.
	logTrimChunk = 128
)

func (h *Host) logCushion() uint64   { return min(h.cfg.LogRetainEntries, logCushion) }
func (h *Host) logTrimChunk() uint64 { return max(min(h.cfg.LogRetainEntries/8, logTrimChunk), 1) }

// maybeCompact stages in ab the removal of the log entries truncationPoint lets go of (in
// chunks), or of those down to sizeTrimTo when the log outgrows MaxLogBytes. Loop goroutine.
func (h *Host) maybeCompact(ab *pebble.Batch, g *Group) {
	st := g.st
	to := g.truncationPoint()
	if to <= st.truncIdx+h.logTrimChunk() {
		to = 0
	}
	if st.logBytes > h.cfg.MaxLogBytes {
		to = max(to, g.sizeTrimTo())
	}
	if to > st.truncIdx {
		h.must(st.compact(ab, to))
	}
}

// truncationPoint is the index up to which this replica may drop its log, the size limit
// aside (see the top of this file). A leader announces it to its followers. Loop goroutine.
func (g *Group) truncationPoint() uint64 {
	st := g.st
	floor := st.applied - min(st.applied, g.h.cfg.LogRetainEntries)
	switch g.state {
	case raft.StateLeader:
		to := st.applied - min(st.applied, g.h.logCushion())
		snap := st.applied // the lowest index of a snapshot being sent
		g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
			if id != g.h.cfg.NodeID {
				to = min(to, pr.Match)
				if pr.State == tracker.StateSnapshot && pr.PendingSnapshot > 0 {
					snap = min(snap, pr.PendingSnapshot)
				}
				if in, ok := g.snapIn[id]; ok {
					// Reported in, not answered yet: raft probes the follower from just after
					// the snapshot, its match index still the old one.
					if pr.State == tracker.StateProbe && pr.Next == in+1 {
						snap = min(snap, in)
					} else {
						delete(g.snapIn, id) // answered, refused, or another snapshot
					}
				}
			}
		})
		// The entries after a snapshot being sent are kept past LogRetainEntries (MaxLogBytes
		// still bounds them): dropped while it streams and installs, the follower would need
		// another snapshot when it has this one, and so on for as long as the load lasts.
		to = min(max(to, floor), snap)
		g.announceTruncation(to)
		return to
	case raft.StateFollower:
		if g.leaderTrunc != 0 && g.leaderTruncTerm == g.seenTerm {
			return max(min(g.leaderTrunc, st.applied), floor)
		}
	}
	return floor
}

// announceTruncation makes to the truncation point that this leader's next appends carry,
// unless the one they carry is at most a chunk behind. Loop goroutine.
func (g *Group) announceTruncation(to uint64) {
	if to == 0 || g.truncCtx != nil && to >= g.truncAnnounced && to < g.truncAnnounced+g.h.logTrimChunk() {
		return
	}
	// A new slice each time: messages already handed to the transport keep theirs.
	ctx := make([]byte, len(truncCtxTag)+8)
	binary.BigEndian.PutUint64(ctx[copy(ctx, truncCtxTag):], to)
	g.truncCtx, g.truncAnnounced = ctx, to
}

// forgetTruncation drops the truncation point a leader announced, and the snapshots it saw
// reported in: a new leadership announces its own and tracks its own (observe). Loop
// goroutine.
func (g *Group) forgetTruncation() { g.truncCtx, g.truncAnnounced, g.snapIn = nil, 0, nil }

// noteSnapshotIn records, before raft hears that the snapshot it is sending to follower to is
// in, the snapshot's index: raft then probes the follower from just after it, with the
// follower's match index still the old one until its answer comes, which waits for the
// follower's fsync of the snapshot's raft state and so usually comes after the report. Until
// then truncationPoint keeps the entries after the snapshot, as while it was being sent.
// Loop goroutine.
func (g *Group) noteSnapshotIn(to uint64) {
	if g.state != raft.StateLeader {
		return
	}
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if id == to && pr.State == tracker.StateSnapshot && pr.PendingSnapshot > 0 {
			if g.snapIn == nil {
				g.snapIn = make(map[uint64]uint64, 1)
			}
			g.snapIn[to] = pr.PendingSnapshot
		}
	})
}

// tagTruncation puts the announced truncation point on m, an append of this leader. Loop
// goroutine.
func (g *Group) tagTruncation(m *pb.Message) {
	if m.GetType() == pb.MsgApp && g.truncCtx != nil && m.Context == nil {
		m.Context = g.truncCtx
	}
}

// noteTruncation records the truncation point carried by m, an append just stepped from this
// follower's leader in the current term (heardFrom checked that). Loop goroutine.
func (g *Group) noteTruncation(m *pb.Message) {
	if len(m.Context) != len(truncCtxTag)+8 || !bytes.HasPrefix(m.Context, truncCtxTag) {
		return
	}
	g.leaderTrunc = binary.BigEndian.Uint64(m.Context[len(truncCtxTag):])
	g.leaderTruncTerm = m.GetTerm()
}

// sizeTrimTo is where a log over MaxLogBytes is trimmed to: the applied index, except that a
// leader keeps, up to twice the limit, what a follower still needs (one it has not heard from
// lately too: back within the bound, it catches up from the log), so that a follower a moment
// behind (a lost append, a slow fsync) gets entries rather than a snapshot of the whole shard
// each time the limit is passed (large entries pass it often). Loop goroutine.
func (g *Group) sizeTrimTo() uint64 {
	st := g.st
	to := st.applied
	if g.state != raft.StateLeader || st.logBytes > 2*g.h.cfg.MaxLogBytes {
		return to
	}
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if id != g.h.cfg.NodeID && pr.Match >= st.truncIdx && pr.Match < to {
			to = pr.Match
		}
	})
	return to
}

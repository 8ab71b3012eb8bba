package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Key suffixes under R|shard (see doc.go).
const (
	keyLog       = 'L'
	keyHardState = 'H'
	keyConfState = 'C'
	keyTruncated = 'T'
	keyApplied   = 'A'
	keyDeleted   = 'D' // the term of a replica deleted here (DropGroup); outlives the group's keys
)

// maxCachedEntries is the in-memory tail of each group's log kept after a trim; the tail
// grows to twice this between trims.
const maxCachedEntries = 1024

func raftPrefix(shard uint32) []byte {
	k := make([]byte, 5, 16)
	k[0] = 'R'
	binary.BigEndian.PutUint32(k[1:], shard)
	return k
}

func raftKey(shard uint32, kind byte) []byte { return append(raftPrefix(shard), kind) }

func logKey(shard uint32, index uint64) []byte {
	return binary.BigEndian.AppendUint64(raftKey(shard, keyLog), index)
}

// Entry value: type(1) | term(8 BE) | data (encoded by storage.append).
func decodeEntry(index uint64, v []byte) (*pb.Entry, error) {
	if len(v) < 9 {
		return nil, fmt.Errorf("replica: corrupt log entry %d (%d bytes)", index, len(v))
	}
	return &pb.Entry{
		Type:  pb.EntryType(v[0]).Enum(),
		Term:  new(binary.BigEndian.Uint64(v[1:])),
		Index: new(index),
		Data:  append([]byte(nil), v[9:]...),
	}, nil
}

// entrySize is what an entry counts toward the log's size: its stored value (a type byte, the
// term, the data) and a key's worth more, as openStorage counts the entries it finds.
func entrySize(e *pb.Entry) uint64 { return 9 + uint64(len(e.Data)) + 32 }

// storage is a raft.Storage over one group's R|shard keyspace. It is used only by the host's
// loop goroutine (and by openStorage before the group is published), so it has no lock.
// Writes are staged into a caller's batch; the in-memory view is updated at staging time and
// the loop commits the batch before anything else reads the DB.
type storage struct {
	db    *pebble.DB
	shard uint32

	hs        *pb.HardState // as last staged
	cs        *pb.ConfState
	truncIdx  uint64 // index of the last compacted entry (snapshot index); first = truncIdx+1
	truncTerm uint64
	last      uint64 // last index in the log (== truncIdx when empty)
	applied   uint64 // raft-level applied index, maintained by the loop
	// durableApplied is the raft-level applied index stored under A (atomic with C and the
	// state machine's batch); 0 when never stored.
	durableApplied uint64
	// appliedDirty: the apply batch being built changed C or compacted the log, so A must be
	// stored with it. A is not stored otherwise: a stale A only makes a restart replay (and
	// skip, as already in the state machine) the entries after it, and none of those is a
	// conf change, since every batch that applies one stores A.
	appliedDirty bool
	logBytes     uint64 // approximate bytes of the retained log

	cache []*pb.Entry // contiguous tail of the log, cache[i].Index == cacheLo+i

	keyBuf, valBuf []byte // scratch for append (loop goroutine)
}

func openStorage(db *pebble.DB, shard uint32) (*storage, error) {
	s := &storage{db: db, shard: shard, hs: &pb.HardState{}}
	var err error
	if s.cs, err = loadConfState(db, shard); err != nil {
		return nil, err
	}
	if v, err := s.get(raftKey(shard, keyHardState)); err != nil {
		return nil, err
	} else if v != nil {
		if len(v) != 24 {
			return nil, fmt.Errorf("replica: corrupt hard state of shard %d", shard)
		}
		s.hs = &pb.HardState{Term: new(binary.BigEndian.Uint64(v)), Vote: new(binary.BigEndian.Uint64(v[8:])),
			Commit: new(binary.BigEndian.Uint64(v[16:]))}
	}
	if v, err := s.get(raftKey(shard, keyTruncated)); err != nil {
		return nil, err
	} else if v != nil {
		if len(v) != 16 {
			return nil, fmt.Errorf("replica: corrupt truncated state of shard %d", shard)
		}
		s.truncIdx, s.truncTerm = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	}
	if v, err := s.get(raftKey(shard, keyApplied)); err != nil {
		return nil, err
	} else if len(v) == 8 {
		s.durableApplied = binary.BigEndian.Uint64(v)
	}
	s.last = s.truncIdx
	defer s.raiseCommit()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: logKey(shard, 0), UpperBound: raftKey(shard, keyLog+1)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		idx := binary.BigEndian.Uint64(it.Key()[6:])
		if idx <= s.truncIdx {
			continue
		}
		s.last = idx
		s.logBytes += uint64(len(it.Value())) + 32
	}
	return s, it.Error()
}

// raiseCommit lifts the hard state's commit index to what the stored state proves committed:
// the truncated index and the raft-level applied index (only committed entries are applied or
// compacted). The loop stores the hard state only when its term or vote changes (see
// setHardState), so H's commit may trail them, and raft refuses a commit index below the
// compacted log.
func (s *storage) raiseCommit() {
	c := max(s.hs.GetCommit(), s.truncIdx, min(s.durableApplied, s.last))
	if c != s.hs.GetCommit() && !raft.IsEmptyHardState(s.hs) {
		s.hs.Commit = new(c)
	}
}

func (s *storage) get(key []byte) ([]byte, error) { return readKey(s.db, key) }

// loadConfState reads shard's stored configuration (C): the one its replica last applied, empty
// when none is stored.
func loadConfState(db *pebble.DB, shard uint32) (*pb.ConfState, error) {
	cs := &pb.ConfState{}
	v, err := readKey(db, raftKey(shard, keyConfState))
	if err != nil || v == nil {
		return cs, err
	}
	if err := proto.Unmarshal(v, cs); err != nil {
		return nil, fmt.Errorf("replica: corrupt conf state of shard %d: %w", shard, err)
	}
	return cs, nil
}

// readKey returns a copy of key's value in db, nil when it is absent.
func readKey(db *pebble.DB, key []byte) ([]byte, error) {
	v, closer, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// isEmpty reports a storage that never saw a hard state, entry or snapshot.
func (s *storage) isEmpty() bool {
	return s.last == 0 && raft.IsEmptyHardState(s.hs) && len(s.cs.Voters) == 0 && len(s.cs.Learners) == 0
}

// InitialState implements raft.Storage.
func (s *storage) InitialState() (*pb.HardState, *pb.ConfState, error) {
	return proto.CloneOf(s.hs), proto.CloneOf(s.cs), nil
}

// FirstIndex implements raft.Storage.
func (s *storage) FirstIndex() (uint64, error) { return s.truncIdx + 1, nil }

// LastIndex implements raft.Storage.
func (s *storage) LastIndex() (uint64, error) { return s.last, nil }

func (s *storage) cacheLo() uint64 {
	if len(s.cache) == 0 {
		return s.last + 1
	}
	return s.cache[0].GetIndex()
}

// Term implements raft.Storage.
func (s *storage) Term(i uint64) (uint64, error) {
	switch {
	case i == s.truncIdx:
		return s.truncTerm, nil
	case i < s.truncIdx:
		return 0, raft.ErrCompacted
	case i > s.last:
		return 0, raft.ErrUnavailable
	}
	if lo := s.cacheLo(); i >= lo {
		return s.cache[i-lo].GetTerm(), nil
	}
	v, err := s.get(logKey(s.shard, i))
	if err != nil {
		return 0, err
	} else if v == nil || len(v) < 9 {
		return 0, raft.ErrUnavailable
	}
	return binary.BigEndian.Uint64(v[1:]), nil
}

// Entries implements raft.Storage.
func (s *storage) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	if lo <= s.truncIdx {
		return nil, raft.ErrCompacted
	}
	if hi > s.last+1 {
		return nil, raft.ErrUnavailable
	}
	var out []*pb.Entry
	var size uint64
	add := func(e *pb.Entry) bool {
		size += uint64(proto.Size(e))
		if len(out) > 0 && size > maxSize {
			return false
		}
		out = append(out, e)
		return true
	}
	next := lo
	if clo := s.cacheLo(); lo < clo {
		end := min(hi, clo)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: logKey(s.shard, lo), UpperBound: logKey(s.shard, end)})
		if err != nil {
			return nil, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			idx := binary.BigEndian.Uint64(it.Key()[6:])
			if idx != next {
				break
			}
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return nil, err
			}
			e, err := decodeEntry(idx, v)
			if err != nil {
				it.Close()
				return nil, err
			}
			if !add(e) {
				it.Close()
				return out, nil
			}
			next++
		}
		if err := it.Close(); err != nil {
			return nil, err
		}
		if next != end {
			return nil, raft.ErrUnavailable
		}
	}
	for clo := s.cacheLo(); next < hi; next++ {
		if !add(s.cache[next-clo]) {
			break
		}
	}
	return out, nil
}

// Snapshot implements raft.Storage. It describes the state at the group's applied index; the
// state itself travels separately (Host.WriteSnapshot), read from a Pebble snapshot taken when
// the transfer starts, so the data may be ahead of the metadata (entries up to the data's
// applied index are skipped by the receiver).
func (s *storage) Snapshot() (*pb.Snapshot, error) { return s.snapshotAt(s.applied, s.cs) }

func (s *storage) snapshotAt(applied uint64, cs *pb.ConfState) (*pb.Snapshot, error) {
	term, err := s.Term(applied)
	if err != nil {
		return nil, err
	}
	return &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(applied), Term: new(term),
		ConfState: proto.CloneOf(cs)}}, nil
}

// append stages entries (which may overwrite a conflicting suffix) into b.
func (s *storage) append(b *pebble.Batch, ents []*pb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	first := ents[0].GetIndex()
	if first <= s.truncIdx {
		return fmt.Errorf("replica: shard %d: append at %d below compacted index %d", s.shard, first, s.truncIdx)
	}
	if first > s.last+1 {
		return fmt.Errorf("replica: shard %d: append at %d leaves a gap after %d", s.shard, first, s.last)
	}
	if first <= s.last {
		if err := b.DeleteRange(logKey(s.shard, first), logKey(s.shard, s.last+1), nil); err != nil {
			return err
		}
		s.logBytes -= min(s.logBytes, s.bytesFrom(first))
	}
	// Set copies key and value into the batch: encode into reused buffers.
	for _, e := range ents {
		s.keyBuf = append(s.keyBuf[:0], 'R', 0, 0, 0, 0, keyLog)
		binary.BigEndian.PutUint32(s.keyBuf[1:], s.shard)
		s.keyBuf = binary.BigEndian.AppendUint64(s.keyBuf, e.GetIndex())
		s.valBuf = append(s.valBuf[:0], byte(e.GetType()))
		s.valBuf = binary.BigEndian.AppendUint64(s.valBuf, e.GetTerm())
		s.valBuf = append(s.valBuf, e.Data...)
		if err := b.Set(s.keyBuf, s.valBuf, nil); err != nil {
			return err
		}
		s.logBytes += entrySize(e)
	}
	// Update the cached tail: drop the overwritten suffix, then add.
	if clo := s.cacheLo(); first < clo || len(s.cache) == 0 {
		s.cache = s.cache[:0]
	} else {
		s.cache = s.cache[:first-clo]
	}
	s.cache = append(s.cache, ents...)
	s.last = ents[len(ents)-1].GetIndex()
	return nil
}

// bytesFrom returns the bytes of the log's entries from index first on (first <= s.last):
// exact from the cached tail, else a proportional share of logBytes, as compact takes.
func (s *storage) bytesFrom(first uint64) uint64 {
	if clo := s.cacheLo(); len(s.cache) > 0 && first >= clo {
		var n uint64
		for _, e := range s.cache[first-clo:] {
			n += entrySize(e)
		}
		return n
	}
	if retained := s.last - s.truncIdx; retained > 0 {
		return s.logBytes / retained * (s.last - first + 1)
	}
	return 0
}

// trimCache keeps the cached tail bounded; call after the batch holding the entries committed.
// Once the tail holds twice maxCachedEntries it keeps the newest maxCachedEntries in a new
// array (the old one, and the entries only it references, become garbage): one copy per
// maxCachedEntries appends rather than one per append.
func (s *storage) trimCache() {
	if n := len(s.cache); n >= 2*maxCachedEntries {
		s.cache = append(make([]*pb.Entry, 0, 2*maxCachedEntries), s.cache[n-maxCachedEntries:]...)
	}
}

// setHardState records hs and stages it into b when its term or vote changed (what raft needs
// durable). A change of the commit index alone is not stored: the commit index is volatile in
// raft, and openStorage recovers a lower bound from the applied and truncated indexes
// (raiseCommit). This saves a write per group and iteration on every replica.
func (s *storage) setHardState(b *pebble.Batch, hs *pb.HardState) error {
	store := hs.GetTerm() != s.hs.GetTerm() || hs.GetVote() != s.hs.GetVote()
	s.hs = proto.CloneOf(hs)
	if !store {
		return nil
	}
	return b.Set(raftKey(s.shard, keyHardState), encodeHardState(hs), nil)
}

// encodeHardState encodes hs's term, vote and commit index (H's value).
func encodeHardState(hs *pb.HardState) []byte {
	v := make([]byte, 24)
	binary.BigEndian.PutUint64(v, hs.GetTerm())
	binary.BigEndian.PutUint64(v[8:], hs.GetVote())
	binary.BigEndian.PutUint64(v[16:], hs.GetCommit())
	return v
}

func (s *storage) setConfState(b *pebble.Batch, cs *pb.ConfState) error {
	v, err := proto.Marshal(cs)
	if err != nil {
		return err
	}
	s.cs = proto.CloneOf(cs)
	s.appliedDirty = true
	return b.Set(raftKey(s.shard, keyConfState), v, nil)
}

func (s *storage) setTruncated(b *pebble.Batch, index, term uint64) error {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v, index)
	binary.BigEndian.PutUint64(v[8:], term)
	s.truncIdx, s.truncTerm = index, term
	return b.Set(raftKey(s.shard, keyTruncated), v, nil)
}

// setApplied stages the raft-level applied index (with the apply batch, so it is atomic with
// the conf state and the state machine's own applied index).
func (s *storage) setApplied(b *pebble.Batch, index uint64) error {
	s.applied, s.durableApplied, s.appliedDirty = index, index, false
	return b.Set(raftKey(s.shard, keyApplied), binary.BigEndian.AppendUint64(nil, index), nil)
}

// applySnapshot stages a received raft snapshot: the whole log is discarded and the log
// restarts after the snapshot's index.
func (s *storage) applySnapshot(b *pebble.Batch, snap *pb.Snapshot) error {
	md := snap.GetMetadata()
	if err := b.DeleteRange(logKey(s.shard, 0), raftKey(s.shard, keyLog+1), nil); err != nil {
		return err
	}
	if err := s.setTruncated(b, md.GetIndex(), md.GetTerm()); err != nil {
		return err
	}
	if err := s.setConfState(b, pb.EnsureConfState(md.ConfState)); err != nil {
		return err
	}
	if err := s.setApplied(b, md.GetIndex()); err != nil {
		return err
	}
	s.last, s.logBytes, s.cache = md.GetIndex(), 0, nil
	return nil
}

// compact stages the removal of entries up to and including index (index <= applied).
func (s *storage) compact(b *pebble.Batch, index uint64) error {
	if index <= s.truncIdx {
		return nil
	}
	if index > s.last {
		return fmt.Errorf("replica: shard %d: compact %d beyond last index %d", s.shard, index, s.last)
	}
	term, err := s.Term(index)
	if err != nil {
		return err
	}
	removed := index - s.truncIdx
	retained := s.last - s.truncIdx
	if err := b.DeleteRange(logKey(s.shard, s.truncIdx+1), logKey(s.shard, index+1), nil); err != nil {
		return err
	}
	if err := s.setTruncated(b, index, term); err != nil {
		return err
	}
	s.appliedDirty = true
	if retained > 0 {
		s.logBytes -= s.logBytes / retained * removed
	}
	if clo := s.cacheLo(); len(s.cache) > 0 && index >= clo {
		// Resliced: the log is trimmed every few dozen entries, inside the cached tail; the
		// array is replaced when appends outgrow it (trimCache, append).
		s.cache = s.cache[index-clo+1:]
	}
	return nil
}

// ResetToSoleVoter rewrites shard's raft state in db for a node that starts again as the only
// member of a new cluster (node's Config.NewCluster): the log ends at applied, the state
// machine's applied index (entries after it are dropped, a configuration change among them
// too), the configuration is self alone, and the hard state starts a new term with no vote.
// The replica then elects itself and leads the shard with the state it applied. The group must
// not be open. Synced; running it again (after a crash) only starts one more term.
func ResetToSoleVoter(db *pebble.DB, shard uint32, self, applied uint64) error {
	s, err := openStorage(db, shard)
	if err != nil {
		return err
	}
	if applied < s.truncIdx || applied > s.last {
		return fmt.Errorf("replica: shard %d: applied index %d outside the log (%d..%d)", shard, applied, s.truncIdx, s.last)
	}
	term, err := s.Term(applied)
	if err != nil {
		return fmt.Errorf("replica: shard %d: term of applied index %d: %w", shard, applied, err)
	}
	b := db.NewBatch()
	defer b.Close()
	snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(applied), Term: new(term),
		ConfState: &pb.ConfState{Voters: []uint64{self}}}}
	if err := s.applySnapshot(b, snap); err != nil {
		return err
	}
	hs := &pb.HardState{Term: new(max(s.hs.GetTerm(), term) + 1), Vote: new(uint64(0)), Commit: new(applied)}
	if err := s.setHardState(b, hs); err != nil { // a new term: stored
		return err
	}
	return b.Commit(pebble.Sync)
}

// StoredState is a replica's raft state as stored in its node's store (Inspect).
type StoredState struct {
	Term, Vote, Commit uint64 // the hard state, its commit raised to what the log proves committed
	// FirstIndex and LastIndex bound the log held (FirstIndex > LastIndex: none, all compacted).
	FirstIndex, LastIndex uint64
	LastTerm              uint64 // the term of the entry at LastIndex (of the snapshot, when compacted)
	// Voters and Learners: the configuration the replica last applied (a joint configuration's
	// outgoing voters and pending learners included).
	Voters, Learners []uint64
}

// StoredMembers reads the voters and learners of shard's stored configuration from db (none
// for a shard never stored), as Inspect does, without reading its log.
func StoredMembers(db *pebble.DB, shard uint32) (voters, learners []uint64, err error) {
	cs, err := loadConfState(db, shard)
	if err != nil {
		return nil, nil, err
	}
	st := StoredState{}
	st.setMembers(cs)
	return st.Voters, st.Learners, nil
}

// Inspect reads shard's raft state from db without changing it: for a group that is not open
// (an offline look at a stopped node's store), or one that is, as last stored.
func Inspect(db *pebble.DB, shard uint32) (StoredState, error) {
	s, err := openStorage(db, shard)
	if err != nil {
		return StoredState{}, err
	}
	st := StoredState{Term: s.hs.GetTerm(), Vote: s.hs.GetVote(), Commit: s.hs.GetCommit(),
		FirstIndex: s.truncIdx + 1, LastIndex: s.last}
	if st.LastTerm, err = s.Term(s.last); err != nil {
		return StoredState{}, fmt.Errorf("replica: the term of shard %d's last entry %d: %w", shard, s.last, err)
	}
	st.setMembers(s.cs)
	return st, nil
}

// setMembers sets st's Voters and Learners from cs, a joint configuration's outgoing voters
// and pending learners included, sorted.
func (st *StoredState) setMembers(cs *pb.ConfState) {
	for _, ids := range [][]uint64{cs.GetVoters(), cs.GetVotersOutgoing()} {
		for _, id := range ids {
			if !slices.Contains(st.Voters, id) {
				st.Voters = append(st.Voters, id)
			}
		}
	}
	for _, ids := range [][]uint64{cs.GetLearners(), cs.GetLearnersNext()} {
		for _, id := range ids {
			if !slices.Contains(st.Learners, id) {
				st.Learners = append(st.Learners, id)
			}
		}
	}
	slices.Sort(st.Voters)
	slices.Sort(st.Learners)
}

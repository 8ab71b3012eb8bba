package replica

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/raft/v3/raftpb"
)

const (
	snapMagic   = "SHS1"
	snapTagKV   = 1
	snapTagEnd  = 0
	maxSnapItem = 64 << 20 // largest key or value accepted in a snapshot stream
)

// WriteSnapshot streams the shard's state keyspace, read from a consistent Pebble snapshot, in
// the framed format of doc.go. The data may be ahead of snap's index (never behind).
func (h *Host) WriteSnapshot(shard uint32, snap *pb.Snapshot, w io.Writer) error {
	h.mu.Lock()
	g, closed := h.mu.groups[shard], h.mu.closed
	if !closed {
		h.snaps.Add(1)
	}
	h.mu.Unlock()
	if closed {
		return ErrStopped
	}
	defer h.snaps.Done()
	if g == nil {
		return fmt.Errorf("replica: unknown shard %d", shard)
	}
	lo, hi := g.sm.Span()
	dbs := h.db.NewSnapshot()
	defer dbs.Close()
	it, err := dbs.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	defer it.Close()

	dig := xxhash.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, dig), 64<<10)
	var hdr []byte
	hdr = append(hdr, snapMagic...)
	hdr = binary.BigEndian.AppendUint32(hdr, shard)
	hdr = binary.BigEndian.AppendUint64(hdr, snap.GetMetadata().GetIndex())
	hdr = binary.BigEndian.AppendUint64(hdr, snap.GetMetadata().GetTerm())
	hdr = binary.AppendUvarint(hdr, uint64(len(lo)))
	hdr = append(hdr, lo...)
	hdr = binary.AppendUvarint(hdr, uint64(len(hi)))
	hdr = append(hdr, hi...)
	if _, err := bw.Write(hdr); err != nil {
		return err
	}
	var count uint64
	var frame []byte
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		frame = append(frame[:0], snapTagKV)
		frame = binary.AppendUvarint(frame, uint64(len(it.Key())))
		frame = append(frame, it.Key()...)
		frame = binary.AppendUvarint(frame, uint64(len(v)))
		frame = append(frame, v...)
		if _, err := bw.Write(frame); err != nil {
			return err
		}
		count++
		if count%1024 == 0 {
			select {
			case <-h.stop:
				return ErrStopped
			default:
			}
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	trailer := binary.BigEndian.AppendUint64([]byte{snapTagEnd}, count)
	if _, err := bw.Write(trailer); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if _, err := w.Write(binary.BigEndian.AppendUint64(nil, dig.Sum64())); err != nil {
		return err
	}
	h.metrics.SnapshotsSent.Inc()
	return nil
}

// snapReader reads a snapshot stream while hashing it.
type snapReader struct {
	r   *bufio.Reader
	dig *xxhash.Digest
}

func (s *snapReader) ReadByte() (byte, error) {
	c, err := s.r.ReadByte()
	if err == nil {
		_, _ = s.dig.Write([]byte{c})
	}
	return c, err
}

func (s *snapReader) full(n uint64) ([]byte, error) {
	if n > maxSnapItem {
		return nil, fmt.Errorf("%w: item of %d bytes", ErrBadSnapshot, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.r, b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	_, _ = s.dig.Write(b)
	return b, nil
}

func (s *snapReader) uvarint() (uint64, error) {
	v, err := binary.ReadUvarint(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	return v, nil
}

func (s *snapReader) bytesField() ([]byte, error) {
	n, err := s.uvarint()
	if err != nil {
		return nil, err
	}
	return s.full(n)
}

// ReceiveSnapshot reads and verifies a whole snapshot stream for m (a MsgSnap), then, on the
// loop goroutine: creates the group with the factory if it is unknown, replaces the state
// span (one synced batch) and reloads the state machine when the snapshot is ahead of the
// local state, and steps m into the group, which then resets its log to the snapshot.
func (h *Host) ReceiveSnapshot(m ShardMessage, r io.Reader) error {
	if m.Msg.GetType() != pb.MsgSnap {
		return fmt.Errorf("replica: ReceiveSnapshot of a %v message", m.Msg.GetType())
	}
	md := m.Msg.GetSnapshot().GetMetadata()
	sr := &snapReader{r: bufio.NewReaderSize(r, 64<<10), dig: xxhash.New()}
	fixed, err := sr.full(4 + 4 + 8 + 8)
	if err != nil {
		return err
	}
	if string(fixed[:4]) != snapMagic {
		return fmt.Errorf("%w: bad magic", ErrBadSnapshot)
	}
	shard, index := binary.BigEndian.Uint32(fixed[4:]), binary.BigEndian.Uint64(fixed[8:])
	if shard != m.Shard || index != md.GetIndex() {
		return fmt.Errorf("%w: stream is shard %d index %d, message is shard %d index %d",
			ErrBadSnapshot, shard, index, m.Shard, md.GetIndex())
	}
	lo, err := sr.bytesField()
	if err != nil {
		return err
	}
	hi, err := sr.bytesField()
	if err != nil {
		return err
	}
	data := h.db.NewBatch()
	defer data.Close()
	var count uint64
	for {
		tag, err := sr.ReadByte()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if tag == snapTagEnd {
			break
		}
		if tag != snapTagKV {
			return fmt.Errorf("%w: bad frame tag %d", ErrBadSnapshot, tag)
		}
		k, err := sr.bytesField()
		if err != nil {
			return err
		}
		v, err := sr.bytesField()
		if err != nil {
			return err
		}
		if bytes.Compare(k, lo) < 0 || bytes.Compare(k, hi) >= 0 {
			return fmt.Errorf("%w: key %q outside the span", ErrBadSnapshot, k)
		}
		if err := data.Set(k, v, nil); err != nil {
			return err
		}
		count++
	}
	cnt, err := sr.full(8)
	if err != nil {
		return err
	}
	sum := sr.dig.Sum64()
	var want [8]byte
	if _, err := io.ReadFull(sr.r, want[:]); err != nil {
		return fmt.Errorf("%w: missing checksum: %v", ErrBadSnapshot, err)
	}
	if binary.BigEndian.Uint64(want[:]) != sum {
		return fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if binary.BigEndian.Uint64(cnt) != count {
		return fmt.Errorf("%w: %d records, trailer says %d", ErrBadSnapshot, count, binary.BigEndian.Uint64(cnt))
	}
	h.metrics.SnapshotsReceived.Inc()

	return h.call(noCancel, func() error {
		g, err := h.groupFor(m.Shard)
		if err != nil {
			return err
		}
		if glo, ghi := g.sm.Span(); !bytes.Equal(glo, lo) || !bytes.Equal(ghi, hi) {
			return fmt.Errorf("%w: span differs from the local state machine's", ErrBadSnapshot)
		}
		if index > max(g.sm.Applied(), g.st.applied, g.st.hs.GetCommit()) {
			b := h.db.NewBatch()
			if err := b.DeleteRange(lo, hi, nil); err != nil {
				return err
			}
			if err := b.Apply(data, nil); err != nil {
				return err
			}
			if err := b.Commit(pebble.Sync); err != nil {
				return err
			}
			if err := g.sm.Reload(); err != nil {
				return fmt.Errorf("replica: shard %d: reload after snapshot: %w", m.Shard, err)
			}
			if g.sm.Applied() < index {
				return errors.New("replica: snapshot state is behind its metadata")
			}
		}
		if err := g.rn.Step(m.Msg); err != nil {
			h.log.Debug("raft step snapshot", "shard", m.Shard, "err", err)
		}
		return nil
	})
}

var noCancel = context.Background()

package membership

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// MaxMetaSize is memberlist's limit on a node's metadata (memberlist.MetaMaxSize).
const MaxMetaSize = 512

// metaVersion is the format version written by EncodeMeta. Versions are
// append-only: a later version may only add fields after the last one.
const metaVersion = 1

// Meta is what a member gossips about itself.
type Meta struct {
	NodeID          uint64 // raft ID of the node; never 0 for a started member
	Name            string // node name, also the memberlist node name
	Zone            string // failure domain
	GRPCAddr        string // host:port for clients and peers
	HTTPAddr        string // host:port for metrics and health; "" when disabled
	ClusterID       string // "" for a fresh node that has not joined a cluster yet
	Version         string // software version
	Shards          uint32 // shard count of the cluster (0 = unknown)
	Replication     uint32 // replication factor of the cluster (0 = unknown)
	Decommissioning bool   // the node is draining its replicas
	// Stopping: the node is handing off its leaderships before a planned stop; no leadership
	// is moved to it.
	Stopping bool
	// ShardFormat is the highest shard format the node's version applies (shard.MaxFormat);
	// 0 from versions before it was gossiped, which apply format 1 only.
	ShardFormat uint64
	// ReplicationEpoch counts the changes made to Replication since the cluster was created
	// (shoal cluster set-replication): a node adopts a member's factor of a higher epoch, or
	// of the same epoch and larger, so that every node settles on one.
	ReplicationEpoch uint64
	// FollowsReplication is set by DecodeMeta when the member's version gossips
	// ReplicationEpoch, and so follows changes of the factor; EncodeMeta always writes it.
	FollowsReplication bool
	// DiskLow: the node's data directory has less free space than its --min-free-disk; a shard
	// most of whose voters say so refuses appends (versions before it gossip none, and are
	// read as having room).
	DiskLow bool
	// DiskSlow: the node's disk syncs far slower than the other members' (node/diskspeed.go);
	// no leadership is moved to it, and it hands over those it holds (versions before it
	// gossip none, and are read as healthy).
	DiskSlow bool
	// SyncMicros is the mean duration of the node's write-ahead log syncs over its last
	// measured window, in microseconds (0: unknown, from a node with no syncs to measure or of
	// a version before it).
	SyncMicros uint64
}

// MetaTooLongError is returned by EncodeMeta, Start and UpdateMeta when the
// encoded metadata exceeds MaxMetaSize. Is(ErrMetaTooLong).
type MetaTooLongError struct {
	Size, Limit int // bytes
}

func (e *MetaTooLongError) Error() string {
	return fmt.Sprintf("membership: encoded meta is %d bytes, limit %d", e.Size, e.Limit)
}

// Is reports whether target is ErrMetaTooLong.
func (e *MetaTooLongError) Is(target error) bool { return target == ErrMetaTooLong }

const (
	flagDecommissioning = 1 << 0
	flagStopping        = 1 << 1
	flagDiskLow         = 1 << 2
	flagDiskSlow        = 1 << 3
)

// EncodeMeta encodes m in the versioned binary format described in the
// package documentation. It returns a *MetaTooLongError when the result
// exceeds MaxMetaSize.
func EncodeMeta(m Meta) ([]byte, error) {
	b := make([]byte, 0, 64+len(m.Name)+len(m.Zone)+len(m.GRPCAddr)+len(m.HTTPAddr)+len(m.ClusterID)+len(m.Version))
	b = append(b, metaVersion)
	b = binary.AppendUvarint(b, m.NodeID)
	for _, s := range []string{m.Name, m.Zone, m.GRPCAddr, m.HTTPAddr, m.ClusterID, m.Version} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(m.Shards))
	b = binary.AppendUvarint(b, uint64(m.Replication))
	var flags byte
	if m.Decommissioning {
		flags |= flagDecommissioning
	}
	if m.Stopping {
		flags |= flagStopping
	}
	if m.DiskLow {
		flags |= flagDiskLow
	}
	if m.DiskSlow {
		flags |= flagDiskSlow
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, m.ShardFormat)
	b = binary.AppendUvarint(b, m.ReplicationEpoch)
	b = binary.AppendUvarint(b, m.SyncMicros)
	if len(b) > MaxMetaSize {
		return nil, &MetaTooLongError{Size: len(b), Limit: MaxMetaSize}
	}
	return b, nil
}

// errMetaCorrupt is wrapped by DecodeMeta's errors.
var errMetaCorrupt = errors.New("membership: corrupt meta")

// DecodeMeta decodes metadata written by EncodeMeta of this or a later
// version (trailing fields it does not know are ignored). It never panics.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty", errMetaCorrupt)
	}
	if len(b) > MaxMetaSize {
		return m, &MetaTooLongError{Size: len(b), Limit: MaxMetaSize}
	}
	if b[0] == 0 {
		return m, fmt.Errorf("%w: version 0", errMetaCorrupt)
	}
	d := decoder{b: b[1:]}
	m.NodeID = d.uvarint("node ID")
	for _, p := range []struct {
		dst  *string
		name string
	}{{&m.Name, "name"}, {&m.Zone, "zone"}, {&m.GRPCAddr, "gRPC address"}, {&m.HTTPAddr, "HTTP address"}, {&m.ClusterID, "cluster ID"}, {&m.Version, "version"}} {
		*p.dst = d.string(p.name)
	}
	m.Shards = d.uint32("shards")
	m.Replication = d.uint32("replication")
	flags := d.byte("flags")
	m.Decommissioning = flags&flagDecommissioning != 0
	m.Stopping = flags&flagStopping != 0
	m.DiskLow = flags&flagDiskLow != 0
	m.DiskSlow = flags&flagDiskSlow != 0
	if d.err == nil && len(d.b) > 0 {
		m.ShardFormat = d.uvarint("shard format")
	}
	if d.err == nil && len(d.b) > 0 {
		m.ReplicationEpoch = d.uvarint("replication epoch")
		m.FollowsReplication = true
	}
	if d.err == nil && len(d.b) > 0 {
		m.SyncMicros = d.uvarint("sync duration")
	}
	if d.err != nil {
		return Meta{}, d.err
	}
	return m, nil
}

// decoder reads fields until the first error, which sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(field, why string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", errMetaCorrupt, field, why)
	}
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(field, "bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32(field string) uint32 {
	v := d.uvarint(field)
	if v > math.MaxUint32 {
		d.fail(field, "exceeds 32 bits")
		return 0
	}
	return uint32(v)
}

func (d *decoder) string(field string) string {
	n := d.uvarint(field)
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail(field, "length exceeds data")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	if !utf8.ValidString(s) {
		d.fail(field, "invalid UTF-8")
		return ""
	}
	return s
}

func (d *decoder) byte(field string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(field, "truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

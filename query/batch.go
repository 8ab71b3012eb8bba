package query

import (
	"bytes"
	"encoding/binary"
	"io"

	"github.com/cockroachdb/pebble/v2"
)

// Key layout of a projection database:
//
//	+--------+------------------+---------------------------------------+
//	| prefix | rest             | value                                 |
//	+--------+------------------+---------------------------------------+
//	| 'm'    | model key        | model value (the handler's writes)    |
//	| 'c'    | shard (4 BE)     | next shard position to read (8 BE)    |
//	| 'i'    | (none)           | info: uvarint shards, cluster ID      |
//	| 'f'    | (none)           | filters the checkpoint was built      |
//	|        |                  | under (filters.go)                    |
//	+--------+------------------+---------------------------------------+
//
// Prefixes are append-only. Model keys are opaque to the package.
const (
	prefixModel      = 'm'
	prefixCheckpoint = 'c'
	prefixInfo       = 'i'
	prefixFilters    = 'f'
)

func modelKey(k []byte) []byte {
	out := make([]byte, 1+len(k))
	out[0] = prefixModel
	copy(out[1:], k)
	return out
}

func checkpointKey(shard uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixCheckpoint}, shard)
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// or nil when there is none.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// Batch is the handler's view of the read model while it handles one page:
// reads see the committed model plus this batch's earlier writes; writes
// commit together with the page's checkpoint, or not at all. Valid only
// during the Handle call; not safe for concurrent use.
type Batch struct{ b *pebble.Batch }

// Get returns a copy of key's value; ok is false when absent.
func (b *Batch) Get(key []byte) (value []byte, ok bool, err error) {
	return get(b.b.Get, key)
}

// Set writes key = value (both copied).
func (b *Batch) Set(key, value []byte) error { return b.b.Set(modelKey(key), value, nil) }

// Delete removes key.
func (b *Batch) Delete(key []byte) error { return b.b.Delete(modelKey(key), nil) }

// DeletePrefix removes every key starting with prefix (all keys when empty).
func (b *Batch) DeletePrefix(prefix []byte) error {
	lo := modelKey(prefix)
	hi := prefixEnd(lo)
	return b.b.DeleteRange(lo, hi, nil)
}

func get(fn func([]byte) ([]byte, io.Closer, error), key []byte) ([]byte, bool, error) {
	v, closer, err := fn(modelKey(key))
	if err == pebble.ErrNotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := bytes.Clone(v)
	if out == nil {
		out = []byte{}
	}
	return out, true, closer.Close()
}

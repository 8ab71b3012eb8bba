package node

import (
	"errors"

	"github.com/shoaldb/shoal/shard"
)

// Read pages: a ReadResponse carries at most pageEvents events and pageBytes bytes of payload,
// but for one event larger than that, which goes alone (pageFull).
const (
	pageEvents = 256
	// pageBytes is small enough that a read whose caller stops taking pages holds little (up
	// to three pages: pageFull), and large enough that a page's cost (a message, a Pebble
	// iterator's seek) is small beside its events'.
	pageBytes = 256 << 10
)

// eventSize is what an event counts against a page's pageBytes: its payload and names, and
// 64 bytes for its other fields and their encoding.
func eventSize(e *shard.RecordedEvent) int {
	return len(e.Data) + len(e.Metadata) + len(e.Type) + len(e.Stream) + len(e.ContentType) + 64
}

var errPageFull = errors.New("node: page full")

// pageFull tells whether a page of n events and size bytes of payload has no room for an event
// of es bytes: a page stays within pageBytes, but for an event larger than that, which goes
// alone. (A read whose caller stops taking pages holds up to three: the one gRPC has queued,
// the next, and its encoding, which docs/operations.md counts.)
func pageFull(n, size, es int) bool { return n > 0 && size+es > pageBytes }

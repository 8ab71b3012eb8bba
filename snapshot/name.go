package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/shoaldb/shoal/client"
)

const (
	// DefaultPrefix is the companion-stream prefix used when Options.Prefix
	// is empty. Streams whose names start with it are reserved for snapshots.
	DefaultPrefix = "snapshot"

	// maxStreamNameLen mirrors shard.MaxStreamNameLen (bytes); snapshot does
	// not import shard (the client side must not depend on the server).
	maxStreamNameLen = 512

	directSep = "~" // Prefix + "~" + stream
	hashedSep = "#" // Prefix + "#" + hex(sha256(stream)), for long names
)

// CompanionStream returns the name of the stream that holds stream's
// snapshots under prefix ("" means DefaultPrefix):
//
//	prefix + "~" + stream                    when that fits in 512 bytes
//	prefix + "#" + hex(sha256(stream))       otherwise (64 hex digits)
//
// The mapping is injective: the two forms differ at byte len(prefix), and
// the direct form keeps the whole source name. Since every name not starting
// with '$' is a legal user stream, no scheme can be unreachable for users;
// instead streams starting with prefix+"~" or prefix+"#" are reserved, and
// every record repeats its source stream in the header, so a foreign or
// mixed-up stream is detected (CorruptError) rather than trusted.
func CompanionStream(prefix, stream string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if len(prefix)+len(directSep)+len(stream) <= maxStreamNameLen {
		return prefix + directSep + stream
	}
	sum := sha256.Sum256([]byte(stream))
	return prefix + hashedSep + hex.EncodeToString(sum[:])
}

// checkStream refuses a source stream name that no stream can have (shard.CheckStreamName's
// rules: 1..512 bytes of valid UTF-8 without control characters, not starting with '$'), as
// the server refuses it: CompanionStream maps some such names to legal companion names (the
// empty name and "$…" to the direct form, a name past the limit to the hashed form), where a
// save would write a record for an aggregate no Load can read, and one Latest takes for
// corrupt when the name is too long for a record's header.
func checkStream(stream string) error {
	const limit = "1..512 bytes of valid UTF-8 without control characters, not starting with '$'"
	bad := func(format string, args ...any) error {
		return &client.InvalidArgumentError{Field: "stream", Limit: limit, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case stream == "":
		return bad("the stream name is empty")
	case len(stream) > maxStreamNameLen:
		return bad("the stream name is %d bytes", len(stream))
	case stream[0] == '$':
		return bad("the stream name starts with '$' (reserved for system streams)")
	case !utf8.ValidString(stream):
		return bad("the stream name is not valid UTF-8")
	case strings.IndexFunc(stream, unicode.IsControl) >= 0:
		return bad("the stream name holds a control character")
	}
	return nil
}

// checkPrefix validates Options.Prefix against the stream-name rules.
func checkPrefix(p string) error {
	const limit = maxStreamNameLen - len(hashedSep) - 2*sha256.Size
	switch {
	case len(p) > limit:
		return &ConfigError{Field: "Prefix", Reason: fmt.Sprintf("at most %d bytes", limit)}
	case strings.HasPrefix(p, "$"):
		return &ConfigError{Field: "Prefix", Reason: "must not start with '$' (reserved for the server)"}
	case !utf8.ValidString(p):
		return &ConfigError{Field: "Prefix", Reason: "must be valid UTF-8"}
	case strings.IndexFunc(p, unicode.IsControl) >= 0:
		return &ConfigError{Field: "Prefix", Reason: "must not contain control characters"}
	}
	return nil
}

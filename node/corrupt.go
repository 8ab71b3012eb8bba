package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shoaldb/shoal/shard"
)

// ExitCorrupt is the exit status of a server that found corrupt data in its data directory
// (EX_DATAERR): a checksum that does not match in one of Pebble's files, a write-ahead log or
// manifest that cannot be replayed, a shard record that cannot be decoded. Unlike a stall or
// a failed write (ExitDiskStall), restarting does not help: the node must start again from an
// empty directory (docs/operations.md, "Corrupt data").
const ExitCorrupt = 65

// ErrCorruptData marks a start refused because the data directory holds corrupt data.
var ErrCorruptData = errors.New("node: the data directory holds corrupt data")

// corruptAdvice is what an operator does about corrupt data, the end of every report of it.
const corruptAdvice = "restarting will not help: while the cluster's other replicas of its shards are healthy " +
	"(shoal cluster status), move the data directory away, keeping it until the cluster is back to full " +
	"replication, and start the node with an empty one and --join (docs/operations.md, \"Corrupt data\")"

// isCorrupt reports whether err says that stored data is corrupt: Pebble's corruption
// errors (a checksum mismatch, a write-ahead log or manifest it cannot replay) or a shard
// record that does not decode.
func isCorrupt(err error) bool {
	return pebble.IsCorruptionError(err) || errors.Is(err, shard.ErrCorrupt) || errors.Is(err, errMissingFile)
}

// errMissingFile marks a store that names a file it does not hold.
var errMissingFile = errors.New("a file of the store is missing")

// corruptStart wraps err, a failure to open the store in dir, with ErrCorruptData and the
// advice when it is corruption; other errors are returned as they are.
func corruptStart(dir string, err error) error {
	if err == nil || !isCorrupt(err) {
		return err
	}
	return fmt.Errorf("%w (%s): %w; %s", ErrCorruptData, dir, err, corruptAdvice)
}

// onDataCorruption ends the process when Pebble finds corrupt data in a file while the node
// runs (a block whose checksum does not match, read by a client's read, an apply or a
// compaction): one log line naming the file and the shards its keys belong to, and status
// ExitCorrupt. Going on would fail every read and compaction of that file again; the cluster
// handles the exit as a crash, electing other leaders and replacing the node's replicas after
// --dead-after. Pebble calls it synchronously on the path that found the damage. A store
// opened read-only (node inspect) goes on: the read that found the damage fails with it.
func onDataCorruption(log *slog.Logger, mode pebbleMode) func(pebble.DataCorruptionInfo) {
	return func(info pebble.DataCorruptionInfo) {
		if mode == pebbleReadOnly {
			return
		}
		shards, detail := shardsOfKeys(info.Bounds.Start, info.Bounds.End.Key), firstLine(info.Details)
		log.Error("corrupt data in the data directory: ending the process; "+corruptAdvice,
			"file", info.Path, "shards", shards, "err", detail, "exit_status", ExitCorrupt)
		fmt.Fprintf(os.Stderr, "shoal: corrupt data in %s (shards %s): %s\n", info.Path, shards, detail)
		os.Exit(ExitCorrupt)
	}
}

// firstLine is err's message up to its first line break, at most 300 bytes: Pebble's
// corruption details may carry a stack trace.
func firstLine(err error) string {
	msg := fmt.Sprint(err)
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	return msg
}

// shardsOfKeys names the shards whose keys lie from lo to hi (lo <= hi), a shard's state ('S')
// or raft ('R') keys: "24", "3 to 7", "the raft logs of 30 and above, the state of 0 to 2",
// or "unknown" for keys of neither kind.
func shardsOfKeys(lo, hi []byte) string {
	shardOf := func(k []byte) (uint32, bool) {
		if len(k) < 5 || k[0] != 'S' && k[0] != 'R' {
			return 0, false
		}
		return binary.BigEndian.Uint32(k[1:5]), true
	}
	a, aok := shardOf(lo)
	b, bok := shardOf(hi)
	switch {
	case !aok && !bok:
		return "unknown"
	case !bok || aok && a == b:
		return fmt.Sprint(a)
	case !aok:
		return fmt.Sprint(b)
	case lo[0] != hi[0]: // from raft keys ('R') to state keys ('S')
		return fmt.Sprintf("the raft logs of %d and above, the state of 0 to %d", a, b)
	}
	return fmt.Sprintf("%d to %d", a, b)
}

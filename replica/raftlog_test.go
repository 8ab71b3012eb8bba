package replica

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/shoaldb/shoal/internal/lockedbuf"
)

// TestRaftLogNamesShard: raft's lines name the shard of the group that wrote them, since raft's
// own text names only the replica's raft ID, which every group of a node shares.
func TestRaftLogNamesShard(t *testing.T) {
	var buf lockedbuf.Buffer
	r := &raftLogger{l: slog.New(slog.NewTextHandler(&buf, nil)), shard: 7}
	r.Warningf("%x stepped down to follower since quorum is not active", uint64(0x44baacb13676eef0))
	if got := buf.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "shard=7") ||
		!strings.Contains(got, "src=raft") {
		t.Fatalf("raft's warning logged as %q, want level WARN with shard=7 and src=raft", got)
	}
}

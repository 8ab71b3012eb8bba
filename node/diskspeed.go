package node

import (
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/shoaldb/shoal/internal/membership"
)

// A disk can slow down without failing (a worn or throttled device, a noisy neighbour): its
// syncs take 50–200 ms instead of a few. Raft commits an entry once a majority of the shard's
// voters synced it, so a node with such a disk costs its shards little as a follower; as a
// leader it applies and answers only what its own disk synced, and every shard it leads runs
// at its pace. A review on real processes saw one node of three with 200 ms syncs cut the
// cluster's appends to about a fifth, the shards it led answering in 550 ms against 15 ms for
// the others; the cluster did better with that node killed, and placement handed its
// leaderships back when it restarted, the ring preferring it.
//
// So every node times its write-ahead log's syncs: every diskSpeedEvery it takes their mean
// over the last diskSpeedWindow and gossips it (membership.Meta.SyncMicros). Its disk counts
// as slow (Meta.DiskSlow) while that mean, of slowSyncMinCount syncs or more, passes both
// Config.SlowSync and slowSyncFactor times the fastest other live member's, or while a write or sync of its data directory has been
// pending past diskSlowThreshold (diskWatch.slowNow: a disk that hangs). It counts as healthy
// again once its syncs kept within those bounds for diskSlowClear (windows of too few syncs
// to tell do not count: an idle spell clears nothing). Placement hands a slow node's leaderships to
// voters on healthy disks and gives it none (balanceLeader); its replicas stay, and it goes on
// syncing as a follower, which is what times its disk while it leads nothing.
//
// The mean is compared with the other members' rather than with a bound alone: a leadership
// moved to a node whose disk is as slow gains nothing, and a machine slow as a whole (every
// disk at 30 ms) must not have its leaderships chased around the cluster.
const (
	diskSpeedEvery  = 2 * time.Second
	diskSpeedWindow = 10 * time.Second
	// slowSyncFactor: how many times the fastest other member's mean sync a node's must take
	// (beside Config.SlowSync) for its disk to count as slow.
	slowSyncFactor = 4
	// diskSlowClear: how long a slow disk must keep within bounds to count as healthy again,
	// so that leaderships do not move back and forth with a disk whose speed comes and goes.
	diskSlowClear = 30 * time.Second
	// syncRegossip: a mean sync that changed by less than a quarter since it was last gossiped
	// is gossiped again only after this long (a change of DiskSlow is gossiped at once).
	syncRegossip = 10 * time.Second
	// slowSyncMinCount: a window of fewer syncs says nothing of the disk's speed (one slow sync
	// of a nearly idle node would count it slow for diskSlowClear): it is gossiped as unknown,
	// and neither counts the disk slow nor healthy.
	slowSyncMinCount = 20
	// maxSyncMicros bounds the gossiped mean (an hour), so that gossip's metadata keeps within
	// its limit (withSettingsFits).
	maxSyncMicros = uint64(time.Hour / time.Microsecond)
)

// diskSpeed is a node's timing of its own write-ahead log syncs (checkDiskSpeed, whose
// goroutine alone touches it).
type diskSpeed struct {
	// samples holds the WAL's sync count and total duration at each of the last readings,
	// oldest first, covering diskSpeedWindow.
	samples []syncSample
	slow    bool // the disk counts as slow (gossiped as Meta.DiskSlow)
	// lastSlow is when the disk last passed the bounds; gossiped, when SyncMicros was last
	// gossiped.
	lastSlow, gossiped time.Time
}

type syncSample struct {
	count uint64
	total time.Duration
}

// walSyncs returns the count and total duration of the write-ahead log's syncs so far.
func (n *Node) walSyncs() (syncSample, bool) {
	h := n.db.Metrics().LogWriter.FsyncLatency
	if h == nil {
		return syncSample{}, false
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		return syncSample{}, false
	}
	return syncSample{count: m.GetHistogram().GetSampleCount(), total: time.Duration(m.GetHistogram().GetSampleSum())}, true // Pebble observes nanoseconds
}

// windowMean records s as the latest reading and returns the mean sync over the readings
// diskSpeedWindow covers, and how many syncs it is the mean of; 0 when no sync completed in it.
func (d *diskSpeed) windowMean(s syncSample) (time.Duration, uint64) {
	keep := int(diskSpeedWindow/diskSpeedEvery) + 1
	d.samples = append(d.samples, s)
	if len(d.samples) > keep {
		d.samples = append(d.samples[:0], d.samples[len(d.samples)-keep:]...)
	}
	first := d.samples[0]
	if s.count <= first.count {
		return 0, 0
	}
	n := s.count - first.count
	return (s.total - first.total) / time.Duration(n), n
}

// diskSlowNow tells whether a disk whose mean sync over n syncs is mean counts as slow beside
// fastest, the fastest mean of the other live members (0: none known), with bound
// Config.SlowSync (not positive: never by speed), or stalled (an operation pending past
// diskSlowThreshold).
func diskSlowNow(mean time.Duration, n uint64, fastest, bound time.Duration, stalled bool) bool {
	if stalled {
		return true
	}
	return bound > 0 && n >= slowSyncMinCount && fastest > 0 && mean > bound && mean > slowSyncFactor*fastest
}

// startDiskSpeed times the disk's syncs every diskSpeedEvery until Close, on a goroutine of
// its own: the free space's reading may hang on a hung file system, and must not hold the
// check that counts the hang.
func (n *Node) startDiskSpeed() { n.everyUntilClosed(diskSpeedEvery, n.checkDiskSpeed) }

// decide returns whether the disk counts as slow now, was it did at the last check, for a
// window of count syncs of mean mean (0: too few to tell), and the rest as diskSlowNow takes
// them. Only windows that tell, with a mean of the other members' to compare, count towards
// clearing it (with no bound, only hangs count, and the time since the last one).
func (d *diskSpeed) decide(now time.Time, was bool, mean time.Duration, count uint64, fastest, bound time.Duration, stalled bool) bool {
	switch {
	case diskSlowNow(mean, count, fastest, bound, stalled):
		d.lastSlow = now
		return true
	case bound > 0 && (mean == 0 || fastest == 0):
		// Too few syncs to tell: a slow disk stays slow (an idle spell shows nothing of it,
		// and the next burst would run at its pace), and its time to clear waits.
		if was {
			d.lastSlow = now
		}
		return was
	}
	return was && now.Sub(d.lastSlow) < diskSlowClear
}

// checkDiskSpeed times the log's syncs of the last window, decides whether the disk counts as
// slow and gossips both (diskSpeed). Every diskSpeedEvery (startDiskSpeed).
func (n *Node) checkDiskSpeed(now time.Time) {
	s, ok := n.walSyncs()
	if !ok {
		return
	}
	d := &n.speed
	mean, count := d.windowMean(s)
	if count < slowSyncMinCount {
		mean = 0 // too few to tell
	}
	n.metrics.walSyncMean.Set(mean.Seconds())
	ml := n.gossip()
	if ml == nil {
		return
	}
	var fastest time.Duration
	for _, m := range ml.Members() {
		if m.Alive && m.NodeID != n.dir.id.NodeID && m.SyncMicros > 0 {
			if t := time.Duration(m.SyncMicros) * time.Microsecond; fastest == 0 || t < fastest {
				fastest = t
			}
		}
	}
	stall, stalled := n.disk.slowNow()
	was := d.slow
	slow := d.decide(now, was, mean, count, fastest, n.cfg.SlowSync, stalled)
	if slow != was {
		d.slow = slow
		if slow {
			n.metrics.diskSlow.Set(1)
			if stalled {
				n.log.Warn("the disk counts as slow: its leaderships go to voters on healthy disks", "stall", stall.String())
			} else {
				n.log.Warn("the disk counts as slow: its leaderships go to voters on healthy disks",
					"mean_sync", mean.Round(time.Microsecond), "fastest_member_sync", fastest.Round(time.Microsecond),
					"slow_sync", n.cfg.SlowSync)
			}
		} else {
			n.metrics.diskSlow.Set(0)
			n.log.Info("the disk counts as healthy again: it may lead shards", "mean_sync", mean.Round(time.Microsecond),
				"fastest_member_sync", fastest.Round(time.Microsecond), "within_bounds_for", diskSlowClear)
		}
	}
	micros := min(uint64(mean/time.Microsecond), maxSyncMicros)
	self := ml.Self()
	if self.DiskSlow == slow && !syncChanged(self.SyncMicros, micros, now.Sub(d.gossiped)) {
		return
	}
	if err := ml.UpdateMeta(func(m *membership.Meta) { m.DiskSlow, m.SyncMicros = slow, micros }); err != nil {
		n.log.Warn("gossiping the disk's speed; trying again shortly", "slow", slow, "err", err)
		return
	}
	d.gossiped = now
}

// syncChanged tells whether a mean sync of now microseconds is worth gossiping when was was
// gossiped ago: a change by a quarter or more, or any change after syncRegossip.
func syncChanged(was, now uint64, ago time.Duration) bool {
	if was == now {
		return false
	}
	return 4*(max(was, now)-min(was, now)) >= was || ago >= syncRegossip
}

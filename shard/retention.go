package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// RetentionPolicy is a retention policy the shard keeps for the streams whose names start with
// Prefix: which of their events its leader truncates, for good, as it finds them (node runs the
// policies; the shard stores them and works out the truncations, RetentionCuts). A stream is
// governed by the policy of the longest prefix its name starts with. A live stream keeps its
// last event whatever the policy says, so that its versions go on.
type RetentionPolicy struct {
	Prefix string // "": every stream
	// KeepLast keeps a live stream's last KeepLast events (0: no limit by count).
	KeepLast uint64
	// MaxAge keeps the events committed within MaxAge (0: no limit by age): older ones go from
	// the first on, up to the first one that is not that old.
	MaxAge time.Duration
	// Deleted removes the events deletes hid: every event of a deleted stream, and a live
	// stream's from before a soft delete.
	Deleted bool
	// Set is when the policy was set (unix nanos, the proposer's clock).
	Set int64
}

// removesNothing reports whether p would remove no event.
func (p *RetentionPolicy) removesNothing() bool {
	return p.KeepLast == 0 && p.MaxAge == 0 && !p.Deleted
}

func (p RetentionPolicy) String() string {
	var parts []string
	if p.KeepLast > 0 {
		parts = append(parts, fmt.Sprintf("keep-last %d", p.KeepLast))
	}
	if p.MaxAge > 0 {
		parts = append(parts, "max-age "+p.MaxAge.String())
	}
	if p.Deleted {
		parts = append(parts, "deleted")
	}
	if len(parts) == 0 {
		parts = append(parts, "removes nothing")
	}
	return fmt.Sprintf("%q: %s", p.Prefix, strings.Join(parts, ", "))
}

// SetRetentionCommand sets the retention policy of Policy.Prefix, replacing any it had (setting
// the same policy again only moves its Set time, which ends the truncations under way for the
// old one: ErrPolicyChanged), or with Remove removes it (Policy's other fields then zero;
// removing one the shard does not have changes nothing). Needs the shard at Format6.
type SetRetentionCommand struct {
	Policy RetentionPolicy
	Remove bool
}

// RetentionResult is Apply's verdict for a SetRetentionCommand: the number of policies the
// shard holds after it.
type RetentionResult struct {
	Policies int
}

// MaxRetentionPolicies bounds the retention policies of a shard, so that evaluating them stays
// cheap; a cluster sets the same ones in every shard.
const MaxRetentionPolicies = 64

var limitRetentionPrefix = fmt.Sprintf("0..%d bytes of UTF-8, no control characters, not starting with '$' (a stream name's start)", MaxListPrefix)

// ValidateRetention returns an *InvalidError naming the field and its limit if c is not a valid
// policy change.
func ValidateRetention(c *SetRetentionCommand) error {
	p := &c.Policy
	switch {
	case len(p.Prefix) > MaxListPrefix:
		return invalid("prefix", limitRetentionPrefix, "too long (%d bytes)", len(p.Prefix))
	case strings.HasPrefix(p.Prefix, "$"):
		return invalid("prefix", limitRetentionPrefix, "starts with '$', as no stream name does")
	}
	if err := checkText("prefix", limitRetentionPrefix, p.Prefix); err != nil {
		return err
	}
	if p.MaxAge < 0 {
		return invalid("max_age", "0 (no limit by age) or more", "%v given", p.MaxAge)
	}
	if c.Remove {
		if !p.removesNothing() {
			return invalid("policy", "none when removing a policy", "keep-last, max-age or deleted given with remove")
		}
		return nil
	}
	if p.removesNothing() {
		return invalid("policy", "keep-last, max-age or deleted", "the policy removes nothing")
	}
	return nil
}

const (
	retentionDeleted byte = 1 // RetentionPolicy.Deleted
	retentionRemove  byte = 2 // SetRetentionCommand.Remove (commands only)
)

// EncodeSetRetention encodes c for a raft entry. It does not validate c (ValidateRetention
// first: a negative MaxAge is encoded as 0).
func EncodeSetRetention(c *SetRetentionCommand) []byte {
	p := &c.Policy
	b := make([]byte, 0, 2+3*binary.MaxVarintLen64+len(p.Prefix)+8)
	b = append(b, cmdSetRetention)
	b = appendString(b, p.Prefix)
	flags := len(b)
	b = encodePolicy(b, p) // the command carries the policy record, with the remove flag
	if c.Remove {
		b[flags] |= retentionRemove
	}
	return b
}

// decodeSetRetention decodes what follows the command byte.
func decodeSetRetention(d *decoder) (*SetRetentionCommand, error) {
	c := &SetRetentionCommand{}
	c.Policy.Prefix = d.string()
	flags := d.byte()
	c.Policy.KeepLast = d.uvarint()
	age := d.uvarint()
	c.Policy.Set = int64(d.uint64())
	if d.err != nil {
		return nil, d.err
	}
	if flags&^(retentionDeleted|retentionRemove) != 0 {
		return nil, unknownEncoding("retention flags %#x", flags)
	}
	if age > math.MaxInt64 {
		return nil, errCommand("max age %d ns", age)
	}
	if len(d.b) != 0 {
		return nil, errCommand("%d trailing bytes", len(d.b))
	}
	c.Policy.MaxAge = time.Duration(age)
	c.Policy.Deleted = flags&retentionDeleted != 0
	c.Remove = flags&retentionRemove != 0
	return c, nil
}

// encodePolicy encodes p as the value of its 'P' key: flags(1) keep-last(uvarint)
// max-age-ns(uvarint) set(8).
func encodePolicy(dst []byte, p *RetentionPolicy) []byte {
	var flags byte
	if p.Deleted {
		flags |= retentionDeleted
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, p.KeepLast)
	dst = binary.AppendUvarint(dst, uint64(max(p.MaxAge, 0)))
	return binary.BigEndian.AppendUint64(dst, uint64(p.Set))
}

func decodePolicy(prefix string, v []byte) (RetentionPolicy, error) {
	d := decoder{b: v}
	flags := d.byte()
	p := RetentionPolicy{Prefix: prefix, KeepLast: d.uvarint()}
	age := d.uvarint()
	p.Set = int64(d.uint64())
	if d.err != nil || len(d.b) != 0 || flags&^retentionDeleted != 0 || age > math.MaxInt64 {
		return RetentionPolicy{}, errCorrupt("retention policy")
	}
	p.MaxAge, p.Deleted = time.Duration(age), flags&retentionDeleted != 0
	return p, nil
}

// applySetRetention sets or removes a retention policy in b.
func (s *Shard) applySetRetention(b *pebble.Batch, c *SetRetentionCommand) (any, error) {
	if s.pendFormat < Format6 {
		return NeedsFormat("a retention policy", Format6, s.id, s.pendFormat), nil
	}
	if err := ValidateRetention(c); err != nil {
		return err, nil
	}
	ps, err := s.policiesIn(b)
	if err != nil {
		return nil, err
	}
	n := len(ps)
	i, has := slices.BinarySearchFunc(ps, c.Policy.Prefix, func(p RetentionPolicy, prefix string) int {
		return strings.Compare(p.Prefix, prefix)
	})
	s.keyBuf = s.keys.policy(s.keyBuf[:0], c.Policy.Prefix)
	switch {
	case c.Remove && has:
		if err := b.Delete(s.keyBuf, nil); err != nil {
			return nil, err
		}
		n--
	case c.Remove:
	case !has && n >= MaxRetentionPolicies:
		return invalid("policies", fmt.Sprintf("at most %d retention policies", MaxRetentionPolicies),
			"shard %d holds %d; remove one first", s.id, n), nil
	default:
		p := c.Policy
		if has {
			// Set names the policy to its truncations (RetentionRef): a new one must differ from
			// the one it replaces even when the proposer's clock went back.
			p.Set = max(p.Set, ps[i].Set+1)
		}
		s.valBuf = encodePolicy(s.valBuf[:0], &p)
		if err := b.Set(s.keyBuf, s.valBuf, nil); err != nil {
			return nil, err
		}
		if !has {
			n++
		}
	}
	return &RetentionResult{Policies: n}, nil
}

// RetentionPolicies returns the shard's committed retention policies in prefix order.
func (s *Shard) RetentionPolicies() ([]RetentionPolicy, error) { return s.policiesIn(s.db) }

// policiesIn returns the retention policies in r (the DB, or the batch being applied) in
// prefix order.
func (s *Shard) policiesIn(r pebble.Reader) ([]RetentionPolicy, error) {
	lo, hi := s.keys.tagSpan(tagPolicy)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	var out []RetentionPolicy
	for valid := it.First(); valid; valid = it.Next() {
		p, err := decodePolicy(string(it.Key()[prefixLen+1:]), it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		out = append(out, p)
	}
	return out, errors.Join(it.Error(), it.Close())
}

// Governing returns the policy among policies with the longest prefix that name starts with.
func Governing(policies []RetentionPolicy, name string) (RetentionPolicy, bool) {
	best, found := RetentionPolicy{}, false
	for _, p := range policies {
		if strings.HasPrefix(name, p.Prefix) && (!found || len(p.Prefix) > len(best.Prefix)) {
			best, found = p, true
		}
	}
	return best, found
}

// RetentionCut is a truncation a retention policy asks of a stream: TruncateCommand.Before,
// which removes readable versions From to Before-1 (none when they are equal) and the Hidden
// events a delete hid.
type RetentionCut struct {
	Stream       string
	State        StreamState // as listed
	From, Before uint64
	Hidden       uint64
	// Policy is the policy that asks for the cut, for TruncateCommand.Policy.
	Policy RetentionRef
}

// Events is the number of events the cut removes.
func (c RetentionCut) Events() uint64 { return c.Before - c.From + c.Hidden }

// CutOptions are the bounds of one RetentionCuts call.
type CutOptions struct {
	// Now is the time the policy is applied at (unix nanos).
	Now int64
	// MinAge keeps every event committed less than MinAge before Now, whatever the policy says
	// (0: none): a cut stops before the first such event, and a deleted stream with one is left
	// for a later call. Retries of an append whose events are gone are answered as a new
	// append (Format7), so retention leaves the events of appends still being retried.
	MinAge time.Duration
	// After and Count: the streams after After, at most Count of them (0: all).
	After string
	Count uint64
	// Stop (nil: never) is asked between streams and events read: once it says true, the scan
	// ends with ErrScanStopped.
	Stop func() bool
	// Enough (nil: never) is asked after each stream's cut is worked out: once it says true,
	// the call returns the cuts so far, with the name of the last stream worked out (a
	// caller's bound on one call's work, under a max-age that reads many events).
	Enough func() bool
}

// RetentionCuts works out the truncations policy p asks of the streams whose names start with
// p.Prefix and come after o.After, up to o.Count of them, in name order, and returns them with
// the last name it looked at ("" once it reached the end). Streams that a policy of a longer
// prefix among all governs are that policy's, and skipped. The cuts come from committed state:
// truncating them with expected version Any is safe with writers running, as appends only add
// later versions and a delete hides what was chosen anyway.
func (s *Shard) RetentionCuts(p RetentionPolicy, all []RetentionPolicy, o CutOptions) ([]RetentionCut, string, error) {
	stop := o.Stop
	if stop == nil {
		stop = func() bool { return false }
	}
	if err := CheckListBounds(p.Prefix, o.After); err != nil {
		return nil, "", err
	}
	var (
		streams []StreamSummary
		last    string
		listed  uint64
	)
	resume, err := s.ListStreams(p.Prefix, o.After, p.Deleted, o.Count, func(m *StreamSummary) error {
		if stop() {
			return ErrScanStopped
		}
		last, listed = m.Name, listed+1
		if g, ok := Governing(all, m.Name); !ok || len(g.Prefix) <= len(p.Prefix) {
			streams = append(streams, *m) // not a longer prefix's
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	switch {
	case resume != "":
		last = resume // stopped early over deleted streams: on after them
	case o.Count == 0 || listed < o.Count:
		last = "" // the end
	}
	var cuts []RetentionCut
	for i := range streams {
		m := &streams[i]
		c, err := s.retentionCut(&p, m, &o, stop)
		if err != nil {
			return nil, "", err
		}
		if c.Events() > 0 {
			cuts = append(cuts, c)
		}
		if o.Enough != nil && i < len(streams)-1 && o.Enough() {
			return cuts, m.Name, nil
		}
	}
	return cuts, last, nil
}

// retentionCut works out the cut policy p asks of stream m (none: no events).
func (s *Shard) retentionCut(p *RetentionPolicy, m *StreamSummary, o *CutOptions, stop func() bool) (RetentionCut, error) {
	before, err := s.retentionBefore(p, m, o.Now, stop)
	if err != nil {
		return RetentionCut{}, err
	}
	c := RetentionCut{Stream: m.Name, State: m.State, From: m.First, Before: before, Hidden: m.Hidden,
		Policy: RetentionRef{Prefix: p.Prefix, Set: p.Set}}
	switch {
	case m.State != StreamLive: // every hidden event goes
		c.From = before
	case before > m.First: // and with them the hidden ones
	case p.Deleted && m.Hidden > 0:
		c.Before = m.First // the hidden events only
	default:
		return RetentionCut{}, nil
	}
	if c.Events() == 0 || o.MinAge <= 0 || o.Now < math.MinInt64+int64(o.MinAge) {
		return c, nil
	}
	// The youngest event the cut removes is its last: when it is younger than MinAge, a live
	// stream's cut stops before its first young event, and any other cut waits.
	cutoff := o.Now - int64(o.MinAge)
	young, err := s.eventYoung(m.id, c.Before-1, cutoff)
	if err != nil || !young {
		return c, err
	}
	if m.State != StreamLive || c.Before <= m.First {
		return RetentionCut{}, nil
	}
	if c.Before, err = s.oldEvents(m.Name, m.First, c.Before, cutoff, stop); err != nil {
		return RetentionCut{}, err
	}
	if c.Before > m.First {
		return c, nil
	}
	// No readable event is old enough; the hidden ones below them may be.
	if !p.Deleted || m.Hidden == 0 || m.First == 0 {
		return RetentionCut{}, nil
	}
	if young, err := s.eventYoung(m.id, m.First-1, cutoff); err != nil || young {
		return RetentionCut{}, err
	}
	c.Before = m.First
	return c, nil
}

// eventYoung reports whether the event at version of stream id, readable or hidden by a
// delete, was committed at or after cutoff (false when it is not stored).
func (s *Shard) eventYoung(id, version uint64, cutoff int64) (bool, error) {
	rec, closer, err := s.db.Get(s.keys.event(nil, id, version))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	var ev RecordedEvent
	if err := decodeRecordHeader(rec, &ev); err != nil {
		return false, err
	}
	return ev.Created >= cutoff, nil
}

// retentionBefore returns the first version of stream m that policy p keeps.
func (s *Shard) retentionBefore(p *RetentionPolicy, m *StreamSummary, now int64, stop func() bool) (uint64, error) {
	if m.State != StreamLive {
		return m.Last + 1, nil // every hidden event, and no version appended since
	}
	before := m.First
	if p.KeepLast > 0 && m.Last+1-m.First > p.KeepLast {
		before = m.Last + 1 - p.KeepLast
	}
	if p.MaxAge > 0 && before < m.Last && now >= math.MinInt64+int64(p.MaxAge) {
		// The first event that is not that old, from before on, by the commit times in the
		// events' headers. No shortcut by the last event's time: times go back when a leader
		// with a slower clock takes over, and a young event among old ones stops the cut.
		var err error
		if before, err = s.oldEvents(m.Name, before, m.Last, now-int64(p.MaxAge), stop); err != nil {
			return 0, err
		}
	}
	return min(before, m.Last), nil
}

// retentionScanMax bounds the events of one stream that a RetentionCuts call reads to find
// the first one a MaxAge keeps: a cut at the bound removes only events found old, and the next
// call goes on from there.
const retentionScanMax = 100_000

// oldEvents returns the version after the events of stream from version from (below last)
// whose commit times are before cutoff, reading at most retentionScanMax event headers.
func (s *Shard) oldEvents(stream string, from, last uint64, cutoff int64, stop func() bool) (uint64, error) {
	it, m, found, err := s.openStream(stream)
	if err != nil || !found {
		return from, err // deleted since it was listed: left to the next pass
	}
	defer it.Close()
	if m.state != stateLive {
		return from, nil
	}
	var ev RecordedEvent
	n := 0
	for valid := it.SeekGE(s.keys.event(nil, m.id, from)); valid && n < retentionScanMax; valid = it.Next() {
		if stop() {
			return 0, ErrScanStopped
		}
		v, err := eventVersion(it.Key())
		if err != nil {
			return 0, err
		}
		if v >= last {
			break // a live stream keeps its last event
		}
		rec, err := it.ValueAndErr()
		if err != nil {
			return 0, err
		}
		if err := decodeRecordHeader(rec, &ev); err != nil {
			return 0, err
		}
		if ev.Created >= cutoff {
			break
		}
		from, n = v+1, n+1
	}
	return from, it.Error()
}

// ErrScanStopped is RetentionCuts' error when its stop function ended it.
var ErrScanStopped = errors.New("shard: retention scan stopped")

// checkGoverning returns an ErrPolicyChanged verdict unless the policy governing stream in r
// (the batch being applied) is ref as it was set.
func (s *Shard) checkGoverning(r pebble.Reader, stream string, ref *RetentionRef) (verdict, err error) {
	ps, err := s.policiesIn(r)
	if err != nil {
		return nil, err
	}
	gov, found := Governing(ps, stream)
	switch {
	case !found:
		return fmt.Errorf("%w: no policy governs stream %q now (the policy of %q set at %d was removed)",
			ErrPolicyChanged, stream, ref.Prefix, ref.Set), nil
	case gov.Prefix != ref.Prefix || gov.Set != ref.Set:
		return fmt.Errorf("%w: stream %q is governed by the policy of %q set at %d, not of %q set at %d",
			ErrPolicyChanged, stream, gov.Prefix, gov.Set, ref.Prefix, ref.Set), nil
	}
	return nil, nil
}

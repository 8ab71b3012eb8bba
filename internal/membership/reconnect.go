package membership

import (
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// reconnectLoop brings members declared dead back as soon as they answer again. memberlist
// revives a dead member only when that member refutes its death, which it does on hearing
// of it: from gossip, which others stop sending it once it is dead, or at a push/pull sync,
// every PushPullInterval with one random member. After a partition heals, each side would
// hold the other dead for up to that long, while their raft traffic already flows: a node
// asked for the cluster's topology would not ask the other side for its view, and `cluster
// status` would show live nodes dead. So every interval this node syncs with one member it
// holds dead, picked at random among those that did not leave (Leave marks a member Stopping
// first): among those dead for less than reconnectFor if there are any, else among the
// others, each at most once per reconnectSlow (pickDead). The sync is memberlist's Join, a
// push/pull over TCP bounded by TCPTimeout. A member that answers hears of its death and refutes it at once; one that is
// still gone costs a refused or timed-out connection. A sync in flight when Close is called
// delays it by up to two TCPTimeouts.
func (m *Membership) reconnectLoop(every time.Duration) {
	defer m.stopped.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
		}
		m.forgetLongDead(time.Now())
		name, addr := m.pickDead(time.Now())
		if addr == "" || !m.joinMu.TryLock() { // a Join in progress: the refusals recorded are its own
			continue
		}
		m.mu.Lock()
		m.mu.refusals = nil
		m.mu.Unlock()
		_, err := m.ml.Join([]string{addr})
		if m.refusalIn(err) != nil { // the address now belongs to another cluster: ask no more
			m.mu.Lock()
			if m.mu.foreign == nil {
				m.mu.foreign = map[string]string{}
			}
			m.mu.foreign[name] = addr
			m.mu.Unlock()
		}
		m.joinMu.Unlock()
		if err != nil {
			m.log.Debug("member held dead did not answer", "peer", name, "addr", addr, "err", flatten(err))
			continue
		}
		m.log.Debug("synced gossip with a member held dead", "peer", name, "addr", addr)
	}
}

// maxRefusals bounds Membership.mu.refusals: refusals matter only to the join under way.
const maxRefusals = 32

// noteRefusal records a refused join merge (delegate.go: a cluster mismatch, its name taken).
func (m *Membership) noteRefusal(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.mu.refusals) == maxRefusals {
		m.mu.refusals = slices.Delete(m.mu.refusals, 0, 1)
	}
	m.mu.refusals = append(m.mu.refusals, err)
}

// refusalIn returns the refusal, recorded since the join began, that joinErr (memberlist's
// failure of that join) reports, or nil. memberlist's error carries the text of the merge
// refusals of the join's own push/pulls, and only those: a node of another cluster refused
// while the join waited (one that dialled this node) is not in it, nor blamed on the seeds.
func (m *Membership) refusalIn(joinErr error) error {
	if joinErr == nil {
		return nil
	}
	msg := joinErr.Error()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range slices.Backward(m.mu.refusals) {
		if strings.Contains(msg, r.Error()) {
			return r
		}
	}
	return nil
}

// forgetLongDead forgets the members that have been held dead for ForgetAfter as of now.
func (m *Membership) forgetLongDead(now time.Time) {
	m.mu.Lock()
	var gone []string
	for name, e := range m.mu.members {
		if !e.Alive && name != m.name && now.Sub(e.Changed) >= ForgetAfter {
			delete(m.mu.members, name)
			delete(m.mu.foreign, name)
			delete(m.mu.asked, name)
			gone = append(gone, name)
		}
	}
	m.mu.Unlock()
	for _, name := range gone {
		m.log.Info("forgot a member held dead for longer than the limit", "peer", name, "limit", ForgetAfter)
	}
	if len(gone) > 0 {
		m.signal()
	}
}

// pickDead returns a random member held dead that did not leave and whose address did not
// answer as another cluster's node, or "": one that died within reconnectFor of now if there
// is one, else one that died longer ago and was not asked for reconnectSlow. (Drawn from all
// of them, members long gone, each asked once a minute, crowded out the recently dead, the
// partitions the loop is there to heal.)
func (m *Membership) pickDead(now time.Time) (name, addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, recent := 0, false
	for nm, e := range m.mu.members {
		if e.Alive {
			delete(m.mu.foreign, nm) // back: if it dies again, its address is its own
			delete(m.mu.asked, nm)
		}
		if e.Alive || e.Stopping || e.Addr == "" || nm == m.name || m.mu.foreign[nm] == e.Addr {
			continue
		}
		long := now.Sub(e.Changed) > reconnectFor
		if long && (recent || now.Sub(m.mu.asked[nm]) < reconnectSlow) {
			continue
		}
		if !long && !recent {
			recent, n = true, 0 // the first recently dead: the long dead drawn so far are not
		}
		if n++; rand.IntN(n) == 0 { // reservoir sampling: each with probability 1/n
			name, addr = nm, e.Addr
		}
	}
	if name != "" && now.Sub(m.mu.members[name].Changed) > reconnectFor {
		if m.mu.asked == nil {
			m.mu.asked = map[string]time.Time{}
		}
		m.mu.asked[name] = now
	}
	return name, addr
}

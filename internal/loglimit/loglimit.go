// Package loglimit bounds how often a repeated event is logged: one line per period, with the
// count of those held back since, so that a failure repeated many times a second (a failing
// disk, a peer retrying a refused stream) neither floods the log nor goes unseen.
package loglimit

import (
	"sync"
	"time"
)

// Limiter lets one event through per Every and counts the others. Safe for concurrent use.
type Limiter struct {
	Every time.Duration
	mu    sync.Mutex
	last  time.Time
	held  int // events since the last one let through
}

// Allow reports whether to log this event, and how many were held back since the last.
func (l *Limiter) Allow() (held int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); l.last.IsZero() || now.Sub(l.last) >= l.Every {
		held, l.held, l.last = l.held, 0, now
		return held, true
	}
	l.held++
	return 0, false
}

// Keyed is a Limiter per key (a shard, a sender), so that one key's repeated event does not
// hide another's. Max, if positive, bounds the keys held: past it they are all forgotten, so
// that keys made up by a caller cannot grow it for good. Safe for concurrent use.
type Keyed[K comparable] struct {
	Every time.Duration
	Max   int
	mu    sync.Mutex
	by    map[K]*Limiter
}

// Allow is Limiter.Allow for key k's events.
func (s *Keyed[K]) Allow(k K) (held int, ok bool) {
	s.mu.Lock()
	l := s.by[k]
	if l == nil {
		if s.by == nil || s.Max > 0 && len(s.by) >= s.Max {
			s.by = map[K]*Limiter{}
		}
		l = &Limiter{Every: s.Every}
		s.by[k] = l
	}
	s.mu.Unlock()
	return l.Allow()
}

// Expire lets k's next event pass, with the count held back, as if its period had run out
// (tests).
func (s *Keyed[K]) Expire(k K) {
	s.mu.Lock()
	l := s.by[k]
	s.mu.Unlock()
	if l != nil {
		l.mu.Lock()
		l.last = time.Time{}
		l.mu.Unlock()
	}
}

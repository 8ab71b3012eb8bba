package loglimit

import (
	"testing"
	"time"
)

// TestKeyed: one event per key and period passes, with the count held back since; keys are
// limited apart; past Max keys, all are forgotten.
func TestKeyed(t *testing.T) {
	k := Keyed[int]{Every: time.Hour, Max: 2}
	for i, want := range []bool{true, false, false} {
		if _, ok := k.Allow(1); ok != want {
			t.Fatalf("event %d of key 1: %v, want %v", i, ok, want)
		}
	}
	if _, ok := k.Allow(2); !ok {
		t.Fatal("key 2 held back by key 1")
	}
	k.Expire(1)
	if held, ok := k.Allow(1); !ok || held != 2 {
		t.Fatalf("key 1 after its period: %v, held %d; want let through, 2 held", ok, held)
	}
	if _, ok := k.Allow(3); !ok { // the third key: the two before are forgotten
		t.Fatal("key 3 held back")
	}
	if _, ok := k.Allow(1); !ok {
		t.Fatal("key 1 still limited after the keys were forgotten")
	}
}

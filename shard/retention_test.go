package shard

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestRetentionPolicyLimit: a shard holds at most MaxRetentionPolicies; one more is refused
// naming the limit and writes nothing, and replacing or removing one still works at the limit.
func TestRetentionPolicyLimit(t *testing.T) {
	ts := newTestShard(t, nil, 3)
	ts.apply(EncodeSetFormat(&SetFormatCommand{Format: Format6}))
	set := func(prefix string, remove bool) any {
		c := &SetRetentionCommand{Policy: RetentionPolicy{Prefix: prefix, KeepLast: 1}, Remove: remove}
		if remove {
			c.Policy.KeepLast = 0
		}
		return ts.apply(EncodeSetRetention(c))
	}
	for i := range MaxRetentionPolicies {
		if r, ok := set(fmt.Sprintf("p%02d-", i), false).(*RetentionResult); !ok || r.Policies != i+1 {
			t.Fatalf("policy %d: %v", i, r)
		}
	}
	res := set("one-more-", false)
	var inv *InvalidError
	if err, _ := res.(error); !errors.As(err, &inv) || inv.Field != "policies" || inv.Limit != "at most 64 retention policies" {
		t.Fatalf("policy %d: %v, want a refusal naming the limit", MaxRetentionPolicies+1, res)
	}
	ts.commit(nil)
	if ps, err := ts.s.RetentionPolicies(); err != nil || len(ps) != MaxRetentionPolicies {
		t.Fatalf("%d policies, %v", len(ps), err)
	}
	if r, ok := set("p00-", false).(*RetentionResult); !ok || r.Policies != MaxRetentionPolicies {
		t.Fatalf("replacing at the limit: %v", r)
	}
	if r, ok := set("p00-", true).(*RetentionResult); !ok || r.Policies != MaxRetentionPolicies-1 {
		t.Fatalf("removing: %v", r)
	}
	if r, ok := set("one-more-", false).(*RetentionResult); !ok || r.Policies != MaxRetentionPolicies {
		t.Fatalf("after a removal: %v", r)
	}
}

func TestValidateRetention(t *testing.T) {
	for _, tc := range []struct {
		c     SetRetentionCommand
		field string
	}{
		{SetRetentionCommand{Policy: RetentionPolicy{Prefix: "a", MaxAge: -time.Second}}, "max_age"},
		{SetRetentionCommand{Policy: RetentionPolicy{Prefix: "a", KeepLast: 1, MaxAge: -1}}, "max_age"},
		{SetRetentionCommand{Policy: RetentionPolicy{Prefix: "\xff", KeepLast: 1}}, "prefix"},
		{SetRetentionCommand{Policy: RetentionPolicy{Prefix: "a", Deleted: true}, Remove: true}, "policy"},
		{SetRetentionCommand{Policy: RetentionPolicy{Prefix: "a"}}, "policy"},
	} {
		var inv *InvalidError
		if err := ValidateRetention(&tc.c); !errors.As(err, &inv) || inv.Field != tc.field {
			t.Errorf("%+v: %v, want an *InvalidError for %s", tc.c, err, tc.field)
		}
	}
	for _, c := range []SetRetentionCommand{
		{Policy: RetentionPolicy{Prefix: "", Deleted: true}},
		{Policy: RetentionPolicy{Prefix: "order-", KeepLast: 1, MaxAge: time.Hour}},
		{Policy: RetentionPolicy{Prefix: "order-"}, Remove: true},
	} {
		if err := ValidateRetention(&c); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

func TestGoverning(t *testing.T) {
	ps := []RetentionPolicy{{Prefix: ""}, {Prefix: "order-"}, {Prefix: "order-vip-"}, {Prefix: "orders"}}
	for name, want := range map[string]string{"cart-1": "", "order-1": "order-", "order-vip-7": "order-vip-",
		"order-vi": "order-", "orders-1": "orders"} {
		if p, ok := Governing(ps, name); !ok || p.Prefix != want {
			t.Errorf("%s: %q %t, want %q", name, p.Prefix, ok, want)
		}
	}
	if _, ok := Governing(ps[1:], "cart-1"); ok {
		t.Error("cart-1 governed without an empty prefix")
	}
}

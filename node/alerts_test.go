package node_test

import (
	"context"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v2"

	shoalv1 "github.com/shoaldb/shoal/api/shoal/v1"
)

// alertRules is deploy/prometheus/alerts.yml, as Prometheus reads it.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var (
	// A metric selector of an expression: its name and, if any, its label matchers.
	selectorRE = regexp.MustCompile(`\b(shoal_[a-z0-9_]+)(\{[^}]*\})?`)
	// One label matcher inside a selector's braces.
	matcherRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	// A grouping clause: by (a, b).
	groupingRE = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)
)

// TestAlertRulesNameExportedMetrics: every shoal_ metric an alerting rule of deploy/prometheus
// names is one a node exports, with the labels the rule matches and groups by (past the
// labels Prometheus adds to every target), and a label value that the rule matches exactly is
// one the node exports. A rule on a renamed metric would never fire, and nothing else would
// tell. The rules must also be well formed: unique names, a severity of page or ticket, a
// summary and a description, and a valid for.
func TestAlertRulesNameExportedMetrics(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	if err := yaml.UnmarshalStrict(raw, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}

	// A cluster that has served an append, so that the families with labels have series.
	c, regs := startReplicatedCluster(t, 4, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := shoalv1.NewStreamsClient(c.Dial(t, 0)).Append(ctx, &shoalv1.AppendRequest{
		Stream: "alerts-1", Events: []*shoalv1.EventData{event("A")}}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]map[string]map[string]bool{} // metric -> label -> values
	for _, reg := range regs {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			names := []string{f.GetName()}
			if f.GetType() == dto.MetricType_HISTOGRAM {
				names = append(names, f.GetName()+"_bucket", f.GetName()+"_sum", f.GetName()+"_count")
			}
			for _, name := range names {
				if labels[name] == nil {
					labels[name] = map[string]map[string]bool{}
				}
				for _, m := range f.GetMetric() {
					for _, l := range m.GetLabel() {
						if labels[name][l.GetName()] == nil {
							labels[name][l.GetName()] = map[string]bool{}
						}
						labels[name][l.GetName()][l.GetValue()] = true
					}
				}
				if f.GetType() == dto.MetricType_HISTOGRAM && strings.HasSuffix(name, "_bucket") {
					labels[name]["le"] = map[string]bool{}
				}
			}
		}
	}
	targetLabels := []string{"instance", "job"} // added by Prometheus to every series it scrapes

	seen := map[string]bool{}
	count := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			count++
			name := r.Alert
			switch {
			case name == "":
				t.Errorf("group %s: a rule without an alert name", g.Name)
			case seen[name]:
				t.Errorf("%s: named twice", name)
			}
			seen[name] = true
			if s := r.Labels["severity"]; s != "page" && s != "ticket" {
				t.Errorf("%s: severity %q, want page or ticket", name, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: wants a summary and a description", name)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", name, r.For, err)
				}
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("%s: unbalanced parentheses in %q", name, r.Expr)
			}
			// The labels every selected metric of the expression has in common, for its
			// grouping clauses.
			var common []string
			for i, m := range selectorRE.FindAllStringSubmatch(r.Expr, -1) {
				metric, matchers := m[1], m[2]
				have, ok := labels[metric]
				if !ok {
					t.Errorf("%s: %s is not a metric the nodes export", name, metric)
					continue
				}
				mine := slices.Collect(maps.Keys(have))
				if i == 0 {
					common = mine
				} else {
					common = slices.DeleteFunc(common, func(l string) bool { return !slices.Contains(mine, l) })
				}
				for _, mm := range matcherRE.FindAllStringSubmatch(matchers, -1) {
					label, op, value := mm[1], mm[2], mm[3]
					values, ok := have[label]
					if !ok {
						t.Errorf("%s: %s has no label %s", name, metric, label)
						continue
					}
					wanted := []string{value}
					if op == "=~" || op == "!~" {
						wanted = strings.Split(value, "|")
					}
					for _, v := range wanted {
						if !values[v] && regexp.QuoteMeta(v) == v {
							t.Errorf("%s: %s{%s} has no value %q (exported: %v)", name, metric, label, v, slices.Sorted(maps.Keys(values)))
						}
					}
				}
			}
			if !strings.Contains(r.Expr, "shoal_") && !strings.Contains(r.Expr, "up{") {
				t.Errorf("%s: names no shoal metric", name)
			}
			for _, by := range groupingRE.FindAllStringSubmatchIndex(r.Expr, -1) {
				// The labels the aggregation's argument, "by (...) (argument)", has in common;
				// the whole expression's for any other form.
				have := common
				if arg, ok := parenthesized(r.Expr[by[1]:]); ok {
					have = commonLabels(labels, arg)
				}
				for _, l := range strings.Split(r.Expr[by[2]:by[3]], ",") {
					if l = strings.TrimSpace(l); l != "" && !slices.Contains(targetLabels, l) && !slices.Contains(have, l) {
						t.Errorf("%s: groups by %s, which its metrics do not all have (common labels %v)", name, l, have)
					}
				}
			}
		}
	}
	if count == 0 {
		t.Fatal("alerts.yml holds no rules")
	}
	t.Logf("%d rules checked against %d exported series names", count, len(labels))
}

// parenthesized returns the text of the parenthesized group s starts with (after spaces).
func parenthesized(s string) (string, bool) {
	s = strings.TrimLeft(s, " \t\n")
	if !strings.HasPrefix(s, "(") {
		return "", false
	}
	depth := 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			if depth--; depth == 0 {
				return s[1:i], true
			}
		}
	}
	return "", false
}

// commonLabels returns the labels every metric selected in expr has, of those in labels.
func commonLabels(labels map[string]map[string]map[string]bool, expr string) []string {
	var common []string
	for i, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		mine := slices.Collect(maps.Keys(labels[m[1]]))
		if i == 0 {
			common = mine
		} else {
			common = slices.DeleteFunc(common, func(l string) bool { return !slices.Contains(mine, l) })
		}
	}
	return common
}

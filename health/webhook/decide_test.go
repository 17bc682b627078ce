package webhook

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestDecide walks every row of the decision table in docs/health.md.
func TestDecide(t *testing.T) {
	T, F, U := corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown
	for _, c := range []struct {
		name     string
		node     string
		policy   Policy
		nq       NoQuorumPolicy
		def      time.Duration // --autonomy-duration
		keep     bool
		reason   Reason
		status   corev1.ConditionStatus
		contains string
	}{
		{"Ready: normal Kubernetes, reason from the verdict", "ready", Verdicts, Retain, 0, false, VotedAlive, T, "node Ready: alive by 3 of 3 peers, views 3 s old"},
		{"Ready under always-retain: normal Kubernetes", "ready", AlwaysRetain, Retain, 0, false, VotedAlive, T, "node Ready"},
		{"Ready beyond the default duration: normal Kubernetes", "ready", Verdicts, Retain, time.Minute, false, VotedAlive, T, "node Ready"},
		{"alive: kept", "alive", Verdicts, Retain, 0, true, VotedAlive, T, "pods kept: alive by 3 of 3 peers, views 3 s old"},
		{"dead: normal Kubernetes", "dead", Verdicts, Retain, 0, false, VotedDead, F, "normal Kubernetes: dead by 2 of 3 peers, views 4 s old"},
		{"no quorum, retain: kept", "noquorum", Verdicts, Retain, 0, true, NoQuorum, U, "pods kept (no-quorum-policy retain): no quorum: 1 of 3 peers' views fresh, 2 needed"},
		{"no quorum, evict: normal Kubernetes", "noquorum", Verdicts, Evict, 0, false, NoQuorum, U, "normal Kubernetes (no-quorum-policy evict)"},
		{"always-retain, dead: kept", "dead", AlwaysRetain, Retain, 0, true, ReasonAlwaysRetain, F, "pods kept (policy always-retain): dead by 2 of 3 peers"},
		{"always-retain, no quorum + evict: kept", "noquorum", AlwaysRetain, Evict, 0, true, ReasonAlwaysRetain, U, "policy always-retain"},
		{"always-retain, alive: kept", "alive", AlwaysRetain, Retain, 0, true, ReasonAlwaysRetain, T, "policy always-retain"},
		{"duration expired, alive", "expired", Verdicts, Retain, 0, false, DurationExpired, T, "normal Kubernetes: not Ready since 2026-01-01T00:00:00Z, beyond autonomy-duration 5m0s; alive by 3 of 3"},
		{"duration expired under always-retain", "expired", AlwaysRetain, Retain, 0, false, DurationExpired, T, "beyond autonomy-duration 5m0s"},
		{"duration expired without quorum (retain)", "nqexpired", Verdicts, Retain, 0, false, DurationExpired, U, "beyond autonomy-duration 5m0s; no quorum"},
		{"duration running: kept, says so", "within", Verdicts, Retain, 0, true, VotedAlive, T, "pods kept: alive by 3 of 3 peers, views 3 s old; autonomy-duration 1h0m0s"},
		{"annotation 0 = forever, over a default", "forever", Verdicts, Retain, time.Minute, true, VotedAlive, T, "pods kept"},
		{"annotation overrides a shorter default", "within", Verdicts, Retain, time.Minute, true, VotedAlive, T, "autonomy-duration 1h0m0s"},
		{"default duration, no annotation: expired", "alive", Verdicts, Retain, 5 * time.Minute, false, DurationExpired, T, "beyond autonomy-duration 5m0s"},
		{"default duration expired under always-retain", "dead", AlwaysRetain, Retain, 5 * time.Minute, false, DurationExpired, F, "dead by 2 of 3"},
		{"bad duration ignored, default forever: kept", "bad", Verdicts, Retain, 0, true, VotedAlive, T, "pods kept"},
		{"bad duration ignored, default 5m applies", "bad", Verdicts, Retain, 5 * time.Minute, false, DurationExpired, T, "beyond autonomy-duration 5m0s"},
		{"node without a key under evict", "stranger", Verdicts, Evict, 0, false, NoQuorum, U, "not a health member"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &Decider{Policy: c.policy, NoQuorum: c.nq, Duration: c.def}
			n := world.nodes[c.node]
			if n == nil {
				n = mkNode(c.node, false, "")
			}
			got := d.Decide(InfoOf(n, world.tallies[c.node]), now)
			if got.Keep != c.keep || got.Reason != c.reason || got.Status != c.status || !strings.Contains(got.Message, c.contains) {
				t.Fatalf("got keep=%v %s %s %q; want keep=%v %s %s containing %q", got.Keep, got.Reason, got.Status, got.Message, c.keep, c.reason, c.status, c.contains)
			}
			if got.Keep && got.Ready {
				t.Fatal("a Ready node is never kept")
			}
		})
	}
}

// A bad annotation is logged once per node and value, not on every decision.
func TestBadDurationLoggedOnce(t *testing.T) {
	var buf bytes.Buffer
	d := &Decider{Policy: Verdicts, NoQuorum: Retain, Duration: 5 * time.Minute, Log: slog.New(slog.NewTextHandler(&buf, nil))}
	for _, v := range []string{"soon", "soon", "-1h", "-1h", "soon"} {
		n := mkNode("n1", false, v)
		if got := d.Decide(InfoOf(n, alive3), now); got.Reason != DurationExpired {
			t.Fatalf("%q: %s, want the default 5m to apply", v, got.Reason)
		}
	}
	d.Decide(InfoOf(mkNode("n2", false, "soon"), alive3), now)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 { // n1 soon, n1 -1h, n1 soon again (changed back), n2 soon
		t.Fatalf("%d log lines, want 4:\n%s", len(lines), buf.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, "bad holdfast.dev/autonomy-duration ignored") {
			t.Fatalf("log line %q", l)
		}
	}
	// A good value resets it: the bad one is logged again if it comes back.
	buf.Reset()
	d.Decide(InfoOf(mkNode("n2", false, "1h"), alive3), now)
	d.Decide(InfoOf(mkNode("n2", false, "soon"), alive3), now)
	if strings.Count(buf.String(), "\n") != 1 {
		t.Fatalf("after a good value: %q", buf.String())
	}
}

func TestParsePolicies(t *testing.T) {
	for _, s := range []string{"verdicts", "always-retain"} {
		if _, err := ParsePolicy(s); err != nil {
			t.Error(err)
		}
	}
	for _, s := range []string{"", "retain", "Always-Retain"} {
		if _, err := ParsePolicy(s); err == nil || !strings.Contains(err.Error(), "want verdicts or always-retain") {
			t.Errorf("%q: %v", s, err)
		}
		if _, err := ParseNoQuorumPolicy(s + "x"); err == nil {
			t.Errorf("no-quorum %q accepted", s+"x")
		}
	}
}

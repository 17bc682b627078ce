package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// countingTool writes a script into dir that appends a line to dir/<name>.calls
// and runs the real tool; it returns the script's path and a counter.
func countingTool(tb testing.TB, dir, name, real string) (string, func() int) {
	tb.Helper()
	path := filepath.Join(dir, name)
	calls := path + ".calls"
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\nexec " + real + " \"$@\"\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	return path, func() int {
		data, err := os.ReadFile(calls)
		if os.IsNotExist(err) {
			return 0
		}
		if err != nil {
			tb.Fatal(err)
		}
		return strings.Count(string(data), "\n")
	}
}

func hasRule(s *Snapshot, table, rule string) bool {
	for _, t := range s.IPTables {
		if t.Table == table && slices.Contains(t.Rules, rule) {
			return true
		}
	}
	return false
}

// With iptables on its nf_tables backend, a capture loop's second capture
// with no rule change runs neither iptables-save nor nft; a rule added with
// iptables-nft, and one added with nft, are seen by the next capture.
func TestRuleCacheSkipsReadsWhileGenerationUnchanged(t *testing.T) {
	n := newTestNS(t)
	n.run(t, testRules, "iptables-nft-restore", "--noflush")
	flannel, err := os.ReadFile("testdata/flannel.nft")
	if err != nil {
		t.Fatal(err)
	}
	n.run(t, string(flannel), "nft", "-f", "-")
	dir := t.TempDir()
	save, saves := countingTool(t, dir, "iptables-save", "iptables-nft-save")
	nft, nfts := countingTool(t, dir, "nft", "nft")
	cache := &RuleCache{}
	opts := CaptureOptions{NodeName: "node2", NetNS: n.path, Chains: DefaultChains(), NFTables: DefaultNFTables(), IPTablesSave: save, Nft: nft, Rules: cache}
	ctx := context.Background()

	first, err := Capture(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if saves() != 2 || nfts() != 1 || cache.Hits() != 0 {
		t.Fatalf("first capture: %d iptables-save runs (want 2), %d nft runs (want 1), %d hits (want 0)", saves(), nfts(), cache.Hits())
	}
	if len(first.IPTables) != 2 || len(first.NFTables) != 1 {
		t.Fatalf("first capture holds %d iptables tables, %d nftables tables", len(first.IPTables), len(first.NFTables))
	}
	second, err := Capture(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if saves() != 2 || nfts() != 1 || cache.Hits() != 1 {
		t.Fatalf("second capture, no rule changed: %d iptables-save runs (want still 2), %d nft runs (want still 1), %d hits (want 1)", saves(), nfts(), cache.Hits())
	}
	if !reflect.DeepEqual(first.IPTables, second.IPTables) || !reflect.DeepEqual(first.NFTables, second.NFTables) {
		t.Fatal("the cached rules differ from the ones read")
	}
	// A caller changing its snapshot does not change the cache.
	second.IPTables[0].Rules[0] = "changed"
	second.NFTables[0].Text = "changed"
	again, err := Capture(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if cache.Hits() != 2 || !reflect.DeepEqual(first.IPTables, again.IPTables) || !reflect.DeepEqual(first.NFTables, again.NFTables) {
		t.Fatalf("changing a capture's tables changed the cache (%d hits, want 2)", cache.Hits())
	}

	rule := "-A KUBE-SERVICES -d 10.96.0.11/32 -p tcp -m tcp --dport 443 -j RETURN"
	n.run(t, "", "iptables-nft", append([]string{"-t", "nat"}, strings.Fields(rule)...)...)
	third, err := Capture(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if saves() != 4 || cache.Hits() != 2 {
		t.Fatalf("capture after iptables -A: %d iptables-save runs (want 4), %d hits (want 2)", saves(), cache.Hits())
	}
	if !hasRule(third, "nat", rule) {
		t.Fatalf("capture after iptables -A misses %q: %v", rule, third.IPTables)
	}
	fourth, err := Capture(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if saves() != 4 || cache.Hits() != 3 || !hasRule(fourth, "nat", rule) {
		t.Fatalf("capture after that: %d iptables-save runs (want 4), %d hits (want 3), new rule kept %v", saves(), cache.Hits(), hasRule(fourth, "nat", rule))
	}

	n.run(t, "", "nft", "add", "chain", "ip", "flannel-ipv4", "holdfast-test-chain")
	fifth, err := Capture(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if saves() != 6 || nfts() != 3 || !strings.Contains(fifth.NFTables[0].Text, "holdfast-test-chain") {
		t.Fatalf("capture after nft add chain: %d iptables-save runs (want 6), %d nft runs (want 3), table text:\n%s", saves(), nfts(), fifth.NFTables[0].Text)
	}

	// A failed read drops the cache: the next capture reads again.
	broken := opts
	broken.IPTablesSave = filepath.Join(dir, "missing")
	if _, err := Capture(ctx, broken); err == nil {
		t.Fatal("capture with a missing iptables-save succeeded")
	}
	if _, err := Capture(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if saves() != 8 {
		t.Fatalf("capture after a failed one: %d iptables-save runs, want 8", saves())
	}

	// A one-shot capture keeps nothing: it reads every time.
	oneShot := opts
	oneShot.Rules = nil
	for range 2 {
		if _, err := Capture(ctx, oneShot); err != nil {
			t.Fatal(err)
		}
	}
	if saves() != 12 {
		t.Fatalf("two captures without a cache: %d iptables-save runs, want 12", saves())
	}
}

// With iptables' legacy backend, whose rules bump no nftables generation,
// every capture runs iptables-save and sees a rule added in between.
func TestRuleCacheReadsEveryTimeWithLegacyIPTables(t *testing.T) {
	n := newTestNS(t)
	n.run(t, testRules, "iptables-legacy-restore", "--noflush")
	dir := t.TempDir()
	save, saves := countingTool(t, dir, "iptables-save", "iptables-legacy-save")
	cache := &RuleCache{}
	opts := CaptureOptions{NodeName: "node2", NetNS: n.path, Chains: DefaultChains(), NFTables: DefaultNFTables(), IPTablesSave: save, Rules: cache}
	ctx := context.Background()
	for i := 1; i <= 2; i++ {
		if _, err := Capture(ctx, opts); err != nil {
			t.Fatal(err)
		}
		if saves() != 2*i {
			t.Fatalf("capture %d: %d iptables-save runs, want %d", i, saves(), 2*i)
		}
	}
	rule := "-A KUBE-SERVICES -d 10.96.0.11/32 -p tcp -m tcp --dport 443 -j RETURN"
	n.run(t, "", "iptables-legacy", append([]string{"-t", "nat"}, strings.Fields(rule)...)...)
	s, err := Capture(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if saves() != 6 || cache.Hits() != 0 || !hasRule(s, "nat", rule) {
		t.Fatalf("capture after iptables-legacy -A: %d iptables-save runs (want 6), %d hits (want 0), new rule seen %v", saves(), cache.Hits(), hasRule(s, "nat", rule))
	}
}

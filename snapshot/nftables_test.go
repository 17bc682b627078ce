package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// nftNode builds the overlay, kube-proxy's nftables table and flannel's
// nftables table (testdata) in n.
func nftNode(t *testing.T, n *testNS) {
	t.Helper()
	n.buildOverlay(t, 2, "0e:aa:bb:cc:dd:02")
	for _, f := range []string{"testdata/kube-proxy.nft", "testdata/flannel.nft"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n.run(t, string(data), "nft", "-f", "-")
	}
}

var nftCounter = regexp.MustCompile(` packets \d+ bytes \d+`)

// nftList is `nft list table` with counter values left out (a restore
// starts them at zero).
func (n *testNS) nftList(t *testing.T, table string) string {
	t.Helper()
	return nftCounter.ReplaceAllString(n.run(t, "", "nft", append([]string{"list", "table"}, strings.Fields(table)...)...), "")
}

func (n *testNS) nftTables(t *testing.T) string {
	t.Helper()
	return n.run(t, "", "nft", "list", "tables")
}

// wipeNFT is what a reboot does: wipe (overlay, iptables, run dir) and every
// nftables table.
func wipeNFT(t *testing.T, n *testNS, dir string) {
	t.Helper()
	wipe(t, n, dir)
	n.run(t, "", "nft", "flush", "ruleset")
	if out := n.nftTables(t); out != "" {
		t.Fatalf("tables survived the wipe: %s", out)
	}
}

func saveNFTNode(t *testing.T, n *testNS, dir string, opts CaptureOptions) *Snapshot {
	t.Helper()
	s, err := Capture(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PinMACs(dir, s, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := Save(dir, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNFTablesRestoredAfterWipeIdenticalThenIdempotent(t *testing.T) {
	n, dir := newTestNS(t), t.TempDir()
	nftNode(t, n)
	// The kube-proxy table carries traffic counters in one rule; they are
	// not state to restore.
	saved := saveNFTNode(t, n, dir, captureOpts(n, dir))
	if len(saved.NFTables) != 2 || saved.NFTables[0].Key() != "ip kube-proxy" || saved.NFTables[1].Key() != "ip flannel-ipv4" {
		t.Fatalf("captured tables %+v", saved.NFTables)
	}
	tables := []string{"ip kube-proxy", "ip flannel-ipv4"}
	before := map[string]string{}
	for _, tb := range tables {
		before[tb] = n.nftList(t, tb)
	}
	for _, want := range []string{"map service-ips", "vmap @service-ips", "numgen random mod 2 vmap", "type nat hook prerouting", "comment \"rules for kube-proxy\""} {
		if !strings.Contains(before["ip kube-proxy"], want) {
			t.Fatalf("fixture lacks %q:\n%s", want, before["ip kube-proxy"])
		}
	}

	wipeNFT(t, n, dir)
	ctx := context.Background()
	start := time.Now()
	rep, err := Restore(ctx, RestoreOptions{Dir: dir, NodeName: "node2", NetNS: n.path})
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, rep.Lines())
	}
	t.Logf("restore after wipe: %s (wall %s)", rep.Summary(), time.Since(start).Round(time.Millisecond))
	if rep.Added != saved.Entries() || rep.Skipped != 0 {
		t.Fatalf("first restore: %s, want %d added\n%s", rep.Summary(), saved.Entries(), rep.Lines())
	}
	for _, tb := range tables {
		if got := n.nftList(t, tb); got != before[tb] {
			t.Fatalf("table %s after restore differs:\n--- before\n%s\n--- after\n%s", tb, before[tb], got)
		}
	}
	if out := n.run(t, "", "ip", "link", "show", "flannel.1"); !strings.Contains(out, "0e:aa:bb:cc:dd:02") {
		t.Fatalf("flannel.1 not restored: %s", out)
	}

	start = time.Now()
	rep2, err := Restore(ctx, RestoreOptions{Dir: dir, NodeName: "node2", NetNS: n.path})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second restore: %s (wall %s)", rep2.Summary(), time.Since(start).Round(time.Millisecond))
	if rep2.Added != 0 || rep2.Skipped != 0 || rep2.Kept != saved.Entries() {
		t.Fatalf("second restore: %s\n%s", rep2.Summary(), rep2.Lines())
	}
	for _, tb := range tables {
		if got := n.nftList(t, tb); got != before[tb] {
			t.Fatalf("second restore changed table %s:\n%s", tb, got)
		}
	}
}

func TestNFTablesLiveTableIsNeverOverwritten(t *testing.T) {
	n, dir := newTestNS(t), t.TempDir()
	nftNode(t, n)
	saveNFTNode(t, n, dir, captureOpts(n, dir))
	// kube-proxy has come back and written a newer table: one Service more.
	n.run(t, "", "nft", "add", "element", "ip", "kube-proxy", "cluster-ips", "{ 10.96.0.20 }")
	live := n.nftList(t, "ip kube-proxy")
	rep, err := Restore(context.Background(), RestoreOptions{Dir: dir, NodeName: "node2", NetNS: n.path})
	if err != nil {
		t.Fatal(err)
	}
	var act *Action
	for i := range rep.Actions {
		if rep.Actions[i].Kind == "nftable" && rep.Actions[i].Table == "ip kube-proxy" {
			act = &rep.Actions[i]
		}
	}
	if act == nil || act.Op != OpSkip || !strings.Contains(act.Reason, "live is newer") {
		t.Fatalf("newer live table: %+v\n%s", act, rep.Lines())
	}
	if got := n.nftList(t, "ip kube-proxy"); got != live {
		t.Fatalf("restore changed the live table:\n%s", got)
	}
}

func TestNFTablesRefusedTableKeepsOverlay(t *testing.T) {
	n, dir := newTestNS(t), t.TempDir()
	nftNode(t, n)
	n.run(t, "table ip hf-limited {\n\tset peers {\n\t\ttype ipv4_addr\n\t\tsize 2\n\t\telements = { 198.51.100.11, 198.51.100.13 }\n\t}\n}\n", "nft", "-f", "-")
	opts := captureOpts(n, dir)
	opts.NFTables.Tables = append(opts.NFTables.Tables, "ip:hf-limited")
	s := saveNFTNode(t, n, dir, opts)
	// The set now holds more elements than its size: the kernel refuses the
	// table (ENFILE) when the restore adds them.
	tb := s.NFTable("ip hf-limited")
	if tb == nil || !strings.Contains(tb.Text, "size 2") {
		t.Fatalf("hf-limited not captured: %+v", s.NFTables)
	}
	tb.Text = strings.Replace(tb.Text, "size 2", "size 1", 1)
	if err := Save(dir, s); err != nil {
		t.Fatal(err)
	}
	wipeNFT(t, n, dir)

	rep, err := Restore(context.Background(), RestoreOptions{Dir: dir, NodeName: "node2", NetNS: n.path})
	if !errors.Is(err, ErrIPTables) || !strings.Contains(err.Error(), "ip hf-limited") {
		t.Fatalf("want ErrIPTables naming ip hf-limited, got %v", err)
	}
	t.Logf("refused: %v", err)
	if out := n.run(t, "", "ip", "link", "show", "flannel.1"); !strings.Contains(out, "0e:aa:bb:cc:dd:02") {
		t.Fatalf("a refused table undid the overlay: %s", out)
	}
	tables := n.nftTables(t)
	if strings.Contains(tables, "hf-limited") || !strings.Contains(tables, "table ip kube-proxy") || !strings.Contains(tables, "table ip flannel-ipv4") {
		t.Fatalf("live tables after a refused one: %s", tables)
	}
	for _, a := range rep.Actions {
		if a.Kind == "nftable" && a.Table == "ip hf-limited" && (a.Op != OpSkip || !strings.Contains(a.Reason, "not restored")) {
			t.Fatalf("refused table reported as %+v", a)
		}
	}
}

func TestNFTablesCaptureWithoutNftFails(t *testing.T) {
	n, dir := newTestNS(t), t.TempDir()
	nftNode(t, n)
	opts := captureOpts(n, dir)
	opts.Nft = filepath.Join(dir, "no-nft")
	_, err := Capture(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), "ip kube-proxy exists") {
		t.Fatalf("capture of a live table without nft: %v", err)
	}
}

const goodNFT = "table ip kube-proxy {\n\tcomment \"rules for kube-proxy\"\n\tchain services {\n\t\tjump x\n\t}\n}\n"

func TestNFTableValidateRefusesBadInput(t *testing.T) {
	if err := (NFTable{Family: "ip", Name: "kube-proxy", Text: goodNFT}).validate(); err != nil {
		t.Fatalf("good table refused: %v", err)
	}
	cases := map[string]struct {
		tb   NFTable
		want string
	}{
		"family":       {NFTable{Family: "arp", Name: "kube-proxy", Text: goodNFT}, "not ip, ip6 or inet"},
		"name":         {NFTable{Family: "ip", Name: "kube proxy", Text: goodNFT}, "not a plain nft identifier"},
		"other table":  {NFTable{Family: "ip", Name: "flannel-ipv4", Text: goodNFT}, "not one `table ip flannel-ipv4"},
		"other family": {NFTable{Family: "ip6", Name: "kube-proxy", Text: goodNFT}, "not one `table ip6 kube-proxy"},
		"empty":        {NFTable{Family: "ip", Name: "kube-proxy"}, "not one"},
		"unclosed":     {NFTable{Family: "ip", Name: "kube-proxy", Text: "table ip kube-proxy {\n\tchain a {\n\t}\n"}, "not one"},
		"escape":       {NFTable{Family: "ip", Name: "kube-proxy", Text: "table ip kube-proxy {\n}\nflush ruleset\ntable ip kube-proxy {\n}\n"}, "outside the table block"},
		"nul":          {NFTable{Family: "ip", Name: "kube-proxy", Text: "table ip kube-proxy {\n\tchain a\x00 {\n\t}\n}\n"}, "NUL"},
	}
	for name, c := range cases {
		err := c.tb.validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", name, err, c.want)
		}
	}
	twice := &Snapshot{NodeName: "node2", NFTables: []NFTable{{Family: "ip", Name: "kube-proxy", Text: goodNFT}, {Family: "ip", Name: "kube-proxy", Text: goodNFT}}}
	if err := twice.Validate(); err == nil || !strings.Contains(err.Error(), "appears twice") {
		t.Errorf("duplicate table: %v", err)
	}
	if _, err := ParseNFTSelector("ip:kube-proxy,bogus"); err == nil {
		t.Error("selector without family accepted")
	}
	if _, err := ParseNFTSelector("bridge:x"); err == nil {
		t.Error("selector with bridge family accepted")
	}
}

// FuzzNFTableValidate: whatever the text, validate never panics, and a text
// it accepts is one block of the named table with nothing at top level.
func FuzzNFTableValidate(f *testing.F) {
	f.Add("ip", "kube-proxy", goodNFT)
	f.Add("ip6", "flannel-ipv6", "table ip6 flannel-ipv6 {\n}\n")
	f.Add("ip", "kube-proxy", "table ip kube-proxy {\n}\nflush ruleset\n}\n")
	f.Add("inet", "x", "table inet x {\n\t}\n}")
	f.Fuzz(func(t *testing.T, family, name, text string) {
		tb := NFTable{Family: family, Name: name, Text: text}
		if tb.validate() != nil {
			return
		}
		lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
		if lines[0] != "table "+family+" "+name+" {" || lines[len(lines)-1] != "}" {
			t.Fatalf("accepted a text that is not a block of %s %s: %q", family, name, text)
		}
		for _, l := range lines[1 : len(lines)-1] {
			if l != "" && l[0] != '\t' {
				t.Fatalf("accepted a top-level line %q", l)
			}
		}
	})
}

// A version 1 file (written before nftables tables were captured) is still
// read: it has no tables, which is what it meant.
func TestVersion1SnapshotStillRead(t *testing.T) {
	good, err := Encode(sampleSnapshot("node2"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Decode(mustReversion(t, good, 1))
	if err != nil || len(s.NFTables) != 0 {
		t.Fatalf("version 1: %v %+v", err, s)
	}
}

// TestPlainNFTName: the hand-written check accepts exactly what the
// identifier grammar `[A-Za-z_][A-Za-z0-9_./-]{0,255}` does.
func TestPlainNFTName(t *testing.T) {
	grammar := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_./-]{0,255}$`)
	names := []string{"", "a", "_", "kube-proxy", "flannel-ipv4", "a.b/c-d_e9", "9a", "-a", ".a", "/a", "a b", "a\x00", "ä", "a:b",
		"a" + strings.Repeat("b", 255), "a" + strings.Repeat("b", 256), strings.Repeat("z", 300)}
	for c := 0; c < 256; c++ {
		names = append(names, string(rune(c)), "x"+string([]byte{byte(c)}))
	}
	for _, n := range names {
		if got, want := plainNFTName(n), grammar.MatchString(n); got != want {
			t.Errorf("plainNFTName(%q) = %v, grammar says %v", n, got, want)
		}
	}
}

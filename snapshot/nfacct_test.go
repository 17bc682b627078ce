package snapshot

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// kube-proxy ≥ 1.29 drops INVALID packets through a rule that counts them
// in an nfacct object; after a reboot the object is gone with the netns.
const kubeProxyNfacctRule = "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP"

// A node saved with kube-proxy's nfacct rule restores, into a fresh netns
// (a reboot), with the rule and its counter back.
func TestRestoreRecreatesNfacctCounters(t *testing.T) {
	n, dir := newTestNS(t), t.TempDir()
	if err := inNetNS(n.path, func() error { return ensureNfacct([]string{"ct_state_invalid_dropped_pkts"}) }); err != nil {
		t.Fatalf("create nfacct in the test netns (xt_nfacct/nfnetlink_acct needed): %v", err)
	}
	saveNode(t, n, dir, 3)
	// After saveNode's rules: iptables-restore flushes the chains it declares.
	n.run(t, "", "iptables", "-w", "-A", "KUBE-FORWARD", "-m", "conntrack", "--ctstate", "INVALID",
		"-m", "nfacct", "--nfacct-name", "ct_state_invalid_dropped_pkts", "-j", "DROP")
	s, err := Capture(context.Background(), captureOpts(n, dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PinMACs(dir, s, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := Save(dir, s); err != nil {
		t.Fatal(err)
	}

	fresh := newTestNS(t)
	// Without the counter the kernel refuses the rule: the failure mode
	// this test guards against.
	probe := exec.Command("nsenter", "--net="+newTestNS(t).path, "iptables-restore", "--noflush")
	probe.Stdin = strings.NewReader("*filter\n:KUBE-FORWARD - [0:0]\n" + kubeProxyNfacctRule + "\nCOMMIT\n")
	if out, err := probe.CombinedOutput(); err == nil {
		t.Fatalf("the kernel accepted an nfacct rule with no counter (%s): this test proves nothing here", out)
	}

	rep, err := Restore(context.Background(), RestoreOptions{Dir: dir, NodeName: "node2", NetNS: fresh.path})
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, rep.Lines())
	}
	if got := fresh.iptablesSave(t, "filter"); !regexp.MustCompile(`--nfacct-name\s+ct_state_invalid_dropped_pkts -j DROP`).MatchString(got) {
		t.Fatalf("nfacct rule not restored:\n%s", got)
	}
}

// A table the kernel refuses costs only that table: flannel.1, its
// entries and the other tables come back, and the error says iptables.
func TestRestoreKeepsOverlayWhenAnIPTablesTableFails(t *testing.T) {
	n, dir := newTestNS(t), t.TempDir()
	s := saveNode(t, n, dir, 3)
	for i := range s.IPTables {
		if s.IPTables[i].Table == "filter" {
			s.IPTables[i].Rules = append(s.IPTables[i].Rules, "-A KUBE-FORWARD -j HF-NO-SUCH-CHAIN")
		}
	}
	fresh := newTestNS(t)
	rep, err := RestoreSnapshot(context.Background(), s, RestoreOptions{NodeName: "node2", NetNS: fresh.path})
	if !errors.Is(err, ErrIPTables) || !strings.Contains(err.Error(), "table filter") {
		t.Fatalf("want ErrIPTables naming the filter table, got %v", err)
	}
	links := fresh.run(t, "", "ip", "-d", "link", "show", "flannel.1")
	if !strings.Contains(links, s.Devices[0].PinnedMAC) {
		t.Fatalf("flannel.1 not restored with its pinned MAC %s:\n%s", s.Devices[0].PinnedMAC, links)
	}
	if routes := fresh.run(t, "", "ip", "route", "show", "dev", "flannel.1"); strings.Count(routes, "onlink") != 3 {
		t.Fatalf("routes not restored:\n%s", routes)
	}
	if nat := fresh.iptablesSave(t, "nat"); !strings.Contains(nat, "KUBE-SVC-TEST") {
		t.Fatalf("nat table not restored:\n%s", nat)
	}
	for _, a := range rep.Actions {
		if a.Table == "filter" && a.Op != OpSkip {
			t.Fatalf("filter action %s not reported as skipped", a)
		}
	}
}

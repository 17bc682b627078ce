package reboot

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var (
	flagNodes   = flag.Int("nodes", 3, "nodes in the site")
	flagPods    = flag.Int("pods-per-node", 3, "pods on every node")
	flagReboots = flag.Int("reboots", 5, "offline reboots of node2 in a row")
	flagJSON    = flag.String("json", "", "write the report as JSON to this file")
	flagKeep    = flag.Bool("keep", false, "leave the site up afterwards")
	flagNarrate = flag.Bool("narrate", false, "print the timeline to stdout as it happens")
)

// TestOfflineRebootRecovery: node2 reboots with its cloud link cut, five
// times in a row; each time its pods come back with the same IPs and MACs,
// reachable from every pod of the site over ICMP and TCP, with node2's VTEP
// MAC unchanged and node1/node3's FDB and neighbours untouched, while
// node1's and node3's pods keep talking; and nothing leaks across reboots.
func TestOfflineRebootRecovery(t *testing.T) {
	cfg := Config{Nodes: *flagNodes, PodsPerNode: *flagPods, Reboots: *flagReboots, Keep: *flagKeep}
	var log strings.Builder
	cfg.Out = &log
	if *flagNarrate {
		cfg.Out = os.Stdout
	}
	rep := Run(t, cfg)
	if *flagJSON != "" {
		if err := rep.WriteJSON(*flagJSON); err != nil {
			t.Error(err)
		}
	}
	if *flagNarrate {
		PrintSummary(os.Stdout, rep)
	}
	t.Logf("timeline:\n%s", log.String())
	t.Logf("pods=%d same_ips=%v same_macs=%v vtep_mac_kept=%v cross_node_ok=%v neighbours_untouched=%v peers_kept_talking=%v leak_free=%v recovery_ms=%d total_ms=%d",
		rep.Pods, rep.SameIPs, rep.SameMACs, rep.VTEPMACKept, rep.CrossNodeOK, rep.NeighboursUntouched, rep.PeersKeptTalking, rep.LeakFree, rep.RecoveryMs, rep.TotalMs)
	for i, r := range rep.Reboots {
		t.Logf("reboot %d: recovery_ms=%d total_ms=%d counts=%v", i+1, r.RecoveryMs, r.TotalMs, r.Counts)
	}
	if rep.Pods == 0 {
		t.Error("no pods on the rebooted node")
	}
	for _, f := range rep.Failures {
		t.Error(f)
	}
}

package reboot

import (
	"fmt"
	"io"
)

// PrintSummary tells a person what the run showed.
func PrintSummary(w io.Writer, rep *Report) {
	mark := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	fmt.Fprintf(w, "\n== what you just saw\n")
	fmt.Fprintf(w, "node2 was cut off from the cloud and rebooted %d time(s): every process killed, its network namespace\n", len(rep.Reboots))
	fmt.Fprintf(w, "(links, routes, VXLAN FDB and neighbours, iptables) and /run wiped — what a power cycle does. No control plane\n")
	fmt.Fprintf(w, "was reachable. Stock Kubernetes brings nothing back here. With holdfast:\n")
	fmt.Fprintf(w, "  - holdfastd snapshot restore rebuilt flannel.1 with its pinned VTEP MAC, its routes, FDB and neighbours\n")
	fmt.Fprintf(w, "  - holdfastd cri relaunched the %d pods it had recorded, through containerd and the CNI chain\n", rep.Pods)
	fmt.Fprintf(w, "  - holdfast-ipam gave each pod its pinned IP back; the holdfast plugin its pinned MAC\n\n")
	fmt.Fprintf(w, "  same pod IPs ............ %s\n", mark(rep.SameIPs))
	fmt.Fprintf(w, "  same pod MACs ........... %s\n", mark(rep.SameMACs))
	fmt.Fprintf(w, "  VTEP MAC kept ........... %s\n", mark(rep.VTEPMACKept))
	fmt.Fprintf(w, "  peers' FDB untouched .... %s\n", mark(rep.NeighboursUntouched))
	fmt.Fprintf(w, "  pods reach every pod .... %s (ICMP and TCP, across all nodes)\n", mark(rep.CrossNodeOK))
	fmt.Fprintf(w, "  node1<->node3 unaffected  %s\n", mark(rep.PeersKeptTalking))
	if len(rep.Reboots) > 1 {
		fmt.Fprintf(w, "  nothing leaked .......... %s\n", mark(rep.LeakFree))
	}
	fmt.Fprintf(w, "  recovery: %d ms from containerd ready to all pods reachable, %d ms from reboot start\n", rep.RecoveryMs, rep.TotalMs)
	if !rep.OK() {
		fmt.Fprintf(w, "\nFAILED checks:\n")
		for _, f := range rep.Failures {
			fmt.Fprintf(w, "  - %s\n", f)
		}
	}
}

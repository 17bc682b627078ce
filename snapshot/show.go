package snapshot

import (
	"fmt"
	"io"
	"strings"
)

// Format writes a human-readable rendering of s (what `show` prints).
func Format(w io.Writer, s *Snapshot) {
	fmt.Fprintf(w, "node %s, captured %s, %d entries\n", s.NodeName, s.CapturedAt.Format("2006-01-02T15:04:05Z07:00"), s.Entries())
	for _, d := range s.Devices {
		fmt.Fprintf(w, "\ndevice %s: vxlan id %d port %d local %s dev %s learning %v mtu %d\n", d.Name, d.VNI, d.Port, d.LocalIP, d.Underlay, d.Learning, d.MTU)
		pin := ""
		if !strings.EqualFold(d.MAC, d.PinnedMAC) {
			pin = "  (differs from live MAC " + d.MAC + " at capture)"
		}
		fmt.Fprintf(w, "  pinned MAC %s%s\n", d.PinnedMAC, pin)
		for _, a := range d.Addrs {
			fmt.Fprintf(w, "  addr   %s\n", a)
		}
		for _, r := range d.Routes {
			fmt.Fprintf(w, "  route  %s\n", r)
		}
		for _, n := range d.Neighbors {
			fmt.Fprintf(w, "  neigh  %s lladdr %s permanent\n", n.IP, n.MAC)
		}
		for _, f := range d.FDB {
			fmt.Fprintf(w, "  fdb    %s dst %s self permanent\n", f.MAC, f.Dst)
		}
	}
	if s.SubnetEnv != nil {
		fmt.Fprintf(w, "\nfile %s:\n", s.SubnetEnv.Path)
		for _, l := range strings.Split(strings.TrimRight(s.SubnetEnv.Content, "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	for _, t := range s.IPTables {
		fmt.Fprintf(w, "\niptables table %s: chains %s\n", t.Table, strings.Join(t.Chains, " "))
		for _, r := range t.Rules {
			fmt.Fprintf(w, "  %s\n", r)
		}
	}
	for _, t := range s.NFTables {
		fmt.Fprintf(w, "\nnftables table %s:\n", t.Key())
		for _, l := range strings.Split(strings.TrimRight(t.Text, "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}

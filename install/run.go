package install

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/holdfast-edge/holdfast/install/leases"
)

func holders(hs []leases.Holder) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.String()
	}
	return strings.Join(s, ", ")
}

// Install plans and (unless dryRun) applies an install, writing a summary
// (and, for a dry run, the exact diff) to w. Malformed inputs are refused
// before anything is written.
func Install(o Options, dryRun bool, w io.Writer) error {
	p, err := PlanInstall(o)
	if err != nil {
		return err
	}
	if dryRun && !p.Empty() {
		if res, err := leases.Reservations(*p.leases); err == nil && len(res) > 0 {
			fmt.Fprintf(w, "would import %d host-local leases into holdfast-ipam\n", len(res))
		}
	}
	if !dryRun && !p.Empty() {
		// Before the chain switches: holdfast-ipam must know every address
		// host-local gave the running pods.
		got, err := leases.Import(*p.leases, time.Now())
		if err != nil {
			return fmt.Errorf("import host-local's leases (nothing installed): %w", err)
		}
		if len(got) > 0 {
			fmt.Fprintf(w, "imported %d host-local leases into holdfast-ipam: %s\n", len(got), holders(got))
		}
	}
	return finish(p, dryRun, w, true)
}

// Uninstall plans and (unless dryRun) applies an uninstall.
func Uninstall(o Options, force, dryRun bool, w io.Writer) error {
	p, err := PlanUninstall(o, force)
	if err != nil {
		return err
	}
	if p.prev == nil {
		fmt.Fprintln(w, "unchanged: holdfast is not installed here (no install record)")
		return nil
	}
	if dryRun && p.leases != nil {
		if hs, err := leases.Live(*p.leases); err == nil {
			n := 0
			for _, h := range hs {
				if !h.Imported {
					n++
				}
			}
			if n > 0 {
				fmt.Fprintf(w, "would reserve %d holdfast-ipam leases in host-local\n", n)
			}
		}
	}
	if !dryRun && p.leases != nil {
		// Before host-local takes over again: it must know every address
		// holdfast-ipam gives a running pod.
		kept, err := leases.HandBack(*p.leases)
		if err != nil {
			return fmt.Errorf("hand holdfast-ipam's leases back to host-local (nothing uninstalled): %w", err)
		}
		if len(kept) > 0 {
			fmt.Fprintf(w, "reserved %d holdfast-ipam leases in host-local: %s\n", len(kept), holders(kept))
		}
	}
	return finish(p, dryRun, w, false)
}

func finish(p *Plan, dryRun bool, w io.Writer, install bool) error {
	if dryRun {
		if err := Diff(w, p); err != nil {
			return err
		}
		Summary(w, p, true)
		return nil
	}
	if err := Apply(p); err != nil {
		return err
	}
	Summary(w, p, false)
	if len(p.Changes) > 0 {
		if install {
			fmt.Fprintln(w, "next: systemctl daemon-reload && systemctl restart holdfast-snapshot-restore holdfast-cri && systemctl restart kubelet")
		} else {
			fmt.Fprintln(w, "next: systemctl daemon-reload && systemctl restart kubelet")
		}
	}
	return nil
}

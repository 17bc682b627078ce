package install

import (
	"fmt"
	"io"
	"path"
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
		fmt.Fprintln(w, nextSteps(p, install))
	}
	return nil
}

// nextSteps is the systemctl line that puts an applied plan into effect:
// after install every holdfast unit restarts (with its new flags) before
// kubelet does. Units the plan removed are stopped too: systemd keeps a removed unit's
// process running after daemon-reload. Install stops them first (a retired
// health or DNS daemon would hold the ports of the agent replacing it);
// uninstall last, once kubelet talks to containerd again.
func nextSteps(p *Plan, install bool) string {
	var removed []string
	for _, ch := range p.Changes {
		if ch.Role == roleUnit && !ch.NewExists {
			removed = append(removed, path.Base(ch.Path))
		}
	}
	stop := ""
	if len(removed) > 0 {
		stop = "systemctl stop " + strings.Join(removed, " ")
	}
	if install {
		line := "next: "
		if stop != "" {
			line += stop + "; "
		}
		var units []string
		for _, f := range p.Record.Files {
			if f.Role == roleUnit {
				units = append(units, path.Base(f.Path))
			}
		}
		return line + "systemctl daemon-reload && systemctl restart " + strings.Join(units, " ") + " && systemctl restart kubelet"
	}
	line := "next: systemctl daemon-reload && systemctl restart kubelet"
	if stop != "" {
		line += " && " + stop
	}
	return line
}

package install

import (
	"fmt"
	"io"
)

// Install plans and (unless dryRun) applies an install, writing a summary
// (and, for a dry run, the exact diff) to w. Malformed inputs are refused
// before anything is written.
func Install(o Options, dryRun bool, w io.Writer) error {
	p, err := PlanInstall(o)
	if err != nil {
		return err
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

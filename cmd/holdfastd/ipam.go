package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/config"
	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
	"github.com/holdfast-edge/holdfast/plugins/holdfast/attachment"
)

// runIPAM is `holdfastd ipam show`: it prints holdfast-ipam's allocations
// and pins, read-only (the state file is replaced atomically, so no lock is
// needed to read a consistent snapshot).
func runIPAM(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "show" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintln(os.Stderr, "Usage: holdfastd ipam show [--data-dir DIR] [--network NAME] [-o table|json]")
			return nil
		}
		return exitError{2, errors.New("usage: holdfastd ipam show [--data-dir DIR] [--network NAME] [-o table|json]")}
	}
	fs := newFlagSet("ipam show", "Print holdfast-ipam's allocations (address → container) and pins (pod → address) of every network, or of one.")
	dataDir := fs.String("data-dir", config.DefaultDataDir, "holdfast-ipam data directory (the ipam.dataDir of the CNI config)")
	network := fs.String("network", "", "show only this CNI network (default: every network with a state file)")
	cniDir := fs.String("cni-dir", attachment.DefaultDataDir, "the holdfast chained plugin's data directory (its dataDir): its attachment records are shown too; \"\" to skip")
	output := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return exitError{2, fmt.Errorf("-o %q: want table or json", *output)}
	}
	states, err := loadIPAMStates(*dataDir, *network)
	if err != nil {
		return err
	}
	atts, err := loadAttachments(*cniDir, *network, os.Stderr)
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			IPAM        []*store.State           `json:"ipam"`
			Attachments []*attachment.Attachment `json:"attachments"`
		}{states, atts})
	}
	if err := printIPAMTable(os.Stdout, states, time.Now()); err != nil {
		return err
	}
	if *cniDir == "" {
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nATTACHMENTS (%s): %d\n", *cniDir, len(atts))
	fmt.Fprintln(tw, "NETWORK\tPOD\tCONTAINER\tIFNAME\tIPS\tMAC\tNETNS")
	for _, a := range atts {
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\n", a.Network, a.PodNamespace, a.PodName, shortID(a.ContainerID), a.IfName, strings.Join(a.IPs, ","), a.MAC, a.Netns)
	}
	return tw.Flush()
}

// loadAttachments reads the holdfast plugin's records (all networks, or
// one). A record that cannot be read is named on warn and skipped: records
// are not fsynced (attachment.Save), so a power loss may leave one empty
// until the runtime's GC prunes it.
func loadAttachments(dir, network string, warn io.Writer) ([]*attachment.Attachment, error) {
	out := []*attachment.Attachment{}
	if dir == "" {
		return out, nil
	}
	nets := []string{network}
	if network == "" {
		ents, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		nets = nil
		for _, e := range ents {
			if e.IsDir() {
				nets = append(nets, e.Name())
			}
		}
	}
	for _, n := range nets {
		paths, err := attachment.List(dir, n)
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			a, err := attachment.Load(p)
			if err != nil {
				fmt.Fprintf(warn, "holdfastd ipam show: skipping unreadable attachment record: %v\n", err)
				continue
			}
			out = append(out, a)
		}
	}
	return out, nil
}

func loadIPAMStates(dataDir, network string) ([]*store.State, error) {
	nets := []string{network}
	if network == "" {
		var err error
		nets, err = store.ListNetworks(dataDir)
		if err != nil {
			return nil, fmt.Errorf("list networks in %s: %w", dataDir, err)
		}
	}
	states := []*store.State{}
	for _, n := range nets {
		st, err := store.New(dataDir, n).Load()
		if err != nil {
			return nil, err
		}
		states = append(states, st)
	}
	return states, nil
}

func printIPAMTable(w io.Writer, states []*store.State, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, st := range states {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "NETWORK %s: %d allocations, %d pins\n", st.Network, len(st.Allocations), len(st.Pins))
		fmt.Fprintln(tw, "ADDRESS\tCONTAINER\tIFNAME\tPOD\tSINCE")
		for _, a := range st.SortedAllocations() {
			pod := "-"
			if a.PinKey != "" {
				pod = podOfKey(a.PinKey)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.IP, shortID(a.ContainerID), a.IfName, pod, a.Since.UTC().Format(time.RFC3339))
		}
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "POD\tIFNAME\tPINNED\tSTATE\tLAST USED")
		for _, p := range st.SortedPins() {
			state := "released"
			if p.ContainerID != "" {
				state = "in use by " + shortID(p.ContainerID)
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s ago\n", p.Namespace, p.Name, p.IfName, strings.Join(p.IPs, ","), state, now.Sub(p.LastUsed).Round(time.Second))
		}
	}
	return tw.Flush()
}

// podOfKey turns network/namespace/name/ifname into namespace/name.
func podOfKey(k string) string {
	parts := strings.Split(k, "/")
	if len(parts) != 4 {
		return k
	}
	return parts[1] + "/" + parts[2]
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Package status gathers one screen of a node's autonomy state from the
// durable files of the other components (snapshot, CRI shim, holdfast-ipam,
// health, DNS) and a reachability probe of the cloud apiserver. It only
// reads; every section is read on its own through a small Source func, so a
// missing or unreadable file shows as "absent" or "unknown" with the reason
// and never hides the other sections.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"sort"
	"strings"
	"time"
)

// State of a section.
const (
	OK      = "ok"
	Absent  = "absent"  // the component has written nothing yet
	Unknown = "unknown" // the file exists but could not be read
)

// Report is the whole screen.
type Report struct {
	Node     string          `json:"node"`
	At       time.Time       `json:"at"`
	Install  InstallSection  `json:"install"`
	Snapshot SnapshotSection `json:"snapshot"`
	Pods     PodsSection     `json:"pods"`
	Pins     PinsSection     `json:"pins"`
	Leases   LeasesSection   `json:"leases"`
	Peers    PeersSection    `json:"peers"`
	DNS      DNSSection      `json:"dns"`
	Cloud    CloudSection    `json:"cloud"`
}

// Section is the common head of every section.
type Section struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// SnapshotSection: the network snapshot and the VTEP MAC pin.
type SnapshotSection struct {
	Section
	CapturedAt time.Time `json:"capturedAt,omitempty"`
	Entries    int       `json:"entries"`
	Devices    []VTEP    `json:"devices,omitempty"`
}

// VTEP compares a device's live MAC with its pin.
type VTEP struct {
	Name      string `json:"name"`
	PinnedMAC string `json:"pinnedMAC"`
	LiveMAC   string `json:"liveMAC"` // "absent" when the device is not there
	Match     bool   `json:"match"`
}

// PodsSection: pods the CRI shim recorded and their relaunch outcome.
type PodsSection struct {
	Section
	Pods []Pod `json:"pods,omitempty"`
}

// Pod is one recorded pod.
type Pod struct {
	Name     string `json:"name"` // namespace/name
	Relaunch string `json:"relaunch"`
	Adopted  bool   `json:"adopted"`
	Error    string `json:"error,omitempty"`
}

// PinsSection: holdfast-ipam pins.
type PinsSection struct {
	Section
	// InUse counts live allocations; Stale, allocations whose sandbox netns
	// is gone; Released, pins no allocation holds (kept for their pods).
	InUse    int `json:"inUse"`
	Stale    int `json:"stale"`
	Released int `json:"released"`
}

// PeersSection: the last verdicts of the health unit.
type PeersSection struct {
	Section
	Unit     string            `json:"unit,omitempty"`
	Members  int               `json:"members"`
	Updated  time.Time         `json:"updated,omitempty"`
	Verdicts map[string]string `json:"verdicts,omitempty"`
}

// DNSSection: the DNS snapshot.
type DNSSection struct {
	Section
	UpdatedAt time.Time `json:"updatedAt,omitempty"`
	Services  int       `json:"services"`
	Slices    int       `json:"endpointSlices"`
}

// CloudSection: can this node reach the apiserver?
type CloudSection struct {
	Section
	Address   string `json:"address,omitempty"`
	Reachable bool   `json:"reachable"`
}

// Sources reads each section; a nil Source leaves its section "unknown".
// Each returns fs.ErrNotExist (wrapped) when its component wrote nothing.
type Sources struct {
	Install  func() (InstallSection, error)
	Snapshot func() (SnapshotSection, error)
	Pods     func() (PodsSection, error)
	Pins     func() (PinsSection, error)
	Leases   func() (LeasesSection, error)
	Peers    func() (PeersSection, error)
	DNS      func() (DNSSection, error)
	// Cloud is the apiserver host:port to probe ("" skips the probe).
	Cloud string
	Dial  func(ctx context.Context, addr string) error
}

// Gather reads every section.
func Gather(ctx context.Context, node string, src Sources, now time.Time) Report {
	r := Report{Node: node, At: now}
	r.Install = read(src.Install, func(s *InstallSection) *Section { return &s.Section })
	r.Leases = read(src.Leases, func(s *LeasesSection) *Section { return &s.Section })
	r.Snapshot = read(src.Snapshot, func(s *SnapshotSection) *Section { return &s.Section })
	r.Pods = read(src.Pods, func(s *PodsSection) *Section { return &s.Section })
	r.Pins = read(src.Pins, func(s *PinsSection) *Section { return &s.Section })
	r.Peers = read(src.Peers, func(s *PeersSection) *Section { return &s.Section })
	r.DNS = read(src.DNS, func(s *DNSSection) *Section { return &s.Section })
	r.Cloud = CloudSection{Address: src.Cloud}
	switch {
	case src.Cloud == "" || src.Dial == nil:
		r.Cloud.State, r.Cloud.Reason = Unknown, "no apiserver address (pass --apiserver or --kubeconfig)"
	default:
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := src.Dial(c, src.Cloud)
		cancel()
		r.Cloud.State, r.Cloud.Reachable = OK, err == nil
		if err != nil {
			r.Cloud.Reason = err.Error()
		}
	}
	return r
}

// read runs one source, turning errors and panics into the section state.
func read[T any](f func() (T, error), head func(*T) *Section) (out T) {
	h := head(&out)
	if f == nil {
		h.State, h.Reason = Unknown, "not configured"
		return out
	}
	defer func() {
		if p := recover(); p != nil {
			var zero T
			out = zero
			h := head(&out)
			h.State, h.Reason = Unknown, fmt.Sprintf("reader failed: %v", p)
		}
	}()
	v, err := f()
	out = v
	h = head(&out)
	switch {
	case err == nil:
		h.State = OK
	case errors.Is(err, fs.ErrNotExist):
		h.State, h.Reason = Absent, err.Error()
	default:
		h.State, h.Reason = Unknown, err.Error()
	}
	return out
}

// DialTCP is the default reachability probe.
func DialTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func age(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

func head(s Section) string {
	if s.State == OK {
		return ""
	}
	return fmt.Sprintf("%s (%s)", s.State, s.Reason)
}

// WriteText writes the one-screen view.
func WriteText(w io.Writer, r Report) {
	fmt.Fprintf(w, "node %s  (%s)\n\n", r.Node, r.At.Format(time.RFC3339))
	writeInstall(w, r.Install)
	fmt.Fprintf(w, "%-10s", "snapshot")
	if h := head(r.Snapshot.Section); h != "" {
		fmt.Fprintln(w, h)
	} else {
		fmt.Fprintf(w, "captured %s, %d entries\n", age(r.At, r.Snapshot.CapturedAt), r.Snapshot.Entries)
		for _, d := range r.Snapshot.Devices {
			mark := "matches pin"
			if !d.Match {
				mark = "DIFFERS FROM PIN"
			}
			fmt.Fprintf(w, "%-10s%s: live %s, pinned %s: %s\n", "vtep", d.Name, d.LiveMAC, d.PinnedMAC, mark)
		}
	}
	fmt.Fprintf(w, "%-10s", "pods")
	if h := head(r.Pods.Section); h != "" {
		fmt.Fprintln(w, h)
	} else {
		counts := map[string]int{}
		for _, p := range r.Pods.Pods {
			counts[p.Relaunch]++
		}
		var parts []string
		for k, v := range counts {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		fmt.Fprintf(w, "%d recorded; relaunch: %s\n", len(r.Pods.Pods), strings.Join(parts, ", "))
		for _, p := range r.Pods.Pods {
			if p.Error != "" {
				fmt.Fprintf(w, "%-10s%s: %s: %s\n", "", p.Name, p.Relaunch, p.Error)
			}
		}
	}
	fmt.Fprintf(w, "%-10s", "ip pins")
	if h := head(r.Pins.Section); h != "" {
		fmt.Fprintln(w, h)
	} else {
		fmt.Fprintf(w, "%d in use, %d stale (sandbox gone, released at the next GC), %d released (kept for their pods)\n", r.Pins.InUse, r.Pins.Stale, r.Pins.Released)
	}
	writeLeases(w, r.Leases)
	fmt.Fprintf(w, "%-10s", "peers")
	if h := head(r.Peers.Section); h != "" {
		fmt.Fprintln(w, h)
	} else {
		var names []string
		for n := range r.Peers.Verdicts {
			names = append(names, n)
		}
		sort.Strings(names)
		var vs []string
		for _, n := range names {
			vs = append(vs, n+"="+r.Peers.Verdicts[n])
		}
		fmt.Fprintf(w, "unit %q, %d members, updated %s: %s\n", r.Peers.Unit, r.Peers.Members, age(r.At, r.Peers.Updated), strings.Join(vs, " "))
	}
	fmt.Fprintf(w, "%-10s", "dns")
	if h := head(r.DNS.Section); h != "" {
		fmt.Fprintln(w, h)
	} else {
		fmt.Fprintf(w, "snapshot %s, %d services, %d endpoint slices\n", age(r.At, r.DNS.UpdatedAt), r.DNS.Services, r.DNS.Slices)
	}
	fmt.Fprintf(w, "%-10s", "cloud")
	switch {
	case r.Cloud.State != OK:
		fmt.Fprintln(w, head(r.Cloud.Section))
	case r.Cloud.Reachable:
		fmt.Fprintf(w, "apiserver %s reachable\n", r.Cloud.Address)
	default:
		fmt.Fprintf(w, "apiserver %s UNREACHABLE: %s\n", r.Cloud.Address, r.Cloud.Reason)
	}
}

func writeInstall(w io.Writer, s InstallSection) {
	fmt.Fprintf(w, "%-10s", "install")
	switch {
	case s.State != OK:
		fmt.Fprintln(w, head(s.Section))
	case s.IPAMOnly:
		fmt.Fprintln(w, "uninstalled, but holdfast-ipam kept in the CNI bin dir for pods created under holdfast (run uninstall again once they are gone)")
	case s.Installed:
		fmt.Fprintf(w, "installed (%d files in the install record)\n", s.Files)
	default:
		fmt.Fprintln(w, "not installed (no install record)")
	}
}

func writeLeases(w io.Writer, s LeasesSection) {
	fmt.Fprintf(w, "%-10s", "leases")
	if h := head(s.Section); h != "" {
		fmt.Fprintln(w, h)
		return
	}
	var parts []string
	for _, c := range s.Stores {
		parts = append(parts, fmt.Sprintf("%s %s %d", c.Network, c.Store, c.Live))
	}
	fmt.Fprintf(w, "live: %s; %d held in both by the same container (import / hand-back)\n", strings.Join(parts, ", "), s.Mirrored)
	for _, c := range s.Conflicts {
		fmt.Fprintf(w, "%-10sHELD IN TWO STORES: %s\n", "", c)
	}
	for _, m := range s.MissingPlugins {
		fmt.Fprintf(w, "%-10sPLUGIN MISSING: %s\n", "", m)
	}
}

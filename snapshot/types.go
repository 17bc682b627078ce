package snapshot

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// Snapshot is everything holdfast restores for one node's overlay.
type Snapshot struct {
	NodeName   string    `json:"nodeName"`
	CapturedAt time.Time `json:"capturedAt"`
	Devices    []Device  `json:"devices"`
	// SubnetEnv is flannel's subnet.env, nil when it did not exist.
	SubnetEnv *FileCopy `json:"subnetEnv,omitempty"`
	// IPTables holds the selected chains per table (nat, filter).
	IPTables []IPTable `json:"iptables,omitempty"`
	// NFTables holds the selected nftables tables, whole (schema version 2).
	NFTables []NFTable `json:"nftables,omitempty"`
}

// Device is one VXLAN device and every entry that hangs off it.
type Device struct {
	Name string `json:"name"`
	VNI  int    `json:"vni"`
	Port int    `json:"port"`
	// LocalIP is the VXLAN source address (the node's underlay IP).
	LocalIP string `json:"localIP,omitempty"`
	// Underlay is the name of the underlay device (vxlan "dev").
	Underlay string `json:"underlay,omitempty"`
	Learning bool   `json:"learning"`
	MTU      int    `json:"mtu"`
	// MAC is the device's MAC when captured; PinnedMAC is the one restore
	// creates the device with (internal/vtepmac).
	MAC       string     `json:"mac"`
	PinnedMAC string     `json:"pinnedMAC"`
	Addrs     []string   `json:"addrs"`
	Routes    []Route    `json:"routes"`
	FDB       []FDBEntry `json:"fdb"`
	Neighbors []Neighbor `json:"neighbors"`
}

// Route is a route through a device (main table).
type Route struct {
	Dst    string `json:"dst"`
	Via    string `json:"via,omitempty"`
	Src    string `json:"src,omitempty"`
	OnLink bool   `json:"onlink,omitempty"`
	Metric int    `json:"metric,omitempty"`
	Scope  int    `json:"scope,omitempty"`
}

// FDBEntry is a permanent "self" forwarding entry: peer VTEP MAC → underlay IP.
type FDBEntry struct {
	MAC string `json:"mac"`
	Dst string `json:"dst"`
}

// Neighbor is a permanent neighbour entry: peer VTEP IP → peer VTEP MAC.
type Neighbor struct {
	IP  string `json:"ip"`
	MAC string `json:"mac"`
}

// FileCopy is the content of a small file.
type FileCopy struct {
	Path    string `json:"path"`
	Content string `json:"content"`
}

// IPTable is the selected part of one iptables table, in iptables-save form.
type IPTable struct {
	Table string `json:"table"`
	// Chains are the selected user chains.
	Chains []string `json:"chains"`
	// Rules are "-A CHAIN ..." lines: every rule of a selected chain and every
	// rule of a built-in chain that jumps into a selected chain, in order.
	Rules []string `json:"rules"`
}

// Entries counts the kernel entries of the snapshot.
func (s *Snapshot) Entries() int {
	n := 0
	for _, d := range s.Devices {
		n += 1 + len(d.Addrs) + len(d.Routes) + len(d.FDB) + len(d.Neighbors)
	}
	for _, t := range s.IPTables {
		n += len(t.Chains) + len(t.Rules)
	}
	n += len(s.NFTables)
	if s.SubnetEnv != nil {
		n++
	}
	return n
}

// Device returns the device with the given name.
func (s *Snapshot) Device(name string) *Device {
	for i := range s.Devices {
		if s.Devices[i].Name == name {
			return &s.Devices[i]
		}
	}
	return nil
}

// NFTable returns the nftables table with the given "family name" key.
func (s *Snapshot) NFTable(key string) *NFTable {
	for i := range s.NFTables {
		if s.NFTables[i].Key() == key {
			return &s.NFTables[i]
		}
	}
	return nil
}

// Validate checks every field a restore would use, so that a bad snapshot is
// refused as a whole before anything is changed.
func (s *Snapshot) Validate() error {
	if s.NodeName == "" {
		return fmt.Errorf("snapshot has no node name")
	}
	seen := map[string]bool{}
	for _, d := range s.Devices {
		if err := d.validate(); err != nil {
			return fmt.Errorf("device %q: %w", d.Name, err)
		}
		if seen[d.Name] {
			return fmt.Errorf("device %q appears twice", d.Name)
		}
		seen[d.Name] = true
	}
	for _, t := range s.IPTables {
		if t.Table != "nat" && t.Table != "filter" {
			return fmt.Errorf("iptables table %q is not nat or filter", t.Table)
		}
		for _, c := range t.Chains {
			if c == "" || strings.ContainsAny(c, " \t\n") {
				return fmt.Errorf("iptables %s: bad chain name %q", t.Table, c)
			}
		}
		for _, r := range t.Rules {
			if !strings.HasPrefix(r, "-A ") || strings.ContainsAny(r, "\n\r") {
				return fmt.Errorf("iptables %s: bad rule %q", t.Table, r)
			}
		}
	}
	seenNFT := map[string]bool{}
	for _, t := range s.NFTables {
		if err := t.validate(); err != nil {
			return err
		}
		if seenNFT[t.Key()] {
			return fmt.Errorf("nftables table %s appears twice", t.Key())
		}
		seenNFT[t.Key()] = true
	}
	if s.SubnetEnv != nil && (s.SubnetEnv.Path == "" || !strings.HasPrefix(s.SubnetEnv.Path, "/")) {
		return fmt.Errorf("subnet.env path %q is not absolute", s.SubnetEnv.Path)
	}
	return nil
}

func (d *Device) validate() error {
	if d.Name == "" || len(d.Name) > 15 || strings.ContainsAny(d.Name, "/ \t\n") {
		return fmt.Errorf("bad device name")
	}
	if d.VNI < 0 || d.VNI > 1<<24-1 {
		return fmt.Errorf("VNI %d out of range", d.VNI)
	}
	if d.Port < 0 || d.Port > 65535 {
		return fmt.Errorf("port %d out of range", d.Port)
	}
	if d.MTU < 0 || d.MTU > 65535 {
		return fmt.Errorf("MTU %d out of range", d.MTU)
	}
	if d.LocalIP != "" && net.ParseIP(d.LocalIP) == nil {
		return fmt.Errorf("bad local IP %q", d.LocalIP)
	}
	if _, err := parseUnicastMAC(d.PinnedMAC); err != nil {
		return fmt.Errorf("pinned MAC: %w", err)
	}
	for _, a := range d.Addrs {
		if _, _, err := net.ParseCIDR(a); err != nil {
			return fmt.Errorf("address %q: %w", a, err)
		}
	}
	for _, r := range d.Routes {
		if _, _, err := net.ParseCIDR(r.Dst); err != nil {
			return fmt.Errorf("route %q: %w", r.Dst, err)
		}
		if r.Via != "" && net.ParseIP(r.Via) == nil {
			return fmt.Errorf("route %s: bad gateway %q", r.Dst, r.Via)
		}
		if r.Src != "" && net.ParseIP(r.Src) == nil {
			return fmt.Errorf("route %s: bad source %q", r.Dst, r.Src)
		}
		if r.Metric < 0 || r.Scope < 0 || r.Scope > 255 {
			return fmt.Errorf("route %s: bad metric or scope", r.Dst)
		}
	}
	for _, f := range d.FDB {
		if _, err := net.ParseMAC(f.MAC); err != nil {
			return fmt.Errorf("fdb %q: %w", f.MAC, err)
		}
		if net.ParseIP(f.Dst) == nil {
			return fmt.Errorf("fdb %s: bad dst %q", f.MAC, f.Dst)
		}
	}
	for _, n := range d.Neighbors {
		if net.ParseIP(n.IP) == nil {
			return fmt.Errorf("neighbour: bad IP %q", n.IP)
		}
		if _, err := net.ParseMAC(n.MAC); err != nil {
			return fmt.Errorf("neighbour %s: %w", n.IP, err)
		}
	}
	return nil
}

func parseUnicastMAC(s string) (net.HardwareAddr, error) {
	m, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("bad MAC %q: %w", s, err)
	}
	if len(m) != 6 || m[0]&0x01 != 0 {
		return nil, fmt.Errorf("MAC %q is not a unicast Ethernet address", s)
	}
	return m, nil
}

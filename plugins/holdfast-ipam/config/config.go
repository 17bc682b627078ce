// Package config parses and validates holdfast-ipam's network configuration:
// host-local's "ranges" / "routes" / "dataDir" shape (so the flannel CNI
// plugin can inject its ranges), the legacy single-range fields, and
// holdfast's own "pinTTL"; and the pod identity in CNI_ARGS.
//
// It owns only parsing and validation: it never touches files, the store or
// the network. Every error it returns is a *types.Error with the CNI spec's
// code (6 for undecodable input, 7 for an invalid configuration, 4 for bad
// CNI_ARGS) and a message naming the offending field.
package config

import (
	"encoding/json"
	"fmt"
	"github.com/holdfast-edge/holdfast/internal/cniplugin"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// DefaultDataDir is where allocations and pins live when dataDir is unset.
const DefaultDataDir = "/var/lib/holdfast/ipam"

// DefaultPinTTL is how long a released pin is kept when pinTTL is unset.
const DefaultPinTTL = 720 * time.Hour

// PluginType is the IPAM "type" this plugin answers to.
const PluginType = "holdfast-ipam"

// Range is one validated address range of a subnet.
type Range struct {
	Subnet     netip.Prefix
	RangeStart netip.Addr
	RangeEnd   netip.Addr
	Gateway    netip.Addr // zero if none
}

// Contains reports whether a lies inside the allocatable part of r.
func (r Range) Contains(a netip.Addr) bool {
	return r.Subnet.Contains(a) && a.Compare(r.RangeStart) >= 0 && a.Compare(r.RangeEnd) <= 0
}

// String renders r like host-local does in its messages.
func (r Range) String() string {
	return fmt.Sprintf("%s (%s-%s)", r.Subnet, r.RangeStart, r.RangeEnd)
}

// RangeSet is a list of ranges of one address family; an ADD takes one
// address from each range set.
type RangeSet []Range

// Contains reports whether a lies inside one of the set's ranges.
func (s RangeSet) Contains(a netip.Addr) bool {
	for _, r := range s {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// IPAM is the validated "ipam" section.
type IPAM struct {
	Type       string
	Ranges     []RangeSet
	Routes     []*types.Route
	DataDir    string
	PinTTL     time.Duration
	ResolvConf string
}

// Net is the validated network configuration handed to the plugin.
type Net struct {
	CNIVersion string
	Name       string
	IPAM       IPAM
	// ValidAttachments is only set on GC.
	ValidAttachments []types.GCAttachment
}

// PodArgs is the pod identity from CNI_ARGS.
type PodArgs struct {
	Namespace string
	Name      string
	UID       string
}

// Pinned reports whether the pod has an identity to pin to.
func (p PodArgs) Pinned() bool { return p.Namespace != "" && p.Name != "" }

type rawRange struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
}

type rawIPAM struct {
	Type       string         `json:"type"`
	Ranges     [][]rawRange   `json:"ranges"`
	Routes     []*types.Route `json:"routes"`
	DataDir    string         `json:"dataDir"`
	PinTTL     *string        `json:"pinTTL"`
	ResolvConf string         `json:"resolvConf"`
	// Legacy single-range fields, as host-local accepts them.
	rawRange
}

type rawNet struct {
	CNIVersion       string               `json:"cniVersion"`
	Name             string               `json:"name"`
	IPAM             *rawIPAM             `json:"ipam"`
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
}

func invalid(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

// Parse decodes and validates a network configuration as received on stdin.
func Parse(data []byte) (*Net, error) {
	n, ri, err := parseBase(data)
	if err != nil {
		return nil, err
	}
	return n, n.parseRanges(ri)
}

// ParseGC is Parse for GC, which needs no ranges: a chained plugin that
// forwards the runtime's GC (plugins/holdfast) knows the network's name and
// holdfast-ipam's dataDir, not the ranges flannel filled in at ADD.
func ParseGC(data []byte) (*Net, error) {
	n, ri, err := parseBase(data)
	if err != nil {
		return nil, err
	}
	if len(ri.Ranges) == 0 && ri.Subnet == "" {
		return n, nil
	}
	return n, n.parseRanges(ri)
}

func parseBase(data []byte) (*Net, *rawIPAM, error) {
	var raw rawNet
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, nil, types.NewError(types.ErrDecodingFailure, "holdfast-ipam: malformed network configuration JSON: "+err.Error(), "")
	}
	if raw.Name == "" {
		return nil, nil, invalid("holdfast-ipam: network configuration has no \"name\"")
	}
	if strings.ContainsAny(raw.Name, "/\\\x00") || raw.Name == "." || raw.Name == ".." {
		return nil, nil, invalid("holdfast-ipam: network name %q is not usable as a directory name", raw.Name)
	}
	if raw.IPAM == nil {
		return nil, nil, invalid("holdfast-ipam: network %q has no \"ipam\" section", raw.Name)
	}
	ri := raw.IPAM
	if ri.Type != "" && ri.Type != PluginType {
		return nil, nil, invalid("holdfast-ipam: ipam.type is %q, want %q", ri.Type, PluginType)
	}
	n := &Net{CNIVersion: raw.CNIVersion, Name: raw.Name, ValidAttachments: raw.ValidAttachments}
	n.IPAM.Type = PluginType
	n.IPAM.DataDir = ri.DataDir
	if n.IPAM.DataDir == "" {
		n.IPAM.DataDir = DefaultDataDir
	}
	n.IPAM.ResolvConf = ri.ResolvConf
	n.IPAM.PinTTL = DefaultPinTTL
	if ri.PinTTL != nil {
		d, err := time.ParseDuration(*ri.PinTTL)
		if err != nil {
			return nil, nil, invalid("holdfast-ipam: ipam.pinTTL %q is not a duration (e.g. \"720h\"): %v", *ri.PinTTL, err)
		}
		if d <= 0 {
			return nil, nil, invalid("holdfast-ipam: ipam.pinTTL %q must be positive", *ri.PinTTL)
		}
		n.IPAM.PinTTL = d
	}
	return n, ri, nil
}

func (n *Net) parseRanges(ri *rawIPAM) error {
	rawSets := ri.Ranges
	if ri.Subnet != "" {
		if len(rawSets) > 0 {
			return invalid("holdfast-ipam: ipam has both \"ranges\" and the legacy \"subnet\"; use one")
		}
		rawSets = [][]rawRange{{ri.rawRange}}
	}
	if len(rawSets) == 0 {
		return invalid("holdfast-ipam: ipam.ranges is empty: no addresses to allocate")
	}
	var all []struct {
		r    Range
		name string
	}
	for i, rs := range rawSets {
		if len(rs) == 0 {
			return invalid("holdfast-ipam: ipam.ranges[%d] is empty", i)
		}
		var set RangeSet
		for j, rr := range rs {
			name := fmt.Sprintf("ipam.ranges[%d][%d]", i, j)
			r, err := parseRange(name, rr)
			if err != nil {
				return err
			}
			if len(set) > 0 && set[0].Subnet.Addr().Is4() != r.Subnet.Addr().Is4() {
				return invalid("holdfast-ipam: %s (%s) mixes address families within range set %d", name, r.Subnet, i)
			}
			for _, o := range all {
				if r.Subnet.Overlaps(o.r.Subnet) && !(r.RangeEnd.Less(o.r.RangeStart) || o.r.RangeEnd.Less(r.RangeStart)) {
					return invalid("holdfast-ipam: %s (%s) overlaps %s (%s)", name, r, o.name, o.r)
				}
			}
			all = append(all, struct {
				r    Range
				name string
			}{r, name})
			set = append(set, r)
		}
		n.IPAM.Ranges = append(n.IPAM.Ranges, set)
	}
	for i, rt := range ri.Routes {
		if rt == nil || rt.Dst.IP == nil {
			return invalid("holdfast-ipam: ipam.routes[%d] has no \"dst\"", i)
		}
		n.IPAM.Routes = append(n.IPAM.Routes, rt)
	}
	return nil
}

func parseAddr(name, field, s string, subnet netip.Prefix) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, invalid("holdfast-ipam: %s.%s %q is not an IP address", name, field, s)
	}
	a = a.Unmap()
	if !subnet.Contains(a) {
		return netip.Addr{}, invalid("holdfast-ipam: %s.%s %s is outside subnet %s", name, field, a, subnet)
	}
	return a, nil
}

func parseRange(name string, rr rawRange) (Range, error) {
	var r Range
	if rr.Subnet == "" {
		return r, invalid("holdfast-ipam: %s has no \"subnet\"", name)
	}
	p, err := netip.ParsePrefix(rr.Subnet)
	if err != nil {
		return r, invalid("holdfast-ipam: %s.subnet %q is not a CIDR", name, rr.Subnet)
	}
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked()
	if p.Addr().Is4() && p.Bits() > 30 || p.Addr().Is6() && p.Bits() > 126 {
		return r, invalid("holdfast-ipam: %s.subnet %s is too small to allocate from", name, p)
	}
	r.Subnet = p
	r.RangeStart = p.Addr().Next()
	r.RangeEnd = lastAddr(p)
	if p.Addr().Is4() {
		r.RangeEnd = r.RangeEnd.Prev() // broadcast
	}
	if rr.RangeStart != "" {
		if r.RangeStart, err = parseAddr(name, "rangeStart", rr.RangeStart, p); err != nil {
			return r, err
		}
	}
	if rr.RangeEnd != "" {
		if r.RangeEnd, err = parseAddr(name, "rangeEnd", rr.RangeEnd, p); err != nil {
			return r, err
		}
	}
	if r.RangeEnd.Less(r.RangeStart) {
		return r, invalid("holdfast-ipam: %s.rangeEnd %s is before rangeStart %s", name, r.RangeEnd, r.RangeStart)
	}
	if rr.Gateway != "" {
		if r.Gateway, err = parseAddr(name, "gateway", rr.Gateway, p); err != nil {
			return r, err
		}
	} else {
		r.Gateway = p.Addr().Next()
	}
	return r, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		bitsBefore := i * 8
		switch {
		case p.Bits() <= bitsBefore:
			b[i] = 0xff
		case p.Bits() < bitsBefore+8:
			b[i] |= byte(0xff >> (p.Bits() - bitsBefore))
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// ParseArgs reads the pod identity from CNI_ARGS ("K=V;K=V"). Unknown keys
// are ignored; a pair without "=" is an error (code 4).
func ParseArgs(s string) (PodArgs, error) {
	a, err := cniplugin.ParseArgs("holdfast-ipam", s)
	return PodArgs(a), err
}

// PinKey is the key a pod's addresses are pinned under: network, pod
// namespace, pod name and interface name.
func PinKey(network string, pod PodArgs, ifName string) string {
	return network + "/" + pod.Namespace + "/" + pod.Name + "/" + ifName
}

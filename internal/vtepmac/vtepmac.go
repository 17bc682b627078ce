// Package vtepmac owns the VTEP MAC pin: the hardware address a node's VXLAN
// device must carry so that peers' FDB and neighbour entries for this node
// stay right across re-creation of the device (reboot, flanneld restart).
//
// A pin is derived from the node name and the VNI (a locally administered
// unicast MAC, internal/stablemac), except that the first time a pin is
// made while a live device exists, the live device's MAC is adopted instead,
// so installing holdfast on a running node disturbs no peer. Pins are kept in
// one versioned, checksummed file (internal/statefile). This package never
// touches a network device; callers read and apply MACs.
package vtepmac

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"sort"
	"time"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/stablemac"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

const (
	// FileName is the pin file inside the snapshot directory.
	FileName = "vtep-mac.json"
	// Kind and Version identify the pin file's schema.
	Kind    = "holdfast.vtep-mac-pins"
	Version = 1
)

// Source says where a pin's MAC came from.
type Source string

const (
	// Derived pins come from the node name and VNI.
	Derived Source = "derived"
	// Adopted pins come from a device that was live when the pin was made.
	Adopted Source = "adopted"
)

// Pin is the MAC pinned to one (node, VNI).
type Pin struct {
	VNI     int       `json:"vni"`
	MAC     string    `json:"mac"`
	Source  Source    `json:"source"`
	Created time.Time `json:"created"`
}

// File is the content of the pin file.
type File struct {
	NodeName string `json:"nodeName"`
	Pins     []Pin  `json:"pins"`
}

// Derive returns the MAC derived from the node name and VNI.
func Derive(nodeName string, vni int) net.HardwareAddr {
	return stablemac.FromName("holdfast-vtep", nodeName, fmt.Sprint(vni))
}

// Path returns the pin file path in dir.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// Load reads the pin file in dir. A missing file yields an empty File for
// nodeName. A file of another node is refused.
func Load(dir, nodeName string) (*File, error) {
	var f File
	if _, err := statefile.Load(Path(dir), Kind, Version, &f); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &File{NodeName: nodeName}, nil
		}
		return nil, err
	}
	if f.NodeName != nodeName {
		return nil, fmt.Errorf("%s: pins belong to node %q, this node is %q: refusing to use them", Path(dir), f.NodeName, nodeName)
	}
	for _, p := range f.Pins {
		if _, err := parseMAC(p.MAC); err != nil {
			return nil, fmt.Errorf("%s: pin for VNI %d: %w", Path(dir), p.VNI, err)
		}
	}
	return &f, nil
}

// Lookup returns the pin for vni, if any.
func (f *File) Lookup(vni int) (Pin, bool) {
	for _, p := range f.Pins {
		if p.VNI == vni {
			return p, true
		}
	}
	return Pin{}, false
}

// Ensure returns the pin for (nodeName, vni) in dir, creating and saving it
// if it does not exist yet: adopting live (the MAC of a live device, may be
// nil) when it is a valid unicast MAC, else deriving one. An existing pin is
// never changed.
func Ensure(dir, nodeName string, vni int, live net.HardwareAddr, now time.Time) (Pin, error) {
	// The pin file shares the snapshot dir and its lock: two savers must
	// not both create a pin, and the lock's sweep must not meet a live
	// temp file.
	unlock, err := atomicfile.LockDir(dir, atomicfile.DefaultLockTimeout)
	if err != nil {
		return Pin{}, fmt.Errorf("VTEP MAC pin: %w", err)
	}
	defer unlock()
	f, err := Load(dir, nodeName)
	if err != nil {
		return Pin{}, err
	}
	if p, ok := f.Lookup(vni); ok {
		return p, nil
	}
	p := Pin{VNI: vni, Source: Derived, MAC: Derive(nodeName, vni).String(), Created: now.UTC()}
	if len(live) == 6 && live[0]&0x01 == 0 && !isZero(live) {
		p.MAC, p.Source = live.String(), Adopted
	}
	f.Pins = append(f.Pins, p)
	sort.Slice(f.Pins, func(i, j int) bool { return f.Pins[i].VNI < f.Pins[j].VNI })
	if err := statefile.Save(Path(dir), Kind, Version, f); err != nil {
		return Pin{}, fmt.Errorf("save VTEP MAC pin: %w", err)
	}
	return p, nil
}

// HardwareAddr parses the pin's MAC.
func (p Pin) HardwareAddr() net.HardwareAddr {
	m, _ := parseMAC(p.MAC)
	return m
}

func parseMAC(s string) (net.HardwareAddr, error) {
	m, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("bad MAC %q: %w", s, err)
	}
	if len(m) != 6 || m[0]&0x01 != 0 || isZero(m) {
		return nil, fmt.Errorf("MAC %q is not a unicast Ethernet address", s)
	}
	return m, nil
}

func isZero(m net.HardwareAddr) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}

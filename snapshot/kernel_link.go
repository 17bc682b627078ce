package snapshot

import (
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernel is the device layer: one netlink handle bound to the network
// namespace it was opened in. Each kernel_*.go file holds one entry kind's
// read and add.
type kernel struct{ h *netlink.Handle }

func openKernel() (*kernel, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &kernel{h: h}, nil
}

func (k *kernel) close() { k.h.Close() }

// dump retries a netlink dump interrupted by a concurrent change.
func dump[T any](f func() ([]T, error)) ([]T, error) {
	var out []T
	var err error
	for i := 0; i < 5; i++ {
		out, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, err
}

// liveDevice is a device as found in the kernel.
type liveDevice struct {
	Device
	index int
	kind  string // netlink link type ("vxlan", "bridge", ...)
	up    bool
}

// readDevice returns the live device called name with all its entries, or
// nil when no such link exists.
func (k *kernel) readDevice(name string) (*liveDevice, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("read link %s: %w", name, err)
	}
	return k.describe(l)
}

func (k *kernel) describe(l netlink.Link) (*liveDevice, error) {
	a := l.Attrs()
	d := &liveDevice{index: a.Index, kind: l.Type(), up: a.Flags&net.FlagUp != 0}
	d.Name, d.MTU, d.MAC = a.Name, a.MTU, a.HardwareAddr.String()
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return d, nil
	}
	d.VNI, d.Port, d.Learning = vx.VxlanId, vx.Port, vx.Learning
	if vx.SrcAddr != nil && !vx.SrcAddr.IsUnspecified() {
		d.LocalIP = vx.SrcAddr.String()
	}
	if vx.VtepDevIndex > 0 {
		if ul, err := k.h.LinkByIndex(vx.VtepDevIndex); err == nil {
			d.Underlay = ul.Attrs().Name
		}
	}
	var err error
	if d.Addrs, err = k.addrs(l); err != nil {
		return nil, err
	}
	if d.Routes, err = k.routes(a.Index); err != nil {
		return nil, err
	}
	if d.FDB, err = k.fdb(a.Index); err != nil {
		return nil, err
	}
	if d.Neighbors, err = k.neighbors(a.Index); err != nil {
		return nil, err
	}
	d.sortEntries()
	return d, nil
}

// vxlanNames lists every VXLAN link, preferred first (e.g. flannel.1).
func (k *kernel) vxlanNames(preferred string) ([]string, error) {
	links, err := dump(k.h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var names []string
	for _, l := range links {
		if l.Type() == "vxlan" {
			names = append(names, l.Attrs().Name)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == preferred) != (names[j] == preferred) {
			return names[i] == preferred
		}
		return names[i] < names[j]
	})
	return names, nil
}

// addVXLAN creates the device with its pinned MAC in the link-add request
// itself (never changed afterwards), then sets it up.
func (k *kernel) addVXLAN(d *Device) (undo func() error, err error) {
	mac, err := parseUnicastMAC(d.PinnedMAC)
	if err != nil {
		return nil, err
	}
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU, la.HardwareAddr = d.Name, d.MTU, mac
	vx := &netlink.Vxlan{LinkAttrs: la, VxlanId: d.VNI, Port: d.Port, Learning: d.Learning}
	if d.LocalIP != "" {
		vx.SrcAddr = net.ParseIP(d.LocalIP)
	}
	if d.Underlay != "" {
		ul, err := k.h.LinkByName(d.Underlay)
		if err != nil {
			return nil, fmt.Errorf("underlay device %s of %s: %w", d.Underlay, d.Name, err)
		}
		vx.VtepDevIndex = ul.Attrs().Index
	}
	if err := k.h.LinkAdd(vx); err != nil {
		return nil, fmt.Errorf("create vxlan %s: %w", d.Name, err)
	}
	undo = func() error { return k.h.LinkDel(vx) }
	if err := k.h.LinkSetUp(vx); err != nil {
		undo()
		return nil, fmt.Errorf("set %s up: %w", d.Name, err)
	}
	return undo, nil
}

func (k *kernel) setUp(name string) (func() error, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		return nil, err
	}
	if err := k.h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up: %w", name, err)
	}
	return func() error { return k.h.LinkSetDown(l) }, nil
}

func (k *kernel) linkIndex(name string) (int, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("link %s: %w", name, err)
	}
	return l.Attrs().Index, nil
}

// sortEntries orders entries by key so equal state gives equal snapshots.
func (d *Device) sortEntries() {
	sort.Strings(d.Addrs)
	sort.Slice(d.Routes, func(i, j int) bool {
		if d.Routes[i].Dst != d.Routes[j].Dst {
			return d.Routes[i].Dst < d.Routes[j].Dst
		}
		return d.Routes[i].Metric < d.Routes[j].Metric
	})
	sort.Slice(d.FDB, func(i, j int) bool {
		if d.FDB[i].MAC != d.FDB[j].MAC {
			return d.FDB[i].MAC < d.FDB[j].MAC
		}
		return d.FDB[i].Dst < d.FDB[j].Dst
	})
	sort.Slice(d.Neighbors, func(i, j int) bool { return d.Neighbors[i].IP < d.Neighbors[j].IP })
}

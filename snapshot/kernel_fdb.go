package snapshot

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fdb lists the device's permanent "self" FDB entries that have a
// destination (what flannel programs for every peer).
func (k *kernel) fdb(index int) ([]FDBEntry, error) {
	ns, err := dump(func() ([]netlink.Neigh, error) { return k.h.NeighList(index, unix.AF_BRIDGE) })
	if err != nil {
		return nil, fmt.Errorf("list fdb: %w", err)
	}
	var out []FDBEntry
	for _, n := range ns {
		if n.LinkIndex != index || n.State&netlink.NUD_PERMANENT == 0 || n.Flags&netlink.NTF_SELF == 0 || n.IP == nil || n.HardwareAddr == nil {
			continue
		}
		out = append(out, FDBEntry{MAC: n.HardwareAddr.String(), Dst: n.IP.String()})
	}
	return out, nil
}

func (k *kernel) addFDB(index int, e FDBEntry) (func() error, error) {
	mac, err := net.ParseMAC(e.MAC)
	if err != nil {
		return nil, err
	}
	n := &netlink.Neigh{LinkIndex: index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: net.ParseIP(e.Dst), HardwareAddr: mac}
	add := k.h.NeighAdd
	if isZeroMAC(mac) {
		add = k.h.NeighAppend // several default destinations may share 00:00:00:00:00:00
	}
	if err := add(n); err != nil {
		return nil, fmt.Errorf("add fdb %s dst %s: %w", e.MAC, e.Dst, err)
	}
	return func() error { return k.h.NeighDel(n) }, nil
}

func isZeroMAC(m net.HardwareAddr) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}

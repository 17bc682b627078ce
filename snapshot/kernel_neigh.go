package snapshot

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// neighbors lists the device's permanent neighbour entries (peer VTEP IP →
// peer VTEP MAC).
func (k *kernel) neighbors(index int) ([]Neighbor, error) {
	ns, err := dump(func() ([]netlink.Neigh, error) { return k.h.NeighList(index, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	var out []Neighbor
	for _, n := range ns {
		if n.LinkIndex != index || n.State != netlink.NUD_PERMANENT || n.IP == nil || n.HardwareAddr == nil || n.Family == 7 /* AF_BRIDGE */ {
			continue
		}
		out = append(out, Neighbor{IP: n.IP.String(), MAC: n.HardwareAddr.String()})
	}
	return out, nil
}

func (k *kernel) addNeighbor(index int, e Neighbor) (func() error, error) {
	mac, err := net.ParseMAC(e.MAC)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(e.IP)
	fam := netlink.FAMILY_V4
	if ip.To4() == nil {
		fam = netlink.FAMILY_V6
	}
	n := &netlink.Neigh{LinkIndex: index, Family: fam, State: netlink.NUD_PERMANENT, Type: 1 /* RTN_UNICAST */, IP: ip, HardwareAddr: mac}
	if err := k.h.NeighAdd(n); err != nil {
		return nil, fmt.Errorf("add neighbour %s: %w", e.IP, err)
	}
	return func() error { return k.h.NeighDel(n) }, nil
}

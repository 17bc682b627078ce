package snapshot

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

func (k *kernel) addrs(l netlink.Link) ([]string, error) {
	as, err := dump(func() ([]netlink.Addr, error) { return k.h.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	var out []string
	for _, a := range as {
		if a.IP.IsLinkLocalUnicast() {
			continue // kernel-made IPv6 link-local
		}
		out = append(out, a.IPNet.String())
	}
	return out, nil
}

func (k *kernel) addAddr(index int, cidr string) (func() error, error) {
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return nil, err
	}
	l, err := k.h.LinkByIndex(index)
	if err != nil {
		return nil, err
	}
	if err := k.h.AddrAdd(l, a); err != nil {
		return nil, fmt.Errorf("add address %s: %w", cidr, err)
	}
	return func() error { return k.h.AddrDel(l, a) }, nil
}

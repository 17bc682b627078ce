package server

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// EnsureAddress makes sure ip is configured on the link called name, the way
// NodeLocal DNSCache does with a dummy link. The link is created if missing:
// a dummy link if the kernel has the driver, otherwise a bridge with no ports
// (these kernels have no dummy driver; a bridge carries a local address just
// as well). It is set up and given ip/32 (or /128) unless it already has it.
// It returns the link kind used and whether it created the link. Nothing but
// that one link is touched.
func EnsureAddress(name string, ip net.IP) (kind string, created bool, err error) {
	if name == "" {
		return "", false, errors.New("no interface name")
	}
	if len(name) > 15 {
		return "", false, fmt.Errorf("interface name %q is longer than 15 bytes", name)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return "", false, fmt.Errorf("look up link %s: %w", name, err)
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		if err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: attrs}); err != nil {
			if err2 := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err2 != nil {
				return "", false, fmt.Errorf("create link %s: dummy: %v; bridge: %w", name, err, err2)
			}
		}
		created = true
		if link, err = netlink.LinkByName(name); err != nil {
			return "", created, fmt.Errorf("look up created link %s: %w", name, err)
		}
	}
	kind = link.Type()
	if err := netlink.LinkSetUp(link); err != nil {
		return kind, created, fmt.Errorf("set link %s up: %w", name, err)
	}
	bits := 32
	if ip.To4() == nil {
		bits = 128
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return kind, created, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return kind, created, nil
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return kind, created, fmt.Errorf("add %s to %s: %w", addr.IPNet, name, err)
	}
	return kind, created, nil
}

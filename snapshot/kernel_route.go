package snapshot

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routes lists the main-table routes through the device, without the ones
// the kernel makes from addresses.
func (k *kernel) routes(index int) ([]Route, error) {
	rs, err := dump(func() ([]netlink.Route, error) {
		return k.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: index, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []Route
	for _, r := range rs {
		if r.Protocol == unix.RTPROT_KERNEL || r.Dst == nil && r.Gw == nil || len(r.MultiPath) > 0 {
			continue
		}
		if r.Dst != nil && (r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast()) {
			continue
		}
		out = append(out, fromNetlinkRoute(r))
	}
	return out, nil
}

func fromNetlinkRoute(r netlink.Route) Route {
	out := Route{Metric: r.Priority, Scope: int(r.Scope), OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0}
	if r.Dst != nil {
		out.Dst = r.Dst.String()
	} else if r.Gw != nil && r.Gw.To4() == nil {
		out.Dst = "::/0"
	} else {
		out.Dst = "0.0.0.0/0"
	}
	if r.Gw != nil {
		out.Via = r.Gw.String()
	}
	if r.Src != nil {
		out.Src = r.Src.String()
	}
	return out
}

func (k *kernel) addRoute(index int, r Route) (func() error, error) {
	_, dst, err := net.ParseCIDR(r.Dst)
	if err != nil {
		return nil, err
	}
	nr := &netlink.Route{LinkIndex: index, Dst: dst, Priority: r.Metric, Scope: netlink.Scope(r.Scope), Table: unix.RT_TABLE_MAIN}
	if r.Via != "" {
		nr.Gw = net.ParseIP(r.Via)
	}
	if r.Src != "" {
		nr.Src = net.ParseIP(r.Src)
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	if err := k.h.RouteAdd(nr); err != nil {
		return nil, fmt.Errorf("add route %s: %w", r.Dst, err)
	}
	return func() error { return k.h.RouteDel(nr) }, nil
}

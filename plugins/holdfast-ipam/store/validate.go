package store

import (
	"fmt"
	"net/netip"
	"strings"
)

// Validate checks the meaning of a decoded state, which the envelope's
// checksum cannot: a file edited by hand (or by a bug) with its checksum
// recomputed must not make the allocator hand out an address a live
// container holds. Every address parses in canonical form, every allocation
// is keyed by its own address and names its container, no address is
// allocated twice or pinned to two pods, and every pin key is the one its
// pod's fields make. Addresses outside the configured ranges are not refused:
// they are what a range change leaves behind, and the allocator already
// treats them as released history.
func (s *State) Validate() error {
	if err := s.validateAllocations(); err != nil {
		return err
	}
	if err := s.validatePins(); err != nil {
		return err
	}
	for set, ip := range s.LastReserved {
		if _, err := canonicalAddr(ip); err != nil || set < 0 {
			return fmt.Errorf("lastReserved[%d] %q: not a range set index and canonical IP address", set, ip)
		}
	}
	return nil
}

func (s *State) validateAllocations() error {
	seen := map[netip.Addr]string{}
	for key, al := range s.Allocations {
		if al == nil {
			return fmt.Errorf("allocation %q is null", key)
		}
		a, err := canonicalAddr(al.IP)
		if err != nil {
			return fmt.Errorf("allocation %q: ip %w", key, err)
		}
		// The map is keyed by address: a key that is not the allocation's
		// own address hides that address from the allocator, which would
		// then hand it out a second time.
		if key != al.IP {
			return fmt.Errorf("allocation keyed %q holds address %q", key, al.IP)
		}
		if other, dup := seen[a.Unmap()]; dup {
			return fmt.Errorf("address %s allocated twice (as %q and %q)", a.Unmap(), other, key)
		}
		seen[a.Unmap()] = key
		if al.ContainerID == "" || al.RangeSet < 0 {
			return fmt.Errorf("allocation %s: containerID %q, rangeSet %d: want a container and a range set index", key, al.ContainerID, al.RangeSet)
		}
		if al.PinKey != "" {
			if err := s.validPinKey(al.PinKey); err != nil {
				return fmt.Errorf("allocation %s: %w", key, err)
			}
		}
	}
	return nil
}

func (s *State) validatePins() error {
	pinned := map[netip.Addr]string{}
	for key, p := range s.Pins {
		if p == nil {
			return fmt.Errorf("pin %q is null", key)
		}
		if err := s.validPinKey(key); err != nil {
			return err
		}
		if want := s.Network + "/" + p.Namespace + "/" + p.Name + "/" + p.IfName; p.Key != key || key != want {
			return fmt.Errorf("pin key %q: its pod fields make %q (and it records key %q)", key, want, p.Key)
		}
		for _, ip := range p.IPs {
			a, err := canonicalAddr(ip)
			if err != nil {
				return fmt.Errorf("pin %q: ip %w", key, err)
			}
			if other, dup := pinned[a.Unmap()]; dup {
				return fmt.Errorf("address %s pinned to both %q and %q", a.Unmap(), other, key)
			}
			pinned[a.Unmap()] = key
		}
	}
	return nil
}

// validPinKey checks that key is <network>/<namespace>/<name>/<ifname> of
// this state's network with every part non-empty (none may hold "/").
func (s *State) validPinKey(key string) error {
	parts := strings.Split(key, "/")
	if len(parts) != 4 || parts[0] != s.Network || parts[1] == "" || parts[2] == "" || parts[3] == "" {
		return fmt.Errorf("pin key %q is not %s/<namespace>/<name>/<ifname>", key, s.Network)
	}
	return nil
}

// canonicalAddr parses s as an IP address written the way the allocator
// writes it (netip's String form), so two spellings of one address cannot
// both be recorded.
func canonicalAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if a.String() != s {
		return netip.Addr{}, fmt.Errorf("%q is not in canonical form (%s)", s, a)
	}
	return a, nil
}

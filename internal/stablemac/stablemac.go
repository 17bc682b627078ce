// Package stablemac derives MAC addresses from names, so that an interface
// re-created for the same pod or node gets the same hardware address and
// peers' ARP caches and FDB entries stay right.
package stablemac

import (
	"crypto/sha256"
	"net"
	"strings"
)

// FromName returns a locally administered unicast MAC derived from the given
// parts (joined with NUL, so ("a","bc") and ("ab","c") differ).
func FromName(parts ...string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	mac := make(net.HardwareAddr, 6)
	copy(mac, sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac
}

// IsLocalUnicast reports whether mac is a locally administered unicast MAC.
func IsLocalUnicast(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&0x02 != 0 && mac[0]&0x01 == 0
}

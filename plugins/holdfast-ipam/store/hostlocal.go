package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
)

// host-local (containernetworking/plugins ipam/host-local, disk backend)
// keeps one file per reserved address in <dataDir>/<network>/, named by the
// address and holding "<containerID>\r\n<ifname>" (before v0.8: only the
// container ID), beside "lock" and "last_reserved_ip.<set>".

// HostLocalLineBreak separates container ID and ifname in a reservation.
const HostLocalLineBreak = "\r\n"

// Reservation is one host-local reservation file.
type Reservation struct {
	IP          netip.Addr
	ContainerID string
	IfName      string
	Path        string
}

// ParseReservation reads a reservation file's content. A file without an
// ifname (host-local before v0.8) is eth0's.
func ParseReservation(data []byte) (cid, ifName string, err error) {
	data = bytes.TrimSpace(data)
	lines := bytes.SplitN(data, []byte("\n"), 3)
	if len(lines) == 0 || len(bytes.TrimSpace(lines[0])) == 0 {
		return "", "", errors.New("empty reservation")
	}
	cid = string(bytes.TrimSpace(lines[0]))
	ifName = "eth0"
	if len(lines) > 1 {
		if s := string(bytes.TrimSpace(lines[1])); s != "" {
			ifName = s
		}
	}
	if len(lines) > 2 {
		return "", "", errors.New("more than two lines")
	}
	if strings.ContainsFunc(cid+ifName, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "", "", fmt.Errorf("container ID %q or ifname %q holds a space or control character", cid, ifName)
	}
	return cid, ifName, nil
}

// ReadHostLocal lists the reservations in a host-local network dir (a
// missing dir holds none). Files not named by an address are host-local's
// own (lock, last_reserved_ip.N) or holdfast-ipam's, and are skipped.
func ReadHostLocal(dir string) ([]Reservation, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read host-local dir: %w", err)
	}
	var out []Reservation
	for _, e := range ents {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("host-local reservation %s: %w", p, err)
		}
		cid, ifName, err := ParseReservation(data)
		if err != nil {
			return nil, fmt.Errorf("host-local reservation %s: %w", p, err)
		}
		out = append(out, Reservation{IP: ip, ContainerID: cid, IfName: ifName, Path: p})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out, nil
}

// HostLocalHolds reports whether the reservation file at path names
// container cid (interface ifName).
func HostLocalHolds(path, cid, ifName string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	c, i, err := ParseReservation(data)
	return err == nil && c == cid && i == ifName
}

// DropHostLocal removes the reservation file at path if it names cid (a
// file that names another container is not holdfast-ipam's to remove).
func DropHostLocal(path, cid, ifName string) error {
	if !HostLocalHolds(path, cid, ifName) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove host-local reservation: %w", err)
	}
	return nil
}

// WriteHostLocal creates the reservation file at path for cid/ifName, in
// host-local's format; it refuses to replace an existing file.
func WriteHostLocal(path, cid, ifName string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("write host-local reservation: %w", err)
	}
	if _, err := f.WriteString(cid + HostLocalLineBreak + ifName); err != nil {
		f.Close()
		return fmt.Errorf("write host-local reservation %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync host-local reservation %s: %w", path, err)
	}
	return f.Close()
}

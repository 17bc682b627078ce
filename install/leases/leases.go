// Package leases moves pod address leases between host-local and
// holdfast-ipam when holdfast is installed on, or removed from, a node whose
// pods keep running.
//
// Install imports every host-local reservation of the network holdfast
// chains into holdfast-ipam before the new chain takes effect, as that
// container's allocation, pinned to the pod's namespace/name where the
// libcni result cache names the pod. host-local's files are left as they
// are: the old pods' DEL still reaches host-local (flannel replays the
// delegate config it saved at ADD), and holdfast-ipam releases an imported
// allocation once host-local's file no longer names its container.
//
// Uninstall hands back: it writes a host-local reservation for every
// address holdfast-ipam still gives a live container, so host-local never
// hands it out again, and drops the imported allocations (host-local owns
// those). Pods created under holdfast keep holdfast-ipam in their saved
// delegate config; holdfast-ipam removes the handed-back file when their DEL
// releases the address.
//
// It owns no files of its own: it writes holdfast-ipam's store (through
// plugins/holdfast-ipam/store, under its lock) and host-local reservation
// files (under host-local's lock), and reads the libcni cache.
package leases

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/config"
	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
)

// DefaultHostLocalDataDir is host-local's dataDir when its config sets none.
const DefaultHostLocalDataDir = "/var/lib/cni/networks"

// DefaultCacheDir is libcni's cache dir (results/ holds one file per
// attachment).
const DefaultCacheDir = "/var/lib/cni"

// Network is one CNI network on a node. Paths are on-node absolute paths,
// resolved under Root.
type Network struct {
	Root string
	// Name is the CNI network name (the conflist's "name").
	Name string
	// HostLocalDataDir is host-local's dataDir (its files are in
	// <dataDir>/<Name>/); IPAMDataDir is holdfast-ipam's.
	HostLocalDataDir, IPAMDataDir string
	// CacheDir is libcni's cache dir.
	CacheDir string
	// RangeSets, when known, are the subnets of each range set, so an
	// imported address lands in its set; otherwise IPv4 is set 0, IPv6 1.
	RangeSets [][]netip.Prefix
}

func (n Network) host(p string) string { return filepath.Join(n.Root, filepath.FromSlash(p)) }

// HostLocalDir is the on-node dir of the network's host-local files.
func (n Network) HostLocalDir() string { return path.Join(n.HostLocalDataDir, n.Name) }

func (n Network) rangeSet(ip netip.Addr) int {
	for i, set := range n.RangeSets {
		for _, p := range set {
			if p.Contains(ip) {
				return i
			}
		}
	}
	if ip.Is4() {
		return 0
	}
	return 1
}

// Holder is one live allocation and the pod that holds it ("" if unknown).
type Holder struct {
	IP          string
	ContainerID string
	IfName      string
	Pod         string
	Imported    bool
}

func (h Holder) String() string {
	who := h.Pod
	if who == "" {
		who = "container " + shortID(h.ContainerID)
	}
	return who + " (" + h.IP + ")"
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// withLocks runs fn holding host-local's lock and holdfast-ipam's (one
// lock when both IPAMs share the dir, as when holdfast-ipam keeps
// host-local's dataDir).
func (n Network) withLocks(fn func(st *store.State, ipam *store.Disk) (bool, error)) (err error) {
	ipam := store.New(n.host(n.IPAMDataDir), n.Name)
	hl := store.New(n.host(n.HostLocalDataDir), n.Name)
	if hl.Dir != ipam.Dir {
		if err := hl.Lock(); err != nil {
			return fmt.Errorf("host-local lock: %w", err)
		}
		defer hl.Unlock()
	}
	if err := ipam.Lock(); err != nil {
		return fmt.Errorf("holdfast-ipam lock: %w", err)
	}
	defer func() {
		// Unlock finishes the durable save (the directory fsync).
		if uerr := ipam.Unlock(); err == nil {
			err = uerr
		}
	}()
	st, err := ipam.Load()
	if err != nil {
		return err
	}
	changed, err := fn(st, ipam)
	if err != nil || !changed {
		return err
	}
	return ipam.Save(st, store.Durable) // install and uninstall: durable before they report
}

// Reservations lists host-local's reservations of n (what Import would
// take).
func Reservations(n Network) ([]store.Reservation, error) {
	return store.ReadHostLocal(n.host(n.HostLocalDir()))
}

// Import adds every host-local reservation of n to holdfast-ipam's store
// (see the package doc) and returns what it imported. An address that
// holdfast-ipam gives another live container is refused, naming both, and
// nothing is changed.
func Import(n Network, now time.Time) ([]Holder, error) {
	res, err := Reservations(n)
	if err != nil {
		return nil, err
	}
	if len(res) == 0 {
		return nil, nil
	}
	pods, err := ReadCache(n.host(n.CacheDir), n.Name)
	if err != nil {
		return nil, err
	}
	var out []Holder
	err = n.withLocks(func(st *store.State, _ *store.Disk) (bool, error) {
		out = nil
		changed := false
		for _, r := range res {
			onNode := path.Join(n.HostLocalDir(), r.IP.String())
			if al, ok := st.Allocations[r.IP.String()]; ok {
				if al.ContainerID != r.ContainerID || al.IfName != r.IfName {
					return false, fmt.Errorf("address %s is held by container %s in host-local (%s) and by container %s in holdfast-ipam: resolve it before installing", r.IP, shortID(r.ContainerID), onNode, shortID(al.ContainerID))
				}
				if al.HostLocal == onNode {
					continue
				}
			}
			a := &store.Allocation{IP: r.IP.String(), RangeSet: n.rangeSet(r.IP), ContainerID: r.ContainerID, IfName: r.IfName,
				Since: now.UTC(), HostLocal: onNode, Imported: true}
			h := Holder{IP: a.IP, ContainerID: r.ContainerID, IfName: r.IfName, Imported: true}
			if p, ok := pods[[2]string{r.ContainerID, r.IfName}]; ok {
				a.Netns = p.Netns
				if p.Namespace != "" && p.Name != "" {
					a.PinKey = config.PinKey(n.Name, config.PodArgs{Namespace: p.Namespace, Name: p.Name}, r.IfName)
					st.Pins[a.PinKey] = &store.Pin{Key: a.PinKey, Namespace: p.Namespace, Name: p.Name, IfName: r.IfName,
						IPs: pinIPs(st.Pins[a.PinKey], a.RangeSet, a.IP), ContainerID: r.ContainerID, LastUsed: now.UTC()}
					h.Pod = p.Namespace + "/" + p.Name
				}
			}
			st.Allocations[a.IP] = a
			out = append(out, h)
			changed = true
		}
		return changed, nil
	})
	return out, err
}

// pinIPs puts ip at set's position of a pin's address list.
func pinIPs(old *store.Pin, set int, ip string) []string {
	var ips []string
	if old != nil {
		ips = append(ips, old.IPs...)
	}
	for len(ips) <= set {
		ips = append(ips, "")
	}
	ips[set] = ip
	return ips
}

// Live returns the allocations holdfast-ipam holds for live containers,
// with an imported one counted only while host-local's file still names its
// container (what the plugin itself would conclude at its next call).
func Live(n Network) ([]Holder, error) {
	st, err := store.New(n.host(n.IPAMDataDir), n.Name).Load()
	if err != nil {
		return nil, err
	}
	return live(n, st), nil
}

func live(n Network, st *store.State) []Holder {
	var out []Holder
	for _, al := range st.SortedAllocations() {
		if al.Imported && !store.HostLocalHolds(n.host(al.HostLocal), al.ContainerID, al.IfName) {
			continue
		}
		h := Holder{IP: al.IP, ContainerID: al.ContainerID, IfName: al.IfName, Imported: al.Imported}
		if p := st.Pins[al.PinKey]; p != nil {
			h.Pod = p.Namespace + "/" + p.Name
		}
		out = append(out, h)
	}
	return out
}

// HandBack writes a host-local reservation for every address holdfast-ipam
// allocated to a live container and drops the imported allocations (see
// the package doc). It returns the containers that still need holdfast-ipam
// for their DEL (those it allocated). A host-local file that names another
// container is refused, naming it, and nothing is changed.
func HandBack(n Network) ([]Holder, error) {
	ipam := store.New(n.host(n.IPAMDataDir), n.Name)
	if _, err := os.Stat(ipam.StatePath()); errors.Is(err, fs.ErrNotExist) {
		return nil, nil // holdfast-ipam never allocated here
	}
	var keep []Holder
	err := n.withLocks(func(st *store.State, _ *store.Disk) (bool, error) {
		keep = nil
		hs := live(n, st)
		for _, h := range hs {
			onNode := path.Join(n.HostLocalDir(), h.IP)
			data, err := readIfExists(n.host(onNode))
			if err != nil {
				return false, err
			}
			if data != nil {
				if cid, ifn, err := store.ParseReservation(data); err != nil || cid != h.ContainerID || ifn != h.IfName {
					return false, fmt.Errorf("host-local already reserves %s (%s) for another container, while holdfast-ipam gives it to %s: resolve it before uninstalling", h.IP, onNode, h)
				}
			}
		}
		changed := false
		for ip, al := range st.Allocations {
			if al.Imported {
				delete(st.Allocations, ip)
				changed = true
			}
		}
		for _, h := range hs {
			if h.Imported {
				continue
			}
			onNode := path.Join(n.HostLocalDir(), h.IP)
			if !store.HostLocalHolds(n.host(onNode), h.ContainerID, h.IfName) {
				if err := store.WriteHostLocal(n.host(onNode), h.ContainerID, h.IfName); err != nil {
					return false, err
				}
			}
			st.Allocations[h.IP].HostLocal = onNode
			keep = append(keep, h)
			changed = true
		}
		return changed, nil
	})
	sort.Slice(keep, func(i, j int) bool { return keep[i].IP < keep[j].IP })
	return keep, err
}

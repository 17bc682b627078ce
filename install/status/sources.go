package status

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/holdfast-edge/holdfast/cri-shim/record"
	"github.com/holdfast-edge/holdfast/dns"
	dnsstore "github.com/holdfast-edge/holdfast/dns/store"
	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/install"
	"github.com/holdfast-edge/holdfast/install/leases"
	"github.com/holdfast-edge/holdfast/internal/statefile"
	ipamconfig "github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/config"
	ipamstore "github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
	"github.com/holdfast-edge/holdfast/snapshot"
)

// Dirs are the components' state directories on this node: on-node paths,
// resolved under Root.
type Dirs struct {
	Root                             string
	Snapshot, CRI, IPAM, Health, DNS string
	// InstallState is install's state dir (its record); CNIConfDir,
	// CNIBinDir and CNICacheDir are the runtime's CNI dirs.
	InstallState, CNIConfDir, CNIBinDir, CNICacheDir string
}

// DefaultDirs are the components' defaults under /var/lib/holdfast and
// the CNI defaults of a kubeadm node.
func DefaultDirs() Dirs {
	return Dirs{Root: "/", Snapshot: snapshot.DefaultDir, CRI: record.DefaultDir, IPAM: ipamconfig.DefaultDataDir,
		Health: health.DefaultStateDir, DNS: dns.DefaultStateDir, InstallState: install.DefaultStateDir,
		CNIConfDir: "/etc/cni/net.d", CNIBinDir: "/opt/cni/bin", CNICacheDir: leases.DefaultCacheDir}
}

// host maps an on-node path to this machine's.
func (d Dirs) host(p string) string {
	if d.Root == "" {
		return p
	}
	return filepath.Join(d.Root, filepath.FromSlash(p))
}

// NodeSources reads the real state files (read-only: nothing is created,
// locked or cleaned) and the live VTEP MACs through netlink.
func NodeSources(d Dirs) Sources {
	return Sources{
		Install:  func() (InstallSection, error) { return readInstall(d.host(d.InstallState)) },
		Snapshot: func() (SnapshotSection, error) { return readSnapshot(d.host(d.Snapshot), liveMAC) },
		Pods:     func() (PodsSection, error) { return readPods(d.host(d.CRI)) },
		Pins:     func() (PinsSection, error) { return readPins(d) },
		Leases:   func() (LeasesSection, error) { return readLeases(d) },
		Peers:    func() (PeersSection, error) { return readPeers(d.host(d.Health)) },
		DNS:      func() (DNSSection, error) { return readDNS(d.host(d.DNS)) },
		Dial:     DialTCP,
	}
}

func liveMAC(dev string) (string, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return "", err
	}
	return l.Attrs().HardwareAddr.String(), nil
}

func readSnapshot(dir string, live func(string) (string, error)) (SnapshotSection, error) {
	var s SnapshotSection
	ld, err := snapshot.Load(dir)
	if errors.Is(err, snapshot.ErrNoSnapshot) {
		return s, fmt.Errorf("no snapshot in %s: %w", dir, fs.ErrNotExist)
	}
	if err != nil {
		return s, err
	}
	s.CapturedAt, s.Entries = ld.Snapshot.CapturedAt, ld.Snapshot.Entries()
	for _, dev := range ld.Snapshot.Devices {
		v := VTEP{Name: dev.Name, PinnedMAC: dev.PinnedMAC}
		if m, err := live(dev.Name); err != nil {
			v.LiveMAC = Absent
		} else {
			v.LiveMAC = m
			v.Match = strings.EqualFold(m, dev.PinnedMAC)
		}
		s.Devices = append(s.Devices, v)
	}
	if ld.Refused != nil {
		s.Reason = "current snapshot refused, showing previous generation: " + ld.Refused.Error()
	}
	return s, nil
}

func readPods(dir string) (PodsSection, error) {
	var s PodsSection
	files, err := filepath.Glob(filepath.Join(dir, "pods", "*.json"))
	if err != nil {
		return s, err
	}
	if _, err := os.Stat(filepath.Join(dir, "pods")); err != nil {
		return s, err
	}
	var bad []string
	for _, f := range files {
		var p record.Pod
		if _, err := statefile.Load(f, record.PodKind, record.PodVersion, &p); err != nil {
			bad = append(bad, err.Error())
			continue
		}
		pod := Pod{Name: p.Namespace + "/" + p.Name, Relaunch: "none"}
		if p.Relaunch != nil {
			pod.Relaunch, pod.Adopted, pod.Error = p.Relaunch.Outcome, p.Relaunch.Adopted, p.Relaunch.Error
		}
		s.Pods = append(s.Pods, pod)
	}
	sort.Slice(s.Pods, func(i, j int) bool { return s.Pods[i].Name < s.Pods[j].Name })
	if len(bad) > 0 {
		return s, fmt.Errorf("%d unreadable pod records: %s", len(bad), strings.Join(bad, "; "))
	}
	return s, nil
}

// readPins counts holdfast-ipam's allocations, not its pins: an address is
// in use while an allocation holds it (an imported one only while
// host-local's file still names its container); one whose sandbox netns is
// gone is stale (the next GC releases it).
func readPins(d Dirs) (PinsSection, error) {
	var s PinsSection
	dir := d.host(d.IPAM)
	nets, err := ipamstore.ListNetworks(dir)
	if err != nil {
		return s, err
	}
	if len(nets) == 0 {
		return s, fmt.Errorf("no holdfast-ipam network in %s: %w", dir, fs.ErrNotExist)
	}
	for _, n := range nets {
		st, err := ipamstore.New(dir, n).Load()
		if err != nil {
			return s, err
		}
		held := map[string]bool{}
		for _, al := range st.Allocations {
			if al.Imported && !ipamstore.HostLocalHolds(d.host(al.HostLocal), al.ContainerID, al.IfName) {
				continue
			}
			if _, err := os.Stat(d.host(al.Netns)); al.Netns != "" && errors.Is(err, fs.ErrNotExist) {
				s.Stale++
				continue
			}
			s.InUse++
			held[al.PinKey] = true
		}
		for k := range st.Pins {
			if !held[k] {
				s.Released++
			}
		}
	}
	return s, nil
}

func readPeers(dir string) (PeersSection, error) {
	var s PeersSection
	v, err := health.LoadVerdicts(dir)
	if err != nil {
		return s, err
	}
	s.Unit, s.Members, s.Updated, s.Verdicts = v.Unit, v.Members, v.Updated, v.Verdicts
	return s, nil
}

func readDNS(dir string) (DNSSection, error) {
	var s DNSSection
	snap, err := dnsstore.LoadFile(filepath.Join(dir, dnsstore.FileName))
	if err != nil {
		return s, err
	}
	s.UpdatedAt, s.Services, s.Slices = snap.UpdatedAt, len(snap.Services), len(snap.Slices)
	return s, nil
}

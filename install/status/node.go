package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/holdfast-edge/holdfast/install/leases"
	"github.com/holdfast-edge/holdfast/internal/statefile"
	ipamstore "github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
)

// InstallSection: is holdfast installed on this node root?
type InstallSection struct {
	Section
	Installed bool `json:"installed"`
	// Files is how many paths the install record holds; IPAMOnly is set
	// when uninstall kept only holdfast-ipam (pods created under holdfast
	// still need it for their DEL).
	Files    int  `json:"files"`
	IPAMOnly bool `json:"ipamOnly,omitempty"`
}

// LeasesSection: live address leases per store, and what is wrong.
type LeasesSection struct {
	Section
	Stores []StoreCount `json:"stores,omitempty"`
	// Mirrored addresses are held in both stores by the same container
	// (install's import, uninstall's hand-back): expected.
	Mirrored int `json:"mirrored"`
	// Conflicts are addresses held in both stores by different containers.
	Conflicts []string `json:"conflicts,omitempty"`
	// MissingPlugins are attachments whose chain names a plugin that is
	// not in the CNI bin dir (their DEL will fail).
	MissingPlugins []string `json:"missingPlugins,omitempty"`
}

// StoreCount is one IPAM store of one network.
type StoreCount struct {
	Store   string `json:"store"` // host-local or holdfast-ipam
	Network string `json:"network"`
	Live    int    `json:"live"`
}

// installRecordKind is install.RecordKind (status may not import install,
// which is the writer; the record is read as a versioned statefile).
const installRecordKind, installRecordVersion = "holdfast.install.record", 1

func readInstall(stateDir string) (InstallSection, error) {
	var s InstallSection
	var rec struct {
		Files []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	if _, err := statefile.Load(filepath.Join(stateDir, "record.json"), installRecordKind, installRecordVersion, &rec); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return s, nil // not installed: a fact, not a missing component
		}
		return s, err
	}
	s.Installed, s.Files = true, len(rec.Files)
	s.IPAMOnly = len(rec.Files) == 1 && path.Base(rec.Files[0].Path) == "holdfast-ipam"
	return s, nil
}

// cniNet is what status needs from one CNI network config.
type cniNet struct {
	name, hostLocalDataDir, flannelDataDir string
	// chain is the plugins of the first conf (lexically) naming the
	// network: what the runtime runs ADD and DEL through.
	chain []pluginConf
}

// readNetworks reads every conf in the CNI conf dir (host paths).
func readNetworks(confDir string) ([]cniNet, error) {
	ents, err := os.ReadDir(confDir)
	if err != nil {
		return nil, err
	}
	seen := map[string]*cniNet{}
	out := make([]cniNet, 0, len(ents)) // no reallocation: seen points into it
	for _, e := range ents {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".conf" && ext != ".conflist" && ext != ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(confDir, e.Name()))
		if err != nil {
			return nil, err
		}
		var c struct {
			Name    string
			Plugins []pluginConf
			pluginConf
		}
		if json.Unmarshal(data, &c) != nil || c.Name == "" {
			continue
		}
		main := c.pluginConf
		if len(c.Plugins) > 0 {
			main = c.Plugins[0]
		}
		chain := c.Plugins
		if len(chain) == 0 {
			chain = []pluginConf{c.pluginConf}
		}
		n := seen[c.Name]
		if n == nil {
			out = append(out, cniNet{name: c.Name, chain: chain})
			n = &out[len(out)-1]
			seen[c.Name] = n
		}
		// The host-local dir comes from the conf that uses host-local (the
		// original), not from holdfast's chained copy.
		if main.IPAM.Type == "host-local" || (main.Type == "flannel" && main.IPAM.Type == "") {
			n.hostLocalDataDir = main.IPAM.DataDir
		}
		if main.Type == "flannel" {
			n.flannelDataDir = main.DataDir
		}
	}
	for i := range out {
		if out[i].hostLocalDataDir == "" {
			out[i].hostLocalDataDir = leases.DefaultHostLocalDataDir
		}
		if out[i].flannelDataDir == "" {
			out[i].flannelDataDir = "/var/lib/cni/flannel"
		}
	}
	return out, nil
}

type pluginConf struct {
	Type    string `json:"type"`
	DataDir string `json:"dataDir"`
	IPAM    struct {
		Type    string `json:"type"`
		DataDir string `json:"dataDir"`
	} `json:"ipam"`
	Delegate *pluginConf `json:"delegate"`
}

func readLeases(d Dirs) (LeasesSection, error) {
	var s LeasesSection
	nets, err := readNetworks(d.host(d.CNIConfDir))
	if err != nil {
		return s, err
	}
	for _, n := range nets {
		ln := leases.Network{Root: d.Root, Name: n.name, HostLocalDataDir: n.hostLocalDataDir, IPAMDataDir: d.IPAM}
		res, err := ipamstore.ReadHostLocal(d.host(ln.HostLocalDir()))
		if err != nil {
			return s, err
		}
		hl := map[string]string{}
		for _, r := range res {
			hl[r.IP.String()] = r.ContainerID
		}
		s.Stores = append(s.Stores, StoreCount{Store: "host-local", Network: n.name, Live: len(res)})
		hs, err := leases.Live(ln)
		if err != nil {
			return s, err
		}
		s.Stores = append(s.Stores, StoreCount{Store: "holdfast-ipam", Network: n.name, Live: len(hs)})
		for _, h := range hs {
			switch cid, ok := hl[h.IP]; {
			case !ok:
			case cid == h.ContainerID:
				s.Mirrored++
			default:
				s.Conflicts = append(s.Conflicts, fmt.Sprintf("%s/%s: host-local gives it to container %.12s, holdfast-ipam to %s", n.name, h.IP, cid, h))
			}
		}
	}
	missing, err := missingPlugins(d, nets)
	s.MissingPlugins = missing
	return s, err
}

// missingPlugins checks, for every cached attachment of a configured
// network, the chain its DEL runs through: the network's current conf
// (containerd runs DEL through it, not through the config cached at ADD)
// and, for flannel, the delegate config it saved at ADD (its DEL replays
// that) against the CNI bin dir.
func missingPlugins(d Dirs, nets []cniNet) ([]string, error) {
	atts, err := leases.ReadCache(d.host(d.CNICacheDir), "")
	if err != nil {
		return nil, err
	}
	byName := map[string]cniNet{}
	for _, n := range nets {
		byName[n.name] = n
	}
	var out []string
	for _, a := range atts {
		n, ours := byName[a.Network]
		if !ours {
			continue // another network's (not configured in this conf dir)
		}
		types := map[string]bool{}
		for _, p := range n.chain {
			addTypes(types, p)
			if p.Type == "flannel" {
				dir := p.DataDir
				if dir == "" {
					dir = n.flannelDataDir
				}
				var saved pluginConf
				if data, err := os.ReadFile(d.host(path.Join(dir, a.ContainerID))); err == nil && json.Unmarshal(data, &saved) == nil {
					addTypes(types, saved)
				}
			}
		}
		var gone []string
		for t := range types {
			if _, err := os.Stat(d.host(path.Join(d.CNIBinDir, t))); err != nil {
				gone = append(gone, t)
			}
		}
		if len(gone) > 0 {
			sort.Strings(gone)
			who := a.Namespace + "/" + a.Name
			if a.Name == "" {
				who = "container " + a.ContainerID
			}
			out = append(out, fmt.Sprintf("%s (network %s): its DEL runs %s, missing from %s", who, a.Network, strings.Join(gone, ", "), d.CNIBinDir))
		}
	}
	sort.Strings(out)
	return out, nil
}

func addTypes(types map[string]bool, p pluginConf) {
	if p.Type != "" {
		types[p.Type] = true
	}
	if p.IPAM.Type != "" {
		types[p.IPAM.Type] = true
	}
	if p.Delegate != nil && p.Delegate.Type != "" {
		types[p.Delegate.Type] = true
	}
}

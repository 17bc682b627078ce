package install

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path"

	"github.com/holdfast-edge/holdfast/install/leases"
	ipamconfig "github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/config"
)

// NetworkRecord says where the two IPAMs of the chained network keep their
// leases, so uninstall can hand holdfast-ipam's back to host-local.
type NetworkRecord struct {
	Name             string `json:"name"`
	HostLocalDataDir string `json:"hostLocalDataDir"`
	IPAMDataDir      string `json:"ipamDataDir"`
}

// mainIPAM is the part of a main plugin's IPAM section leases need.
type mainIPAM struct {
	DataDir string `json:"dataDir"`
	Subnet  string `json:"subnet"`
	Ranges  [][]struct {
		Subnet string `json:"subnet"`
	} `json:"ranges"`
}

// leaseNetwork reads, from the original conf and the chained one, the
// network name and both IPAMs' data dirs and range sets.
func leaseNetwork(original, chained []byte) (NetworkRecord, [][]netip.Prefix, error) {
	var orig, ch struct {
		Name    string `json:"name"`
		IPAM    *mainIPAM
		Plugins []struct {
			IPAM *mainIPAM `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(original, &orig); err != nil {
		return NetworkRecord{}, nil, fmt.Errorf("read network config: %w", err)
	}
	if err := json.Unmarshal(chained, &ch); err != nil || len(ch.Plugins) == 0 {
		return NetworkRecord{}, nil, fmt.Errorf("read chained network config: %v", err)
	}
	oi := orig.IPAM // a single-plugin .conf
	if len(orig.Plugins) > 0 {
		oi = orig.Plugins[0].IPAM
	}
	if oi == nil {
		oi = &mainIPAM{} // flannel without "ipam": host-local's defaults
	}
	rec := NetworkRecord{Name: orig.Name, HostLocalDataDir: oi.DataDir, IPAMDataDir: ipamconfig.DefaultDataDir}
	if rec.HostLocalDataDir == "" {
		rec.HostLocalDataDir = leases.DefaultHostLocalDataDir
	}
	if ci := ch.Plugins[0].IPAM; ci != nil && ci.DataDir != "" {
		rec.IPAMDataDir = ci.DataDir
	}
	if !path.IsAbs(rec.HostLocalDataDir) || !path.IsAbs(rec.IPAMDataDir) {
		return NetworkRecord{}, nil, fmt.Errorf("ipam dataDir %q / %q is not an absolute path", rec.HostLocalDataDir, rec.IPAMDataDir)
	}
	var sets [][]netip.Prefix
	if oi.Subnet != "" {
		if p, err := netip.ParsePrefix(oi.Subnet); err == nil {
			sets = append(sets, []netip.Prefix{p})
		}
	}
	for _, set := range oi.Ranges {
		var ps []netip.Prefix
		for _, r := range set {
			if p, err := netip.ParsePrefix(r.Subnet); err == nil {
				ps = append(ps, p)
			}
		}
		sets = append(sets, ps)
	}
	return rec, sets, nil
}

// leases returns the lease mover for a recorded network.
func (o *Options) leases(r *NetworkRecord, sets [][]netip.Prefix) leases.Network {
	return leases.Network{Root: o.Root, Name: r.Name, HostLocalDataDir: r.HostLocalDataDir, IPAMDataDir: r.IPAMDataDir,
		CacheDir: o.CNICacheDir, RangeSets: sets}
}

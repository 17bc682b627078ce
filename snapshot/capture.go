package snapshot

import (
	"context"
	"fmt"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/holdfast-edge/holdfast/internal/vtepmac"
)

// DefaultDevice is the device captured first when no device is named.
const DefaultDevice = "flannel.1"

// CaptureOptions say what to capture. Zero values take the defaults.
type CaptureOptions struct {
	NodeName string
	// Devices to capture; empty means every VXLAN device, flannel.1 first.
	// A named device that does not exist is left out.
	Devices []string
	// SubnetEnv is flannel's subnet.env path ("" means none is captured).
	SubnetEnv string
	// Chains selects the iptables chains (empty selects none).
	Chains ChainSelector
	// NFTables selects the nftables tables (empty selects none).
	NFTables NFTSelector
	// NetNS is a network namespace path to capture in; "" is the current one.
	NetNS string
	// IPTablesSave and IPTablesRestore name the tools ("iptables-save",
	// "iptables-restore" by default).
	IPTablesSave, IPTablesRestore string
	// Nft names the nft tool ("nft" by default).
	Nft string
	// Now stamps the snapshot (time.Now by default).
	Now func() time.Time
	// Rules, when set, keeps the iptables and nftables tables read by one
	// capture for the next ones while the nftables ruleset generation is
	// unchanged (RuleCache). Only a capture loop sets it.
	Rules *RuleCache
}

func (o *CaptureOptions) iptables() iptablesCmd {
	c := iptablesCmd{save: o.IPTablesSave, restore: o.IPTablesRestore}
	if c.save == "" {
		c.save = "iptables-save"
	}
	if c.restore == "" {
		c.restore = "iptables-restore"
	}
	return c
}

func (o *CaptureOptions) nft() nftCmd {
	if o.Nft == "" {
		return nftCmd{bin: "nft"}
	}
	return nftCmd{bin: o.Nft}
}

// inNetNS runs f in the namespace at path ("" is the current one).
func inNetNS(path string, f func() error) error {
	if path == "" {
		return f()
	}
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return f() })
}

// Capture reads the overlay's live state. It writes nothing: PinMACs and
// Save do. The pinned MACs of the result are empty.
func Capture(ctx context.Context, opts CaptureOptions) (*Snapshot, error) {
	if opts.NodeName == "" {
		return nil, fmt.Errorf("capture: node name is empty")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	s := &Snapshot{NodeName: opts.NodeName, CapturedAt: now().UTC()}
	err := inNetNS(opts.NetNS, func() error {
		k, err := openKernel()
		if err != nil {
			return err
		}
		defer k.close()
		names := opts.Devices
		if len(names) == 0 {
			if names, err = k.vxlanNames(DefaultDevice); err != nil {
				return err
			}
		}
		for _, name := range names {
			d, err := k.readDevice(name)
			if err != nil {
				return fmt.Errorf("capture %s: %w", name, err)
			}
			if d == nil {
				continue
			}
			if d.kind != "vxlan" {
				return fmt.Errorf("capture %s: it is a %s link, not vxlan", name, d.kind)
			}
			s.Devices = append(s.Devices, d.Device)
		}
		if s.SubnetEnv, err = readSubnetEnv(opts.SubnetEnv); err != nil {
			return err
		}
		s.IPTables, s.NFTables, err = opts.captureRules(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// captureRules reads the selected iptables chains and nftables tables of
// the current namespace, or takes them from opts.Rules when the ruleset
// generation is the one they were read at.
func (o *CaptureOptions) captureRules(ctx context.Context) ([]IPTable, []NFTable, error) {
	c := o.Rules
	if c == nil {
		return o.readRules(ctx)
	}
	key := ruleKey(o)
	gen, err := nftGeneration()
	if err != nil {
		// Rules are read every time while the generation is unreadable.
		c.Invalidate()
		return o.readRules(ctx)
	}
	if ipt, nft, ok := c.lookup(key, gen); ok {
		return ipt, nft, nil
	}
	ipt, nft, iptNFT, err := o.readRulesBackend(ctx)
	if err != nil || !iptNFT {
		c.Invalidate()
		return ipt, nft, err
	}
	c.store(key, gen, ipt, nft)
	return ipt, nft, nil
}

func (o *CaptureOptions) readRules(ctx context.Context) ([]IPTable, []NFTable, error) {
	ipt, nft, _, err := o.readRulesBackend(ctx)
	return ipt, nft, err
}

// readRulesBackend reads the rules; iptNFT reports whether the iptables
// ones are the nf_tables backend's (RuleCache keeps only those).
func (o *CaptureOptions) readRulesBackend(ctx context.Context) (ipt []IPTable, nft []NFTable, iptNFT bool, err error) {
	if ipt, iptNFT, err = o.iptables().capture(ctx, o.Chains); err != nil {
		return nil, nil, false, err
	}
	if nft, err = o.nft().capture(ctx, o.NFTables); err != nil {
		return nil, nil, false, err
	}
	return ipt, nft, iptNFT, nil
}

// CapturePinned captures live state and pins each device's MAC in dir
// (PinMACs): the one way `snapshot save` and `snapshot watch` take the
// snapshot they write. It returns PinMACs's warnings.
func CapturePinned(ctx context.Context, dir string, opts CaptureOptions, now time.Time) (*Snapshot, []string, error) {
	s, err := Capture(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	warns, err := PinMACs(dir, s, now)
	if err != nil {
		return nil, nil, err
	}
	return s, warns, nil
}

// PinMACs fills each device's PinnedMAC from the pins in dir, making a pin
// for a device that has none (adopting its live MAC: internal/vtepmac). It
// returns a warning for each device whose live MAC differs from its pin.
func PinMACs(dir string, s *Snapshot, now time.Time) ([]string, error) {
	var warns []string
	for i := range s.Devices {
		d := &s.Devices[i]
		live, _ := parseUnicastMAC(d.MAC)
		p, err := vtepmac.Ensure(dir, s.NodeName, d.VNI, live, now)
		if err != nil {
			return nil, err
		}
		d.PinnedMAC = p.MAC
		if d.MAC != p.MAC {
			warns = append(warns, fmt.Sprintf("%s: live MAC %s differs from pinned MAC %s (restore uses the pin)", d.Name, d.MAC, p.MAC))
		}
	}
	return warns, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/vtepmac"
)

// OverlayRestorer puts the node's overlay (device, addresses, routes, FDB,
// neighbours, subnet.env, chains) back from the network snapshot when it is
// missing. It runs in the node's network namespace and never overwrites
// live state.
type OverlayRestorer interface {
	RestoreOverlay(ctx context.Context, device string) error
}

// overlayState is what STATUS and ADD learn about the overlay device.
type overlayState struct {
	present bool
	mac     net.HardwareAddr
	vni     int
}

func readOverlay(device string) (overlayState, error) {
	l, err := netlink.LinkByName(device)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return overlayState{}, nil
		}
		return overlayState{}, fmt.Errorf("look up overlay device %s: %w", device, err)
	}
	st := overlayState{present: true, mac: l.Attrs().HardwareAddr}
	if vx, ok := l.(*netlink.Vxlan); ok {
		st.vni = vx.VxlanId
	}
	return st, nil
}

// pinnedMAC returns the MAC the overlay device must carry: overlay.mac, or
// the node's VTEP MAC pin for the device's VNI (derived if there is no pin
// file yet).
func pinnedMAC(o *OverlayConf, vni int) (net.HardwareAddr, error) {
	if o.mac != nil {
		return o.mac, nil
	}
	node := o.NodeName
	if node == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node name: %w", err)
		}
		node = h
	}
	f, err := vtepmac.Load(o.SnapshotDir, node)
	if err != nil {
		return nil, err
	}
	if p, ok := f.Lookup(vni); ok {
		return p.HardwareAddr(), nil
	}
	return vtepmac.Derive(node, vni), nil
}

// checkOverlay returns nil when the overlay device exists with its pinned MAC.
func checkOverlay(o *OverlayConf) error {
	st, err := readOverlay(o.Device)
	if err != nil {
		return err
	}
	if !st.present {
		return fmt.Errorf("overlay device %s is missing", o.Device)
	}
	want, err := pinnedMAC(o, st.vni)
	if err != nil {
		return fmt.Errorf("overlay device %s: pinned MAC: %w", o.Device, err)
	}
	if st.mac.String() != want.String() {
		return fmt.Errorf("overlay device %s has MAC %s, pinned MAC is %s", o.Device, st.mac, want)
	}
	return nil
}

// ensureOverlay restores a missing overlay device, once: the check is
// repeated under an exclusive flock on <dataDir>/overlay.lock, so of many
// ADDs arriving together one restores and the others find the device.
// restored reports whether this call ran the restorer.
func ensureOverlay(ctx context.Context, dataDir string, o *OverlayConf, r OverlayRestorer) (restored bool, err error) {
	if o == nil || r == nil || (o.Restore != nil && !*o.Restore) {
		return false, nil
	}
	st, err := readOverlay(o.Device)
	if err != nil || st.present {
		return false, err
	}
	unlock, err := atomicfile.Lock(filepath.Join(dataDir, "overlay.lock"), o.lockTimeout)
	if err != nil {
		return false, err
	}
	defer unlock()
	if st, err = readOverlay(o.Device); err != nil || st.present {
		return false, err
	}
	if err := r.RestoreOverlay(ctx, o.Device); err != nil {
		var partial *PartialRestoreError
		if errors.As(err, &partial) {
			return true, err
		}
		return false, fmt.Errorf("restore overlay %s from snapshot: %w", o.Device, err)
	}
	return true, nil
}

// PartialRestoreError is what a restorer returns when the overlay device
// came back but some of the rest did not (e.g. an iptables rule the kernel
// refused): pods can be wired, so ADD goes on and logs it.
type PartialRestoreError struct{ Err error }

func (e *PartialRestoreError) Error() string { return "overlay partly restored: " + e.Err.Error() }
func (e *PartialRestoreError) Unwrap() error { return e.Err }

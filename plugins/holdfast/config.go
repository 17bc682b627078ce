package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/holdfast-edge/holdfast/internal/cniplugin"
	"github.com/holdfast-edge/holdfast/plugins/holdfast/attachment"
	"github.com/holdfast-edge/holdfast/snapshot"
)

// DefaultSnapshotDir is where the network snapshot and VTEP MAC pins live.
const DefaultSnapshotDir = snapshot.DefaultDir

// OverlayConf names the node's overlay device.
type OverlayConf struct {
	// Device is the overlay link, e.g. "flannel.1".
	Device string `json:"device"`
	// MAC, when set, is the MAC the device must carry. Otherwise the VTEP
	// MAC pin of NodeName (internal/vtepmac, in SnapshotDir) is used.
	MAC string `json:"mac,omitempty"`
	// NodeName defaults to the host name.
	NodeName string `json:"nodeName,omitempty"`
	// SnapshotDir defaults to DefaultSnapshotDir.
	SnapshotDir string `json:"snapshotDir,omitempty"`
	// Restore (default true) makes ADD restore a missing overlay from the
	// snapshot first.
	Restore *bool `json:"restore,omitempty"`
	// LockTimeout bounds the wait for another ADD's restore (default 30s).
	LockTimeout string `json:"lockTimeout,omitempty"`

	mac         net.HardwareAddr
	lockTimeout time.Duration
}

// NetConf is holdfast's configuration, with the chain's prevResult.
type NetConf struct {
	types.NetConf
	DataDir string       `json:"dataDir,omitempty"`
	Overlay *OverlayConf `json:"overlay,omitempty"`
	// ValidAttachments is only set on GC.
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
	// IPAM names the chain's IPAM (holdfast-ipam, with its dataDir). The
	// plugin forwards GC to it: the main plugins (bridge v1.9.1, flannel)
	// have no GC, so the runtime's GC would never reach the IPAM otherwise.
	IPAMConf json.RawMessage `json:"ipam,omitempty"`
	// PrevResultJSON shadows the embedded types.NetConf's RawPrevResult
	// (a generic map): the prevResult is decoded once, straight into its
	// result type, and only by the verbs that read it (parsePrevResult).
	PrevResultJSON json.RawMessage `json:"prevResult,omitempty"`

	result *current.Result
}

func invalidConf(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, "holdfast: "+fmt.Sprintf(format, a...), "")
}

// parseConf decodes and validates stdin. needPrev (ADD and CHECK) decodes
// the prevResult and makes a missing one an error (the plugin must be
// chained); DEL, GC and STATUS never read it, so it is left undecoded
// (libcni hands DEL the cached result: decoding it was a third of DEL's
// CPU).
func parseConf(data []byte, needPrev bool) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "holdfast: malformed network configuration JSON: "+err.Error(), "")
	}
	if conf.Name == "" {
		return nil, invalidConf("network configuration has no \"name\"")
	}
	if strings.ContainsAny(conf.Name, "/\\\x00") || conf.Name == "." || conf.Name == ".." {
		return nil, invalidConf("network name %q is not usable as a directory name", conf.Name)
	}
	if conf.DataDir == "" {
		conf.DataDir = attachment.DefaultDataDir
	}
	if o := conf.Overlay; o != nil {
		if o.Device == "" {
			return nil, invalidConf("overlay.device is empty")
		}
		if o.MAC != "" {
			mac, err := net.ParseMAC(o.MAC)
			if err != nil || len(mac) != 6 {
				return nil, invalidConf("overlay.mac %q is not an Ethernet MAC", o.MAC)
			}
			o.mac = mac
		}
		if o.SnapshotDir == "" {
			o.SnapshotDir = DefaultSnapshotDir
		}
		o.lockTimeout = 30 * time.Second
		if o.LockTimeout != "" {
			d, err := time.ParseDuration(o.LockTimeout)
			if err != nil || d <= 0 {
				return nil, invalidConf("overlay.lockTimeout %q is not a positive duration", o.LockTimeout)
			}
			o.lockTimeout = d
		}
	}
	if !needPrev {
		return conf, nil
	}
	if len(conf.PrevResultJSON) == 0 || string(conf.PrevResultJSON) == "null" {
		return nil, invalidConf("must be called as a chained plugin: no prevResult (put holdfast after bridge or flannel in a conflist)")
	}
	res, err := parsePrevResult(conf.CNIVersion, conf.PrevResultJSON)
	if err != nil {
		return nil, err
	}
	conf.result = res
	return conf, nil
}

// parsePrevResult decodes the chain's prevResult, which is in the
// config's spec version, into the current result type. A result that
// names its own cniVersion is decoded as it stands; one without (results
// before 1.0.0 may omit it) goes through version.ParsePrevResult, which
// fills in the config's.
func parsePrevResult(cniVersion string, raw json.RawMessage) (*current.Result, error) {
	var v struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, invalidConf("cannot parse prevResult: %v", err)
	}
	var prev types.Result
	if v.CNIVersion != "" {
		r, err := create.Create(cniVersion, raw)
		if err != nil {
			return nil, invalidConf("cannot parse prevResult: could not parse prevResult: %v", err)
		}
		prev = r
	} else {
		nc := &types.NetConf{CNIVersion: cniVersion}
		if err := json.Unmarshal(raw, &nc.RawPrevResult); err != nil {
			return nil, invalidConf("cannot parse prevResult: %v", err)
		}
		if err := version.ParsePrevResult(nc); err != nil {
			return nil, invalidConf("cannot parse prevResult: %v", err)
		}
		prev = nc.PrevResult
	}
	res, err := current.NewResultFromResult(prev)
	if err != nil {
		return nil, invalidConf("cannot convert prevResult: %v", err)
	}
	return res, nil
}

// podArgs is the pod identity from CNI_ARGS.
type podArgs = cniplugin.PodArgs

func parseArgs(s string) (podArgs, error) { return cniplugin.ParseArgs("holdfast", s) }

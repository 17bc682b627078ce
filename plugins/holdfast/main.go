package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/holdfast-edge/holdfast/internal/cniplugin"
	"github.com/holdfast-edge/holdfast/internal/stablemac"
	"github.com/holdfast-edge/holdfast/plugins/holdfast/attachment"
)

// LogFileName is the plugin's log under the data dir.
const LogFileName = "holdfast.log"

// plugin holds the verbs' dependencies.
type plugin struct {
	// restorer builds the overlay restorer for a configuration.
	restorer func(*OverlayConf) OverlayRestorer
}

func main() {
	p := &plugin{restorer: newSnapshotRestorer}
	skel.PluginMainFuncs(skel.CNIFuncs{Add: p.cmdAdd, Check: p.cmdCheck, Del: p.cmdDel, Status: p.cmdStatus, GC: p.cmdGC},
		cniplugin.Versions, "holdfast: pins pod MACs to pod names, records attachments, guards the overlay")
}

func openLog(dataDir string, create bool) (*slog.Logger, func()) {
	return cniplugin.OpenLog(dataDir, LogFileName, "holdfast", create)
}

func internal(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInternal, "holdfast: "+fmt.Sprintf(format, a...), "")
}

// podMAC is the MAC pinned to the pod's name in this network.
func podMAC(network string, pod podArgs) net.HardwareAddr {
	return stablemac.FromName("holdfast-pod", network, pod.Namespace, pod.Name)
}

func (p *plugin) cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, true)
	if err != nil {
		return err
	}
	pod, err := parseArgs(args.Args)
	if err != nil {
		return err
	}
	path, err := attachment.Path(conf.DataDir, conf.Name, args.ContainerID, args.IfName)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "holdfast: "+err.Error(), "")
	}
	log, closeLog := openLog(conf.DataDir, true)
	defer closeLog()
	log = log.With("network", conf.Name, "pod", pod.Namespace+"/"+pod.Name, "container", args.ContainerID)

	restored, err := ensureOverlay(context.Background(), conf.DataDir, conf.Overlay, p.restorer(conf.Overlay))
	var partial *PartialRestoreError
	switch {
	case errors.As(err, &partial):
		log.Warn("overlay restored from snapshot, but not all of it", "device", conf.Overlay.Device, "err", err)
	case err != nil:
		log.Error("overlay restore failed", "err", err)
		// A restore that failed may work next time (11), but a lock
		// path that is unusable will not (5).
		return types.NewError(cniplugin.EnvCode(err, types.ErrTryAgainLater), "holdfast: "+err.Error(), "")
	case restored:
		log.Info("overlay restored from snapshot", "device", conf.Overlay.Device)
	}

	res := conf.result
	idx := -1
	for i, ifc := range res.Interfaces {
		if ifc.Name == args.IfName && ifc.Sandbox != "" {
			idx = i
			break
		}
	}
	if idx < 0 {
		return invalidConf("prevResult has no interface %q inside the sandbox: the main plugin must report it", args.IfName)
	}
	mac := net.HardwareAddr(nil)
	if pod.Namespace != "" && pod.Name != "" {
		mac = podMAC(conf.Name, pod)
	}
	var finalMAC net.HardwareAddr
	err = ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", args.IfName, args.Netns, err)
		}
		if mac != nil && link.Attrs().HardwareAddr.String() != mac.String() {
			if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
				return fmt.Errorf("set MAC %s on %s: %w", mac, args.IfName, err)
			}
			finalMAC = mac
			return nil
		}
		finalMAC = link.Attrs().HardwareAddr
		return nil
	})
	if err != nil {
		log.Error("ADD failed", "err", err)
		return netnsError(args.Netns, err)
	}
	res.Interfaces[idx].Mac = finalMAC.String()

	att := &attachment.Attachment{Network: conf.Name, PodNamespace: pod.Namespace, PodName: pod.Name, PodUID: pod.UID,
		ContainerID: args.ContainerID, IfName: args.IfName, MAC: finalMAC.String(), Netns: args.Netns, Created: time.Now().UTC()}
	for _, ipc := range res.IPs {
		if ipc.Interface == nil || *ipc.Interface == idx {
			att.IPs = append(att.IPs, ipc.Address.String())
		}
	}
	if err := attachment.Save(path, att); err != nil {
		log.Error("record attachment failed", "err", err)
		return types.NewError(cniplugin.EnvCode(err, types.ErrIOFailure), "holdfast: record attachment: "+err.Error(), "")
	}
	log.Info("attached", "ifname", args.IfName, "mac", att.MAC, "ips", att.IPs)
	return types.PrintResult(res, conf.CNIVersion)
}

func (p *plugin) cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, false)
	if err != nil {
		return err
	}
	path, err := attachment.Path(conf.DataDir, conf.Name, args.ContainerID, args.IfName)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "holdfast: "+err.Error(), "")
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil // already gone: DEL is idempotent and quiet
	}
	log, closeLog := openLog(conf.DataDir, false)
	defer closeLog()
	if err := attachment.Remove(path); err != nil {
		return types.NewError(cniplugin.EnvCode(err, types.ErrIOFailure), "holdfast: "+err.Error(), "")
	}
	log.Info("detached", "network", conf.Name, "container", args.ContainerID, "ifname", args.IfName)
	return nil
}

func (p *plugin) cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, true)
	if err != nil {
		return err
	}
	path, err := attachment.Path(conf.DataDir, conf.Name, args.ContainerID, args.IfName)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "holdfast: "+err.Error(), "")
	}
	att, err := attachment.Load(path)
	if errors.Is(err, os.ErrNotExist) {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("holdfast: no attachment recorded for container %s interface %s (%s)", args.ContainerID, args.IfName, path), "")
	}
	if err != nil {
		return types.NewError(types.ErrIOFailure, "holdfast: "+err.Error(), "")
	}
	// The chain's result must agree with the record.
	for _, ifc := range conf.result.Interfaces {
		if ifc.Name == args.IfName && ifc.Sandbox != "" && ifc.Mac != "" && ifc.Mac != att.MAC {
			return internal("prevResult says %s has MAC %s, recorded %s", args.IfName, ifc.Mac, att.MAC)
		}
	}
	err = ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return internal("interface %s missing in %s: %v", args.IfName, args.Netns, err)
		}
		if got := link.Attrs().HardwareAddr.String(); got != att.MAC {
			return internal("interface %s has MAC %s, recorded %s", args.IfName, got, att.MAC)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return internal("list addresses of %s: %v", args.IfName, err)
		}
		have := map[string]bool{}
		for _, a := range addrs {
			have[a.IPNet.String()] = true
		}
		for _, want := range att.IPs {
			if !have[want] {
				return internal("interface %s lacks recorded address %s", args.IfName, want)
			}
		}
		return nil
	})
	if err != nil {
		return netnsError(args.Netns, err)
	}
	return nil
}

// netnsError is the CNI error of a failure inside the pod's netns: code 4
// naming CNI_NETNS when that path is no network namespace (gone, or never
// one), else 999.
func netnsError(netns string, err error) *types.Error {
	var gone ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if errors.As(err, &gone) || errors.As(err, &notNS) {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("holdfast: CNI_NETNS %q is not a network namespace: %v", netns, err), "")
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return internal("%v", err)
}

func (p *plugin) cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, false)
	if err != nil {
		return err
	}
	paths, err := attachment.List(conf.DataDir, conf.Name)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "holdfast: GC: "+err.Error(), "")
	}
	valid := map[string]bool{}
	for _, v := range conf.ValidAttachments {
		if pth, err := attachment.Path(conf.DataDir, conf.Name, v.ContainerID, v.IfName); err == nil {
			valid[pth] = true
		}
	}
	log, closeLog := openLog(conf.DataDir, false)
	defer closeLog()
	for _, pth := range paths {
		if valid[pth] {
			continue
		}
		if err := attachment.Remove(pth); err != nil {
			return types.NewError(cniplugin.EnvCode(err, types.ErrIOFailure), "holdfast: GC: "+err.Error(), "")
		}
		log.Info("pruned attachment", "network", conf.Name, "record", filepath.Base(pth))
	}
	if err := gcIPAM(conf); err != nil {
		log.Error("GC of the IPAM failed", "network", conf.Name, "err", err)
		return err
	}
	return nil
}

// gcIPAM forwards GC, with the runtime's valid attachments, to the IPAM
// named in the config (found in CNI_PATH, as every delegate is).
func gcIPAM(conf *NetConf) error {
	if len(conf.IPAMConf) == 0 {
		return nil
	}
	var ipam struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(conf.IPAMConf, &ipam); err != nil || ipam.Type == "" {
		return invalidConf("\"ipam\" must be an object with a \"type\"")
	}
	valid := conf.ValidAttachments
	if valid == nil {
		valid = []types.GCAttachment{}
	}
	stdin, err := json.Marshal(map[string]any{"cniVersion": conf.CNIVersion, "name": conf.Name, "ipam": conf.IPAMConf,
		"cni.dev/valid-attachments": valid})
	if err != nil {
		return internal("GC: encode IPAM config: %v", err)
	}
	if err := cniplugin.DelegateGC(context.Background(), ipam.Type, stdin); err != nil {
		return internal("GC of IPAM %s: %v", ipam.Type, err)
	}
	return nil
}

func (p *plugin) cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, false)
	if err != nil {
		return err
	}
	if conf.Overlay == nil {
		return nil
	}
	if err := checkOverlay(conf.Overlay); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "holdfast: not ready: "+err.Error(), "")
	}
	return nil
}

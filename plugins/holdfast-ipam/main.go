package main

import (
	"bufio"
	"errors"
	"fmt"
	"github.com/holdfast-edge/holdfast/internal/cniplugin"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/allocator"
	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/config"
	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
)

// LogFileName is the plugin's log under the data dir.
const LogFileName = "holdfast-ipam.log"

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Check: cmdCheck, Del: cmdDel, Status: cmdStatus, GC: cmdGC},
		cniplugin.Versions, "holdfast-ipam: sticky pod IPs pinned to pod names")
}

// openLog returns the plugin's logger (see cniplugin.OpenLog).
func openLog(dataDir string, create bool) (*slog.Logger, func()) {
	return cniplugin.OpenLog(dataDir, LogFileName, "holdfast-ipam", create)
}

type env struct {
	net   *config.Net
	pod   config.PodArgs
	alloc *allocator.Allocator
	log   *slog.Logger
	close func()
}

func setup(args *skel.CmdArgs, createLog bool) (*env, error) {
	return setupWith(config.Parse, args, createLog)
}

func setupWith(parse func([]byte) (*config.Net, error), args *skel.CmdArgs, createLog bool) (*env, error) {
	n, err := parse(args.StdinData)
	if err != nil {
		return nil, err
	}
	pod, err := config.ParseArgs(args.Args)
	if err != nil {
		return nil, err
	}
	log, closeLog := openLog(n.IPAM.DataDir, createLog)
	a := allocator.New(store.New(n.IPAM.DataDir, n.Name), n, log)
	return &env{net: n, pod: pod, alloc: a, log: log, close: closeLog}, nil
}

// cniError maps the layers' errors to CNI error codes.
func cniError(err error, what string) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	msg := "holdfast-ipam: " + what + ": " + err.Error()
	switch {
	case errors.Is(err, store.ErrLockTimeout):
		return types.NewError(types.ErrTryAgainLater, msg, "")
	case errors.Is(err, store.ErrCorrupt):
		return types.NewError(types.ErrIOFailure, msg, "")
	case errors.Is(err, allocator.ErrExhausted):
		return types.NewError(types.ErrTryAgainLater, msg, "")
	case errors.Is(err, allocator.ErrNotFound):
		return types.NewError(types.ErrUnknownContainer, msg, "")
	}
	return types.NewError(cniplugin.EnvCode(err, types.ErrInternal), msg, "")
}

func cmdAdd(args *skel.CmdArgs) error {
	e, err := setup(args, true)
	if err != nil {
		return err
	}
	defer e.close()
	leases, err := e.alloc.Add(allocator.Request{ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns, Pod: e.pod})
	if err != nil {
		e.log.Error("ADD failed", "container", args.ContainerID, "err", err)
		return cniError(err, "ADD")
	}
	result := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: e.net.IPAM.Routes}
	for _, l := range leases {
		ipc := &current.IPConfig{Address: net.IPNet{IP: net.IP(l.IP.AsSlice()), Mask: net.CIDRMask(l.Range.Subnet.Bits(), l.IP.BitLen())}}
		if l.Range.Gateway.IsValid() {
			ipc.Gateway = net.IP(l.Range.Gateway.AsSlice())
		}
		result.IPs = append(result.IPs, ipc)
	}
	if e.net.IPAM.ResolvConf != "" {
		dns, err := parseResolvConf(e.net.IPAM.ResolvConf)
		if err != nil {
			// Nothing may stay allocated when ADD fails.
			if derr := e.alloc.Del(args.ContainerID, args.IfName); derr != nil {
				e.log.Error("undo ADD failed", "container", args.ContainerID, "err", derr)
			}
			return types.NewError(types.ErrInvalidNetworkConfig, "holdfast-ipam: ipam.resolvConf: "+err.Error(), "")
		}
		result.DNS = *dns
	}
	return types.PrintResult(result, e.net.CNIVersion)
}

// neverAllocated reports whether this network's store was never created
// (no state file; or a data dir that is a regular file, under which none
// can exist): DEL and GC then have nothing to release, and must not
// create it.
func (e *env) neverAllocated() bool {
	_, err := os.Stat(store.New(e.net.IPAM.DataDir, e.net.Name).StatePath())
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func cmdDel(args *skel.CmdArgs) error {
	e, err := setup(args, false)
	if err != nil {
		return err
	}
	defer e.close()
	// Nothing was ever allocated in this network: nothing to release.
	if e.neverAllocated() {
		return nil
	}
	return cniError(e.alloc.Del(args.ContainerID, args.IfName), "DEL")
}

func cmdCheck(args *skel.CmdArgs) error {
	e, err := setup(args, false)
	if err != nil {
		return err
	}
	defer e.close()
	leases, err := e.alloc.Check(args.ContainerID, args.IfName)
	if err != nil {
		return cniError(err, "CHECK")
	}
	if len(leases) != len(e.net.IPAM.Ranges) {
		return types.NewError(types.ErrInternal, fmt.Sprintf("holdfast-ipam: CHECK: container %s holds %d addresses, want one per range set (%d)", args.ContainerID, len(leases), len(e.net.IPAM.Ranges)), "")
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	e, err := setup(args, false)
	if err != nil {
		return err
	}
	defer e.close()
	if err := e.alloc.Status(); err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return te
		}
		return types.NewError(types.ErrPluginNotAvailable, "holdfast-ipam: not ready: "+err.Error(), "")
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) error {
	e, err := setupWith(config.ParseGC, args, false)
	if err != nil {
		return err
	}
	defer e.close()
	if e.neverAllocated() {
		return nil
	}
	n, err := e.alloc.GC(e.net.ValidAttachments)
	if err != nil {
		return cniError(err, "GC")
	}
	e.log.Info("GC done", "released", n, "valid", len(e.net.ValidAttachments))
	return nil
}

// parseResolvConf reads nameserver, domain, search and options lines.
func parseResolvConf(path string) (*types.DNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dns := &types.DNS{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, fields[1])
		case "domain":
			dns.Domain = fields[1]
		case "search":
			dns.Search = append(dns.Search, fields[1:]...)
		case "options":
			dns.Options = append(dns.Options, fields[1:]...)
		}
	}
	return dns, sc.Err()
}

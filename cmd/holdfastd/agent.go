package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	hdns "github.com/holdfast-edge/holdfast/dns"
	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/internal/daemon"
)

const agentSummary = `The node's cluster-side daemons of holdfast in one process (docs/footprint.md),
as the holdfast-agent DaemonSet runs it: peer health (the flags of 'holdfastd
health run', named --health-<flag>) and the node DNS (the flags of 'holdfastd
dns run', named --dns-<flag>; its --metrics-addr is gone, and --dns-verdicts
defaults to the verdicts of this process's health port, --health-listen);
--node-name and --debug are shared. One /healthz (both components) and /metrics (both
components' metrics) on the health port, next to /v1/verdicts. Either
component failing ends the process (the DaemonSet restarts it).`

// runAgent is `holdfastd agent`: the health daemon and the node DNS.
func runAgent(ctx context.Context, args []string) error {
	start := time.Now()
	fs := newFlagSet("agent", agentSummary)
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "this node's name (its identity in the health unit; default $NODE_NAME)")
	var hf healthFlags
	hf.register(fs, "health-")
	var dc hdns.Config
	registerDNS(fs, "dns-", &dc)
	debug := fs.Bool("debug", false, "debug logging (the health daemon logs every refused message)")
	err := fs.Parse(args)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{2, fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if dc.VerdictURL, err = agentVerdictsURL(fs, dc.VerdictURL, hf.listen); err != nil {
		return exitError{2, err}
	}
	reg := daemon.NewRegistry()
	dc.NodeName, dc.Registry, dc.Start = *nodeName, reg, start
	dc.Log = daemon.NewLogger("dns", *debug).With("node", *nodeName)
	// Checked first: it touches nothing, while the health daemon's
	// construction persists its member list.
	// The components' errors name their flags unprefixed: say whose.
	dns, err := hdns.New(dc)
	if err != nil {
		return exitError{2, fmt.Errorf("dns: %w", err)}
	}
	hc := health.Config{NodeName: *nodeName, Log: daemon.NewLogger("health", *debug).With("node", *nodeName), Registry: reg, Healthy: dns.Healthy}
	runHealth, err := hf.daemon(ctx, hc)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	go daemon.ReleaseStartupPages(ctx, daemon.NewLogger("agent", *debug).With("node", *nodeName))
	return runBoth(ctx, runHealth, dns.Run)
}

// agentVerdictsURL is --dns-verdicts as given, or else the verdicts of the
// health daemon in this process, wherever --health-listen put it.
func agentVerdictsURL(fs *flag.FlagSet, given, healthListen string) (string, error) {
	if flagGiven(fs, "dns-verdicts") {
		return given, nil
	}
	url, err := health.LocalVerdictsURL(healthListen)
	if err != nil {
		return "", fmt.Errorf("--health-listen: %w", err)
	}
	return url, nil
}

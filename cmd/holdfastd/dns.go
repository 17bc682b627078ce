package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	hdns "github.com/holdfast-edge/holdfast/dns"
	"github.com/holdfast-edge/holdfast/dns/forward"
	"github.com/holdfast-edge/holdfast/dns/resolve"
	"github.com/holdfast-edge/holdfast/dns/store"
	"github.com/holdfast-edge/holdfast/dns/verdicts"
	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/internal/daemon"
)

const dnsUsage = `Usage: holdfastd dns [run] [flags]
       holdfastd dns show [--state-dir DIR] [--json]

  run   (default) serve cluster DNS on this node from the persisted snapshot,
        kept current by Service/EndpointSlice informers while online
  show  print the Service/EndpointSlice snapshot

Run 'holdfastd dns run --help' or 'holdfastd dns show --help' for flags.
`

func runDNS(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "show":
			return dnsShow(args[1:])
		case "run":
			return dnsRun(ctx, args[1:])
		case "help":
			fmt.Fprint(os.Stderr, dnsUsage)
			return nil
		}
		if !strings.HasPrefix(args[0], "-") {
			fmt.Fprint(os.Stderr, dnsUsage)
			return exitError{2, fmt.Errorf("unknown verb %q", args[0])}
		}
	}
	return dnsRun(ctx, args)
}

const dnsSummary = "Per-node DNS server: answers cluster names (Services, headless endpoints, SRV, ExternalName, StatefulSet pods, PTR)\nfrom a persisted snapshot of Services and EndpointSlices, offline and right after an offline reboot,\nand forwards every other name upstream with a serve-stale cache. Serves /healthz and /metrics on --metrics-addr."

func dnsRun(ctx context.Context, args []string) error {
	start := time.Now()
	fs := newFlagSet("dns run", dnsSummary)
	host, _ := os.Hostname()
	var c hdns.Config
	registerDNS(fs, "", &c)
	fs.StringVar(&c.NodeName, "node-name", host, "this node's name, for logs")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", hdns.DefaultMetricsAddr, "host:port serving /healthz and /metrics (empty: off)")
	debugLog := fs.Bool("debug", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{2, fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	c.Log = daemon.NewLogger("dns", *debugLog).With("node", c.NodeName)
	c.Start = start
	d, err := hdns.New(c)
	if err != nil {
		return exitError{2, err}
	}
	go daemon.ReleaseStartupPages(ctx, c.Log)
	return d.Run(ctx)
}

// registerDNS registers the flags of 'holdfastd dns run' but --node-name,
// --metrics-addr and --debug, after prefix ('holdfastd agent' takes them as
// --dns-<name>), into c.
func registerDNS(fs *flag.FlagSet, prefix string, c *hdns.Config) {
	fs.StringVar(&c.Listen, prefix+"listen", hdns.DefaultListen, "address for DNS over UDP and TCP")
	fs.StringVar(&c.Interface, prefix+"interface", hdns.DefaultInterface, "link that carries the --"+prefix+"listen address, created if missing (a dummy link, or a bridge where the kernel has no dummy driver); empty: use the address as configured")
	fs.StringVar(&c.Zone, prefix+"cluster-domain", hdns.DefaultZone, "cluster DNS domain")
	fs.StringVar(&c.StateDir, prefix+"state-dir", hdns.DefaultStateDir, "directory of the Service/EndpointSlice snapshot (snapshot.json)")
	fs.StringVar(&c.Kubeconfig, prefix+"kubeconfig", "", "kubeconfig for the Service/EndpointSlice informers (empty or '-': in-cluster config; $KUBECONFIG is not read; none found: serve the snapshot only)")
	fs.StringVar(&c.Upstream, prefix+"upstream", "", "comma-separated upstream resolvers (IP or IP:port) for names outside the cluster domain (default: the nameservers of --"+prefix+"resolv-conf)")
	fs.StringVar(&c.ResolvConf, prefix+"resolv-conf", hdns.DefaultResolvConf, "resolv.conf read for upstreams when --"+prefix+"upstream is empty")
	fs.StringVar(&c.VerdictURL, prefix+"verdicts", health.DefaultLocalVerdictsURL, "peer verdict URL of holdfastd health; endpoints on nodes voted alive stay in answers, on nodes voted dead are dropped (empty: readiness from the snapshot as is)")
	fs.DurationVar(&c.VerdictInterval, prefix+"verdict-interval", verdicts.DefaultInterval, "how often to poll --"+prefix+"verdicts")
	fs.DurationVar(&c.VerdictMaxAge, prefix+"verdict-max-age", verdicts.DefaultMaxAge, "forget verdicts when --"+prefix+"verdicts has not answered for this long")
	fs.StringVar(&c.SeedFile, prefix+"seed-file", "", "a 'kubectl get services,endpointslices -A -o json' List loaded when the state dir holds no usable snapshot (air-gapped bootstrap, tests)")
	fs.StringVar(&c.EndpointMode, prefix+"endpoint-mode", string(resolve.EndpointModeOff), "answer ClusterIP names with ready endpoint IPs: off, offline (while the apiserver is unreachable), always")
	fs.DurationVar(&c.StaleTTL, prefix+"stale-ttl", forward.DefaultStaleTTL, "serve expired upstream answers this long while no upstream answers")
	fs.UintVar(&c.TTL, prefix+"ttl", resolve.DefaultTTL, "TTL of cluster answers (CoreDNS kubernetes plugin default 5)")
}

func dnsShow(args []string) error {
	fs := newFlagSet("dns show", "Print the Service/EndpointSlice snapshot that holdfastd dns answers from.")
	stateDir := fs.String("state-dir", hdns.DefaultStateDir, "directory of the snapshot")
	asJSON := fs.Bool("json", false, "print the snapshot payload as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	path := filepath.Join(*stateDir, store.FileName)
	snap, err := store.LoadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return exitError{2, fmt.Errorf("no dns snapshot at %s", path)}
		}
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(snap)
	}
	fmt.Printf("snapshot %s (schema v%d)\nsource %s, updated %s\n\n", path, store.Version, snap.Source, snap.UpdatedAt.Format(time.RFC3339))
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tTYPE\tADDRESS\tPORTS")
	for _, s := range snap.Services {
		addr := strings.Join(s.ClusterIPs, ",")
		typ := s.Type
		if s.Headless {
			addr, typ = "None", "Headless"
		}
		if s.Type == "ExternalName" {
			addr = s.ExternalName
		}
		var ports []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s:%d/%s", p.Name, p.Port, p.Protocol))
		}
		fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\n", s.Namespace, s.Name, typ, addr, strings.Join(ports, " "))
	}
	tw.Flush()
	fmt.Println()
	tw = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINTSLICE\tSERVICE\tADDRESS\tHOSTNAME\tNODE\tREADY\tTERMINATING")
	for _, sl := range snap.Slices {
		for _, e := range sl.Endpoints {
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\t%v\t%v\n", sl.Namespace, sl.Name, sl.Service, strings.Join(e.Addresses, ","), e.Hostname, e.NodeName, e.IsReady(), e.IsTerminating())
		}
	}
	return tw.Flush()
}

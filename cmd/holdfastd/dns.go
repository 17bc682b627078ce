package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/holdfast-edge/holdfast/dns/forward"
	"github.com/holdfast-edge/holdfast/dns/resolve"
	"github.com/holdfast-edge/holdfast/dns/server"
	"github.com/holdfast-edge/holdfast/dns/store"
	"github.com/holdfast-edge/holdfast/dns/verdicts"
	"github.com/holdfast-edge/holdfast/dns/watch"
	"github.com/holdfast-edge/holdfast/internal/daemon"
	"github.com/miekg/dns"
)

const dnsUsage = `Usage: holdfastd dns [run] [flags]
       holdfastd dns show [--state-dir DIR] [--json]

  run   (default) serve cluster DNS on this node from the persisted snapshot,
        kept current by Service/EndpointSlice informers while online
  show  print the Service/EndpointSlice snapshot

Run 'holdfastd dns run --help' or 'holdfastd dns show --help' for flags.
`

const defaultDNSStateDir = "/var/lib/holdfast/dns"

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

func dnsRun(ctx context.Context, args []string) error {
	start := time.Now()
	fs := newFlagSet("dns run", "Per-node DNS server: answers cluster names (Services, headless endpoints, SRV, ExternalName, StatefulSet pods, PTR)\nfrom a persisted snapshot of Services and EndpointSlices, offline and right after an offline reboot,\nand forwards every other name upstream with a serve-stale cache. Serves /healthz and /metrics on --metrics-addr.")
	host, _ := os.Hostname()
	listen := fs.String("listen", "169.254.20.10:53", "address for DNS over UDP and TCP")
	iface := fs.String("interface", "holdfast-dns0", "link that carries the --listen address, created if missing (a dummy link, or a bridge where the kernel has no dummy driver); empty: use the address as configured")
	zone := fs.String("cluster-domain", "cluster.local", "cluster DNS domain")
	stateDir := fs.String("state-dir", defaultDNSStateDir, "directory of the Service/EndpointSlice snapshot (snapshot.json)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig for the Service/EndpointSlice informers (empty: in-cluster config; none found: serve the snapshot only)")
	upstream := fs.String("upstream", "", "comma-separated upstream resolvers (IP or IP:port) for names outside the cluster domain (default: the nameservers of --resolv-conf)")
	resolvConf := fs.String("resolv-conf", "/etc/resolv.conf", "resolv.conf read for upstreams when --upstream is empty")
	verdictURL := fs.String("verdicts", "http://127.0.0.1:51005/v1/verdicts", "peer verdict URL of holdfastd health; endpoints on nodes voted alive stay in answers, on nodes voted dead are dropped (empty: readiness from the snapshot as is)")
	verdictEvery := fs.Duration("verdict-interval", 2*time.Second, "how often to poll --verdicts")
	verdictMaxAge := fs.Duration("verdict-max-age", 30*time.Second, "forget verdicts when --verdicts has not answered for this long")
	seed := fs.String("seed-file", "", "a 'kubectl get services,endpointslices -A -o json' List loaded when the state dir holds no usable snapshot (air-gapped bootstrap, tests)")
	epMode := fs.String("endpoint-mode", "off", "answer ClusterIP names with ready endpoint IPs: off, offline (while the apiserver is unreachable), always")
	staleTTL := fs.Duration("stale-ttl", time.Hour, "serve expired upstream answers this long while no upstream answers")
	ttl := fs.Uint("ttl", resolve.DefaultTTL, "TTL of cluster answers (CoreDNS kubernetes plugin default 5)")
	node := fs.String("node-name", host, "this node's name, for logs")
	metrics := fs.String("metrics-addr", "127.0.0.1:9645", "host:port serving /healthz and /metrics (empty: off)")
	debugLog := fs.Bool("debug", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{2, fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	mode, err := resolve.ParseEndpointMode(*epMode)
	if err != nil {
		return exitError{2, fmt.Errorf("--endpoint-mode: %w", err)}
	}
	lhost, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return exitError{2, fmt.Errorf("--listen %q: %w", *listen, err)}
	}
	lip := net.ParseIP(lhost)
	if lip == nil {
		return exitError{2, fmt.Errorf("--listen %q: host is not an IP address", *listen)}
	}
	if *ttl == 0 || *ttl > 3600 {
		return exitError{2, fmt.Errorf("--ttl %d: want 1..3600", *ttl)}
	}
	if *staleTTL < 0 {
		return exitError{2, fmt.Errorf("--stale-ttl %s is negative", *staleTTL)}
	}
	ups, err := dnsUpstreams(*upstream, *resolvConf, *listen)
	if err != nil {
		return exitError{2, err}
	}
	log := daemon.NewLogger("dns", *debugLog).With("node", *node)

	// Start-up is one burst of allocation (decode the snapshot, build the
	// index) on the path to the first answer: no GC cycles inside it.
	gcPercent := debug.SetGCPercent(-1)
	gcRestored := false
	restoreGC := func() {
		if !gcRestored {
			debug.SetGCPercent(gcPercent)
			gcRestored = true
		}
	}
	defer restoreGC()

	st, err := store.Open(store.Options{Dir: *stateDir, Log: log})
	if err != nil {
		log.Error("dns snapshot refused: starting with an empty snapshot", "path", filepath.Join(*stateDir, store.FileName), "err", err)
	}
	if st.Empty() && *seed != "" {
		snap, err := store.LoadSeed(*seed)
		if err != nil {
			return fmt.Errorf("--seed-file: %w", err)
		}
		st.Replace(snap)
		if err := st.Flush(); err != nil {
			return fmt.Errorf("save seeded snapshot: %w", err)
		}
		log.Info("seeded dns snapshot", "seed", *seed, "services", len(snap.Services), "endpointslices", len(snap.Slices))
	}
	defer st.Close()

	if *iface != "" && !lip.IsLoopback() && !lip.IsUnspecified() {
		kind, created, err := server.EnsureAddress(*iface, lip)
		if err != nil {
			return fmt.Errorf("--interface: %w", err)
		}
		log.Info("dns address ready", "interface", *iface, "kind", kind, "created", created, "address", lip.String())
	}
	fwd, err := forward.New(forward.Options{Upstreams: ups, StaleTTL: *staleTTL, Log: log})
	if err != nil {
		return exitError{2, err}
	}
	reg := daemon.NewRegistry()
	srv, err := server.New(server.Config{Listen: *listen, Zone: *zone, TTL: uint32(*ttl), EndpointMode: mode, NodeName: *node, Store: st, Forwarder: fwd, Registerer: reg, Log: log})
	if err != nil {
		return exitError{2, err}
	}
	udp, _, err := srv.Start(ctx)
	if err != nil {
		return err
	}
	restoreGC()
	view := st.View()
	log.Info("answering cluster DNS", "listen", udp.String(), "zone", *zone, "services", len(view.Services), "endpointslices", len(view.Slices),
		"snapshot_source", view.Source, "upstreams", fwd.Upstreams(), "since_start", time.Since(start).Round(time.Microsecond))

	if *verdictURL != "" {
		p := verdicts.New(verdicts.Options{URL: *verdictURL, Interval: *verdictEvery, MaxAge: *verdictMaxAge, Log: log, OnChange: srv.SetVerdicts})
		go p.Run(ctx)
	}
	go func() {
		err := watch.Run(ctx, watch.Options{Kubeconfig: *kubeconfig, Store: st, OnOnline: srv.SetOnline, Log: log})
		if err != nil {
			log.Warn("no apiserver client: serving the snapshot only", "err", err)
		}
	}()
	health := func() error {
		if err := st.SaveErr(); err != nil {
			return fmt.Errorf("snapshot save failing: %w", err)
		}
		return nil
	}
	if _, err := daemon.Serve(ctx, log, *metrics, daemon.Mux(reg, health)); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("stopping dns")
	return nil
}

// dnsUpstreams parses --upstream or reads resolv.conf, dropping our own
// listen address (kubelet may have pointed the host at us: a loop).
func dnsUpstreams(flagVal, resolvConf string, self string) ([]string, error) {
	var ups []string
	if flagVal != "" {
		for _, u := range strings.Split(flagVal, ",") {
			if u = strings.TrimSpace(u); u != "" {
				ups = append(ups, u)
			}
		}
	} else if resolvConf != "" {
		cc, err := dns.ClientConfigFromFile(resolvConf)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, nil
			}
			return nil, fmt.Errorf("--resolv-conf %s: %w", resolvConf, err)
		}
		for _, s := range cc.Servers {
			ups = append(ups, net.JoinHostPort(s, cc.Port))
		}
	}
	out := ups[:0]
	for _, u := range ups {
		addr, err := forward.NormalizeUpstream(u)
		if err != nil {
			return nil, fmt.Errorf("--upstream: %w", err)
		}
		if addr == self {
			continue
		}
		out = append(out, addr)
	}
	return out, nil
}

func dnsShow(args []string) error {
	fs := newFlagSet("dns show", "Print the Service/EndpointSlice snapshot that holdfastd dns answers from.")
	stateDir := fs.String("state-dir", defaultDNSStateDir, "directory of the snapshot")
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

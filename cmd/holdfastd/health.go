package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/health/peer"
	"github.com/holdfast-edge/holdfast/internal/daemon"
)

// runHealth: holdfastd health [run|keygen|show] [flags].
func runHealth(ctx context.Context, args []string) error {
	sub := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "run":
		return runHealthDaemon(ctx, args)
	case "keygen":
		return runHealthKeygen(args)
	case "show":
		return runHealthShow(args)
	}
	return exitError{2, fmt.Errorf("unknown subcommand %q (want run, keygen or show)", sub)}
}

const healthSummary = "Probe the other members of this node's unit, exchange signed views and vote on who is alive.\nServes GET /v1/verdicts, /healthz and /metrics over TCP and the views over UDP, both on the --listen port."

func runHealthDaemon(ctx context.Context, args []string) error {
	fs := newFlagSet("health run", healthSummary)
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "this node's name (its identity in the unit; default $NODE_NAME)")
	var hf healthFlags
	hf.register(fs, "")
	debug := fs.Bool("debug", false, "log every refused message")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{2, fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	log := daemon.NewLogger("health", *debug).With("node", *nodeName)
	run, err := hf.daemon(ctx, health.Config{NodeName: *nodeName, Log: log, Registry: daemon.NewRegistry()})
	if err != nil {
		return err
	}
	go daemon.ReleaseStartupPages(ctx, log)
	return run(ctx)
}

// healthFlags are the flags of 'holdfastd health run' but --node-name and
// --debug, after prefix ('holdfastd agent' takes them as --health-<name>).
type healthFlags struct {
	prefix                                                 string
	listen, keyFile, kubeconfig, members, unitLabel, state string
	period, deadAfter, maxSkew                             time.Duration
}

func (f *healthFlags) register(fs *flag.FlagSet, prefix string) {
	f.prefix = prefix
	fs.StringVar(&f.listen, prefix+"listen", fmt.Sprintf(":%d", health.DefaultPort), "address of the health port: UDP for views, TCP for /v1/verdicts, /healthz, /metrics")
	fs.DurationVar(&f.period, prefix+"probe-period", health.DefaultProbePeriod, "how often each member sends its signed view (its heartbeat) to every other member")
	fs.DurationVar(&f.deadAfter, prefix+"dead-after", 0, "a member not heard from for this long is dead in this node's view (default 2.5 × probe-period)")
	fs.DurationVar(&f.maxSkew, prefix+"max-clock-skew", peer.DefaultMaxSkew, "refuse views whose timestamp is further than this from the local clock")
	fs.StringVar(&f.keyFile, prefix+"key-file", health.DefaultKeyFile, "this node's Ed25519 private key (make one with 'holdfastd health keygen --out FILE')")
	fs.StringVar(&f.kubeconfig, prefix+"kubeconfig", "", "kubeconfig: members and public keys from Node objects (listed at start, then Node changes followed and applied without a restart; the persisted list is used while the apiserver is unreachable), own key published on its Node, own view written to Lease holdfast-view-<node>; '-' for in-cluster config")
	fs.StringVar(&f.members, prefix+"members-file", "", "JSON list of {\"name\",\"address\",\"unit\",\"publicKey\"} (sites without an apiserver, tests); exclusive with --"+prefix+"kubeconfig")
	fs.StringVar(&f.unitLabel, prefix+"unit-label", "holdfast.dev/unit", "Node label that names a node's unit (unlabelled nodes form the cluster-wide unit)")
	fs.StringVar(&f.state, prefix+"state-dir", health.DefaultStateDir, "where the member list, sequence epoch and last verdicts are kept across reboots")
}

// daemon checks the flags, loads the key and the member list (from the
// file, or from Node objects: this may reach the apiserver) and builds the
// daemon over cfg (NodeName, Log, Registry and Healthy set by the caller).
// run runs it until ctx ends.
func (f *healthFlags) daemon(ctx context.Context, cfg health.Config) (run func(context.Context) error, err error) {
	cfg.Listen, cfg.Period, cfg.DeadAfter, cfg.MaxSkew, cfg.StateDir = f.listen, f.period, f.deadAfter, f.maxSkew, f.state
	if err := cfg.Check(); err != nil {
		return nil, exitError{2, err}
	}
	if (f.kubeconfig == "") == (f.members == "") {
		return nil, exitError{2, fmt.Errorf("exactly one of --%skubeconfig and --%smembers-file is required", f.prefix, f.prefix)}
	}
	if cfg.Key, err = health.LoadKey(f.keyFile); err != nil {
		return nil, err
	}
	if f.members == "" {
		return healthKube(ctx, cfg, f.kubeconfig, f.unitLabel)
	}
	list, err := members.LoadFile(f.members)
	if err != nil {
		return nil, err
	}
	cfg.Members, cfg.Source = list, f.members
	d, err := health.New(cfg)
	if err != nil {
		return nil, err
	}
	return d.Run, nil
}

// healthKube builds the daemon with its member list from Node objects; run
// follows Node changes while it runs.
func healthKube(ctx context.Context, cfg health.Config, kubeconfig, unitLabel string) (run func(context.Context) error, err error) {
	kc, err := health.NewKube(ctx, kubeconfig, cfg.NodeName, unitLabel, cfg.Log)
	if err != nil {
		return nil, err
	}
	list, src, err := kc.Members(ctx, cfg.StateDir, cfg.Key)
	if err != nil {
		return nil, err
	}
	cfg.Members, cfg.Source = list, src
	cfg.ViewSink = kc.LeaseWriter(ctx)
	d, err := health.New(cfg)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		// The list read at start may predate other nodes' keys (every
		// daemon of a cluster starts at about the same time) or the
		// apiserver may be away: follow the Nodes from now on.
		go kc.Follow(ctx, cfg.Key, health.FollowOptions{}, func(l []members.Member) error { return d.SetMembers(l, "apiserver") })
		return d.Run(ctx)
	}, nil
}

func runHealthKeygen(args []string) error {
	fs := newFlagSet("health keygen", "Make this node's Ed25519 key file and print its public half (base64), which goes into the member list\nor onto the Node (annotation holdfast.dev/health-public-key).")
	out := fs.String("out", "", "file to write (mode 0600); refused if it exists")
	node := fs.String("node-name", "", "node name recorded in the file (informational)")
	ifMissing := fs.Bool("if-missing", false, "keep an existing key file (print its public half) instead of refusing: the agent DaemonSet's init container runs this on every start")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return exitError{2, errors.New("--out is required")}
	}
	if *ifMissing {
		if _, err := os.Lstat(*out); err == nil {
			key, err := health.LoadKey(*out)
			if err != nil {
				return err
			}
			fmt.Println(health.PublicKeyString(key))
			return nil
		}
	}
	pub, err := health.GenerateKey(*out, *node)
	if err != nil {
		return err
	}
	fmt.Println(pub)
	return nil
}

func runHealthShow(args []string) error {
	fs := newFlagSet("health show", "Print the persisted member list and last verdicts (and a key file's public half) as JSON.")
	stateDir := fs.String("state-dir", health.DefaultStateDir, "state dir of the health daemon")
	keyFile := fs.String("key-file", "", "also show this key file's public key (never the private key)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	out := map[string]any{}
	if m, err := health.LoadMembers(*stateDir); err == nil {
		out["members"] = m
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if v, err := health.LoadVerdicts(*stateDir); err == nil {
		out["verdicts"] = v
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if *keyFile != "" {
		k, err := health.LoadKey(*keyFile)
		if err != nil {
			return err
		}
		out["publicKey"] = health.PublicKeyString(k)
	}
	if len(out) == 0 {
		return exitError{2, fmt.Errorf("no health state in %s", filepath.Clean(*stateDir))}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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

func runHealthDaemon(ctx context.Context, args []string) error {
	fs := newFlagSet("health run", "Probe the other members of this node's unit, exchange signed views and vote on who is alive.\nServes GET /v1/verdicts, /healthz and /metrics over TCP and the views over UDP, both on the --listen port.")
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "this node's name (its identity in the unit; default $NODE_NAME)")
	listen := fs.String("listen", fmt.Sprintf(":%d", health.DefaultPort), "address of the health port: UDP for views, TCP for /v1/verdicts, /healthz, /metrics")
	period := fs.Duration("probe-period", health.DefaultProbePeriod, "how often each member sends its signed view (its heartbeat) to every other member")
	deadAfter := fs.Duration("dead-after", 0, "a member not heard from for this long is dead in this node's view (default 2.5 × probe-period)")
	maxSkew := fs.Duration("max-clock-skew", peer.DefaultMaxSkew, "refuse views whose timestamp is further than this from the local clock")
	keyFile := fs.String("key-file", health.DefaultKeyFile, "this node's Ed25519 private key (make one with 'holdfastd health keygen --out FILE')")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig: members and public keys from Node objects (listed at start, then Node changes followed and applied without a restart; the persisted list is used while the apiserver is unreachable), own key published on its Node, own view written to Lease holdfast-view-<node>; '-' for in-cluster config")
	membersFile := fs.String("members-file", "", "JSON list of {\"name\",\"address\",\"unit\",\"publicKey\"} (sites without an apiserver, tests); exclusive with --kubeconfig")
	unitLabel := fs.String("unit-label", "holdfast.dev/unit", "Node label that names a node's unit (unlabelled nodes form the cluster-wide unit)")
	stateDir := fs.String("state-dir", health.DefaultStateDir, "where the member list, sequence epoch and last verdicts are kept across reboots")
	debug := fs.Bool("debug", false, "log every refused message")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{2, fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	log := daemon.NewLogger("health", *debug).With("node", *nodeName)
	cfg := health.Config{NodeName: *nodeName, Listen: *listen, Period: *period, DeadAfter: *deadAfter, MaxSkew: *maxSkew, StateDir: *stateDir, Log: log, Registry: daemon.NewRegistry()}
	if err := cfg.Check(); err != nil {
		return exitError{2, err}
	}
	if (*kubeconfig == "") == (*membersFile == "") {
		return exitError{2, errors.New("exactly one of --kubeconfig and --members-file is required")}
	}
	key, err := health.LoadKey(*keyFile)
	if err != nil {
		return err
	}
	cfg.Key = key
	if *membersFile != "" {
		list, err := members.LoadFile(*membersFile)
		if err != nil {
			return err
		}
		cfg.Members, cfg.Source = list, *membersFile
		d, err := health.New(cfg)
		if err != nil {
			return err
		}
		return d.Run(ctx)
	}
	return runHealthKube(ctx, cfg, *kubeconfig, *unitLabel)
}

// runHealthKube runs the daemon with its member list from Node objects,
// following Node changes while it runs.
func runHealthKube(ctx context.Context, cfg health.Config, kubeconfig, unitLabel string) error {
	kc, err := health.NewKube(ctx, kubeconfig, cfg.NodeName, unitLabel, cfg.Log)
	if err != nil {
		return err
	}
	list, src, err := kc.Members(ctx, cfg.StateDir, cfg.Key)
	if err != nil {
		return err
	}
	cfg.Members, cfg.Source = list, src
	cfg.ViewSink = kc.LeaseWriter(ctx)
	d, err := health.New(cfg)
	if err != nil {
		return err
	}
	// The list read at start may predate other nodes' keys (every daemon
	// of a cluster starts at about the same time) or the apiserver may be
	// away: follow the Nodes from now on.
	go kc.Follow(ctx, cfg.Key, health.FollowOptions{}, func(l []members.Member) error { return d.SetMembers(l, "apiserver") })
	return d.Run(ctx)
}

func runHealthKeygen(args []string) error {
	fs := newFlagSet("health keygen", "Make this node's Ed25519 key file and print its public half (base64), which goes into the member list\nor onto the Node (annotation holdfast.dev/health-public-key).")
	out := fs.String("out", "", "file to write (mode 0600); refused if it exists")
	node := fs.String("node-name", "", "node name recorded in the file (informational)")
	ifMissing := fs.Bool("if-missing", false, "keep an existing key file (print its public half) instead of refusing: the health DaemonSet's init container runs this on every start")
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

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/daemon"
	"github.com/holdfast-edge/holdfast/snapshot"
	"github.com/holdfast-edge/holdfast/snapshot/watch"
)

const snapshotUsage = `Usage: holdfastd snapshot <save|restore|watch|show|diff> [flags]

  save     capture the overlay now and write the snapshot
  restore  add what is missing of the snapshot to this node (exit 0 done, 2 no snapshot, 1 error)
  watch    daemon: capture on every netlink change and periodically, write on change
  show     print the snapshot
  diff     print the difference between the snapshot and live state

Run 'holdfastd snapshot <verb> --help' for its flags.
`

// snapshotFlags are the flags every snapshot verb shares.
type snapshotFlags struct {
	dir, node, devs, subnetEnv, chains string
	iptSave, iptRestore                string
	nftTables, nft                     string
}

func (f *snapshotFlags) register(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&f.node, "node-name", host, "this node's Kubernetes name; a snapshot of another node is refused")
	f.registerCapture(fs, "")
}

// registerCapture registers every shared flag but --node-name, each name
// after prefix (`holdfastd node` takes them as --snapshot-<name>).
func (f *snapshotFlags) registerCapture(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&f.dir, prefix+"dir", snapshot.DefaultDir, "snapshot directory (snapshot.json, snapshot.prev.json, vtep-mac.json)")
	fs.StringVar(&f.devs, prefix+"vxlan-dev", "", "comma-separated VXLAN devices to capture (default: every VXLAN device, flannel.1 first)")
	fs.StringVar(&f.subnetEnv, prefix+"subnet-env", snapshot.DefaultSubnetEnv, "flannel's subnet.env to capture (empty: none)")
	fs.StringVar(&f.chains, prefix+"iptables-chains", strings.Join(snapshot.DefaultChains().Globs, ","), "comma-separated table:glob user chains to capture, with the jump rules from built-in chains into them (a glob without table means nat and filter; empty: none)")
	fs.StringVar(&f.iptSave, prefix+"iptables-save", "iptables-save", "iptables-save command")
	fs.StringVar(&f.iptRestore, prefix+"iptables-restore", "iptables-restore", "iptables-restore command (run with --noflush)")
	fs.StringVar(&f.nftTables, prefix+"nft-tables", strings.Join(snapshot.DefaultNFTables().Tables, ","), "comma-separated family:name nftables tables to capture whole (kube-proxy's nftables mode, flannel's nftables mode; empty: none)")
	fs.StringVar(&f.nft, prefix+"nft", "nft", "nft command (lists and restores nftables tables)")
}

func (f *snapshotFlags) capture() (snapshot.CaptureOptions, error) {
	cs, err := snapshot.ParseChainSelector(f.chains)
	if err != nil {
		return snapshot.CaptureOptions{}, err
	}
	nt, err := snapshot.ParseNFTSelector(f.nftTables)
	if err != nil {
		return snapshot.CaptureOptions{}, err
	}
	if f.node == "" {
		return snapshot.CaptureOptions{}, errors.New("--node-name is empty")
	}
	o := snapshot.CaptureOptions{NodeName: f.node, SubnetEnv: f.subnetEnv, Chains: cs, NFTables: nt, IPTablesSave: f.iptSave, IPTablesRestore: f.iptRestore, Nft: f.nft}
	for _, d := range strings.Split(f.devs, ",") {
		if d = strings.TrimSpace(d); d != "" {
			o.Devices = append(o.Devices, d)
		}
	}
	return o, nil
}

func (f *snapshotFlags) restore() snapshot.RestoreOptions {
	return snapshot.RestoreOptions{Dir: f.dir, NodeName: f.node, IPTablesSave: f.iptSave, IPTablesRestore: f.iptRestore, Nft: f.nft}
}

func runSnapshot(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, snapshotUsage)
		if len(args) == 0 {
			return exitError{2, nil}
		}
		return nil
	}
	verb, rest := args[0], args[1:]
	switch verb {
	case "save":
		return snapshotSave(ctx, rest)
	case "restore":
		return snapshotRestore(ctx, rest)
	case "watch":
		return snapshotWatch(ctx, rest)
	case "show":
		return snapshotShow(rest)
	case "diff":
		return snapshotDiff(ctx, rest)
	}
	fmt.Fprint(os.Stderr, snapshotUsage)
	return exitError{2, fmt.Errorf("unknown verb %q", verb)}
}

func snapshotSave(ctx context.Context, args []string) error {
	fs := newFlagSet("snapshot save", "Capture the overlay (VXLAN devices, addresses, routes, FDB, permanent neighbours, subnet.env, selected iptables chains and nftables tables) and write it as the current snapshot; the previous good one is kept as snapshot.prev.json. The first save pins each device's live MAC.")
	var f snapshotFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts, err := f.capture()
	if err != nil {
		return err
	}
	s, warns, err := snapshot.CapturePinned(ctx, f.dir, opts, time.Now())
	if err != nil {
		return err
	}
	for _, w := range warns {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	if err := snapshot.Save(f.dir, s); err != nil {
		return err
	}
	fmt.Printf("saved snapshot of node %s: %d devices, %d entries\n", s.NodeName, len(s.Devices), s.Entries())
	return nil
}

func snapshotRestore(ctx context.Context, args []string) error {
	fs := newFlagSet("snapshot restore", "Add what is missing of this node's snapshot: VXLAN devices (created with the pinned MAC), addresses, neighbours, FDB, routes, subnet.env, iptables chains, nftables tables (each whole, in one transaction). Live entries that differ are kept. Exit 0 done, 2 no snapshot, 1 error (nothing changed).")
	var f snapshotFlags
	f.register(fs)
	dry := fs.Bool("dry-run", false, "plan only, change nothing")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	verbose := fs.Bool("v", false, "print every action, not only adds and skips")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := f.restore()
	opts.DryRun = *dry
	rep, err := snapshot.Restore(ctx, opts)
	if errors.Is(err, snapshot.ErrNoSnapshot) {
		return exitError{2, err}
	}
	if rep != nil && rep.Refused != "" {
		fmt.Fprintf(os.Stderr, "warning: current snapshot refused, used previous generation: %s\n", rep.Refused)
	}
	if rep != nil {
		if *asJSON {
			json.NewEncoder(os.Stdout).Encode(rep)
		} else {
			for _, a := range rep.Actions {
				if *verbose || a.Op != snapshot.OpKeep {
					fmt.Println(a.String())
				}
			}
			fmt.Println(rep.Summary())
		}
	}
	if err != nil {
		return exitError{1, err}
	}
	return nil
}

// watchFlags are the watcher's own flags, shared by `snapshot watch` and
// `holdfastd node` (there named after a prefix).
type watchFlags struct{ interval, minGap time.Duration }

func (f *watchFlags) register(fs *flag.FlagSet, prefix string) {
	fs.DurationVar(&f.interval, prefix+"interval", watch.DefaultInterval, "full capture period without events")
	fs.DurationVar(&f.minGap, prefix+"min-gap", watch.DefaultMinGap, "least time between two captures")
}

// watcher builds the snapshot watcher of dir with these flags.
func (f *watchFlags) watcher(dir string, opts snapshot.CaptureOptions, log *slog.Logger, reg prometheus.Registerer) (*watch.Watcher, error) {
	return watch.New(watch.Config{Dir: dir, Capture: opts, Interval: f.interval, MinGap: f.minGap, Log: log, Registry: reg})
}

func snapshotWatch(ctx context.Context, args []string) error {
	fs := newFlagSet("snapshot watch", "Daemon: capture the overlay on every netlink link/route/neighbour change (at most once per --min-gap) and every --interval; write the snapshot only when it changed. Serves /healthz and /metrics.")
	var f snapshotFlags
	f.register(fs)
	var wf watchFlags
	wf.register(fs, "")
	listen := fs.String("listen", "127.0.0.1:9641", "address of /healthz and /metrics (empty: off)")
	debug := fs.Bool("debug", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts, err := f.capture()
	if err != nil {
		return err
	}
	log := daemon.NewLogger("snapshot-watch", *debug).With("node", f.node)
	reg := daemon.NewRegistry()
	w, err := wf.watcher(f.dir, opts, log, reg)
	if err != nil {
		return err
	}
	if _, err := daemon.Serve(ctx, log, *listen, daemon.Mux(reg, w.Healthy)); err != nil {
		return err
	}
	go daemon.ReleaseStartupPages(ctx, log)
	return w.Run(ctx)
}

func snapshotShow(args []string) error {
	fs := newFlagSet("snapshot show", "Print the snapshot in --dir (or --file) in human-readable form.")
	dir := fs.String("dir", snapshot.DefaultDir, "snapshot directory")
	file := fs.String("file", "", "a snapshot file to show instead of the newest good one in --dir")
	asJSON := fs.Bool("json", false, "print the snapshot as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var s *snapshot.Snapshot
	if *file != "" {
		var err error
		if s, err = snapshot.LoadFile(*file); err != nil {
			return err
		}
	} else {
		l, err := snapshot.Load(*dir)
		if errors.Is(err, snapshot.ErrNoSnapshot) {
			return exitError{2, err}
		}
		if err != nil {
			return err
		}
		if l.Refused != nil {
			fmt.Fprintf(os.Stderr, "warning: current snapshot refused, showing previous generation: %v\n", l.Refused)
		}
		if !*asJSON { // --json prints one JSON document and nothing else
			fmt.Printf("file %s\n", l.Path)
		}
		s = l.Snapshot
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	snapshot.Format(os.Stdout, s)
	return nil
}

func snapshotDiff(ctx context.Context, args []string) error {
	fs := newFlagSet("snapshot diff", "Compare the snapshot with live state: add (missing live), skip (live differs, would be kept), live-only (not in the snapshot). Exit 0 equal, 3 different, 2 no snapshot, 1 error.")
	var f snapshotFlags
	f.register(fs)
	all := fs.Bool("v", false, "also print equal entries")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := snapshot.Load(f.dir)
	if errors.Is(err, snapshot.ErrNoSnapshot) {
		return exitError{2, err}
	}
	if err != nil {
		return err
	}
	if l.Snapshot.NodeName != f.node {
		return fmt.Errorf("%w: snapshot is of node %q, this node is %q", snapshot.ErrOtherNode, l.Snapshot.NodeName, f.node)
	}
	acts, err := snapshot.Diff(ctx, l.Snapshot, f.restore())
	if err != nil {
		return err
	}
	differ := 0
	for _, a := range acts {
		if a.Op != snapshot.OpKeep {
			differ++
		}
		if *all || a.Op != snapshot.OpKeep {
			fmt.Println(a.String())
		}
	}
	fmt.Printf("%d of %d entries differ (snapshot %s)\n", differ, len(acts), l.Path)
	if differ > 0 {
		return exitError{3, nil}
	}
	return nil
}

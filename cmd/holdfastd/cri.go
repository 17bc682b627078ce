package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	crishim "github.com/holdfast-edge/holdfast/cri-shim"
	"github.com/holdfast-edge/holdfast/cri-shim/record"
	"github.com/holdfast-edge/holdfast/cri-shim/relaunch"
	"github.com/holdfast-edge/holdfast/cri-shim/seal"
	"github.com/holdfast-edge/holdfast/cri-shim/volumes"
	"github.com/holdfast-edge/holdfast/internal/daemon"
)

const criSummary = `The CRI shim sits between kubelet and containerd. It relays every CRI call,
records every pod sandbox and container config per pod UID under --state-dir,
and after an offline reboot (the boot id changed) relaunches the pods that were
running, so kubelet can adopt them when the cloud returns.

Subcommands:
  run          serve (default when no subcommand is given)
  pods         list recorded pods and their relaunch outcome`

// runCRI dispatches `holdfastd cri [run|pods]`.
func runCRI(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "run":
			return runCRIServe(ctx, args[1:])
		case "pods", "show":
			return runCRIPods(ctx, args[1:])
		}
		if !strings.HasPrefix(args[0], "-") {
			return exitError{2, fmt.Errorf("unknown subcommand %q (want run or pods)", args[0])}
		}
	}
	return runCRIServe(ctx, args)
}

// criServeFlags are the flags of `holdfastd cri run`, which `holdfastd
// node` takes unchanged.
type criServeFlags struct {
	listen, endpoint, stateDir, relaunch, kubeconfig, bootIDFile, metrics, node *string
	par                                                                         *int
	backoff, backoffMax, volumeScan                                             *time.Duration
	debug, restoreVolumes                                                       *bool
}

func (f *criServeFlags) register(fs *flag.FlagSet) {
	f.listen = fs.String("listen", "/run/holdfast/cri.sock", "unix socket kubelet connects to (--container-runtime-endpoint=unix://<this>); created mode 0660")
	f.endpoint = fs.String("runtime-endpoint", "unix:///run/containerd/containerd.sock", "containerd's CRI socket the shim relays to")
	f.stateDir = fs.String("state-dir", record.DefaultDir, "durable directory of the pod records (must survive reboots)")
	f.relaunch = fs.String("relaunch", "auto", "auto: relaunch recorded running pods when the boot id changed; never: only record and relay")
	f.par = fs.Int("relaunch-parallelism", 4, "how many pods are relaunched at once")
	f.kubeconfig = fs.String("kubeconfig", "", "optional kubeconfig ('-': in-cluster config; empty: none): read restartPolicy, init containers and owner of recorded pods from the apiserver when reachable (persisted for offline use)")
	f.bootIDFile = fs.String("boot-id-file", "/proc/sys/kernel/random/boot_id", "file holding the boot id; a change since the last run means the node rebooted")
	f.metrics = fs.String("metrics-addr", "127.0.0.1:9643", "host:port serving /healthz and /metrics (empty: off)")
	f.node = fs.String("node-name", "", "node name used in logs (default: the host name)")
	f.backoff = fs.Duration("restart-backoff", relaunch.DefaultBackoffBase, "first delay before restarting an exited relaunched container; doubles per restart (kubelet: 10s)")
	f.backoffMax = fs.Duration("restart-backoff-max", relaunch.DefaultBackoffMax, "longest delay between restarts (kubelet: 5m)")
	f.restoreVolumes = fs.Bool("restore-volumes", crishim.DefaultRestoreVolumes, "capture the pods' tmpfs-backed volumes (Secret, projected token, downwardAPI, memory emptyDir) while online and restore them before a relaunch; Secret and token content is kept only encrypted under the node key (<state-dir>/"+seal.KeyFileName+"); false: never read or mount pod volumes")
	f.volumeScan = fs.Duration("volume-scan-interval", volumes.DefaultScanInterval, "how often captured volumes are checked for changes kubelet made (also on every CreateContainer/StartContainer)")
	f.debug = fs.Bool("debug", false, "debug logging")
}

// nodeName is --node-name, or the host name when it is empty.
func (f *criServeFlags) nodeName() string {
	if *f.node == "" {
		*f.node, _ = os.Hostname()
	}
	return *f.node
}

// config is the shim's config from the flags; a bad value is an exit-2 error.
func (f *criServeFlags) config(log *slog.Logger, reg *prometheus.Registry) (crishim.Config, error) {
	var doRelaunch bool
	switch *f.relaunch {
	case "auto":
		doRelaunch = true
	case "never":
	default:
		return crishim.Config{}, exitError{2, fmt.Errorf("--relaunch %q: want auto or never", *f.relaunch)}
	}
	cfg := crishim.Config{
		Listen: *f.listen, RuntimeEndpoint: *f.endpoint, StateDir: *f.stateDir, Relaunch: doRelaunch,
		Parallelism: *f.par, BootIDFile: *f.bootIDFile, Kubeconfig: *f.kubeconfig, NodeName: f.nodeName(),
		BackoffBase: *f.backoff, BackoffMax: *f.backoffMax, RestoreVolumes: *f.restoreVolumes, VolumeScanInterval: *f.volumeScan,
		Log: log, Registry: reg,
	}
	if err := cfg.Check(); err != nil {
		return cfg, exitError{2, err}
	}
	return cfg, nil
}

func runCRIServe(ctx context.Context, args []string) error {
	fs := newFlagSet("cri [run]", criSummary)
	var f criServeFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{2, fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	log := daemon.NewLogger("cri", *f.debug)
	reg := daemon.NewRegistry()
	cfg, err := f.config(log, reg)
	if err != nil {
		return err
	}
	shim, err := crishim.New(cfg)
	if err != nil {
		return err
	}
	if _, err := daemon.Serve(ctx, log, *f.metrics, daemon.Mux(reg, func() error { return shim.Healthy(context.Background()) })); err != nil {
		return err
	}
	go daemon.ReleaseStartupPages(ctx, log)
	return shim.Run(ctx)
}

type podRow struct {
	Namespace  string           `json:"namespace"`
	Name       string           `json:"name"`
	UID        string           `json:"uid"`
	Sandboxes  int              `json:"sandboxes"`
	Latest     string           `json:"latestSandbox,omitempty"`
	Running    bool             `json:"runningAtLastRecord"`
	Containers []string         `json:"containers"`
	Facts      *record.Facts    `json:"facts,omitempty"`
	Relaunch   *record.Relaunch `json:"relaunch,omitempty"`
	Volumes    []volumes.Status `json:"volumes,omitempty"`
	VolumeErr  string           `json:"volumeError,omitempty"`
	Error      string           `json:"error,omitempty"`
	File       string           `json:"file,omitempty"`
}

func runCRIPods(_ context.Context, args []string) error {
	fs := newFlagSet("cri pods", "List the pods the CRI shim has recorded, with their relaunch outcome.\nUnreadable record files are listed with their error.")
	stateDir := fs.String("state-dir", record.DefaultDir, "the shim's state directory")
	output := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return exitError{2, fmt.Errorf("-o %q: want table or json", *output)}
	}
	store, bad, err := record.Inspect(*stateDir)
	if err != nil {
		return err
	}
	captures, badCaptures, err := volumes.InspectStore(filepath.Join(*stateDir, volumes.DirName)).Load()
	if err != nil {
		return err
	}
	vols := map[string][]volumes.Status{}
	for _, f := range captures {
		vols[f.UID] = volumes.StatusOf(f)
	}
	volErr := map[string]string{}
	for _, b := range badCaptures {
		volErr[strings.TrimSuffix(filepath.Base(b.Path), ".json")] = b.Err.Error()
	}
	var rows []podRow
	for _, p := range store.List() {
		row := podRow{Namespace: p.Namespace, Name: p.Name, UID: p.UID, Sandboxes: len(p.Sandboxes), Facts: p.Facts, Relaunch: p.Relaunch,
			Volumes: vols[p.UID], VolumeErr: volErr[p.UID]}
		if sb := p.LatestSandbox(); sb != nil {
			row.Latest, row.Running = sb.ID, !sb.Stopped
		}
		for _, c := range p.Ordered() {
			kind := ""
			if c.Init {
				kind = "(init)"
			}
			row.Containers = append(row.Containers, c.Name+kind+"="+c.State)
		}
		rows = append(rows, row)
	}
	for _, b := range bad {
		rows = append(rows, podRow{File: b.Path, Error: b.Err.Error()})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Namespace+"/"+rows[i].Name < rows[j].Namespace+"/"+rows[j].Name })
	if *output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tUID\tSANDBOXES\tRUNNING\tCONTAINERS\tVOLUMES\tRELAUNCH")
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(tw, "?\t?\t-\t-\t-\t-\tunreadable: %s\n", r.Error)
			continue
		}
		rl := "-"
		if r.Relaunch != nil {
			rl = r.Relaunch.Outcome
			if r.Relaunch.Adopted {
				rl += ",adopted"
			}
			if r.Relaunch.Error != "" {
				rl += ": " + r.Relaunch.Error
			}
		}
		fmt.Fprintf(tw, "%s/%s\t%s\t%d\t%v\t%s\t%s\t%s\n", r.Namespace, r.Name, r.UID, r.Sandboxes, r.Running, strings.Join(r.Containers, ","), volumeCell(r), rl)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(bad) > 0 || len(badCaptures) > 0 {
		return exitError{1, errors.New("")}
	}
	return nil
}

// volumeCell shows a pod's captured volumes: kind/name=content@refreshed.
func volumeCell(r podRow) string {
	if r.VolumeErr != "" {
		return "unreadable: " + r.VolumeErr
	}
	if len(r.Volumes) == 0 {
		return "-"
	}
	var out []string
	for _, v := range r.Volumes {
		out = append(out, v.ID+"="+v.Content+"@"+v.Refreshed.Format(time.RFC3339))
	}
	return strings.Join(out, ",")
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/holdfast-edge/holdfast/install"
	"github.com/holdfast-edge/holdfast/install/manifests"
	"github.com/holdfast-edge/holdfast/install/status"
	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	ipamconfig "github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/config"
	"github.com/holdfast-edge/holdfast/plugins/holdfast/attachment"
	"github.com/holdfast-edge/holdfast/snapshot"
)

// installFlags registers the flags install and uninstall share.
func installFlags(fs *flag.FlagSet, o *install.Options) {
	fs.StringVar(&o.Root, "root", o.Root, "file system root of the node to change (a mounted image or test tree; every other path is resolved under it)")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "where the install record and the backups of changed files live (on-node path)")
}

func runInstall(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "show" {
		return runInstallShow(args[1:])
	}
	o := install.DefaultOptions()
	host, _ := os.Hostname()
	o.NodeName = strings.ToLower(host)
	if exe, err := os.Executable(); err == nil {
		o.SourceDir = filepath.Dir(exe)
	}
	fs := newFlagSet("install", "Wire holdfast into this node: copy the CNI plugins and holdfastd, add a conflist chaining holdfast that the\nruntime loads before the current one (which stays untouched), point kubelet at the CRI shim and the node DNS,\nand write the systemd units. First imports host-local's leases of the running pods into holdfast-ipam (pinned to the\npods the libcni cache names). Idempotent; malformed node files are refused before anything is written.\n'holdfastd install show' prints the install record.")
	installFlags(fs, &o)
	dry := fs.Bool("dry-run", false, "print the exact diff of every change and write nothing")
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "Kubernetes node name of this node (used in the units; default: lower-cased hostname)")
	fs.StringVar(&o.SourceDir, "source-dir", o.SourceDir, "directory holding the holdfast, holdfast-ipam and holdfastd binaries to install (default: this binary's directory)")
	fs.StringVar(&o.ContainerdConfig, "containerd-config", o.ContainerdConfig, "containerd's config.toml (version 2 or 3, with its imports), read for the CNI dirs, the CRI socket and the sandbox image; never written")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", o.CNIBinDir, "CNI plugin directory to copy holdfast and holdfast-ipam into (default: containerd's first CNI bin dir, else /opt/cni/bin)")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", o.CNIConfDir, "CNI config directory; the lexically first .conf/.conflist/.json in it is the network holdfast chains into (default: containerd's, else /etc/cni/net.d)")
	fs.StringVar(&o.ConflistName, "conflist-name", "", "name of the conflist to write (default: 00-holdfast.conflist or another name sorting before the current one)")
	fs.StringVar(&o.OverlayDevice, "overlay-device", "", "overlay device the chained plugin restores after an offline boot (default: flannel.1 for flannel, none otherwise)")
	fs.StringVar(&o.IPAMDataDir, "ipam-data-dir", "", "holdfast-ipam's state dir written into the conflist (default: the original IPAM's dataDir, else "+ipamconfig.DefaultDataDir+")")
	fs.StringVar(&o.CNIDataDir, "cni-data-dir", "", "the chained plugin's attachment records dir written into the conflist (default: "+attachment.DefaultDataDir+")")
	fs.StringVar(&o.SnapshotDir, "snapshot-dir", "", "network snapshot dir: the snapshot units write and restore it, the chained plugin restores a missing overlay from it (default: "+snapshot.DefaultDir+")")
	fs.StringVar(&o.CNICacheDir, "cni-cache-dir", o.CNICacheDir, "libcni's cache dir (results/ names the pod of each attachment; install pins the host-local leases it imports to those pods)")
	fs.StringVar(&o.PinTTL, "pin-ttl", "", "how long holdfast-ipam keeps a deleted pod's IP pinned, e.g. 168h (default: holdfast-ipam's own)")
	fs.StringVar(&o.KubeletConfig, "kubelet-config", o.KubeletConfig, "KubeletConfiguration file to edit (containerRuntimeEndpoint, clusterDNS)")
	fs.StringVar(&o.KubeletFlags, "kubelet-flags", o.KubeletFlags, "kubeadm flags file (KUBELET_KUBEADM_ARGS); flags set there are edited there, since they override the config file")
	fs.StringVar(&o.SystemdDir, "systemd-dir", o.SystemdDir, "directory for the holdfast systemd units and their enablement symlinks")
	fs.StringVar(&o.Holdfastd, "holdfastd-path", o.Holdfastd, "where holdfastd is installed on the node (the units run it from there)")
	fs.StringVar(&o.CRISocket, "cri-socket", o.CRISocket, "socket the holdfast CRI shim listens on; kubelet is pointed at unix://<this>")
	fs.StringVar(&o.RuntimeEndpoint, "runtime-endpoint", o.RuntimeEndpoint, "containerd's CRI endpoint, which the shim relays to (default: unix:// and containerd's [grpc] address, else /run/containerd/containerd.sock)")
	fs.StringVar(&o.NodeDNS, "node-dns", o.NodeDNS, "node DNS address kubelet hands to pods as clusterDNS")
	fs.StringVar(&o.HealthKeyFile, "health-key-file", o.HealthKeyFile, "signing key of the health daemon (agent unit)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig the agent unit (health and DNS) uses to reach the apiserver (not kubelet's node credential: it may not write Leases in holdfast-system)")
	fs.BoolVar(&o.DaemonSets, "daemonsets", false, "health and DNS run in the agent DaemonSet (see 'holdfastd manifests'): write no holdfast-agent.service")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{2, fmt.Errorf("unexpected arguments: %v", fs.Args())}
	}
	return install.Install(o, *dry, os.Stdout)
}

func runInstallShow(args []string) error {
	o := install.DefaultOptions()
	fs := newFlagSet("install show", "Print the install record: every file install changed or added, with the checksum of its backup.")
	installFlags(fs, &o)
	if err := fs.Parse(args); err != nil {
		return err
	}
	rec, err := install.LoadRecord(filepath.Join(o.Root, o.StateDir, "record.json"))
	if err != nil {
		return err
	}
	if rec == nil {
		fmt.Println("holdfast is not installed here (no install record)")
		return nil
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(rec)
}

func runUninstall(ctx context.Context, args []string) error {
	o := install.DefaultOptions()
	fs := newFlagSet("uninstall", "Undo install: restore every file it changed byte for byte (mode and owner too) and remove what it added,\nas listed in its install record. Files changed by someone else since install are refused unless --force.\nFirst hands holdfast-ipam's leases back to host-local (a reservation for every address a running pod holds);\nholdfast-ipam stays in the CNI bin dir while pods created under holdfast run (their DEL needs it): run uninstall\nagain once they are gone.")
	installFlags(fs, &o)
	dry := fs.Bool("dry-run", false, "print the exact diff of every change and write nothing")
	force := fs.Bool("force", false, "restore originals even over files changed since install, and remove holdfast-ipam even while pods created under holdfast still need it (it breaks their DEL: 'failed to find plugin', and with flannel-io's plugin a leaked MASQUERADE rule and address)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{2, fmt.Errorf("unexpected arguments: %v", fs.Args())}
	}
	return install.Uninstall(o, *force, *dry, os.Stdout)
}

func runManifests(ctx context.Context, args []string) error {
	fs := newFlagSet("manifests", "Render the Kubernetes side of holdfast as one YAML stream: namespace holdfast-system, least-privilege RBAC\n(a node's agent may write only its own Lease holdfast-view-<node>), the agent DaemonSet (health and DNS), and the\nadmission webhook (Deployment, Service, TLS Secret, MutatingWebhookConfiguration with failurePolicy Ignore)\nwith a freshly generated CA bundle and serving certificate. The output holds a private key: treat it as a secret.")
	image := fs.String("image", "ghcr.io/holdfast-edge/holdfastd:dev", "holdfastd image the DaemonSet and the webhook run (built by 'make image', imported with 'ctr images import')")
	nodeDNS := fs.String("node-dns", "169.254.20.10", "address the agent DaemonSet's DNS serves on (kubelet's clusterDNS)")
	unitLabel := fs.String("unit-label", "holdfast.dev/unit", "Node label naming a node's health unit")
	policy := fs.String("policy", "verdicts", "webhook policy: verdicts (the peers decide) or always-retain (every not-Ready node keeps its pods and endpoints, health not consulted; a really dead node keeps its endpoints until someone acts)")
	noQuorum := fs.String("no-quorum", "retain", "webhook policy when a whole unit is cut off: retain or evict")
	duration := fs.Duration("autonomy-duration", 0, "webhook default for nodes without the annotation holdfast.dev/autonomy-duration: keep a not-Ready node's pods at most this long (0: forever)")
	validity := fs.Duration("cert-validity", 365*24*time.Hour, "lifetime of the generated CA and serving certificate")
	out := fs.String("o", "-", "file to write (mode 0600), or - for stdout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := manifests.Render(manifests.Config{Image: *image, NodeDNS: *nodeDNS, UnitLabel: *unitLabel,
		Policy: *policy, NoQuorumPolicy: *noQuorum, AutonomyDuration: *duration, CertValidity: *validity})
	if err != nil {
		return exitError{2, err}
	}
	if *out == "-" {
		_, err = os.Stdout.Write(r.YAML)
		return err
	}
	return atomicfile.WriteFile(*out, r.YAML, 0o600)
}

func runStatus(ctx context.Context, args []string) error {
	host, _ := os.Hostname()
	d := status.DefaultDirs()
	fs := newFlagSet("status", "One screen of this node's autonomy state: whether holdfast is installed, live address leases per IPAM store (host-local,\nholdfast-ipam) with any address held in both by different containers and any pod whose chain names a missing plugin, snapshot age and entries, VTEP MAC vs its pin, pods recorded by the\nCRI shim and their relaunch outcome, IP pins in use, peers' verdicts, DNS snapshot age, cloud reachability.\nRead-only; a component that wrote nothing shows 'absent', an unreadable file 'unknown' with the reason.")
	node := fs.String("node-name", strings.ToLower(host), "this node's name (shown in the header)")
	fs.StringVar(&d.Root, "root", d.Root, "file system root of the node to read (a mounted image or test tree; every other path is resolved under it)")
	fs.StringVar(&d.InstallState, "state-dir", d.InstallState, "install's state dir (its record says whether holdfast is installed)")
	fs.StringVar(&d.CNIConfDir, "cni-conf-dir", d.CNIConfDir, "CNI config dir (the networks whose host-local leases are counted)")
	fs.StringVar(&d.CNIBinDir, "cni-bin-dir", d.CNIBinDir, "CNI plugin dir (every pod's chain is checked against it)")
	fs.StringVar(&d.CNICacheDir, "cni-cache-dir", d.CNICacheDir, "libcni's cache dir (results/: each attachment's chain and pod)")
	fs.StringVar(&d.Snapshot, "snapshot-dir", d.Snapshot, "holdfastd snapshot's state dir")
	fs.StringVar(&d.CRI, "cri-dir", d.CRI, "holdfastd cri's state dir")
	fs.StringVar(&d.IPAM, "ipam-dir", d.IPAM, "holdfast-ipam's data dir")
	fs.StringVar(&d.Health, "health-dir", d.Health, "holdfastd health's state dir")
	fs.StringVar(&d.DNS, "dns-dir", d.DNS, "holdfastd dns's state dir")
	apiserver := fs.String("apiserver", "", "apiserver host:port to probe (default: the server of --kubeconfig)")
	kubeconfig := fs.String("kubeconfig", "/etc/kubernetes/kubelet.conf", "kubeconfig whose server is probed when --apiserver is empty")
	output := fs.String("o", "text", "output: text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return exitError{2, fmt.Errorf("-o %q: want text or json", *output)}
	}
	src := status.NodeSources(d)
	src.Cloud = *apiserver
	if src.Cloud == "" {
		if cfg, err := clientcmd.LoadFromFile(*kubeconfig); err == nil {
			if c, ok := cfg.Contexts[cfg.CurrentContext]; ok {
				if cl, ok := cfg.Clusters[c.Cluster]; ok {
					if u, err := url.Parse(cl.Server); err == nil {
						src.Cloud = u.Host
						if u.Port() == "" {
							src.Cloud = net.JoinHostPort(u.Hostname(), "443")
						}
					}
				}
			}
		}
	}
	r := status.Gather(ctx, *node, src, time.Now())
	if *output == "json" {
		return status.WriteJSON(os.Stdout, r)
	}
	status.WriteText(os.Stdout, r)
	return nil
}

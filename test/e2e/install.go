//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// Each node starts as a stock node — the reference CNI plugins and the
// real flannel CNI plugin (harness.FlannelCNIVersion) in its /opt/cni/bin,
// kube-flannel's 10-flannel.conflist (flannel → bridge → host-local; its
// three host paths moved into the node: subnet.env, flannel's saved
// delegate configs, host-local's leases), a KubeletConfiguration
// pointing at containerd and kube-dns's address — and `holdfastd install
// --root <node dir>` wires holdfast into it: the chained conflist, the
// plugins, kubelet's CRI endpoint and clusterDNS, the systemd units. The
// test then runs containerd and kubelet on what install wrote. The units
// themselves cannot run on a shared test host (their state paths are the
// node's /var/lib/holdfast), so the shim and the snapshot watcher run as
// processes with the same commands and node-local paths; what the units
// say about boot order is checked instead. Install runs with --daemonsets:
// health and DNS run in the agent DaemonSet (daemonsets.go), as kube-proxy
// and flanneld are DaemonSets.

// Stock values install replaces.
const (
	stockClusterDNS = "10.96.0.10"
	stockConflist   = "10-flannel"
)

func (n *Node) rootPath(p string) string { return filepath.Join(n.Dir, p) }

// KubeletConfigPath is the node's KubeletConfiguration (kubeadm's path
// under the node root), which install edits.
func (n *Node) KubeletConfigPath() string { return n.rootPath("/var/lib/kubelet/config.yaml") }

// CNIBin is the node's /opt/cni/bin.
func (n *Node) CNIBin() string { return n.rootPath("/opt/cni/bin") }

// prepareStock lays out the stock node (first boot only: later boots keep
// what install changed).
func (n *Node) prepareStock(refPlugins string) error {
	if _, err := os.Stat(n.KubeletConfigPath()); err == nil {
		return nil
	}
	for _, p := range []string{"bridge", "loopback", "portmap", "host-local"} {
		if err := copyExec(filepath.Join(refPlugins, p), filepath.Join(n.CNIBin(), p)); err != nil {
			return err
		}
	}
	flannel, err := harness.EnsureFlannelCNI()
	if err != nil {
		return err
	}
	if err := copyExec(flannel, filepath.Join(n.CNIBin(), "flannel")); err != nil {
		return err
	}
	if err := n.WriteCNIConfig(stockConflist, n.flannelConflist()); err != nil {
		return err
	}
	cfg := n.kubeletConfig()
	cfg["containerRuntimeEndpoint"] = "unix://" + n.ContainerdSock
	cfg["clusterDNS"] = []string{stockClusterDNS}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(n.KubeletConfigPath()), 0o755); err != nil {
		return err
	}
	return os.WriteFile(n.KubeletConfigPath(), append([]byte("# the node's KubeletConfiguration before holdfast\n"), data...), 0o644)
}

// flannelConflist is kube-flannel's cni-conf.json with the paths that
// would be the test host's own moved into the node.
func (n *Node) flannelConflist() map[string]any {
	return map[string]any{"name": "cbr0", "cniVersion": "0.3.1", "plugins": []map[string]any{
		{"type": "flannel", "subnetFile": n.SubnetEnvPath(), "dataDir": filepath.Join(n.VarDir, "cni", "flannel"),
			"ipam":     map[string]any{"type": "host-local", "dataDir": filepath.Join(n.VarDir, "host-local")},
			"delegate": map[string]any{"hairpinMode": true, "isDefaultGateway": true}},
		{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
	}}
}

// installArgs are the flags of `holdfastd install` for this node: the node
// root, and the on-node paths the harness uses for holdfast's state.
func (n *Node) installArgs() []string {
	return []string{"install", "--root", n.Dir, "--node-name", n.Name, "--source-dir", n.Bins,
		"--ipam-data-dir", n.IPAMDir(), "--cni-data-dir", n.AttachDir(), "--snapshot-dir", n.SnapshotDir(),
		"--overlay-device", "flannel.1",
		"--cri-socket", n.ShimSock(), "--runtime-endpoint", "unix://" + n.ContainerdSock,
		"--node-dns", ClusterDNS, "--daemonsets"}
}

// Install prepares the stock node and runs `holdfastd install` into its
// root; it returns install's output.
func (n *Node) Install(refPlugins string) (string, error) {
	if err := n.prepareStock(refPlugins); err != nil {
		return "", fmt.Errorf("%s: stock node: %w", n.Name, err)
	}
	out, err := exec.Command(n.holdfastd(), n.installArgs()...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: holdfastd install: %v: %s", n.Name, err, out)
	}
	n.CNIBinDir = n.CNIBin()
	return string(out), nil
}

// CheckInstalled checks what install left on the node: the chained
// conflist sorting before the untouched original, kubelet pointed at the
// shim and holdfast DNS, the units in boot order, and that a second
// install changes nothing.
func (n *Node) CheckInstalled() error {
	var errs []error
	conflists, _ := filepath.Glob(filepath.Join(n.CNIConfDir, "*.conflist"))
	if len(conflists) != 2 || filepath.Base(conflists[0]) >= stockConflist {
		errs = append(errs, fmt.Errorf("conflists %v: want holdfast's before %s", conflists, stockConflist))
	} else if data, _ := os.ReadFile(conflists[0]); !strings.Contains(string(data), `"holdfast-ipam"`) || !strings.Contains(string(data), `"type": "holdfast"`) {
		errs = append(errs, fmt.Errorf("%s does not chain holdfast:\n%s", conflists[0], data))
	}
	cfg, _ := os.ReadFile(n.KubeletConfigPath())
	for _, want := range []string{"unix://" + n.ShimSock(), ClusterDNS, "before holdfast"} {
		if !strings.Contains(string(cfg), want) {
			errs = append(errs, fmt.Errorf("kubelet config lacks %q:\n%s", want, cfg))
		}
	}
	if strings.Contains(string(cfg), stockClusterDNS) {
		errs = append(errs, fmt.Errorf("kubelet config still has kube-dns's %s", stockClusterDNS))
	}
	restore, _ := os.ReadFile(n.rootPath("/etc/systemd/system/holdfast-snapshot-restore.service"))
	if !strings.Contains(string(restore), "Before=") || !strings.Contains(string(restore), "containerd.service") || !strings.Contains(string(restore), "kubelet.service") {
		errs = append(errs, fmt.Errorf("holdfast-snapshot-restore.service does not order itself before containerd and kubelet:\n%s", restore))
	}
	out, err := exec.Command(n.holdfastd(), n.installArgs()...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "unchanged") {
		errs = append(errs, fmt.Errorf("second install: %v: %s", err, out))
	}
	return errors.Join(errs...)
}

func copyExec(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// BringUpInstalled starts a node the first time on what install wrote:
// containerd (CNI from the node's conf and bin dirs), the shim on the
// socket kubelet was pointed at, and the snapshot watcher.
func (n *Node) BringUpInstalled(ctx context.Context, refPlugins string) (string, error) {
	out, err := n.Install(refPlugins)
	if err != nil {
		return out, err
	}
	if err := n.StartContainerd(); err != nil {
		return out, err
	}
	if err := n.StartShim(); err != nil {
		return out, fmt.Errorf("%s: start shim: %w\n%s", n.Name, err, n.Logs("cri-shim"))
	}
	return out, n.StartWatch()
}

//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/holdfast-edge/holdfast/test/harness"
	"github.com/holdfast-edge/holdfast/test/reboot"
)

// Node is a harness node with holdfast (containerd, the CRI shim, the
// snapshot watcher; test/reboot's Node) and a stock kubelet on top.
type Node struct {
	reboot.Node
	Cloud      *Cloud
	Kubeconfig string // kubelet's, user system:node:<name>
}

// NewNode issues the node's kubelet identity.
func NewNode(hn *harness.Node, bins string, cloud *Cloud) (*Node, error) {
	n := &Node{Node: reboot.Node{Node: hn, Bins: bins}, Cloud: cloud}
	var err error
	n.Kubeconfig, err = cloud.Kubeconfig(hn.EtcDir, "kubelet-"+hn.Name, "system:node:"+hn.Name, "system:nodes")
	if err != nil {
		return nil, err
	}
	for _, d := range []string{n.healthDir(), n.dnsDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	return n, n.linkRunFlannel()
}

// KubeletRoot is kubelet's --root-dir (durable: under the node's var dir).
func (n *Node) KubeletRoot() string { return filepath.Join(n.VarDir, "kubelet") }

// CgroupRoot is where kubelet puts pod cgroups: named after the node netns,
// so the harness's cgroup cleanup finds them.
func (n *Node) CgroupRoot() string { return "/" + n.NetNS }

// kubeletConfig is the KubeletConfiguration of the node as holdfast finds
// it (prepareStock changes the two values install edits to their stock
// ones): cgroupfs without QoS cgroups or node-allocatable enforcement (the
// node shares the host's cgroups),
// no disk-pressure eviction or image GC (the images cannot be pulled again:
// there is no registry), and quick node leases so that the short grace
// period of the test's controller-manager is meaningful.
func (n *Node) kubeletConfig() map[string]any {
	return map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"address":                  n.UnderlayIP.String(),
		"port":                     10250,
		"readOnlyPort":             0,
		"healthzBindAddress":       "127.0.0.1",
		"healthzPort":              10248,
		"cgroupDriver":             "cgroupfs",
		"cgroupsPerQOS":            false,
		"cgroupRoot":               n.CgroupRoot(),
		"enforceNodeAllocatable":   []string{},
		"failSwapOn":               false,
		"protectKernelDefaults":    true,
		"containerRuntimeEndpoint": "unix://" + n.ShimSock(),
		"clusterDNS":               []string{ClusterDNS},
		"clusterDomain":            "cluster.local",
		"staticPodPath":            filepath.Join(n.EtcDir, "kubernetes", "manifests"),
		"podLogsDir":               filepath.Join(n.VarDir, "log", "pods"),
		"volumePluginDir":          filepath.Join(n.VarDir, "kubelet-plugins", "volume", "exec"),
		"resolvConf":               filepath.Join(n.EtcDir, "resolv.conf"),
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": false},
			"x509":      map[string]any{"clientCAFile": n.Cloud.PKI.CACert},
		},
		"authorization":               map[string]any{"mode": "AlwaysAllow"},
		"evictionHard":                map[string]string{"nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%"},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"nodeLeaseDurationSeconds":    10,
		"nodeStatusUpdateFrequency":   "4s",
		"nodeStatusReportFrequency":   "10s",
		"rotateCertificates":          false,
		"serverTLSBootstrap":          false,
		"serializeImagePulls":         false,
		"shutdownGracePeriod":         "0s",
		"containerLogMaxSize":         "1Mi",
		"registerNode":                true,
		"runtimeRequestTimeout":       "2m",
		"fileCheckFrequency":          "5s",
		"syncFrequency":               "10s",
	}
}

// StartKubelet writes the kubelet's config and starts it in the node netns
// (nsenter --net, like containerd) and in a mount namespace of its own that
// only differs from the host's in the kernel-default files
// (harness.KubeletKernelDefaults). The
// kubelet root dir is a shared mount, so the volume mounts kubelet makes
// there (projected service-account tokens, secrets) propagate back to the
// host namespace, where containerd and runc see them.
func (n *Node) StartKubelet() error {
	root := n.KubeletRoot()
	etc := n.EtcDir
	for _, d := range []string{root, filepath.Join(etc, "kubernetes", "manifests"), filepath.Join(n.VarDir, "log", "pods"),
		filepath.Join(n.VarDir, "kubelet-plugins", "volume", "exec"), filepath.Join(etc, "sysctl")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), nil, 0o644); err != nil {
		return err
	}
	// The config is the node's own, as `holdfastd install` left it.
	cfgPath := n.KubeletConfigPath()
	if _, err := os.Stat(cfgPath); err != nil {
		return fmt.Errorf("%s: kubelet config: %w", n.Name, err)
	}
	if err := n.sharedMount(root); err != nil {
		return err
	}
	if err := n.makeCgroupRoot(); err != nil {
		return err
	}
	script, err := harness.KubeletSysctlScript(filepath.Join(etc, "sysctl"))
	if err != nil {
		return err
	}
	args := []string{"--mount", "--propagation", "unchanged", "--", "/bin/sh", "-c", script,
		n.Cloud.Bins.Kubelet,
		"--config", cfgPath,
		"--kubeconfig", n.Kubeconfig,
		"--hostname-override", n.Name,
		"--node-ip", n.UnderlayIP.String(),
		"--root-dir", root,
		"--cert-dir", filepath.Join(root, "pki"),
		"--v=3", // computePodActions: what kubelet decides per pod
	}
	if n.Name == NFTablesNode {
		args = append(args, "--node-labels="+NFTablesLabel+"=true")
	}
	_, err = n.Start("kubelet", "unshare", args...)
	return err
}

// ShareKubeletRoot makes kubelet's root dir a shared bind mount of itself,
// once per boot, before anything mounts below it: after an offline reboot
// the shim restores the pods' tmpfs volumes there before kubelet starts,
// and a bind mount made over them later would hide them from the
// containers it relaunches (their sources would resolve to the empty
// mount points below).
func (n *Node) ShareKubeletRoot() error {
	if err := os.MkdirAll(n.KubeletRoot(), 0o755); err != nil {
		return err
	}
	return n.sharedMount(n.KubeletRoot())
}

// sharedMount makes dir a shared bind mount of itself (once per boot: the
// harness's reboot unmounts everything under the node dir).
func (n *Node) sharedMount(dir string) error {
	for _, m := range n.Mounts() {
		if m == dir {
			return nil
		}
	}
	if out, err := execOut("mount", "--bind", dir, dir); err != nil {
		return fmt.Errorf("bind-mount kubelet root: %v: %s", err, out)
	}
	if out, err := execOut("mount", "--make-shared", dir); err != nil {
		return fmt.Errorf("make kubelet root shared: %v: %s", err, out)
	}
	return nil
}

// makeCgroupRoot creates the pods' cgroup parent in every hierarchy before
// kubelet starts, so its stats (and the eviction manager) see it from the
// start. The harness removes cgroups named after the node netns at reboot
// and teardown.
func (n *Node) makeCgroupRoot() error {
	hier, err := filepath.Glob("/sys/fs/cgroup/*")
	if err != nil {
		return err
	}
	for _, h := range hier {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil {
			continue // not a hierarchy (e.g. a v2 controller file)
		}
		if err := os.MkdirAll(filepath.Join(h, n.CgroupRoot()), 0o755); err != nil {
			return fmt.Errorf("create cgroup %s in %s: %w", n.CgroupRoot(), h, err)
		}
	}
	return nil
}

// PodCIDR is the node's pod subnet as the harness planned it.
func (n *Node) PodCIDR() *net.IPNet { return n.Node.PodCIDR }

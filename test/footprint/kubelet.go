package footprint

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// clusterDNS is the node DNS address kubelet hands to pods (holdfastd dns
// listens there).
const clusterDNS = "169.254.20.10"

// kubeletConfig is a KubeletConfiguration for a harness node whose runtime
// is endpoint: cgroupfs without QoS cgroups (the node shares the host's
// cgroups), no eviction or image GC (there is no registry to pull from).
// Frequencies are kubelet's defaults: the idle cost measured is a stock
// kubelet's.
func kubeletConfig(n *harness.Node, endpoint string) map[string]any {
	return map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"address":                  n.UnderlayIP.String(),
		"readOnlyPort":             0,
		"healthzBindAddress":       "127.0.0.1",
		"cgroupDriver":             "cgroupfs",
		"cgroupsPerQOS":            false,
		"cgroupRoot":               "/" + n.NetNS,
		"enforceNodeAllocatable":   []string{},
		"failSwapOn":               false,
		"protectKernelDefaults":    true,
		"containerRuntimeEndpoint": endpoint,
		"clusterDNS":               []string{clusterDNS},
		"clusterDomain":            "cluster.local",
		"podLogsDir":               filepath.Join(n.VarDir, "log", "pods"),
		"volumePluginDir":          filepath.Join(n.VarDir, "kubelet-plugins"),
		"resolvConf":               filepath.Join(n.EtcDir, "resolv.conf"),
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": true},
			"webhook":   map[string]any{"enabled": false},
		},
		"authorization":               map[string]any{"mode": "AlwaysAllow"},
		"evictionHard":                map[string]string{"nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%"},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"rotateCertificates":          false,
		"serializeImagePulls":         false,
		"shutdownGracePeriod":         "0s",
		"registerNode":                true,
	}
}

// startKubelet writes the config for endpoint and starts kubelet in the
// node netns, in a mount namespace that differs from the host's only in the
// kernel-default files.
func startKubelet(n *harness.Node, kubelet, kubeconfig, endpoint string) error {
	root := filepath.Join(n.VarDir, "kubelet")
	for _, d := range []string{root, filepath.Join(n.VarDir, "log", "pods"), filepath.Join(n.VarDir, "kubelet-plugins")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(n.EtcDir, "resolv.conf"), nil, 0o644); err != nil {
		return err
	}
	cfg, err := json.Marshal(kubeletConfig(n, endpoint))
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(n.EtcDir, "kubelet-config.json")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		return err
	}
	if err := makeCgroupRoot("/" + n.NetNS); err != nil {
		return err
	}
	script, err := harness.KubeletSysctlScript(filepath.Join(n.EtcDir, "sysctl"))
	if err != nil {
		return err
	}
	_, err = n.Start("kubelet", "unshare", "--mount", "--propagation", "unchanged", "--", "/bin/sh", "-c", script,
		kubelet, "--config", cfgPath, "--kubeconfig", kubeconfig,
		"--hostname-override", n.Name, "--node-ip", n.UnderlayIP.String(),
		"--root-dir", root, "--cert-dir", filepath.Join(root, "pki"), "--v=1")
	return err
}

// makeCgroupRoot creates the pods' cgroup parent in every hierarchy before
// kubelet starts. The harness removes cgroups named after the node netns at
// teardown.
func makeCgroupRoot(name string) error {
	hier, err := filepath.Glob("/sys/fs/cgroup/*")
	if err != nil {
		return err
	}
	for _, h := range hier {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil {
			continue // not a hierarchy
		}
		if err := os.MkdirAll(filepath.Join(h, name), 0o755); err != nil {
			return fmt.Errorf("create cgroup %s in %s: %w", name, h, err)
		}
	}
	return nil
}

package install_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// TestInstallOnHarnessNode installs holdfast into a harness node's own
// tree (bridge + host-local conflist, a KubeletConfiguration), then runs
// pods through the installed chain with the node's real containerd: a pod
// re-created under the same name gets the same IP and MAC. Uninstall puts
// the node's files back.
func TestInstallOnHarnessNode(t *testing.T) {
	site := harness.NewSite(t, 1)
	n := site.Node(1)
	bins := harness.Binaries(t)
	root := n.Dir
	binDir := filepath.Join(root, "opt", "cni", "bin")
	for _, p := range []string{"bridge", "loopback", "portmap", "host-local"} {
		copyFile(t, filepath.Join(harness.CNIPlugins(t), p), filepath.Join(binDir, p))
	}
	portmap := map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}}
	if err := n.WriteCNIConfig("10-bridge", n.BridgeConflist(nil, portmap)); err != nil {
		t.Fatal(err)
	}
	original, _ := os.ReadFile(filepath.Join(n.CNIConfDir, "10-bridge.conflist"))
	kubelet := filepath.Join(root, "var", "lib", "kubelet", "config.yaml")
	os.MkdirAll(filepath.Dir(kubelet), 0o755)
	kubeletCfg := "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n# the node's own comment\ncgroupDriver: cgroupfs\nclusterDNS:\n- 10.96.0.10\n"
	os.WriteFile(kubelet, []byte(kubeletCfg), 0o644)

	state := filepath.Join(n.VarDir, "holdfast")
	holdfastd := filepath.Join(bins, "holdfastd")
	out := run(t, holdfastd, "install", "--root", root, "--node-name", n.Name, "--source-dir", bins,
		"--ipam-data-dir", filepath.Join(state, "ipam"), "--cni-data-dir", filepath.Join(state, "cni"))
	t.Logf("install:\n%s", out)
	if cfg, _ := os.ReadFile(kubelet); !strings.Contains(string(cfg), "unix:///run/holdfast/cri.sock") || !strings.Contains(string(cfg), "the node's own comment") {
		t.Fatalf("kubelet config not pointed at the shim (or lost its comment):\n%s", cfg)
	}

	n.CNIBinDir = binDir
	if err := n.StartContainerd(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cri := n.CRI()
	first, err := cri.RunPod(ctx, harness.PodSpec{Name: "web", Namespace: "shop"})
	if err != nil {
		t.Fatalf("%v\n%s", err, n.Logs("containerd"))
	}
	firstMAC := mac(t, ctx, first.NetNSPath)
	if err := cri.RemovePod(ctx, first.SandboxID); err != nil {
		t.Fatal(err)
	}
	// A pod that took another address meanwhile must not get web's pin.
	other, err := cri.RunPod(ctx, harness.PodSpec{Name: "other", Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := cri.RunPod(ctx, harness.PodSpec{Name: "web", Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if again.IP != first.IP || other.IP == first.IP {
		t.Fatalf("through the installed chain: web had %s, web again %s, other %s", first.IP, again.IP, other.IP)
	}
	if m := mac(t, ctx, again.NetNSPath); m != firstMAC {
		t.Fatalf("web's MAC changed from %s to %s", firstMAC, m)
	}
	show := run(t, holdfastd, "ipam", "show", "--data-dir", filepath.Join(state, "ipam"))
	if !strings.Contains(show, "shop/web") || !strings.Contains(show, first.IP) {
		t.Fatalf("ipam show does not list web's pin:\n%s", show)
	}

	run(t, holdfastd, "uninstall", "--root", root)
	if now, _ := os.ReadFile(filepath.Join(n.CNIConfDir, "10-bridge.conflist")); string(now) != string(original) {
		t.Fatal("uninstall did not leave the original conflist as it was")
	}
	if _, err := os.Stat(filepath.Join(n.CNIConfDir, "00-holdfast.conflist")); err == nil {
		t.Fatal("uninstall left 00-holdfast.conflist")
	}
	if cfg, _ := os.ReadFile(kubelet); string(cfg) != kubeletCfg {
		t.Fatalf("uninstall did not restore the kubelet config byte for byte:\n%s", cfg)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mac(t *testing.T, ctx context.Context, netns string) string {
	t.Helper()
	out, err := harness.ExecIn(ctx, netns, "ip", "-o", "link", "show", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	for i, w := range f {
		if w == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no MAC in %q", out)
	return ""
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(dst), 0o755)
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}

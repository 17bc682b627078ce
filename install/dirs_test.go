package install

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryDirFlagReachesEveryFile installs with every directory (and
// every path-valued option) moved away from its default: no file install
// writes may name a default path, and each custom dir must reach the files
// that use it.
func TestEveryDirFlagReachesEveryFile(t *testing.T) {
	src := copyTree(t, filepath.Join("testdata", "nodes", "flannel-kubeadm"))
	root := t.TempDir()
	move := map[string]string{
		"etc/cni/net.d/10-flannel.conflist": "srv/cni/conf/10-flannel.conflist",
		"var/lib/kubelet/config.yaml":       "srv/kubelet/config.yaml",
		"var/lib/kubelet/kubeadm-flags.env": "srv/kubelet/flags.env",
		"opt/cni/bin/flannel":               "srv/cni/bin/flannel",
	}
	for from, to := range move {
		data, err := os.ReadFile(filepath.Join(src, from))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(filepath.Join(root, to)), 0o755)
		if err := os.WriteFile(filepath.Join(root, to), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o := testOptions(root, sourceDir(t), "edge-a1")
	o.CNIBinDir, o.CNIConfDir = "/srv/cni/bin", "/srv/cni/conf"
	o.KubeletConfig, o.KubeletFlags = "/srv/kubelet/config.yaml", "/srv/kubelet/flags.env"
	o.SystemdDir, o.Holdfastd, o.StateDir = "/srv/systemd", "/srv/bin/holdfastd", "/srv/hf/install"
	o.CNICacheDir = "/srv/cni/cache"
	o.IPAMDataDir, o.CNIDataDir, o.SnapshotDir = "/srv/hf/ipam", "/srv/hf/cni", "/srv/hf/snapshot"
	o.CRISocket, o.HealthKeyFile, o.Kubeconfig = "/srv/run/cri.sock", "/srv/hf/health/node.key", "/srv/hf/kubeconfig"
	var out bytes.Buffer
	if err := Install(o, false, &out); err != nil {
		t.Fatalf("install: %v\n%s", err, out.String())
	}
	defaults := []string{"/var/lib/holdfast", "/opt/cni", "/etc/cni", "/etc/systemd", "/usr/local/bin", "/var/lib/kubelet", "/run/holdfast", "/etc/holdfast", "/var/lib/cni"}
	uses := map[string][]string{ // custom dir -> files that must name it
		o.SnapshotDir:   {"srv/systemd/holdfast-cri.service", "srv/systemd/holdfast-snapshot-restore.service", "srv/cni/conf/00-holdfast.conflist"},
		o.IPAMDataDir:   {"srv/cni/conf/00-holdfast.conflist"},
		o.CNIDataDir:    {"srv/cni/conf/00-holdfast.conflist"},
		o.Holdfastd:     {"srv/systemd/holdfast-cri.service", "srv/systemd/holdfast-snapshot-restore.service", "srv/systemd/holdfast-agent.service"},
		o.CRISocket:     {"srv/systemd/holdfast-cri.service", "srv/kubelet/flags.env"},
		o.HealthKeyFile: {"srv/systemd/holdfast-agent.service"},
		o.Kubeconfig:    {"srv/systemd/holdfast-agent.service"},
	}
	written := 0
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() || strings.Contains(p, "/srv/hf/install/") || strings.HasPrefix(filepath.Base(p), "holdfast") && filepath.Dir(p) == filepath.Join(root, "srv/cni/bin") || p == filepath.Join(root, "srv/bin/holdfastd") {
			return err
		}
		data, _ := os.ReadFile(p)
		written++
		for _, d := range defaults {
			if bytes.Contains(data, []byte(d)) {
				t.Errorf("%s names the default path %s:\n%s", strings.TrimPrefix(p, root), d, data)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, files := range uses {
		for _, f := range files {
			if data, err := os.ReadFile(filepath.Join(root, f)); err != nil || !bytes.Contains(data, []byte(dir)) {
				t.Errorf("%s does not use %s (err %v):\n%s", f, dir, err, data)
			}
		}
	}
	t.Logf("%d rendered or edited files checked", written)
}

package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

const containerdConfig = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[5]q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[6]q
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    disable_apparmor = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[7]q
      conf_dir = %[8]q
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = %[9]q
`

// CNIBinDir is the CNI plugin directory containerd uses on this node. Set
// it before StartContainerd; default: the reference plugins.
func (n *Node) cniBinDir() (string, error) {
	if n.CNIBinDir != "" {
		return n.CNIBinDir, nil
	}
	return EnsureCNIPlugins()
}

// StartContainerd writes the node's containerd config, starts containerd in
// the node netns, waits for its CRI to answer and imports the test images
// (once per node: the images live in the node's var dir).
func (n *Node) StartContainerd() error {
	if err := requireBinaries("containerd", "containerd-shim-runc-v2", "runc", "ctr"); err != nil {
		return err
	}
	bin, err := n.cniBinDir()
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(n.EtcDir, "containerd", "config.toml")
	cfg := fmt.Sprintf(containerdConfig,
		filepath.Join(n.VarDir, "containerd"), filepath.Join(n.RunDir, "containerd"),
		n.ContainerdSock, n.ContainerdSock+".ttrpc", filepath.Join(n.VarDir, "opt"),
		PauseImage, bin, n.CNIConfDir, filepath.Join(n.RunDir, "runc"))
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	if _, err := n.Start("containerd", "containerd", "--config", cfgPath); err != nil {
		return err
	}
	if err := n.WaitContainerd(30 * time.Second); err != nil {
		return err
	}
	return n.importImages()
}

// WaitContainerd waits until the node's containerd answers CRI Version.
func (n *Node) WaitContainerd(timeout time.Duration) error {
	if err := WaitCRI(n.ContainerdSock, timeout); err != nil {
		return fmt.Errorf("%s: containerd not ready: %w\n%s", n.Name, err, tail(n.Logs("containerd"), 2000))
	}
	return nil
}

// WaitCRI waits until the CRI endpoint at sock (containerd, the shim)
// answers Version: a socket file alone may exist before anything serves it.
func WaitCRI(sock string, timeout time.Duration) error {
	return waitFor(timeout, func() error {
		c, err := DialCRI(sock)
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := c.Version(ctx); err != nil {
			return fmt.Errorf("CRI Version on %s: %w", sock, err)
		}
		return nil
	})
}

func (n *Node) importImages() error {
	marker := filepath.Join(n.VarDir, "containerd", ".hf-images-imported")
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	tars, err := imageTarballs()
	if err != nil {
		return err
	}
	for ref, path := range tars {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, err := n.Exec(ctx, "ctr", "-a", n.ContainerdSock, "-n", "k8s.io", "images", "import", path)
		cancel()
		if err != nil {
			return fmt.Errorf("import %s: %w", ref, err)
		}
	}
	return os.WriteFile(marker, nil, 0o644)
}

func requireBinaries(names ...string) error {
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			return fmt.Errorf("%q is not installed (run `make deps`): %w", name, err)
		}
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

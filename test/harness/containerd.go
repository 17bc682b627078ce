package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// CNIBinDir is the CNI plugin directory containerd uses on this node. Set
// it before StartContainerd; default: the reference plugins.
func (n *Node) cniBinDir() (string, error) {
	if n.CNIBinDir != "" {
		return n.CNIBinDir, nil
	}
	return EnsureCNIPlugins()
}

// StartContainerd writes the node's containerd config (in the format of
// the containerd HOLDFAST_CONTAINERD picks), starts containerd in the node
// netns with the shim of the same version first on its PATH, waits for its
// CRI to answer and imports the test images (once per node: the images live
// in the node's var dir).
func (n *Node) StartContainerd() error {
	c, err := SelectedContainerd()
	if err != nil {
		return err
	}
	if err := requireBinaries(c.Containerd, c.Ctr, "runc"); err != nil {
		return err
	}
	bin, err := n.cniBinDir()
	if err != nil {
		return err
	}
	// Under the node's run dir, not its etc: the config holds host paths,
	// so it is no file of the node root that `holdfastd install --root`
	// should read as the node's containerd config.
	cfgPath := filepath.Join(n.RunDir, "containerd-config.toml")
	cfg := fmt.Sprintf(c.config,
		filepath.Join(n.VarDir, "containerd"), filepath.Join(n.RunDir, "containerd"),
		n.ContainerdSock, n.ContainerdSock+".ttrpc", filepath.Join(n.VarDir, "opt"),
		PauseImage, bin, n.CNIConfDir, filepath.Join(n.RunDir, "runc"))
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	if _, err := n.StartEnv("containerd", c.env(), c.Containerd, "--config", cfgPath); err != nil {
		return err
	}
	if err := n.WaitContainerd(30 * time.Second); err != nil {
		return err
	}
	return n.importImages(c)
}

// WaitContainerd waits until the node's containerd answers CRI Version.
func (n *Node) WaitContainerd(timeout time.Duration) error {
	if err := WaitCRI(n.ContainerdSock, timeout); err != nil {
		return fmt.Errorf("%s: containerd not ready: %w\n%s", n.Name, err, Tail(n.Logs("containerd"), 2000))
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

func (n *Node) importImages(c Containerd) error {
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
		_, err := n.Exec(ctx, c.Ctr, "-a", n.ContainerdSock, "-n", "k8s.io", "images", "import", path)
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

package reboot

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// Node wraps a harness node with holdfast's paths on it.
type Node struct {
	*harness.Node
	Bins string // dir holding holdfastd
}

func (n Node) holdfastd() string   { return filepath.Join(n.Bins, "holdfastd") }
func (n Node) SnapshotDir() string { return filepath.Join(n.VarDir, "holdfast", "snapshot") }
func (n Node) CRIStateDir() string { return filepath.Join(n.VarDir, "holdfast", "cri") }
func (n Node) IPAMDir() string     { return filepath.Join(n.VarDir, "holdfast", "ipam") }
func (n Node) AttachDir() string   { return filepath.Join(n.VarDir, "holdfast", "cni") }
func (n Node) ShimSock() string    { return filepath.Join(n.RunDir, "holdfast", "cri.sock") }
func (n Node) snapshotArgs() []string {
	return []string{"--dir", n.SnapshotDir(), "--node-name", n.Name, "--subnet-env", n.SubnetEnvPath()}
}

// Conflist is the node's CNI chain: bridge with holdfast-ipam, then the
// holdfast plugin (MAC pin, attachment records, overlay check), then portmap.
func (n Node) Conflist() map[string]any {
	ipam := map[string]any{"type": "holdfast-ipam", "dataDir": n.IPAMDir()}
	hf := map[string]any{"type": "holdfast", "dataDir": n.AttachDir(),
		"overlay": map[string]any{"device": harness.VXLANDevice, "nodeName": n.Name, "snapshotDir": n.SnapshotDir()}}
	pm := map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}}
	return n.BridgeConflist(ipam, hf, pm)
}

// StartWatch starts `holdfastd snapshot watch` on the node.
func (n Node) StartWatch() error {
	args := append([]string{"snapshot", "watch"}, n.snapshotArgs()...)
	_, err := n.Start("snapshot-watch", n.holdfastd(), append(args, "--min-gap", "200ms")...)
	return err
}

// WaitSnapshot waits until the watcher has saved a snapshot holding the
// overlay device.
func (n Node) WaitSnapshot(ctx context.Context) error {
	return harness.Eventually(30*time.Second, func() error {
		out, err := exec.CommandContext(ctx, n.holdfastd(), "snapshot", "show", "--dir", n.SnapshotDir()).CombinedOutput()
		if err != nil {
			return fmt.Errorf("snapshot show: %v: %s", err, out)
		}
		if !strings.Contains(string(out), "device "+harness.VXLANDevice+":") {
			return fmt.Errorf("snapshot holds no %s yet:\n%s", harness.VXLANDevice, out)
		}
		return nil
	})
}

// Restore runs `holdfastd snapshot restore` in the node, as the systemd
// oneshot does before containerd.
func (n Node) Restore(ctx context.Context) (string, error) {
	args := append([]string{"snapshot", "restore"}, n.snapshotArgs()...)
	return n.Exec(ctx, n.holdfastd(), args...)
}

// StartShim starts `holdfastd cri` between the test's kubelet-like client
// and the node's containerd.
func (n Node) StartShim() error {
	_, err := n.Start("cri-shim", n.holdfastd(), "cri", "run",
		"--listen", n.ShimSock(),
		"--runtime-endpoint", "unix://"+n.ContainerdSock,
		"--state-dir", n.CRIStateDir(),
		"--boot-id-file", n.BootIDFile,
		"--node-name", n.Name)
	if err != nil {
		return err
	}
	return harness.WaitCRI(n.ShimSock(), 30*time.Second)
}

// BringUp starts a node the first time: CNI config, containerd, the shim
// and the snapshot watcher.
func (n Node) BringUp(ctx context.Context) error {
	if err := n.WriteCNIConfig("10-holdfast", n.Conflist()); err != nil {
		return err
	}
	if err := n.StartContainerd(); err != nil {
		return err
	}
	if err := n.StartShim(); err != nil {
		return fmt.Errorf("%s: start shim: %w\n%s", n.Name, err, n.Logs("cri-shim"))
	}
	return n.StartWatch()
}

// Boot is the offline boot sequence of docs/boot.md, run after a
// simulated reboot; each step is recorded on the timeline.
func (n Node) Boot(ctx context.Context, tl *Timeline) error {
	out, err := n.Restore(ctx)
	if err != nil {
		return fmt.Errorf("snapshot restore: %w", err)
	}
	tl.Mark("snapshot restored", firstLine(out))
	if err := n.StartContainerd(); err != nil {
		return err
	}
	tl.Mark("containerd ready", "")
	if err := n.StartShim(); err != nil {
		return fmt.Errorf("start shim: %w\n%s", err, n.Logs("cri-shim"))
	}
	tl.Mark("cri shim serving", "relaunch under way")
	return n.StartWatch()
}

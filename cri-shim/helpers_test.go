package crishim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	crishim "github.com/holdfast-edge/holdfast/cri-shim"
	"github.com/holdfast-edge/holdfast/cri-shim/relaunch"
	"github.com/holdfast-edge/holdfast/cri-shim/volumes"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// rawMsg is a message as bytes (test-side raw codec).
type rawMsg struct{ b []byte }

type rawTestCodec struct{}

func (rawTestCodec) Name() string                  { return "proto" }
func (rawTestCodec) Marshal(v any) ([]byte, error) { return v.(*rawMsg).b, nil }
func (rawTestCodec) Unmarshal(b []byte, v any) error {
	v.(*rawMsg).b = append([]byte(nil), b...)
	return nil
}

type runningShim struct {
	*crishim.Shim
	Sock   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Stop stops the shim and waits for it.
func (r *runningShim) Stop(t testing.TB) {
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("shim stopped with error: %v", r.err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("shim did not stop")
	}
}

// startShim runs the shim in-process in front of the node's containerd.
func startShim(t testing.TB, node *harness.Node, stateDir string, mod func(*crishim.Config)) *runningShim {
	t.Helper()
	sock := filepath.Join(node.RunDir, "holdfast", "cri.sock")
	var w io.Writer = os.Stderr
	if !testing.Verbose() {
		w = io.Discard
	}
	cfg := crishim.Config{
		Listen: sock, RuntimeEndpoint: "unix://" + node.ContainerdSock, StateDir: stateDir, Relaunch: true,
		Parallelism: 4, BootIDFile: node.BootIDFile, NodeName: node.Name,
		BackoffBase: relaunch.DefaultBackoffBase, BackoffMax: relaunch.DefaultBackoffMax,
		RestoreVolumes: crishim.DefaultRestoreVolumes, VolumeScanInterval: volumes.DefaultScanInterval,
		Log: slog.New(slog.NewTextHandler(w, nil)), Registry: prometheus.NewRegistry(),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := crishim.New(cfg)
	if err != nil {
		t.Fatalf("start shim: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningShim{Shim: s, Sock: sock, cancel: cancel, done: make(chan struct{})}
	go func() { r.err = s.Run(ctx); close(r.done) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// startShimProcess starts the holdfastd binary's shim on node (process
// "holdfastd-cri", metrics on 127.0.0.1:9643) and waits until it serves.
func startShimProcess(t *testing.T, node *harness.Node, holdfastd, stateDir, sock string, extra ...string) {
	t.Helper()
	args := append([]string{"cri", "run", "--listen", sock, "--runtime-endpoint", "unix://" + node.ContainerdSock, "--state-dir", stateDir,
		"--boot-id-file", node.BootIDFile, "--node-name", node.Name, "--metrics-addr", "127.0.0.1:9643"}, extra...)
	if _, err := node.Start("holdfastd-cri", holdfastd, args...); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitCRI(sock, 30*time.Second); err != nil {
		t.Fatalf("shim not serving: %v\n%s", err, node.Logs("holdfastd-cri"))
	}
}

// criPods reads `holdfastd cri pods -o json`.
func criPods(ctx context.Context, node *harness.Node, holdfastd, stateDir string) ([]criPodRow, error) {
	out, _ := node.Exec(ctx, holdfastd, "cri", "pods", "-o", "json", "--state-dir", stateDir)
	var rows []criPodRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		return nil, fmt.Errorf("cri pods: %v: %s", err, out)
	}
	return rows, nil
}

// waitOrderFile waits until the init/app order file reads want.
func waitOrderFile(t *testing.T, path, want string) {
	t.Helper()
	if err := harness.Eventually(10*time.Second, func() error {
		if got := readFile(t, path); got != want {
			return fmt.Errorf("order file %q, want %q", got, want)
		}
		return nil
	}); err != nil {
		t.Fatalf("init did not run before app after the reboot: %v", err)
	}
}

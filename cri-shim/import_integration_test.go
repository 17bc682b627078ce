package crishim_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/cri-shim/record"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// TestRecordsPodsRunningBeforeTheShim: pods kubelet created straight on
// containerd before holdfast was installed (a live node) are recorded when
// the shim starts, from containerd's verbose status, and come back after an
// offline reboot like pods recorded through the shim: init container first,
// same IP, every container running. A pod that has a record is left as
// recorded.
func TestRecordsPodsRunningBeforeTheShim(t *testing.T) {
	site := harness.NewSite(t, 1)
	bins := harness.Binaries(t)
	node := site.Node(1)
	node.CNIBinDir = harness.PluginDir(t)
	ipam := map[string]any{"type": "holdfast-ipam", "dataDir": filepath.Join(node.VarDir, "holdfast", "ipam")}
	if err := node.WriteCNIConfig("10-holdfast", node.BridgeConflist(ipam)); err != nil {
		t.Fatal(err)
	}
	if err := node.StartContainerd(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Before the shim: kubelet's pods straight on containerd.
	direct := node.CRI()
	emptyDir := filepath.Join(node.VarDir, "kubelet", "pods", "live-init", "volumes", "kubernetes.io~empty-dir", "data")
	if err := os.MkdirAll(emptyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mount := []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: emptyDir}}
	specs := []harness.PodSpec{
		{Name: "live-init", InitContainers: []harness.ContainerSpec{{Name: "init", Command: []string{"sh", "-c", "echo init >> /data/order"}, Mounts: mount}},
			Containers: []harness.ContainerSpec{{Name: "app", Command: []string{"sh", "-c", "echo app >> /data/order; exec sleep 100000"}, Mounts: mount}}},
		{Name: "live-two", Containers: []harness.ContainerSpec{{Name: "web"}, {Name: "sidecar", Command: []string{"sleep", "100000"}}}},
	}
	pods := map[string]*harness.Pod{}
	for _, spec := range specs {
		p, err := direct.RunPod(ctx, spec)
		if err != nil {
			t.Fatalf("run %s on containerd: %v", spec.Name, err)
		}
		pods[spec.Name] = p
	}

	stateDir := filepath.Join(node.VarDir, "holdfast", "cri")
	sock := filepath.Join(node.RunDir, "holdfast", "cri.sock")
	holdfastd := filepath.Join(bins, "holdfastd")
	startShim := func() { t.Helper(); startShimProcess(t, node, holdfastd, stateDir, sock) }
	startShim()

	// The shim records both, from containerd's copy of the requests.
	var recs map[string]*record.Pod
	err := harness.Eventually(30*time.Second, func() error {
		st, bad, err := record.Inspect(stateDir)
		if err != nil || len(bad) > 0 {
			return fmt.Errorf("records: %v %v", err, bad)
		}
		recs = map[string]*record.Pod{}
		for _, p := range st.List() {
			recs[p.Name] = p
		}
		for name := range pods {
			if recs[name] == nil {
				return fmt.Errorf("%s not recorded (have %d records)", name, len(recs))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, node.Logs("holdfastd-cri"))
	}
	for name, p := range pods {
		r := recs[name]
		if r.UID != p.Spec.UID || len(r.Sandboxes) != 1 || r.Sandboxes[0].ID != p.SandboxID {
			t.Fatalf("%s recorded as uid %s sandboxes %+v, want %s %s", name, r.UID, r.Sandboxes, p.Spec.UID, p.SandboxID)
		}
		req, err := r.SandboxRequest()
		if err != nil || req.GetConfig().GetMetadata().GetName() != name || req.GetConfig().GetLogDirectory() == "" {
			t.Fatalf("%s: recorded sandbox request %v %v", name, req, err)
		}
		for _, cs := range append(p.Spec.InitContainers, p.Spec.Containers...) {
			c := r.Containers[cs.Name]
			if c == nil {
				t.Fatalf("%s/%s not recorded: %+v", name, cs.Name, r.Containers)
			}
			creq, err := c.ContainerRequest()
			if err != nil || creq.GetConfig().GetImage().GetImage() == "" || creq.GetPodSandboxId() != p.SandboxID {
				t.Fatalf("%s/%s: recorded request %v %v", name, cs.Name, creq, err)
			}
		}
	}
	if c := recs["live-init"].Containers["init"]; !c.Init || c.State != record.StateExited {
		t.Fatalf("init container recorded as init=%v state=%s, want init, exited", c.Init, c.State)
	}
	if c := recs["live-init"].Containers["app"]; c.Init || c.State != record.StateRunning || c.StartSeq == 0 {
		t.Fatalf("app container recorded as init=%v state=%s startSeq=%d", c.Init, c.State, c.StartSeq)
	}
	if logs := node.Logs("holdfastd-cri"); !strings.Contains(logs, "running pods checked for records") || !strings.Contains(logs, "recorded=2") {
		t.Fatalf("no log line counting the recorded pods:\n%s", logs)
	}

	// A restart of the shim leaves the records as they are; a sandbox
	// kubelet made while the shim was down (a new attempt of a recorded
	// pod) is added to the pod's record.
	recFile := func(name string) string { return filepath.Join(stateDir, "pods", pods[name].Spec.UID+".json") }
	before, _ := os.ReadFile(recFile("live-init"))
	node.Stop("holdfastd-cri", 5*time.Second)
	again := pods["live-two"].Spec
	again.Attempt = 1
	sb, err := direct.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: direct.SandboxConfig(again)})
	if err != nil {
		t.Fatal(err)
	}
	startShim()
	if err := harness.Eventually(20*time.Second, func() error {
		if !strings.Contains(node.Logs("holdfastd-cri"), "recorded=1") {
			return fmt.Errorf("no second check logged")
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, node.Logs("holdfastd-cri"))
	}
	if after, _ := os.ReadFile(recFile("live-init")); string(after) != string(before) {
		t.Fatal("a recorded pod's record was rewritten by the second check")
	}
	// The new sandbox took the pod's pin (the old one holds its address).
	wantIP := map[string]string{"live-init": pods["live-init"].IP}
	if wantIP["live-two"], _, err = direct.SandboxNet(ctx, sb.PodSandboxId); err != nil {
		t.Fatal(err)
	}
	st, _, _ := record.Inspect(stateDir)
	if p, _ := st.Get(pods["live-two"].Spec.UID); p == nil || len(p.Sandboxes) != 2 || p.LatestSandbox().ID != sb.PodSandboxId || len(p.Containers) != 2 {
		t.Fatalf("live-two after a sandbox made without the shim: %+v", p)
	} else if req, err := p.SandboxRequest(); err != nil || req.GetConfig().GetMetadata().GetAttempt() != 1 {
		t.Fatalf("live-two's recorded sandbox request is not the newest attempt: %v %v", req.GetConfig().GetMetadata(), err)
	}

	// Offline reboot: both come back.
	if err := node.Reboot(func() error {
		if err := node.StartContainerd(); err != nil {
			return err
		}
		startShim()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	kubelet := node.CRI(sock)
	err = harness.Eventually(90*time.Second, func() error {
		rows, err := criPods(ctx, node, holdfastd, stateDir)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if r.Relaunch == nil || r.Relaunch.Outcome != record.OutcomeRelaunched {
				return fmt.Errorf("pod %s: relaunch %+v", r.Name, r.Relaunch)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, node.Logs("holdfastd-cri"))
	}
	for name, p := range pods {
		ready, err := kubelet.ReadySandboxes(ctx, p.Spec.UID)
		if err != nil || len(ready) != 1 {
			t.Fatalf("%s: %d ready sandboxes after the reboot (%v)", name, len(ready), err)
		}
		if ip, _, err := kubelet.SandboxNet(ctx, ready[0].Id); err != nil || ip != wantIP[name] {
			t.Fatalf("%s: IP %s after the reboot (%v), %s before", name, ip, err, wantIP[name])
		}
		for _, cs := range p.Spec.Containers {
			if err := harness.Eventually(20*time.Second, func() error {
				list, err := kubelet.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: ready[0].Id,
					State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}})
				if err != nil {
					return err
				}
				for _, c := range list.GetContainers() {
					if c.GetMetadata().GetName() == cs.Name {
						return nil
					}
				}
				return fmt.Errorf("%s/%s not running after the reboot: %v", name, cs.Name, list.GetContainers())
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitOrderFile(t, filepath.Join(emptyDir, "order"), "init\napp\ninit\napp\n")
}

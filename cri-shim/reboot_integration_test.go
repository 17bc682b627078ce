package crishim_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/cri-shim/record"
	"github.com/holdfast-edge/holdfast/test/harness"
)

type criPodRow struct {
	Namespace, Name, UID string
	Relaunch             *record.Relaunch
	Error                string
}

// TestRebootRelaunchAndAdoption is the acceptance test: pods
// recorded through the shim (holdfastd cri, the real binary) come back after
// an offline reboot of their node, with init containers first, the same
// pinned IPs (holdfast-ipam), reachable from the other node over the
// overlay; kubelet's later calls get the relaunched IDs back; exited
// containers restart with backoff except in a Never pod; a corrupt record
// skips only its pod.
func TestRebootRelaunchAndAdoption(t *testing.T) {
	site := harness.NewSite(t, 2)
	bins := harness.Binaries(t)
	plugins := harness.PluginDir(t)
	site.Overlay()
	for _, n := range site.Nodes {
		n.CNIBinDir = plugins
		ipam := map[string]any{"type": "holdfast-ipam", "dataDir": filepath.Join(n.VarDir, "holdfast", "ipam")}
		if err := n.WriteCNIConfig("10-holdfast", n.BridgeConflist(ipam)); err != nil {
			t.Fatal(err)
		}
		if err := n.StartContainerd(); err != nil {
			t.Fatal(err)
		}
	}
	node, peer := site.Node(1), site.Node(2)
	stateDir := filepath.Join(node.VarDir, "holdfast", "cri")
	sock := filepath.Join(node.RunDir, "holdfast", "cri.sock")
	holdfastd := filepath.Join(bins, "holdfastd")
	startShim := func() {
		t.Helper()
		startShimProcess(t, node, holdfastd, stateDir, sock, "--restart-backoff", "2s", "--restart-backoff-max", "8s")
	}
	startShim()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	kubelet := node.CRI(sock)

	// The pods, created the way kubelet creates them, through the shim.
	emptyDir := filepath.Join(node.VarDir, "kubelet", "pods", "initpod", "volumes", "kubernetes.io~empty-dir", "data")
	if err := os.MkdirAll(emptyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mount := []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: emptyDir}}
	httpd := "exec httpd -f -p 8080 -h /var/www"
	specs := []harness.PodSpec{
		{Name: "initpod", InitContainers: []harness.ContainerSpec{{Name: "init", Command: []string{"sh", "-c", "echo init >> /data/order"}, Mounts: mount}},
			Containers: []harness.ContainerSpec{{Name: "app", Command: []string{"sh", "-c", "echo app >> /data/order; " + httpd}, Mounts: mount}}},
		{Name: "twoapps", Containers: []harness.ContainerSpec{{Name: "web"}, {Name: "sidecar", Command: []string{"sleep", "100000"}}}},
		{Name: "hostnet", HostNetwork: true, Containers: []harness.ContainerSpec{{Name: "agent", Command: []string{"sleep", "100000"}}}},
		{Name: "crasher", Containers: []harness.ContainerSpec{{Name: "c", Command: []string{"sh", "-c", "sleep 1; exit 3"}}}},
		{Name: "once", Containers: []harness.ContainerSpec{{Name: "c", Command: []string{"sh", "-c", "sleep 1; exit 3"}}}},
		{Name: "corrupt"},
		{Name: "noimage", Containers: []harness.ContainerSpec{{Name: "c", Image: "holdfast.test/gone:1", Command: []string{"sleep", "100000"}}}},
	}
	node.MustExec("ctr", "-a", node.ContainerdSock, "-n", "k8s.io", "images", "tag", harness.BusyboxImage, "holdfast.test/gone:1")
	pods := map[string]*harness.Pod{}
	for _, spec := range specs {
		run := kubelet.RunPod
		if spec.HostNetwork {
			run = runHostNetworkPod(kubelet)
		}
		p, err := run(ctx, spec)
		if err != nil {
			t.Fatalf("run %s through the shim: %v\n%s", spec.Name, err, node.Logs("holdfastd-cri"))
		}
		pods[spec.Name] = p
	}
	remote, err := peer.CRI().RunPod(ctx, harness.PodSpec{Name: "remote"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initpod", "twoapps"} {
		if err := harness.Eventually(10*time.Second, func() error { return harness.HTTP(ctx, remote.NetNSPath, pods[name].IP) }); err != nil {
			t.Fatalf("before reboot: remote -> %s: %v", name, err)
		}
	}
	if got := readFile(t, filepath.Join(emptyDir, "order")); got != "init\napp\n" {
		t.Fatalf("before reboot: order %q", got)
	}

	// Reboot node1 offline. Its pod facts as persisted from an earlier
	// apiserver read: "once" is a Never pod. One record gets corrupted.
	if err := node.Reboot(func() error {
		st, _, err := record.Open(stateDir)
		if err != nil {
			return err
		}
		if err := st.Update(pods["once"].Spec.UID, false, func(p *record.Pod) (bool, error) {
			p.Facts = &record.Facts{Source: "apiserver", RestartPolicy: record.RestartNever}
			return true, nil
		}); err != nil {
			return err
		}
		bad := filepath.Join(stateDir, "pods", pods["corrupt"].Spec.UID+".json")
		data, err := os.ReadFile(bad)
		if err != nil {
			return err
		}
		if err := os.WriteFile(bad, []byte(strings.Replace(string(data), "corrupt", "CORRUPT", 1)), 0o600); err != nil {
			return err
		}
		if err := node.ProgramOverlay(); err != nil {
			return err
		}
		if err := node.CutCloud(); err != nil {
			return err
		}
		if err := node.StartContainerd(); err != nil {
			return err
		}
		// An image lost with the reboot: that pod fails, the rest go on.
		node.MustExec("ctr", "-a", node.ContainerdSock, "-n", "k8s.io", "images", "rm", "holdfast.test/gone:1")
		startShim()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	bootStart := time.Now()

	// Wait for the relaunch outcome, read with `holdfastd cri pods -o json`.
	outcome := map[string]criPodRow{}
	err = harness.Eventually(90*time.Second, func() error {
		rows, err := criPods(ctx, node, holdfastd, stateDir)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if r.Error == "" && (r.Relaunch == nil || r.Relaunch.BootID != strings.TrimSpace(node.BootID()) || r.Relaunch.Outcome == record.OutcomeRelaunching) {
				return fmt.Errorf("pod %s not relaunched yet", r.Name)
			}
			outcome[r.Name] = r
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, node.Logs("holdfastd-cri"))
	}
	t.Logf("relaunch settled %v after boot", time.Since(bootStart).Round(time.Millisecond))
	for _, name := range []string{"initpod", "twoapps", "hostnet", "crasher", "once"} {
		if r := outcome[name]; r.Relaunch.Outcome != record.OutcomeRelaunched {
			t.Fatalf("%s: outcome %+v\n%s", name, r.Relaunch, node.Logs("holdfastd-cri"))
		}
	}
	if r := outcome["noimage"]; r.Relaunch.Outcome != record.OutcomeFailed || !strings.Contains(r.Relaunch.Error, "holdfast.test/gone:1") {
		t.Fatalf("pod with a missing image: %+v", r.Relaunch)
	}
	if ready, _ := kubelet.ReadySandboxes(ctx, pods["noimage"].Spec.UID); len(ready) != 0 {
		t.Fatalf("failed relaunch left %d ready sandboxes", len(ready))
	}
	if _, ok := outcome["corrupt"]; ok {
		t.Fatal("the corrupt record was relaunched")
	}
	if logs := node.Logs("holdfastd-cri"); !strings.Contains(logs, "pod record unreadable") || !strings.Contains(logs, pods["corrupt"].Spec.UID+".json") {
		t.Fatalf("no clear log line for the corrupt record:\n%s", logs)
	}

	// All running, init before app, same IPs, reachable from node2.
	for _, name := range []string{"initpod", "twoapps", "hostnet"} {
		p := pods[name]
		ready, err := kubelet.ReadySandboxes(ctx, p.Spec.UID)
		if err != nil || len(ready) != 1 {
			t.Fatalf("%s: %d ready sandboxes (%v), want 1", name, len(ready), err)
		}
		if ready[0].Id != outcome[name].Relaunch.SandboxID || ready[0].Metadata.Attempt != 1 {
			t.Fatalf("%s: ready sandbox %s attempt %d, relaunched %s", name, ready[0].Id, ready[0].Metadata.Attempt, outcome[name].Relaunch.SandboxID)
		}
		ip, _, err := kubelet.SandboxNet(ctx, ready[0].Id)
		if err != nil {
			t.Fatal(err)
		}
		if !p.Spec.HostNetwork && ip != p.IP {
			t.Fatalf("%s: IP %s after reboot, %s before", name, ip, p.IP)
		}
		for _, cs := range p.Spec.Containers {
			id := outcome[name].Relaunch.Containers[cs.Name]
			st, err := kubelet.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
			if err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Fatalf("%s/%s: %v %v", name, cs.Name, st.GetStatus().GetState(), err)
			}
			if st.Status.Labels[harness.LabelPodUID] != p.Spec.UID || st.Status.Annotations[harness.AnnContainerHash] == "" || st.Status.Annotations[harness.AnnRestartCount] != "1" {
				t.Fatalf("%s/%s: labels/annotations kubelet needs are wrong: %v %v", name, cs.Name, st.Status.Labels, st.Status.Annotations)
			}
		}
	}
	waitOrderFile(t, filepath.Join(emptyDir, "order"), "init\napp\ninit\napp\n")
	for _, name := range []string{"initpod", "twoapps"} {
		if err := harness.Eventually(15*time.Second, func() error { return harness.HTTP(ctx, remote.NetNSPath, pods[name].IP) }); err != nil {
			t.Fatalf("after reboot: node2 -> %s over the overlay: %v", name, err)
		}
	}
	// The records settle before the shim counts the outcomes.
	if err := harness.Eventually(10*time.Second, func() error {
		out, err := node.Exec(ctx, "busybox", "wget", "-qO-", "http://127.0.0.1:9643/metrics")
		if err != nil {
			return err
		}
		for _, want := range []string{`holdfast_cri_relaunch_total{outcome="relaunched"} 5`, `holdfast_cri_relaunch_total{outcome="failed"} 1`, `holdfast_cri_relaunch_total{outcome="unreadable"} 1`} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("no %s in:\n%s", want, out)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("metrics: %v", err)
	}

	// kubelet reconnects and asks again, as after a lost pod list: it gets
	// the relaunched sandbox and containers back, no duplicate.
	for _, name := range []string{"twoapps", "initpod"} {
		p := pods[name]
		spec := p.Spec
		spec.Attempt = 2
		sbCfg := kubelet.SandboxConfig(spec)
		sb, err := kubelet.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
		if err != nil {
			t.Fatal(err)
		}
		if sb.PodSandboxId != outcome[name].Relaunch.SandboxID {
			t.Fatalf("%s: kubelet's RunPodSandbox got %s, relaunched %s", name, sb.PodSandboxId, outcome[name].Relaunch.SandboxID)
		}
		for _, cs := range spec.Containers {
			cr, err := kubelet.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, Config: kubelet.ContainerConfig(spec, cs, 1), SandboxConfig: sbCfg})
			if err != nil {
				t.Fatal(err)
			}
			if cr.ContainerId != outcome[name].Relaunch.Containers[cs.Name] {
				t.Fatalf("%s/%s: CreateContainer got %s, relaunched %s", name, cs.Name, cr.ContainerId, outcome[name].Relaunch.Containers[cs.Name])
			}
			if _, err := kubelet.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
				t.Fatalf("%s/%s: StartContainer of the relaunched container: %v", name, cs.Name, err)
			}
		}
		ready, _ := kubelet.ReadySandboxes(ctx, p.Spec.UID)
		if len(ready) != 1 {
			t.Fatalf("%s: %d ready sandboxes after kubelet's calls", name, len(ready))
		}
		st, _, _ := record.Inspect(stateDir)
		if rec, ok := st.Get(p.Spec.UID); !ok || !rec.Relaunch.Adopted {
			t.Fatalf("%s: not marked adopted after kubelet's calls", name)
		}
	}
	if out, err := node.Exec(ctx, "busybox", "wget", "-qO-", "http://127.0.0.1:9643/healthz"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("healthz: %v %q", err, out)
	}

	// Exited relaunched containers: "crasher" (Always) restarts with
	// doubling backoff, "once" (Never) does not. Each wait is measured from
	// one instance's exit to the next one's start, as the runtime reports
	// them (not when a poll first saw an instance: a slow poll made a gap
	// look short).
	var runs []containerRun
	if err := harness.Eventually(40*time.Second, func() error {
		var err error
		if runs, err = containerRuns(ctx, kubelet, outcome["crasher"].Relaunch.SandboxID); err != nil {
			return err
		}
		if len(runs) < 3 {
			return fmt.Errorf("%d container instances started in the relaunched sandbox, want ≥3 (relaunch + 2 restarts)", len(runs))
		}
		return nil
	}); err != nil {
		t.Fatalf("crasher: %v\n%s", err, node.Logs("holdfastd-cri"))
	}
	for i := 1; i < len(runs); i++ {
		if runs[i-1].finished.IsZero() {
			t.Fatalf("crasher instance %d restarted before it exited: runs %v", i-1, runs)
		}
		wait := runs[i].started.Sub(runs[i-1].finished)
		want := min(time.Duration(1<<(i-1))*2*time.Second, 8*time.Second) // 2s, 4s, 8s cap
		if wait < want {
			t.Fatalf("crasher restart %d started %v after the previous exit, backoff wants ≥ %v (runs %v)", i, wait, want, runs)
		}
		t.Logf("crasher restart %d started %v after the previous exit (backoff %v)", i, wait.Round(time.Millisecond), want)
	}
	p, _ := kubelet.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{LabelSelector: map[string]string{harness.LabelPodUID: pods["once"].Spec.UID}}})
	if len(p.Containers) != 2 { // the pre-reboot one and the relaunched one
		t.Fatalf("Never pod: %d containers, want 2 (no restart)", len(p.Containers))
	}

	// The shim restarts within the same boot: nothing is relaunched again.
	// The shim decides whether this is a new boot before it serves, so
	// once it answers its log says which it took.
	node.Stop("holdfastd-cri", 10*time.Second)
	startShim()
	var log string
	if err := harness.Eventually(10*time.Second, func() error {
		if log = sinceLastStart(node.Logs("holdfastd-cri")); !strings.Contains(log, "serving CRI") {
			return fmt.Errorf("no \"serving CRI\" in:\n%s", log)
		}
		return nil
	}); err != nil {
		t.Fatalf("restarted shim: %v", err)
	}
	if strings.Contains(log, "boot id changed") {
		t.Fatalf("restarted shim in the same boot took it for a new boot:\n%s", log)
	}
	for _, name := range []string{"initpod", "twoapps", "hostnet"} {
		if ready, _ := kubelet.ReadySandboxes(ctx, pods[name].Spec.UID); len(ready) != 1 {
			t.Fatalf("%s: %d ready sandboxes after a shim restart in the same boot", name, len(ready))
		}
	}

	// kubelet's GC removes the dead pre-reboot sandbox: the pod's record
	// stays; removing its live sandbox, the last one, drops it.
	tw := pods["twoapps"]
	if _, err := kubelet.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: tw.SandboxID}); err != nil {
		t.Fatal(err)
	}
	recorded := func() bool {
		st, _, err := record.Inspect(stateDir)
		if err != nil {
			t.Fatal(err)
		}
		_, ok := st.Get(tw.Spec.UID)
		return ok
	}
	if !recorded() {
		t.Fatal("removing the pre-reboot sandbox dropped the pod's record")
	}
	if err := kubelet.RemovePod(ctx, outcome["twoapps"].Relaunch.SandboxID); err != nil {
		t.Fatal(err)
	}
	if recorded() {
		t.Fatal("record kept after kubelet removed the pod's last sandbox")
	}
}

// runHostNetworkPod runs a hostNetwork pod the way kubelet does with
// containerd 1.6: without a sandbox hostname (there is no private UTS
// namespace to put it in). harness.RunPod sets one, which runc refuses.
func runHostNetworkPod(c *harness.CRI) func(context.Context, harness.PodSpec) (*harness.Pod, error) {
	return func(ctx context.Context, spec harness.PodSpec) (*harness.Pod, error) {
		cfg := c.SandboxConfig(spec)
		cfg.Hostname = ""
		spec.UID = cfg.Metadata.Uid
		sb, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			return nil, err
		}
		pod := &harness.Pod{Spec: spec, SandboxID: sb.PodSandboxId, ContainerIDs: map[string]string{}}
		for _, cs := range spec.Containers {
			cr, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, Config: c.ContainerConfig(spec, cs, 0), SandboxConfig: cfg})
			if err != nil {
				return nil, err
			}
			if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
				return nil, err
			}
			pod.ContainerIDs[cs.Name] = cr.ContainerId
		}
		return pod, nil
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

type containerRun struct{ started, finished time.Time }

func (r containerRun) String() string {
	return r.started.Format("15:04:05.000") + "→" + r.finished.Format("15:04:05.000")
}

// containerRuns returns when each container of a sandbox started and (if it
// did) exited, oldest first.
func containerRuns(ctx context.Context, c *harness.CRI, sandboxID string) ([]containerRun, error) {
	resp, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: sandboxID}})
	if err != nil {
		return nil, err
	}
	var runs []containerRun
	for _, ct := range resp.Containers {
		st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ct.Id})
		if err != nil {
			return nil, fmt.Errorf("status of %s: %w", ct.Id, err)
		}
		var r containerRun
		if at := st.GetStatus().GetStartedAt(); at > 0 {
			r.started = time.Unix(0, at)
		} else {
			continue
		}
		if at := st.GetStatus().GetFinishedAt(); at > 0 {
			r.finished = time.Unix(0, at)
		}
		runs = append(runs, r)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].started.Before(runs[j].started) })
	return runs, nil
}

// sinceLastStart is the part of a process log (the harness marks each
// start with a "=== " line) written since its last start.
func sinceLastStart(log string) string {
	if i := strings.LastIndex(log, "\n=== "); i >= 0 {
		return log[i:]
	}
	return log
}

package crishim_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// slowCNI is a main CNI plugin that logs the start and end of a 3 s pause
// in each ADD to a file, then hands over to the real bridge plugin: between
// start and end a sandbox is being created.
const slowCNI = `#!/bin/sh
if [ "$CNI_COMMAND" = ADD ]; then
	echo "start;$CNI_ARGS" >> %[1]q
	sleep 3
	echo "end;$CNI_ARGS" >> %[1]q
fi
exec %[2]q
`

// TestKubeletDuringRelaunchGetsTheRelaunchedSandbox: after an offline
// reboot, kubelet asks for a pod's sandbox while the shim's relaunch is in
// the middle of creating that very sandbox (its CNI ADD is under way). The
// shim must make kubelet wait and hand it the relaunched sandbox: one ready
// sandbox per pod, never two.
func TestKubeletDuringRelaunchGetsTheRelaunchedSandbox(t *testing.T) {
	site := harness.NewSite(t, 1)
	node := site.Node(1)
	adds := filepath.Join(node.Dir, "cni-adds.log")
	node.CNIBinDir = slowPluginDir(t, adds)
	conf := node.BridgeConflist(nil)
	conf["plugins"].([]map[string]any)[0]["type"] = "slowbridge"
	if err := node.WriteCNIConfig("10-slow", conf); err != nil {
		t.Fatal(err)
	}
	if err := node.StartContainerd(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	state := filepath.Join(node.VarDir, "holdfast", "cri")
	shim := startShim(t, node, state, nil)
	kubelet := node.CRI(shim.Sock)
	var pods []*harness.Pod
	for i := range 3 {
		p, err := kubelet.RunPod(ctx, harness.PodSpec{Name: fmt.Sprintf("race-%d", i), Containers: []harness.ContainerSpec{{Name: "c", Command: []string{"sleep", "100000"}}}})
		if err != nil {
			t.Fatalf("run pod through the shim: %v\n%s", err, node.Logs("containerd"))
		}
		pods = append(pods, p)
	}
	shim.Stop(t)

	got := map[string]string{} // pod UID → sandbox id kubelet got
	var mu sync.Mutex
	if err := node.Reboot(func() error {
		os.Remove(adds)
		if err := node.StartContainerd(); err != nil {
			return err
		}
		shim = startShim(t, node, state, nil)
		kubelet = node.CRI(shim.Sock)
		var wg sync.WaitGroup
		errs := make(chan error, len(pods))
		for _, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id, err := askDuringRelaunch(ctx, kubelet, adds, p)
				mu.Lock()
				got[p.Spec.UID] = id
				mu.Unlock()
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-shim.Relaunched():
	case <-ctx.Done():
		t.Fatal("relaunch never finished")
	}
	for _, p := range pods {
		ready, err := kubelet.ReadySandboxes(ctx, p.Spec.UID)
		if err != nil || len(ready) != 1 {
			var ids []string
			for _, sb := range ready {
				ids = append(ids, sb.Id)
			}
			t.Fatalf("%s: %d ready sandboxes %v (%v), want 1: kubelet got %s", p.Spec.Name, len(ready), ids, err, got[p.Spec.UID])
		}
		if ready[0].Id != got[p.Spec.UID] {
			t.Fatalf("%s: kubelet got sandbox %s, the ready one is %s", p.Spec.Name, got[p.Spec.UID], ready[0].Id)
		}
	}
}

// askDuringRelaunch waits until the relaunch's CNI ADD for p has begun,
// then calls RunPodSandbox as kubelet does after a lost pod list.
func askDuringRelaunch(ctx context.Context, c *harness.CRI, adds string, p *harness.Pod) (string, error) {
	if err := harness.Eventually(60*time.Second, func() error {
		if !cniLogged(adds, "start", p.Spec.Name) {
			return fmt.Errorf("no CNI ADD for %s yet", p.Spec.Name)
		}
		return nil
	}); err != nil {
		return "", err
	}
	if cniLogged(adds, "end", p.Spec.Name) {
		return "", fmt.Errorf("%s: the relaunch's CNI ADD ended before kubelet's call: the test missed the race it is for (machine too slow to see a 3 s window?)", p.Spec.Name)
	}
	spec := p.Spec
	spec.Attempt = 2 // a kubelet that also saw the relaunched sandbox: no name clash in containerd
	sb, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: c.SandboxConfig(spec)})
	if err != nil {
		return "", fmt.Errorf("kubelet's RunPodSandbox for %s: %w", p.Spec.Name, err)
	}
	return sb.PodSandboxId, nil
}

// slowPluginDir is a CNI bin dir with the reference plugins and slowbridge.
func slowPluginDir(t *testing.T, adds string) string {
	t.Helper()
	ref := harness.CNIPlugins(t)
	dir := t.TempDir()
	for _, p := range []string{"bridge", "loopback", "host-local", "portmap"} {
		if err := os.Symlink(filepath.Join(ref, p), filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf(slowCNI, adds, filepath.Join(ref, "bridge"))
	if err := os.WriteFile(filepath.Join(dir, "slowbridge"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// cniLogged reports whether slowbridge logged phase for the pod name.
func cniLogged(adds, phase, name string) bool {
	data, _ := os.ReadFile(adds)
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ";")
		if f[0] != phase {
			continue
		}
		for _, kv := range f[1:] {
			if kv == "K8S_POD_NAME="+name {
				return true
			}
		}
	}
	return false
}

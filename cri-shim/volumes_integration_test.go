package crishim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	crishim "github.com/holdfast-edge/holdfast/cri-shim"
	"github.com/holdfast-edge/holdfast/cri-shim/volumes"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// kubeletFile is one key kubelet's atomic writer projects into a volume.
type kubeletFile struct {
	data string
	mode uint32
}

// atomicWrite lays files out as kubelet's atomic writer does
// (pkg/volume/util/atomic_writer.go): a new timestamped dir with the
// files, a ..data_tmp symlink to it renamed over ..data, then a per-key
// symlink key -> ..data/key.
func atomicWrite(t *testing.T, dir, ts string, gid int, files map[string]kubeletFile) {
	t.Helper()
	tsDir := filepath.Join(dir, ts)
	must(t, os.Mkdir(tsDir, 0o755))
	for k, f := range files {
		p := filepath.Join(tsDir, k)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(f.data), 0o600))
		must(t, os.Chown(p, 0, gid))
		must(t, os.Chmod(p, os.FileMode(f.mode)))
	}
	must(t, os.Symlink(ts, filepath.Join(dir, "..data_tmp")))
	must(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	for k := range files {
		top, _, _ := strings.Cut(k, "/")
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		must(t, os.Symlink(filepath.Join("..data", top), link))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mountTmpfs(t *testing.T, dir, data string) {
	t.Helper()
	must(t, os.MkdirAll(dir, 0o750))
	must(t, unix.Mount("tmpfs", dir, "tmpfs", 0, data))
}

func execIn(ctx context.Context, c *harness.CRI, id string, cmd ...string) (string, error) {
	r, err := c.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 10})
	if err != nil {
		return "", err
	}
	if r.ExitCode != 0 {
		return string(r.Stdout), fmt.Errorf("%v: exit %d: %s", cmd, r.ExitCode, r.Stderr)
	}
	return string(r.Stdout), nil
}

// TestVolumesComeBackAfterReboot: a pod with kubelet-style tmpfs volumes
// (a Secret, the projected token, a downwardAPI and a memory emptyDir)
// beside a ConfigMap and a disk emptyDir; the simulated reboot unmounts
// every tmpfs under the node dir, as a real reboot wipes them; the
// relaunched container reads every file as before, with kubelet's layout,
// modes and ownership, the memory volume is an empty tmpfs again, the
// Secret's plaintext never reached the disk, and a later atomic update on
// the host (what kubelet does after reconnect) shows in the container.
func TestVolumesComeBackAfterReboot(t *testing.T) {
	site := harness.NewSite(t, 1, harness.WithContainerd())
	node := site.Node(1)
	must(t, node.WriteCNIConfig("10-bridge", node.BridgeConflist(nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	state := filepath.Join(node.VarDir, "holdfast", "cri")
	fast := func(c *crishim.Config) { c.VolumeScanInterval = 500 * time.Millisecond }
	shim := startShim(t, node, state, fast)
	kubelet := node.CRI(shim.Sock)

	uid := fmt.Sprintf("0f1e2d3c-%d", time.Now().UnixNano())
	vols := filepath.Join(node.VarDir, "kubelet", "pods", uid, "volumes")
	secret := filepath.Join(vols, "kubernetes.io~secret", "creds")
	token := filepath.Join(vols, "kubernetes.io~projected", "kube-api-access-x1")
	downward := filepath.Join(vols, "kubernetes.io~downward-api", "podinfo")
	memory := filepath.Join(vols, "kubernetes.io~empty-dir", "cache")
	disk := filepath.Join(vols, "kubernetes.io~empty-dir", "scratch")
	config := filepath.Join(vols, "kubernetes.io~configmap", "cfg")
	const ts1 = "..2026_12_02_13_00_00.123456789"
	mountTmpfs(t, secret, "size=1024k")
	atomicWrite(t, secret, ts1, 2000, map[string]kubeletFile{"password": {"s3cret", 0o440}, "nested/key": {"inner", 0o400}})
	mountTmpfs(t, token, "size=2048k,mode=0751")
	atomicWrite(t, token, ts1, 0, map[string]kubeletFile{"token": {strings.Repeat("t", 889), 0o644}, "ca.crt": {"CA", 0o644}, "namespace": {"default", 0o644}})
	mountTmpfs(t, downward, "")
	atomicWrite(t, downward, ts1, 0, map[string]kubeletFile{"labels": {`app="demo"`, 0o644}})
	mountTmpfs(t, memory, "size=4096k")
	must(t, os.WriteFile(filepath.Join(memory, "scratch"), []byte("gone after reboot"), 0o644))
	must(t, os.MkdirAll(disk, 0o777))
	must(t, os.WriteFile(filepath.Join(disk, "kept"), []byte("on disk"), 0o644))
	must(t, os.MkdirAll(config, 0o777))
	atomicWrite(t, config, ts1, 0, map[string]kubeletFile{"app.conf": {"x=1", 0o644}})
	t.Cleanup(func() {
		for _, d := range []string{secret, token, downward, memory} {
			unix.Unmount(d, unix.MNT_DETACH)
		}
	})

	var mounts []*runtimeapi.Mount
	for _, d := range []struct{ host, ctr string }{{secret, "/v/creds"}, {token, "/var/run/secrets/kubernetes.io/serviceaccount"},
		{downward, "/v/podinfo"}, {memory, "/v/cache"}, {disk, "/v/scratch"}, {config, "/v/cfg"}} {
		mounts = append(mounts, &runtimeapi.Mount{HostPath: d.host, ContainerPath: d.ctr, Readonly: d.host == secret || d.host == token})
	}
	spec := harness.PodSpec{Name: "volumes", UID: uid, Containers: []harness.ContainerSpec{{Name: "app", Command: []string{"sleep", "100000"}, Mounts: mounts}}}
	if _, err := kubelet.RunPod(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// A pod that opted out: its Secret is not captured, and comes back as
	// an empty tmpfs (for kubelet to fill after reconnect).
	optUID := uid + "-optout"
	optSecret := filepath.Join(node.VarDir, "kubelet", "pods", optUID, "volumes", "kubernetes.io~secret", "creds")
	mountTmpfs(t, optSecret, "size=1024k")
	t.Cleanup(func() { unix.Unmount(optSecret, unix.MNT_DETACH) })
	atomicWrite(t, optSecret, ts1, 0, map[string]kubeletFile{"password": {"not-kept", 0o644}})
	optSpec := harness.PodSpec{Name: "optout", UID: optUID, Annotations: map[string]string{crishim.AnnotationRestoreVolumes: "false"},
		Containers: []harness.ContainerSpec{{Name: "app", Command: []string{"sleep", "100000"}, Mounts: []*runtimeapi.Mount{{HostPath: optSecret, ContainerPath: "/v/creds"}}}}}
	if _, err := kubelet.RunPod(ctx, optSpec); err != nil {
		t.Fatal(err)
	}
	// Captured off kubelet's call path, within the scan interval.
	capPath := filepath.Join(state, volumes.DirName, uid+".json")
	var capture *volumes.PodFile
	if err := harness.Eventually(20*time.Second, func() error {
		files, bad, err := volumes.InspectStore(filepath.Join(state, volumes.DirName)).Load()
		if err != nil || len(bad) > 0 || len(files) != 2 {
			return fmt.Errorf("captures %d, bad %v, err %v", len(files), bad, err)
		}
		for _, f := range files {
			switch {
			case f.UID == uid && len(f.Volumes) == 4:
				capture = f
			case f.UID == uid:
				return fmt.Errorf("%d volumes captured, want 4 (secret, projected, downward-api, memory empty-dir)", len(f.Volumes))
			case !f.OptOut || len(f.Volumes) != 1 || !f.Volumes[0].Withheld || f.Volumes[0].Sealed != nil:
				return fmt.Errorf("opted-out pod captured as %+v", f.Volumes)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(capPath)
	must(t, err)
	for _, plain := range []string{"s3cret", "inner", strings.Repeat("t", 64)} {
		if bytes.Contains(raw, []byte(plain)) {
			t.Fatalf("capture file holds Secret/token content %q in the clear", plain[:6])
		}
	}
	for _, v := range capture.Volumes {
		t.Logf("captured %s: options %+v sealed=%v entries=%d", v.ID(), v.Options, v.Sealed != nil, len(v.Entries))
	}
	shim.Stop(t)

	must(t, node.Reboot(func() error {
		// As a real reboot: no tmpfs left under the node dir.
		mt, err := volumes.ReadMounts(volumes.MountInfo)
		if err != nil {
			return err
		}
		for _, d := range []string{secret, token, downward, memory} {
			if _, ok := mt.Tmpfs(d); ok {
				return fmt.Errorf("%s still a tmpfs after the reboot", d)
			}
		}
		if _, err := os.Stat(filepath.Join(secret, "password")); err == nil {
			return fmt.Errorf("secret content survived the reboot on disk")
		}
		if err := node.StartContainerd(); err != nil {
			return err
		}
		shim = startShim(t, node, state, fast)
		kubelet = node.CRI(shim.Sock)
		return nil
	}))
	select {
	case <-shim.Relaunched():
	case <-ctx.Done():
		t.Fatal("relaunch never finished")
	}
	rec, ok := shim.Store().Get(uid)
	if !ok || rec.Relaunch == nil || rec.Relaunch.Outcome != "relaunched" {
		t.Fatalf("relaunch: %+v", rec.Relaunch)
	}
	id := rec.Relaunch.Containers["app"]

	// Inside the relaunched container.
	for path, want := range map[string]string{
		"/v/creds/password": "s3cret", "/v/creds/nested/key": "inner", "/v/podinfo/labels": `app="demo"`,
		"/var/run/secrets/kubernetes.io/serviceaccount/token": strings.Repeat("t", 889), "/v/scratch/kept": "on disk", "/v/cfg/app.conf": "x=1",
	} {
		got, err := execIn(ctx, kubelet, id, "cat", path)
		if err != nil || got != want {
			t.Fatalf("in the relaunched container %s = %q (%v), want %q", path, got, err, want)
		}
	}
	for _, c := range []struct{ cmd, want string }{
		{"readlink /v/creds/password", "..data/password"},
		{"readlink /v/creds/..data", ts1},
		{"stat -L -c %a:%u:%g /v/creds/password", "440:0:2000"},
		{"stat -c %a /var/run/secrets/kubernetes.io/serviceaccount", "751"},
		{"stat -f -c %T /v/cache", "tmpfs"},
		{"ls -A /v/cache", ""},
		{"stat -f -c %T /v/creds", "tmpfs"},
	} {
		got, err := execIn(ctx, kubelet, id, "sh", "-c", c.cmd)
		if err != nil || strings.TrimSpace(got) != c.want {
			t.Fatalf("in the relaunched container `%s` = %q (%v), want %q", c.cmd, got, err, c.want)
		}
	}
	mt, err := volumes.ReadMounts(volumes.MountInfo)
	must(t, err)
	if m, ok := mt.Tmpfs(secret); !ok || !strings.Contains(strings.Join(m.Super, ","), "size=1024k") {
		t.Fatalf("restored secret tmpfs: %+v %v", m, ok)
	}
	if m, ok := mt.Tmpfs(memory); !ok || !strings.Contains(strings.Join(m.Super, ","), "size=4096k") {
		t.Fatalf("restored memory emptyDir: %+v %v", m, ok)
	}
	if _, ok := mt.Tmpfs(disk); ok {
		t.Fatal("a disk emptyDir was mounted over")
	}
	optRec, _ := shim.Store().Get(optUID)
	if optRec == nil || optRec.Relaunch == nil || optRec.Relaunch.Outcome != "relaunched" {
		t.Fatalf("opted-out pod not relaunched: %+v", optRec)
	}
	if got, err := execIn(ctx, kubelet, optRec.Relaunch.Containers["app"], "sh", "-c", "stat -f -c %T /v/creds; ls -A /v/creds"); err != nil || got != "tmpfs\n" {
		t.Fatalf("opted-out pod's Secret after relaunch: %q (%v), want an empty tmpfs", got, err)
	}
	// holdfastd cri pods shows what is captured and when.
	out, err := node.Exec(ctx, filepath.Join(harness.Binaries(t), "holdfastd"), "cri", "pods", "-o", "json", "--state-dir", state)
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Name    string
		Volumes []volumes.Status
	}
	must(t, json.Unmarshal([]byte(out), &rows))
	shown := map[string]string{}
	for _, r := range rows {
		for _, v := range r.Volumes {
			if v.Refreshed.IsZero() {
				t.Fatalf("cri pods: %s %s without a refresh time", r.Name, v.ID)
			}
			shown[r.Name+" "+v.ID] = v.Content
		}
	}
	wantShown := map[string]string{"volumes secret/creds": "sealed", "volumes projected/kube-api-access-x1": "sealed", "volumes downward-api/podinfo": "plain",
		"volumes empty-dir/cache": "empty", "optout secret/creds": "withheld"}
	if !reflect.DeepEqual(shown, wantShown) {
		t.Fatalf("cri pods shows volumes %v, want %v", shown, wantShown)
	}

	// kubelet, back online, keeps the mount it finds and writes the next
	// version into it with its atomic writer: the container sees it.
	const ts2 = "..2026_12_02_14_00_00.000000001"
	atomicWrite(t, secret, ts2, 2000, map[string]kubeletFile{"password": {"rotated", 0o440}, "nested/key": {"inner", 0o400}})
	if got, err := execIn(ctx, kubelet, id, "cat", "/v/creds/password"); err != nil || got != "rotated" {
		t.Fatalf("after kubelet's update: %q (%v)", got, err)
	}
	// And the capture follows it.
	if err := harness.Eventually(10*time.Second, func() error {
		files, _, err := volumes.InspectStore(filepath.Join(state, volumes.DirName)).Load()
		if err != nil || len(files) != 2 {
			return fmt.Errorf("captures: %v", err)
		}
		if files[0].UID != uid {
			files[0] = files[1]
		}
		if v := files[0].Volume("secret/creds"); v == nil || v.Version != ts2 {
			return fmt.Errorf("secret capture at %+v, want version %s", v, ts2)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
